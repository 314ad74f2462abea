"""Audio data: the embedded synthetic tones, FSD50K and folders of files (through a decoded-clip cache), and the
two-view pre-training dataset."""

from audio.data.sources import PRETRAIN_DATASETS, build_clip_source
from audio.data.synthetic import TASKS, TIMBRES, SyntheticTones
from audio.data.views import ContrastiveAudioViews

__all__ = ["PRETRAIN_DATASETS", "TASKS", "TIMBRES", "ContrastiveAudioViews", "SyntheticTones", "build_clip_source"]
