"""The modality-free pre-training engine and what it runs.

- :mod:`~core.pretrain.sampler`: batches that carry the step's descriptor to the data-loader workers.
- :mod:`~core.pretrain.losses`, :mod:`~core.pretrain.queues`, :mod:`~core.pretrain.heads`: NT-Xent / InfoNCE /
  MoCo-v3 losses, per-descriptor key queues, projection and prediction heads.
- :mod:`~core.pretrain.learners`: SimCLR, MoCo-v2 and MoCo-v3 conditioned on the step's descriptor.
- :mod:`~core.pretrain.shuffle_bn`: MoCo-v2's shuffle-BN (split BatchNorm, transposed key groups across ranks).
- :mod:`~core.pretrain.optim`: weight decay by parameter role, fused AdamW / SGD.
- :mod:`~core.pretrain.schedules`, :mod:`~core.pretrain.engine`: per-step schedules and the training loop.
"""

from core.pretrain.engine import NonFiniteLossError, pretrain
from core.pretrain.learners import ContrastiveLearner, create_learner
from core.pretrain.losses import InfoNCELoss, MoCoV3Loss, NTXentLoss
from core.pretrain.queues import DescriptorQueues
from core.pretrain.sampler import DescriptorBatchSampler

__all__ = [
    "ContrastiveLearner",
    "DescriptorBatchSampler",
    "DescriptorQueues",
    "InfoNCELoss",
    "MoCoV3Loss",
    "NTXentLoss",
    "NonFiniteLossError",
    "create_learner",
    "pretrain",
]
