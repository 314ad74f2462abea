"""Hyper-ResNet: a ResNet whose block convolutions are generated from an invariance descriptor.

The stem convolution and every BatchNorm are ordinary parameters shared by all descriptors; each residual block
embeds the descriptor once and generates each of its kernels (both convs of a BasicBlock, all three of a
Bottleneck, and the projection shortcut) with its own :class:`~core.conditioning.hypernet.KernelGenerator` (paper,
A.1.1).
Bottlenecks follow ResNet v1.5 (stride on the 3x3 conv), as in torchvision, so a torchvision checkpoint can warm
start the model exactly (:meth:`HyperResNet.load_resnet_state_dict`).

The modality packages name the variants (``vision.hyper_resnet50``, ``audio.hyper_resnet18``); this module only
knows depths, ``in_chans`` and widths.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] Deep Residual Learning for Image Recognition, He et al., 2016, https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.conditioning.hypernet import BlockEmbedding, Conditioning, HyperConv2d, PlainConv2d
from core.invariance import InvarianceSpace

DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class HyperBasicBlock(nn.Module):
    """Two generated 3x3 convolutions with an identity or generated 1x1 projection shortcut."""

    expansion = 1

    def __init__(self, in_chans: int, planes: int, stride: int, num_factors: int, embed_dim: int,
                 hidden_dim: int, conditioned: bool = True) -> None:
        super().__init__()
        gen = {"embed_dim": embed_dim, "hidden_dim": hidden_dim, "conditioned": conditioned}
        self.embed = BlockEmbedding(num_factors, embed_dim) if conditioned else None
        self.conv1 = _conv(in_chans, planes, 3, stride=stride, padding=1, **gen)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, padding=1, **gen)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_chans, planes, stride, gen)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor, cond: Conditioning) -> Tensor:
        z = None if self.embed is None else self.embed(cond.invariance)  # (U, E), once per block
        out = F.relu(self.bn1(self.conv1(x, z, cond.split_sizes)))
        out = self.bn2(self.conv2(out, z, cond.split_sizes))
        shortcut = x if self.downsample is None else self.downsample(x, z, cond.split_sizes)
        return F.relu(out + shortcut)


class HyperBottleneck(nn.Module):
    """Generated 1x1 → 3x3 (strided) → 1x1 convolutions, ResNet v1.5, with expansion 4."""

    expansion = 4

    def __init__(self, in_chans: int, planes: int, stride: int, num_factors: int, embed_dim: int,
                 hidden_dim: int, conditioned: bool = True) -> None:
        super().__init__()
        gen = {"embed_dim": embed_dim, "hidden_dim": hidden_dim, "conditioned": conditioned}
        out_chans = planes * self.expansion
        self.embed = BlockEmbedding(num_factors, embed_dim) if conditioned else None
        self.conv1 = _conv(in_chans, planes, 1, **gen)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride=stride, padding=1, **gen)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, out_chans, 1, **gen)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.downsample = _shortcut(in_chans, out_chans, stride, gen)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor, cond: Conditioning) -> Tensor:
        z = None if self.embed is None else self.embed(cond.invariance)  # (U, E), once per block
        out = F.relu(self.bn1(self.conv1(x, z, cond.split_sizes)))
        out = F.relu(self.bn2(self.conv2(out, z, cond.split_sizes)))
        out = self.bn3(self.conv3(out, z, cond.split_sizes))
        shortcut = x if self.downsample is None else self.downsample(x, z, cond.split_sizes)
        return F.relu(out + shortcut)


class HyperShortcut(nn.Module):
    """Generated 1x1 projection followed by BatchNorm, for blocks that change shape."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, embed_dim: int, hidden_dim: int,
                 conditioned: bool = True) -> None:
        super().__init__()
        self.conv = _conv(in_chans, out_chans, 1, stride=stride, embed_dim=embed_dim, hidden_dim=hidden_dim,
                          conditioned=conditioned)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: Tensor, z: Tensor | None, split_sizes: list[int] | None) -> Tensor:
        return self.bn(self.conv(x, z, split_sizes))


def _conv(in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, padding: int = 0, embed_dim: int = 16,
          hidden_dim: int = 32, conditioned: bool = True) -> HyperConv2d | PlainConv2d:
    layer = HyperConv2d if conditioned else PlainConv2d
    return layer(in_chans, out_chans, kernel_size, stride=stride, padding=padding, embed_dim=embed_dim,
                 hidden_dim=hidden_dim)


def _shortcut(in_chans: int, out_chans: int, stride: int, gen: dict) -> HyperShortcut | None:
    if stride == 1 and in_chans == out_chans:
        return None
    return HyperShortcut(in_chans, out_chans, stride, **gen)


