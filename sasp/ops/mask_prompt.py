"""The similarity map as SAM's dense mask prompt (UGround's "mask as prompt").

For each <SEG> the map over the image is the one DtoC uses (METHOD.md, DtoC step 1): the
min-max normalised similarity on the token grid, bilinearly resized to the crop size, padded
(zeros) by the grid's position on the image (``sasp.geometry.grid_padding``: centre crop or
pad-to-square) and resized to the image (H x W). It is then placed in SAM's input frame and
resized to the prompt encoder's low-resolution mask input (``mask_size``: 256 for a 1024 px
SAM, 4 x the image-embedding side in general):

- ``frame="resize_longest"`` (segment_anything's ``ResizeLongestSide``, transformers'
  ``SamProcessor``): resize to (int(H s + 0.5), int(W s + 0.5)) with s = sam_size / max(H, W),
  zero-pad right and bottom to sam_size x sam_size;
- ``frame="square"`` (SAM 2, transformers' ``Sam2Processor``): resize to sam_size x sam_size.

Every resize is ``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing
(as DtoC's map and SAM's own ``postprocess_masks``). Values: with m in [0, 1] the map,
the prompt is lo + (hi - lo) m with (lo, hi) = ``cfg.mask_range`` (default (-8, 8): SAM's mask
input is its previous low-resolution *logits*, whose decision boundary is 0; see
``SasPConfig``); padding and everything outside the image get lo. A constant similarity row
has m = 0 everywhere (as in DtoC) and a zero gradient.

``similarity_mask_prompt`` never builds an H x W map: every step is linear and separable, so
the prompt of a row is lo + (hi - lo) A_Y m A_X^T, where A_Y [mask_size, rows] and A_X
[mask_size, cols] compose the 1-D steps of each axis. They depend only on the image size and
the settings, are built once per distinct size (by running the steps on unit impulses, float64)
and cached. ``similarity_mask_prompt_ref`` is the literal twin: full-resolution map, one row at
a time, in sim's dtype.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes, image_sizes
from ._common import check_sim, eager
from .dtoc import crop_shape

MASK_FRAMES = ("resize_longest", "square")
"""How SAM's input frame holds the image: ResizeLongestSide + padding (SAM), or a square
resize (SAM 2)."""

__all__ = ["MASK_FRAMES", "similarity_mask_prompt", "similarity_mask_prompt_ref"]


def _check(sam_size: int, mask_size: int, frame: str) -> None:
    if int(sam_size) < 1 or int(mask_size) < 1:
        raise ValueError(f"sam_size and mask_size must be >= 1, got {sam_size} and {mask_size}")
    if frame not in MASK_FRAMES:
        raise ValueError(f"frame must be one of {MASK_FRAMES}, got {frame!r}")


def _resize(x: Tensor, n: int) -> Tensor:
    """1-D bilinear resize (align_corners=False) of signals [B, 1, L, 1] along L."""
    return F.interpolate(x, size=(n, 1), mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=1024)
def _operators(
    h: int, w: int, grid: Tuple[int, int], crop_size: int, geometry: str, sam_size: int, mask_size: int, frame: str
) -> Tuple[np.ndarray, np.ndarray]:
    """A_Y [mask_size, rows] and A_X [mask_size, cols] (float64) of one image size."""
    mid = crop_shape(grid, crop_size)
    pad = host_padding(np.array([[h, w]], dtype=np.int64), mid, geometry)[0]
    if frame == "resize_longest":
        scale = sam_size * 1.0 / max(h, w)
        new = (int(h * scale + 0.5), int(w * scale + 0.5))
    else:
        new = (sam_size, sam_size)
    ops = []
    for axis, (n, size) in enumerate(zip(grid, (h, w))):
        x = torch.eye(n, dtype=torch.float64).view(n, 1, n, 1)  # one unit impulse per grid line
        x = F.pad(_resize(x, mid[axis]), (0, 0, int(pad[axis]), int(pad[axis])))
        x = _resize(_resize(x, size), new[axis])  # over the image, then in SAM's frame
        x = _resize(F.pad(x, (0, 0, 0, sam_size - new[axis])), mask_size)
        ops.append(np.ascontiguousarray(x[:, 0, :, 0].T.numpy()))
    return ops[0], ops[1]


@eager  # host-side tables: torch.compile runs this eagerly
def _stacked(hw: np.ndarray, grid: Tuple[int, int], cfg: SasPConfig, sam_size: int, mask_size: int, frame: str):
    """Per distinct image size the operators, stacked: ([U, mask, rows], [U, mask, cols],
    the row -> size index [M])."""
    uniq, inv = np.unique(hw, axis=0, return_inverse=True)
    ops = [_operators(int(h), int(w), grid, cfg.crop_size, cfg.geometry, sam_size, mask_size, frame) for h, w in uniq]
    return np.stack([a for a, _ in ops]), np.stack([b for _, b in ops]), inv.reshape(-1)


def similarity_mask_prompt(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
    sam_size: int = 1024,
    mask_size: int = 256,
    frame: str = "resize_longest",
) -> Tensor:
    """The similarity map of every <SEG> as SAM's dense mask prompt (``masks=``).

    Args:
        sim (Tensor): [M, N_p] similarity of each <SEG> with its image's patch tokens.
        image_hw (Tensor | list): [M, 2] original image size (H, W) of each row.
        cfg (SasPConfig): geometry, crop_size, mask_range (and check_finite).
        grid_hw (tuple): (rows, cols) of the token grid; default sqrt(N_p) x sqrt(N_p).
        sam_size (int): SAM's square input side (1024).
        mask_size (int): the prompt encoder's mask input side (256 = 4 x the embedding side).
        frame (str): "resize_longest" (SAM) or "square" (SAM 2), see the module docstring.

    Returns:
        Tensor: [M, 1, mask_size, mask_size], float32 (float64 for float64 sim), differentiable
        with respect to ``sim`` (plain autograd: matrix products with constant operators).
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    _check(sam_size, mask_size, frame)
    m = sim.shape[0]
    hw = host_sizes(image_hw, m)
    rows, cols = grid_shape(sim.shape[1], grid_hw)
    dt = torch.float64 if sim.dtype == torch.float64 else torch.float32
    x = sim.to(dt)
    if m == 0:
        return x.new_zeros(0, 1, int(mask_size), int(mask_size)) + 0 * x.sum()
    ay, ax, inv = _stacked(hw, (rows, cols), cfg, int(sam_size), int(mask_size), frame)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    span = hi - lo
    varies = span > 0
    s = (x - lo) / torch.where(varies, span, torch.ones_like(span)) * varies  # constant row: 0, no gradient
    index = torch.from_numpy(inv).to(x.device)
    ay = torch.from_numpy(ay).to(x.device, dt)[index]
    ax = torch.from_numpy(ax).to(x.device, dt)[index]
    low = ay @ s.view(m, rows, cols) @ ax.transpose(1, 2)
    v_lo, v_hi = cfg.mask_range
    return (v_lo + (v_hi - v_lo) * low).unsqueeze(1)


