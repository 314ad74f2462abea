"""Audio data: the embedded synthetic tones, FSD50K and folders of files (through the decoded-clip store,
:mod:`audio.data.store`), fixed-length chunks of clips (:mod:`audio.data.chunks`), and the two-view pre-training
dataset."""

from audio.data.sources import PRETRAIN_DATASETS, build_clip_source
from audio.data.synthetic import TASKS, TIMBRES, SyntheticTones
from audio.data.views import ContrastiveAudioViews

__all__ = ["PRETRAIN_DATASETS", "TASKS", "TIMBRES", "ContrastiveAudioViews", "SyntheticTones", "build_clip_source"]