class HyperResNet(nn.Module):
    """ResNet-18/34/50 with descriptor-generated block kernels; ``forward(x, invariance)``.

    Args:
        space: The invariance space the model is conditioned on (A = ``space.dim``); saved with the model.
        depth: 18, 34 (BasicBlock) or 50 (Bottleneck).
        in_chans: Input channels (3 for images, 1 for spectrograms).
        width: Channels of the first stage (64 in the standard ResNet; stages use width·(1, 2, 4, 8)).
        stem_kernel_size: Kernel of the stem convolution (7 in the standard ResNet).
        stem_stride: Stride of the stem convolution (2 in the standard ResNet).
        stem_pool: Follow the stem with a 3x3 stride-2 max-pool (as the standard ResNet does). The modality
            packages name stems for their inputs (``vision.hyper_resnet.STEMS``).
        embed_dim: Block-embedding size (paper: 16).
        hidden_dim: Generator width (paper: 32); the main lever on parameter count and step time.
        num_classes: Size of a linear classifier on the pooled features; 0 for none (features out).
        zero_init_last: Start each block's last BN at γ = 0, so residual branches start as identities.
        conditioned: ``False`` builds the plain ResNet baseline with the same layers and initialisation: ordinary
            convolutions, no generators; ``invariance`` is still validated but does not change the output.

    Raises:
        ValueError: For an unknown depth or a stem kernel that is not a positive odd size.
    """

    def __init__(
        self,
        space: InvarianceSpace,
        depth: int = 50,
        in_chans: int = 3,
        width: int = 64,
        stem_kernel_size: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        embed_dim: int = 16,
        hidden_dim: int = 32,
        num_classes: int = 0,
        zero_init_last: bool = True,
        conditioned: bool = True,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"HyperResNet depth must be one of {sorted(DEPTHS)}, got {depth}.")
        if stem_kernel_size < 1 or stem_kernel_size % 2 == 0 or stem_stride < 1:
            raise ValueError(f"HyperResNet stem needs a positive odd kernel and a positive stride, got kernel "
                             f"{stem_kernel_size} and stride {stem_stride}.")
        kind, layers = DEPTHS[depth]
        block = HyperBasicBlock if kind == "basic" else HyperBottleneck
        self.space = space
        self.depth = depth
        self.in_chans = in_chans
        self.conditioned = conditioned
        self.conv1 = nn.Conv2d(in_chans, width, stem_kernel_size, stride=stem_stride, padding=stem_kernel_size // 2,
                               bias=False)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)

        chans = width
        stages = []
        for i, num_blocks in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(chans, planes, stride, space.dim, embed_dim, hidden_dim, conditioned))
                chans = planes * block.expansion
            stages.append(nn.ModuleList(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = chans
        self.fc: nn.Module = nn.Linear(chans, num_classes) if num_classes > 0 else nn.Identity()

        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for blk in self.blocks():
                nn.init.zeros_(blk.last_bn.weight)

    def stages(self) -> list[nn.Module]:
        """The four residual stages, input to output (what fine-tuning the last ``k`` stages trains)."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def blocks(self) -> list[nn.Module]:
        return [blk for stage in self.stages() for blk in stage]

    def forward_features(self, x: Tensor, invariance: Tensor) -> Tensor:
        """Feature map before pooling.

        Args:
            x: Shape: (B, C, H, W).
            invariance: One descriptor for the batch, shape (A,), or one per sample, shape (B, A).

        Returns:
            Shape: (B, num_features, H', W').
        """
        self.space.validate(invariance)
        if not self.conditioned:  # plain baseline: the descriptor does not enter the network
            invariance = invariance.reshape(-1, self.space.dim)[0]
        cond = Conditioning.from_invariance(invariance.to(dtype=x.dtype), x.shape[0])
        x = cond.sort(x)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for blk in self.blocks():
            x = blk(x, cond)
        return cond.unsort(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, then the classifier unless ``pre_logits``. Shape: (B, C, H, W) -> (B, D)."""
        x = x.mean(dim=(2, 3))  # (B, num_features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor, invariance: Tensor) -> Tensor:
        """Shape: (B, C, H, W), (A,) or (B, A) -> (B, num_classes or num_features)."""
        return self.forward_head(self.forward_features(x, invariance))

    @torch.no_grad()
    def to_plain(self, invariance: Tensor | Sequence[float]) -> HyperResNet:
        """The plain ResNet this model is at one descriptor: every kernel generated once, no generators left.

        A deep copy in which each :class:`HyperConv2d` becomes a :class:`PlainConv2d` holding the kernel generated
        at ``invariance`` and the block embeddings are dropped; stem, BatchNorms (statistics included) and ``fc``
        are copied. The result is a ``conditioned=False`` model (it still takes, and ignores, a descriptor), so
        fine-tuning its last stages trains ordinary kernels, as the paper's fine-tuning baseline does. Train/eval
        mode and ``requires_grad`` flags are those of this model.

        Args:
            invariance: The descriptor to freeze. Shape: (A,).

        Returns:
            A new model with ``forward(x, anything)`` equal to ``self.forward(x, invariance)``.

        Raises:
            ValueError: If ``invariance`` is not one valid descriptor of ``self.space``.
        """
        reference = next(self.parameters())
        invariance = torch.as_tensor(invariance, dtype=reference.dtype, device=reference.device)
        if invariance.dim() != 1:
            raise ValueError(f"to_plain needs one descriptor of shape ({self.space.dim},), got "
                             f"{tuple(invariance.shape)}.")
        self.space.validate(invariance)
        plain = copy.deepcopy(self)
        for source, block in zip(self.blocks(), plain.blocks(), strict=True):
            if source.embed is None:
                continue
            z = source.embed(invariance.unsqueeze(0))  # (1, E)
            for name, module in list(block.named_modules()):
                if not isinstance(module, HyperConv2d):
                    continue
                out_chans, in_chans, kernel_size, _ = module.generator.kernel_shape
                conv = PlainConv2d(in_chans, out_chans, kernel_size, stride=module.stride, padding=module.padding)
                conv = conv.to(device=reference.device, dtype=reference.dtype)
                conv.weight.copy_(module.generator(z)[0])
                conv.weight.requires_grad_(module.generator.fc2.weight.requires_grad)
                conv.train(module.training)
                parent, _, attr = name.rpartition(".")
                setattr(block.get_submodule(parent) if parent else block, attr, conv)
            block.embed = None
        plain.conditioned = False
        return plain

    @torch.no_grad()
    def load_resnet_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Warm start from a plain (torchvision-layout) ResNet so the model reproduces it for every descriptor.

        Each generator's output weight becomes zero and its output bias the plain kernel; stem, BatchNorms (running
        statistics too) and (if shapes match) ``fc`` are copied; a ``conditioned=False`` model takes the kernels
        as they are. Keys are torchvision's (``layer1.0.downsample.0.weight``) or this class's own
        (``downsample.conv`` / ``downsample.bn``), so a plain run of this library loads too. Nothing is copied
        unless every entry fits. Load a local file with ``torch.load(path, weights_only=True)``.

        Raises:
            ValueError: Naming every entry of another shape (e.g. another depth, width or stem), every unexpected
                key and every missing entry.
        """
        own = self.state_dict()
        kernels: list[tuple[nn.Module, Tensor]] = []
        tensors: list[tuple[str, Tensor]] = []
        unexpected: list[str] = []
        mismatched: list[str] = []
        covered: set[str] = set()
        for key, value in state_dict.items():
            if key.startswith("fc.") and not isinstance(self.fc, nn.Linear):
                continue
            parts = key.split(".")
            if parts[0].startswith("layer") and parts[-1] == "weight" and _is_conv_key(parts):
                target = ".".join(parts[:-1]).replace("downsample.0", "downsample.conv")
                module = _submodule(self, target)
                if not isinstance(module, HyperConv2d | PlainConv2d):
                    unexpected.append(key)
                    continue
                shape = module.generator.kernel_shape if isinstance(module, HyperConv2d) else module.weight.shape
                covered.update(k for k in own if k.startswith(f"{target}."))
                if tuple(value.shape) != tuple(shape):
                    mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(shape)}")
                else:
                    kernels.append((module, value))
                continue
            target = key.replace("downsample.1", "downsample.bn")
            if target not in own:
                unexpected.append(key)
                continue
            covered.add(target)
            if own[target].shape != value.shape:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[target].shape)}")
            else:
                tensors.append((target, value))
        # Block embeddings only feed the (now zeroed) generator weights; everything else must have been given.
        missing = [k for k in own if k not in covered and ".embed." not in k and not k.startswith("fc.")]
        problems = [f"{len(names)} {what}: {names[:5]}{' ...' if len(names) > 5 else ''}" for what, names in (
            ("entries of another shape (given vs expected)", mismatched), ("unexpected keys", unexpected),
            ("entries the state dict lacks", missing)) if names]
        if problems:
            raise ValueError(f"load_resnet_state_dict: the weights do not fit this HyperResNet{self.depth} "
                             f"({self.in_chans} input channels, stem {tuple(self.conv1.weight.shape)}): "
                             + "; ".join(problems) + ". Nothing was loaded.")
        for module, value in kernels:
            if isinstance(module, HyperConv2d):
                module.generator.warm_start(value)
            else:
                module.weight.copy_(value)
        for target, value in tensors:
            own[target].copy_(value)


def _submodule(model: nn.Module, target: str) -> nn.Module | None:
    try:
        return model.get_submodule(target)
    except AttributeError:
        return None


def _is_conv_key(parts: list[str]) -> bool:
    """True for block conv kernels: ``layerX.Y.convZ.weight`` and ``layerX.Y.downsample.0.weight``."""
    return parts[-2].startswith("conv") or parts[-3:-1] == ["downsample", "0"]
