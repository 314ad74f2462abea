"""The embedded procedural image dataset: one shape on a textured background, with known factors.

Item ``i`` of ``SyntheticShapes(seed=s)`` is a pure function of ``(s, i)``: its random numbers come from a
counter-based hash (splitmix64 of ``(seed, stream, i, k)``), so any subset renders the same pixels, in any
order, in any worker, with no files. Rendering is vectorised over a batch of items (one ``grid_sample``).

Factors of an item:
    - ``shape``: one of :data:`SHAPES`. Four silhouettes are mirror-symmetric (square, circle, triangle,
      cross) and four are chiral polyomino glyphs ("L", "F", "P", "S") whose mirror image differs.
    - ``hue`` in ``[0, 1)`` and ``hue_bin``, one of 6 bins centred on red, yellow, green, cyan, blue, magenta.
    - ``x``, ``y`` in ``[0, 1]``: the object's centre, from its leftmost (topmost) to its rightmost
      (bottommost) allowed position; the centre ranges over the middle 40% of the image side.
    - ``scale``: the object's half-extent as a fraction of the image's half-side.
    - ``rotation`` in degrees, within ``±ROTATION_RANGE`` (30).
    - ``mirrored``: whether the object is reflected left-right in its own frame before rotation.

Design of the mirror task (a pilot found a mirror task at chance when shapes were freely rotated):
    - Rotation is limited to ±30°, so a mirrored object is not a rotated copy of an unmirrored one that the
      data also contains: mirroring is a horizontal-flip signature. Exactly: a mirrored object at rotation
      ``θ`` and centre ``x`` is the horizontal flip of the unmirrored object at ``-θ`` and ``1 - x`` (on the
      flipped background); the factor distributions are symmetric, so an encoder invariant to horizontal flips
      cannot tell mirrored from unmirrored, and a flip-sensitive one can.
    - Every object is lit from the right of its own frame (its value falls linearly to 50% on its left edge),
      so mirroring is visible on the symmetric silhouettes too (the light then comes from the left) and the
      mirror label is never noise. On chiral glyphs the silhouette flips as well. The shading survives the
      appearance augmentations (jitter, grayscale and blur keep a left/right intensity order), so the task
      asks for flip sensitivity and nothing else.

Downstream tasks (:data:`TASKS`) and the invariances they want: ``shape`` (classification; wants crop and
appearance invariance), ``color`` (6 hue bins; wants appearance sensitivity), ``position`` (x, y regression;
wants crop sensitivity), ``mirror`` (binary; wants flip sensitivity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as tF
from torch import Tensor
from torch.utils.data import Dataset, Subset

SHAPES = ("square", "circle", "triangle", "cross", "L", "F", "P", "S")
CHIRAL_SHAPES = frozenset({"L", "F", "P", "S"})
NUM_HUE_BINS = 6
ROTATION_RANGE = 30.0
SCALE_RANGE = (0.34, 0.5)
POSITION_SPAN = 0.4
SHADING = 0.5
# Backgrounds are near-grey with a faint smooth field and fine noise. A strongly tinted, strongly patterned
# background is a per-image fingerprint that survives crops and colour jitter: contrastive learning then matches
# views by background and ignores the object (measured: background colour linearly decodable at R² 0.77-0.97
# from a plain SimCLR encoder, shape near chance, with saturation up to 0.35, value 0.2-0.8 and a 0.15 field).
BG_SATURATION = 0.1
BG_VALUE = (0.35, 0.6)
BG_SMOOTH = 0.05
BG_NOISE = 0.08
# The texture (smooth field + fine noise) comes from a pool shared by all items. A texture of the item's own is a
# fingerprint that views without crops share pixel for pixel: with crop and flip off, SimCLR then matches views by
# the noise and learns nothing of the object (measured with per-item textures: final loss 1.1, position R² 0.06).
BG_TEXTURES = 16
#: Downstream tasks and their kind.
TASKS = {
    "shape": "classification",
    "color": "classification",
    "position": "regression",
    "mirror": "classification",
}

# Chiral glyphs on cell grids ("#" is filled); each is centred in the canonical square.
_GLYPHS = {
    "L": ("#.", "#.", "##"),
    "F": (".##", "##.", ".#."),
    "P": ("##", "##", "#."),
    "S": (".##", "##."),
}
_MASK_RESOLUTION = 64
#: Item indices: a sequence, array or tensor of ints; ``None`` means every item.
Indices = Sequence[int] | np.ndarray | Tensor | None
# Hash streams: factors, background texture (per texture of the pool), texture choice (per item).
_FACTOR_STREAM, _TEXTURE_STREAM, _TEXTURE_CHOICE_STREAM = 1, 2, 3
_FACTOR_KEYS = ("shape", "hue", "saturation", "value", "x", "y", "scale", "rotation", "mirrored",
                "bg_hue", "bg_saturation", "bg_value")
_COARSE = 4  # side of the low-frequency background field


def _hash_uniforms(seed: int, stream: int, indices: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniforms in ``[0, 1)`` per index from a splitmix64 hash of ``(seed, stream, index, k)``.

    Shape: (N,) -> (N, count).
    """
    key = (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF
    counters = indices.astype(np.uint64)[:, None] * np.uint64(count) + np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = counters + np.uint64(key) + np.uint64(1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """RGB in ``[0, 1]`` from HSV (all in ``[0, 1]``). Shape: (N,) x 3 -> (N, 3)."""
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype)).remainder(6)  # (N, 3)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return value[:, None] - (value * saturation)[:, None] * ramp


