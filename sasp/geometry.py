"""Token grid <-> image pixels <-> SAM's input frame.

All size arithmetic runs on the host in float64, vectorised over rows, so that it reproduces
READ's Python-float expressions bit for bit (including their rounding: ``int(H * (d / min(H,
W)))`` can be ``d - 1`` for the short side, which crops one cell on each side).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ImageSizes = Union[Tensor, Sequence[Sequence[int]]]


def grid_shape(num_patches: int, grid_hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The (rows, cols) of the patch-token grid: explicit, or the square root of N_p."""
    if grid_hw is not None:
        rows, cols = (int(v) for v in grid_hw)
        if rows * cols != num_patches or rows < 1 or cols < 1:
            raise ValueError(f"grid_hw={tuple(grid_hw)} does not hold N_p={num_patches} patch tokens")
        return rows, cols
    side = math.isqrt(num_patches)
    if num_patches < 1 or side * side != num_patches:
        raise ValueError(
            f"N_p={num_patches} patch tokens is not a perfect square; pass grid_hw=(rows, cols)"
        )
    return side, side


def image_sizes(image_hw: ImageSizes, rows: int) -> Tensor:
    """Validate per-row image sizes; returns a CPU int64 tensor [rows, 2] of (H, W)."""
    return torch.from_numpy(host_sizes(image_hw, rows))


def host_sizes(image_hw: ImageSizes, rows: int) -> np.ndarray:
    """``image_sizes`` as a host array: int64 [rows, 2] of (H, W), validated."""
    if isinstance(image_hw, Tensor):
        t = image_hw.detach()
        hw = (t.double() if t.is_floating_point() else t.long()).cpu().numpy()
    else:
        hw = np.asarray(image_hw)
    if hw.ndim == 1 and hw.size == 2:
        hw = np.broadcast_to(hw, (rows, 2))
    if hw.ndim != 2 or hw.shape[-1] != 2 or hw.shape[0] != rows:
        raise ValueError(f"image_hw must have shape [{rows}, 2] (H, W per row), got {tuple(hw.shape)}")
    if hw.dtype.kind == "f":
        if not np.array_equal(hw, np.floor(hw)):
            raise ValueError("image_hw must hold whole pixel counts")
        if (np.abs(hw) >= 2**62).any():
            raise ValueError("image_hw holds a size too large for int64 arithmetic")
    elif hw.dtype.kind not in "iub":
        raise ValueError(f"image_hw must hold integer pixel counts, got dtype {hw.dtype}")
    hw = hw.astype(np.int64)
    if hw.size and hw.min() <= 0:
        r = int((hw <= 0).any(-1).argmax())
        raise ValueError(f"row {r}: image size {tuple(hw[r].tolist())} must be positive")
    return hw


def grid_padding(hw: Tensor, grid: Tuple[int, int], geometry: str) -> Tensor:
    """Signed padding (pad_h, pad_w) [M, 2] that maps a (gh, gw) grid onto each image.

    ``center_crop``: the grid is CLIP's centre crop of the image resized so that its shortest
    side fits; padding it by ``(int(H * scale) - gh) // 2`` with ``scale = max(gh / H, gw / W)``
    (``= gh / min(H, W)`` for square grids, READ's expression) extends it over the whole image.
    ``pad_square``: the grid covers the image padded to a square (LLaVA's expand-to-square);
    ``scale = min(gh / H, gw / W)`` and the negative padding ``-((gh - int(H * scale)) // 2)``
    crops the cells that fall on the padding (keeping at least one row and column for images
    thinner than a cell).
    """
    return torch.from_numpy(host_padding(hw.numpy(), grid, geometry))


def host_padding(hw: np.ndarray, grid, geometry: str) -> np.ndarray:
    """``grid_padding`` on a host int64 array [M, 2]; returns int64 [M, 2].

    ``grid`` may also be an array of G grids [G, 2]; the paddings are then [M, G, 2].
    """
    grids = np.asarray(grid)
    hwf = hw.astype(np.float64)[:, None] if grids.ndim == 2 else hw.astype(np.float64)
    if geometry == "center_crop":
        scale = (grids / hwf).max(-1, keepdims=True)
        pad = ((hwf * scale).astype(np.int64) - grids) // 2
    elif geometry == "pad_square":
        scale = (grids / hwf).min(-1, keepdims=True)
        pad = -((grids - np.maximum((hwf * scale).astype(np.int64), 1)) // 2)
    else:
        raise ValueError(f"unknown geometry {geometry!r}")
    if pad.min(initial=0) < 0 and (grids + 2 * pad).min() <= 0:  # READ's rounding can crop a one-cell grid away
        r, g = np.argwhere((grids + 2 * pad <= 0).any(-1).reshape(len(hw), -1))[0]
        rows, cols = grids.reshape(-1, 2)[g]
        raise ValueError(
            f"row {r}: the {rows}x{cols} grid covers no pixel of the {hw[r, 0]}x{hw[r, 1]} image "
            f"({geometry} padding {tuple(pad.reshape(len(hw), -1, 2)[r, g].tolist())}); "
            "use a larger grid or a smaller down_sample"
        )
    return pad


def sam_resize_shape(hw: Tensor, long_side: int = 1024) -> Tensor:
    """SAM's ResizeLongestSide target size (new_h, new_w) [M, 2] for image sizes [M, 2]."""
    hwf = hw.to(torch.float64)
    scale = long_side * 1.0 / hwf.max(-1, keepdim=True).values
    return (hwf * scale + 0.5).floor().long()


def to_sam_frame(points: Tensor, image_hw: ImageSizes, long_side: int = 1024) -> Tensor:
    """Map pixel points (x, y) [M, K, 2] of images (H, W) [M, 2] into SAM's input frame.

    SAM resizes the longest side to ``long_side``; coordinates scale by ``new_w / W`` and
    ``new_h / H`` (float32, as SAM's ``ResizeLongestSide.apply_coords``). Returns float32
    [M, K, 2]; differentiable with respect to floating ``points``.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape [M, K, 2], got {tuple(points.shape)}")
    hw = image_sizes(image_hw, points.shape[0])
    new = sam_resize_shape(hw, long_side).to(torch.float64)
    ratio = (new.flip(-1) / hw.flip(-1).to(torch.float64)).to(torch.float32)  # (new_w/W, new_h/H)
    return points.to(torch.float32) * ratio.to(points.device)[:, None, :]


def to_square_frame(points: Tensor, image_hw: ImageSizes, size: int = 1024) -> Tensor:
    """Map pixel points (x, y) [M, K, 2] of images (H, W) [M, 2] into SAM 2's input frame.

    SAM 2 resizes every image to ``size`` x ``size`` (no aspect ratio kept, no padding);
    coordinates scale by ``size / W`` and ``size / H`` (float32, as transformers'
    ``Sam2Processor`` scales float32 points). Returns float32 [M, K, 2]; differentiable with
    respect to floating ``points``.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape [M, K, 2], got {tuple(points.shape)}")
    hw = image_sizes(image_hw, points.shape[0]).to(torch.float64)
    ratio = (float(size) / hw.flip(-1)).to(torch.float32)  # (size / W, size / H)
    return points.to(torch.float32) * ratio.to(points.device)[:, None, :]
