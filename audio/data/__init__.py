"""Audio data: the embedded synthetic tones (:mod:`audio.data.synthetic`), the readers of public datasets (FSD50K in
:mod:`audio.data.fsd50k`; MetaAudio's evaluation sets ESC-50, NSynth, VoxCeleb1 and FSDKaggle2018 in
:mod:`audio.data.metaaudio`, as :class:`~audio.data.clip_table.ClipTable`), MetaAudio's class splits
(:mod:`audio.data.class_splits`), any folder of audio files (:mod:`audio.data.folder`), the decoded-clip store
(:mod:`audio.data.store`), fixed-length chunks of clips (:mod:`audio.data.chunks`), the pre-training clips by name
(:mod:`audio.data.pretrain_clips`) and the two-view pre-training dataset (:mod:`audio.data.views`)."""

from audio.data.class_splits import (
    METAAUDIO_SPLIT_FILES,
    StringArrayUnpickler,
    UnsafePickleError,
    load_npy_strings,
    load_splits,
    metaaudio_splits,
)
from audio.data.clip_table import ClipTable
from audio.data.metaaudio import (
    READERS,
    read_dataset,
    read_esc50,
    read_folder,
    read_fsdkaggle18,
    read_nsynth,
    read_voxceleb1,
)
from audio.data.pretrain_clips import PRETRAIN_DATASETS, build_clip_source
from audio.data.synthetic import TASKS, TIMBRES, SyntheticTones
from audio.data.views import ContrastiveAudioViews

__all__ = [
    "METAAUDIO_SPLIT_FILES",
    "PRETRAIN_DATASETS",
    "READERS",
    "TASKS",
    "TIMBRES",
    "ClipTable",
    "ContrastiveAudioViews",
    "StringArrayUnpickler",
    "SyntheticTones",
    "UnsafePickleError",
    "build_clip_source",
    "load_npy_strings",
    "load_splits",
    "metaaudio_splits",
    "read_dataset",
    "read_esc50",
    "read_folder",
    "read_fsdkaggle18",
    "read_nsynth",
    "read_voxceleb1",
]
