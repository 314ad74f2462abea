"""The modality-free pre-training engine and what it runs.

- :mod:`~core.pretrain.sampler`: batches that carry the step's descriptor (or each group's, with
  ``descriptors_per_step``) to the data-loader workers.
- :mod:`~core.pretrain.losses`, :mod:`~core.pretrain.queues`, :mod:`~core.pretrain.heads`: NT-Xent / InfoNCE /
  MoCo-v3 losses, per-descriptor key queues, projection and prediction heads.
- :mod:`~core.pretrain.learners`: SimCLR, MoCo-v2 and MoCo-v3 conditioned on the step's descriptor.
- :mod:`~core.pretrain.recipe`: :func:`build_learner`, the one place a ``method`` config becomes a learner.
- :mod:`~core.pretrain.shuffle_bn`: MoCo-v2's shuffle-BN (split BatchNorm, transposed key groups across ranks).
- :mod:`~core.pretrain.optim`: weight decay by parameter role, fused AdamW / SGD.
- :mod:`~core.pretrain.step`: :func:`train_one_step` and its ``prepare_batch`` hook.
- :mod:`~core.pretrain.metrics`, :mod:`~core.pretrain.checkpointer`, :mod:`~core.pretrain.resume`,
  :mod:`~core.pretrain.rng`: metrics.jsonl/TensorBoard with timings, atomic checkpoints and exact resumes.
- :mod:`~core.pretrain.schedules`, :mod:`~core.pretrain.engine`: per-step schedules and the training loop.
- :mod:`~core.pretrain.init`: :func:`warm_start`, a Hyper-ResNet started from a plain ResNet (``--init.from``).
"""

from core.pretrain.engine import pretrain
from core.pretrain.init import warm_start
from core.pretrain.learners import ContrastiveLearner, create_learner
from core.pretrain.losses import InfoNCELoss, MoCoV3Loss, NTXentLoss
from core.pretrain.queues import DescriptorQueues
from core.pretrain.recipe import build_learner
from core.pretrain.sampler import DescriptorBatchSampler
from core.pretrain.step import NonFiniteLossError, to_device, train_one_step

__all__ = [
    "ContrastiveLearner",
    "DescriptorBatchSampler",
    "DescriptorQueues",
    "InfoNCELoss",
    "MoCoV3Loss",
    "NTXentLoss",
    "NonFiniteLossError",
    "build_learner",
    "create_learner",
    "pretrain",
    "to_device",
    "train_one_step",
    "warm_start",
]
