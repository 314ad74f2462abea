"""Audio half of amortised invariance learning: MetaAudio's log-mel front end, the seven CLAR factors, FSD50K,
synthetic instrument tones, Hyper-ResNet18 on spectrograms and ``python -m audio.pretrain``."""
