"""Amortised invariance learning: the modality-free core.

Shape legend used in every docstring and shape comment of this project:
    B batch, V views, A augmentation factors (descriptor dim), M training descriptors, D embedding,
    C channels, H/W height/width, F mel bins, T frames, N tokens, P prompt tokens, U unique descriptors
    in a batch. Few-shot code uses words (``n_way``, ``k_shot``, ``n_query``) so K never means two things.

The conditioning input is called ``invariance`` everywhere: one descriptor for the batch ``(A,)`` or one per
sample ``(B, A)``. An integer index into an :class:`InvarianceSpace` is an ``invariance_id``.

Layout (each name has one home module; the package ``__init__`` files re-export the public ones):
    ``invariance`` the descriptor space and its registry of named spaces · ``conditioning/`` hypernetwork and
    prompt conditioners · ``backbones/`` the Hyper-ResNet shared by the modalities · ``pretrain/`` engine,
    learners, losses, queues, heads, schedules, sampler · ``downstream/`` task and probe config, probes,
    protocol, baselines, features, ridge, metrics, few-shot, measurement, bound, the evaluation driver ·
    ``checkpoint``, ``config``, ``cli``, ``distributed`` beside them.
"""

from core.checkpoint import load_encoder
from core.downstream.probe import grid_refine_probe, invariance_probe
from core.downstream.task import ProbeConfig, TaskData
from core.invariance import InvarianceDescriptor, InvarianceSpace, quantize, register_space
from core.pretrain.losses import InfoNCELoss, MoCoV3Loss, NTXentLoss
from core.pretrain.queues import DescriptorQueues

__all__ = [
    "DescriptorQueues",
    "InfoNCELoss",
    "InvarianceDescriptor",
    "InvarianceSpace",
    "MoCoV3Loss",
    "NTXentLoss",
    "ProbeConfig",
    "TaskData",
    "grid_refine_probe",
    "invariance_probe",
    "load_encoder",
    "quantize",
    "register_space",
]