def similarity_mask_prompt_ref(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
    sam_size: int = 1024,
    mask_size: int = 256,
    frame: str = "resize_longest",
) -> Tensor:
    """Literal reference of ``similarity_mask_prompt``: the full H x W map of each row, placed
    in SAM's frame, then resized to the mask input; one row at a time, in sim's dtype."""
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    _check(sam_size, mask_size, frame)
    hw = image_sizes(image_hw, sim.shape[0])
    rows, cols = grid_shape(sim.shape[1], grid_hw)
    ch, cw = crop_shape((rows, cols), cfg.crop_size)
    v_lo, v_hi = cfg.mask_range
    out = []
    for row in range(sim.shape[0]):
        H, W = (int(v) for v in hw[row])
        s = sim[row]
        lo, hi = s.min(), s.max()
        s = s * 0 if bool(hi == lo) else (s - lo) / (hi - lo)
        s = F.interpolate(s.reshape(1, 1, rows, cols), (ch, cw), mode="bilinear", align_corners=False)
        if cfg.geometry == "center_crop":
            scale = max(ch / H, cw / W)
            pad_h, pad_w = (int(H * scale) - ch) // 2, (int(W * scale) - cw) // 2
        else:
            scale = min(ch / H, cw / W)
            pad_h, pad_w = -((ch - max(1, int(H * scale))) // 2), -((cw - max(1, int(W * scale))) // 2)
        s = F.pad(s, (pad_w, pad_w, pad_h, pad_h))
        full = F.interpolate(s, (H, W), mode="bilinear", align_corners=False)  # the map over the image
        if frame == "resize_longest":
            scale = sam_size * 1.0 / max(H, W)
            nh, nw = int(H * scale + 0.5), int(W * scale + 0.5)
            framed = F.interpolate(full, (nh, nw), mode="bilinear", align_corners=False)
            framed = F.pad(framed, (0, sam_size - nw, 0, sam_size - nh))
        else:
            framed = F.interpolate(full, (sam_size, sam_size), mode="bilinear", align_corners=False)
        low = F.interpolate(framed, (mask_size, mask_size), mode="bilinear", align_corners=False)
        out.append(v_lo + (v_hi - v_lo) * low[0])
    if not out:
        return sim.new_zeros(0, 1, mask_size, mask_size)
    return torch.stack(out)