def hue_bin(hue: np.ndarray | Tensor) -> np.ndarray:
    """Hue bin in ``0..5``, bins centred on red, yellow, green, cyan, blue, magenta."""
    return (np.floor(np.asarray(hue) * NUM_HUE_BINS + 0.5).astype(np.int64)) % NUM_HUE_BINS


def shape_masks(resolution: int = _MASK_RESOLUTION) -> Tensor:
    """Canonical silhouettes of :data:`SHAPES` on ``[-1, 1]^2`` (y down). Shape: (S, 1, R, R), values 0/1."""
    centres = (torch.arange(resolution, dtype=torch.float64) * 2 + 1 - resolution) / resolution
    y, x = torch.meshgrid(centres, centres, indexing="ij")  # (R, R)
    masks = {
        "square": (x.abs() <= 0.8) & (y.abs() <= 0.8),
        "circle": x**2 + y**2 <= 0.9**2,
        "triangle": (y <= 0.75) & (x.abs() <= 0.9 * (y + 0.85) / 1.6),
        "cross": ((x.abs() <= 0.3) & (y.abs() <= 0.9)) | ((y.abs() <= 0.3) & (x.abs() <= 0.9)),
    }
    for name, rows in _GLYPHS.items():
        cells = torch.tensor([[c == "#" for c in row] for row in rows])  # (rows, cols)
        cell = 1.8 / max(cells.shape)
        col = torch.floor((x + cell * cells.shape[1] / 2) / cell).long()
        row = torch.floor((y + cell * cells.shape[0] / 2) / cell).long()
        inside = (col >= 0) & (col < cells.shape[1]) & (row >= 0) & (row < cells.shape[0])
        masks[name] = inside & cells[row.clamp(0, cells.shape[0] - 1), col.clamp(0, cells.shape[1] - 1)]
    return torch.stack([masks[name] for name in SHAPES]).to(torch.float32)[:, None]


_MASKS = shape_masks()


