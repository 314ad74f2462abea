"""Vision half of amortised invariance learning: the image descriptor spaces, Hyper-ResNet and prompt-ViT
encoders, the augmentation views, the synthetic shapes and the paper's public datasets, ``python -m vision.pretrain``,
``python -m vision.evaluate``, ``python -m vision.measure`` and ``python -m vision.suite``."""