def render(factors: dict[str, Tensor], background: Tensor) -> Tensor:
    """Draw the objects described by ``factors`` over ``background``.

    Args:
        factors: ``shape`` (long), ``hue``, ``saturation``, ``value``, ``x``, ``y``, ``scale``, ``rotation``
            (degrees) and ``mirrored`` (bool), each of shape (B,).
        background: Float RGB in ``[0, 1]``. Shape: (B, 3, H, W).

    Returns:
        Float RGB in ``[0, 1]``. Shape: (B, 3, H, W).
    """
    size = background.shape[-1]
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1 - size) / size  # pixel centres, symmetric
    cx = ((2 * factors["x"] - 1) * POSITION_SPAN).to(torch.float32)[:, None, None]
    cy = ((2 * factors["y"] - 1) * POSITION_SPAN).to(torch.float32)[:, None, None]
    dx = centres[None, None, :] - cx  # (B, 1, W)
    dy = centres[None, :, None] - cy  # (B, H, 1)
    theta = torch.deg2rad(factors["rotation"].to(torch.float32))[:, None, None]
    cos, sin = torch.cos(theta), torch.sin(theta)
    scale = factors["scale"].to(torch.float32)[:, None, None]
    # Object frame: rotate back by theta, divide by the half-extent, then un-mirror.
    u = (cos * dx + sin * dy) / scale  # (B, H, W)
    v = (-sin * dx + cos * dy) / scale  # (B, H, W)
    u = torch.where(factors["mirrored"].bool()[:, None, None], -u, u)
    grid = torch.stack([u, v], dim=-1)  # (B, H, W, 2)
    alpha = tF.grid_sample(_MASKS[factors["shape"].long()], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # (B, 1, H, W)
    shade = 1 - SHADING * (1 - u.clamp(-1, 1)) / 2  # (B, H, W): 1 on the object's right, 0.5 on its left
    colour = hsv_to_rgb(factors["hue"].float(), factors["saturation"].float(), factors["value"].float())
    foreground = colour[:, :, None, None] * shade[:, None]  # (B, 3, H, W)
    return background * (1 - alpha) + foreground * alpha


class SyntheticShapes(Dataset):
    """Procedural shapes on textured backgrounds with known factors; item ``i`` depends only on ``(seed, i)``.

    Args:
        size: Number of items.
        image_size: Side of the square images in pixels.
        seed: Dataset seed.
        cache: Keep rendered images (rendered lazily in chunks of 512); about ``3 * image_size^2`` bytes per
            item. Without it every item is rendered on access.

    Raises:
        ValueError: On a non-positive size or an image smaller than 8 px.
    """

    chunk = 512

    def __init__(self, size: int = 4096, image_size: int = 32, seed: int = 0, cache: bool = True) -> None:
        if int(size) < 1 or int(image_size) < 8:
            raise ValueError(
                f"SyntheticShapes needs size >= 1 and image_size >= 8, got {size}, {image_size}."
            )
        self.size = int(size)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.cache = bool(cache)
        self._chunks: dict[int, Tensor] = {}
        self.classes = SHAPES

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"SyntheticShapes(size={self.size}, image_size={self.image_size}, seed={self.seed})"

    def _indices(self, indices: Sequence[int] | np.ndarray | Tensor | None) -> np.ndarray:
        if indices is None:
            return np.arange(self.size, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.size):
            raise IndexError(f"{self!r}: indices must lie in [0, {self.size}).")
        return indices

    def raw_factors(self, indices: Indices = None) -> dict[str, np.ndarray]:
        """Every drawn quantity, including colour saturation/value and background colour. Shape: (N,) each."""
        idx = self._indices(indices)
        u = _hash_uniforms(self.seed, _FACTOR_STREAM, idx, len(_FACTOR_KEYS))
        d = dict(zip(_FACTOR_KEYS, u.T, strict=True))
        return {
            "shape": np.minimum((d["shape"] * len(SHAPES)).astype(np.int64), len(SHAPES) - 1),
            "hue": d["hue"],
            "hue_bin": hue_bin(d["hue"]),
            "saturation": 0.55 + 0.45 * d["saturation"],
            "value": 0.65 + 0.35 * d["value"],
            "x": d["x"],
            "y": d["y"],
            "scale": SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * d["scale"],
            "rotation": ROTATION_RANGE * (2 * d["rotation"] - 1),
            "mirrored": d["mirrored"] < 0.5,
            "bg_hue": d["bg_hue"],
            "bg_saturation": BG_SATURATION * d["bg_saturation"],
            "bg_value": BG_VALUE[0] + (BG_VALUE[1] - BG_VALUE[0]) * d["bg_value"],
        }

    def factors(self, indices: Indices = None) -> dict[str, np.ndarray]:
        """The known factors of items (all items by default): ``shape``, ``hue``, ``hue_bin``, ``x``, ``y``,
        ``scale``, ``rotation``, ``mirrored``. Shape: (N,) each."""
        raw = self.raw_factors(indices)
        return {k: raw[k] for k in ("shape", "hue", "hue_bin", "x", "y", "scale", "rotation", "mirrored")}

    def texture_ids(self, indices: Indices = None) -> np.ndarray:
        """Which texture of the pool each item's background uses. Shape: (N,) int64 in ``[0, BG_TEXTURES)``."""
        u = _hash_uniforms(self.seed, _TEXTURE_CHOICE_STREAM, self._indices(indices), 1)[:, 0]
        return np.minimum((u * BG_TEXTURES).astype(np.int64), BG_TEXTURES - 1)

    def backgrounds(self, indices: Indices = None) -> Tensor:
        """Textured backgrounds: a tinted colour, plus a smooth random field and fine noise from a pool of
        :data:`BG_TEXTURES` textures. Shape: (N, 3, H, W)."""
        idx = self._indices(indices)
        raw = self.raw_factors(idx)
        size = self.image_size
        pool = np.arange(BG_TEXTURES, dtype=np.int64)
        u = torch.from_numpy(_hash_uniforms(self.seed, _TEXTURE_STREAM, pool, 3 * _COARSE**2 + size * size))
        u = u.to(torch.float32) * 2 - 1
        coarse = u[:, : 3 * _COARSE**2].reshape(-1, 3, _COARSE, _COARSE)  # (T, 3, 4, 4)
        fine = u[:, 3 * _COARSE**2:].reshape(-1, 1, size, size)  # (T, 1, H, W)
        smooth = tF.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # (T, 3, H, W)
        base = hsv_to_rgb(*(torch.from_numpy(raw[f"bg_{k}"]).float() for k in ("hue", "saturation", "value")))
        texture = torch.from_numpy(self.texture_ids(idx))  # (N,)
        return (base[:, :, None, None] + BG_SMOOTH * smooth[texture] + BG_NOISE * fine[texture]).clamp(0, 1)

    def render(self, indices: Indices = None) -> Tensor:
        """Render items without the cache. Shape: (N, 3, H, W), uint8."""
        idx = self._indices(indices)
        raw = self.raw_factors(idx)
        names = ("shape", "hue", "saturation", "value", "x", "y", "scale", "rotation", "mirrored")
        factors = {k: torch.from_numpy(np.asarray(raw[k])) for k in names}
        images = render(factors, self.backgrounds(idx))
        return images.mul(255).round_().to(torch.uint8)

    def images(self, indices: Indices = None) -> Tensor:
        """Images of items (through the cache when enabled). Shape: (N, 3, H, W), uint8."""
        idx = self._indices(indices)
        if not self.cache:
            return self.render(idx)
        out = torch.empty(len(idx), 3, self.image_size, self.image_size, dtype=torch.uint8)
        chunk_ids = idx // self.chunk
        for chunk_id in np.unique(chunk_ids):
            chunk_id = int(chunk_id)
            if chunk_id not in self._chunks:
                start = chunk_id * self.chunk
                self._chunks[chunk_id] = self.render(np.arange(start, min(start + self.chunk, self.size)))
            where = np.nonzero(chunk_ids == chunk_id)[0]
            out[torch.from_numpy(where)] = self._chunks[chunk_id][torch.from_numpy(idx[where] % self.chunk)]
        return out

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, float | int]]:
        """Image (3, H, W) uint8 and its factors as Python numbers."""
        index = int(index)
        if index < 0:
            index += self.size
        image = self.images([index])[0]
        targets = {k: v[0].item() for k, v in self.factors([index]).items()}
        targets["mirrored"] = int(targets["mirrored"])
        return image, targets


def task_targets(dataset: SyntheticShapes | Subset, task: str) -> tuple[Tensor, str, int]:
    """Targets of a downstream task for every item of a :class:`SyntheticShapes` (or a ``Subset`` of one).

    Returns:
        ``(targets, kind, num_outputs)``: class ids (N,) long with ``kind="classification"`` and
        ``num_outputs`` classes, or values (N, 2) float with ``kind="regression"`` for ``position``.

    Raises:
        ValueError: On an unknown task or a dataset that is not (a subset of) :class:`SyntheticShapes`.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown synthetic task {task!r}; expected one of {tuple(TASKS)}.")
    indices = None
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices) if indices is None else np.asarray(dataset.indices)[indices]
        dataset = dataset.dataset
    if not isinstance(dataset, SyntheticShapes):
        raise ValueError(f"task_targets needs a SyntheticShapes dataset, got {type(dataset).__name__}.")
    f = dataset.factors(indices)
    if task == "shape":
        return torch.from_numpy(f["shape"]), "classification", len(SHAPES)
    if task == "color":
        return torch.from_numpy(f["hue_bin"]), "classification", NUM_HUE_BINS
    if task == "mirror":
        return torch.from_numpy(f["mirrored"].astype(np.int64)), "classification", 2
    position = np.stack([f["x"], f["y"]], axis=1).astype(np.float32)  # (N, 2)
    return torch.from_numpy(position), "regression", 2


__all__ = [
    "CHIRAL_SHAPES",
    "NUM_HUE_BINS",
    "ROTATION_RANGE",
    "SHAPES",
    "TASKS",
    "SyntheticShapes",
    "hsv_to_rgb",
    "hue_bin",
    "render",
    "shape_masks",
    "task_targets",
]
