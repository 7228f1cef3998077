"""Discrete-to-Continuous (DtoC): differentiable refinement of SasP's integer points.

The function (METHOD.md): S = resize_{HxW}(pad0(resize_{crop}(minmax(s)))) over the image,
p = softmax(S) over all H*W pixels, and each point (x, y) moves to the mean pixel coordinate
under the weights exp(-((gx - x)^2 + (gy - y)^2)) * p.

``dtoc`` computes it without ever building an H x W map:
- The softmax normaliser cancels in the ratio, so only exp(S_j) near the point matters.
- Both resizes are separable and linear, so S restricted to rows Y and columns X is
  A_Y @ minmax(s) @ B_X^T, where a row of A (B) composes the two 1-D bilinear interpolations
  (at most 4 non-zeros). Each window costs O(r * side^2) and O(r * side) memory, independent
  of H and W.
- Window bound: the square window of radius r keeps every pixel with Chebyshev distance <= r.
  A pixel outside has Euclidean distance d >= r + 1, Gaussian weight <= exp(-(r+1)^2), and
  since S lies in [0, 1] its softmax weight is at most e times that of the centre pixel (which
  has Gaussian weight 1). The 8k pixels of ring k move the mean by at most k + r each, so the
  window changes a refined coordinate by at most  e * sum_{k>r} 8k (k + r) exp(-k^2),
  = 1.4e-8 px for the default r = 4 (7e-5 px for r = 3). The same bound holds for the
  gradient relative to its size.
Gradients reach ``sim`` through S and its min-max normalisation; the integer points carry none.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_padding, grid_shape, image_sizes
from ._common import check_sim, minmax


def crop_shape(grid: Tuple[int, int], crop_size: int) -> Tuple[int, int]:
    """DtoC's intermediate map size: crop_size on the grid's longer side (336 x 336 for LLaVA)."""
    rows, cols = grid
    long = max(rows, cols)
    return max(1, crop_size * rows // long), max(1, crop_size * cols // long)


@functools.lru_cache(maxsize=64)
def _resize_matrix(n: int, mid: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[mid + 1, n]: row q holds the weights of F.interpolate (linear, align_corners=False)
    from n cells to output cell q of mid; the last row is zero (the zero padding)."""
    eye = torch.eye(n, dtype=torch.float64).view(1, n, n)
    mat = F.interpolate(eye, size=mid, mode="linear", align_corners=False)[0].T
    return F.pad(mat, (0, 0, 0, 1)).to(device=device, dtype=dtype)


def _axis_weights(pix: Tensor, size: Tensor, pad: Tensor, mid: int, n: int, dtype: torch.dtype) -> Tensor:
    """Rows of the composed 1-D interpolation operator along one axis, dense over n grid cells.

    For integer output pixels ``pix`` [M, K, R] along an axis of length ``size`` [M]: the value
    at a pixel is bilinear (align_corners=False) from the padded axis of length mid + 2 * pad
    (index arithmetic in float64, as F.interpolate does for float64), whose cell q - pad is
    row q - pad of ``_resize_matrix`` (zero in the padding; a negative pad crops). Returns
    weights [M, K, R, n] of ``dtype``.
    """
    padded = (mid + 2 * pad)[:, None, None]
    src = ((pix.to(torch.float64) + 0.5) * (padded / size[:, None, None].to(torch.float64)) - 0.5).clamp(min=0)
    i0 = torch.minimum(src.floor().long(), padded - 1)
    q = torch.stack([i0, torch.minimum(i0 + 1, padded - 1)], -1) - pad[:, None, None, None]
    q = torch.where((q >= 0) & (q < mid), q, mid)  # outside the map: the zero row
    l1 = (src - i0).to(dtype)
    rows = _resize_matrix(n, mid, pix.device, dtype)[q]  # [M, K, R, 2, n]
    return torch.lerp(rows[..., 0, :], rows[..., 1, :], l1[..., None])


def dtoc(
    sim: Tensor,
    image_hw: ImageSizes,
    points: Tensor,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Refine integer points with DtoC, differentiably with respect to ``sim``.

    Args:
        sim (Tensor): [M, N_p] similarity of each <SEG> with its image's patch tokens.
        image_hw (Tensor | list): [M, 2] original image size (H, W) of each row.
        points (Tensor): [M, K, 2] integer pixel points (x, y), e.g. from ``select_points``.
        cfg (SasPConfig): settings (crop_size, geometry, dtoc_radius).
        grid_hw (tuple): (rows, cols) of the token grid; default sqrt(N_p) x sqrt(N_p).

    Returns:
        Tensor: [M, K, 2] refined points (x, y) in pixels, float32 (float64 for float64 sim).
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != sim.shape[0]:
        raise ValueError(f"points must have shape [{sim.shape[0]}, K, 2], got {tuple(points.shape)}")
    m, dev = sim.shape[0], sim.device
    hw = image_sizes(image_hw, m)
    if m == 0 or points.shape[1] == 0:
        return torch.zeros(points.shape, dtype=torch.float32, device=dev) + 0 * sim.float().sum()
    return _dtoc(sim, hw, points, cfg, grid_shape(sim.shape[-1], grid_hw))


def _dtoc(sim: Tensor, hw: Tensor, points: Tensor, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """``dtoc`` on validated inputs (hw: CPU int64 [M, 2]; grid: (rows, cols))."""
    m, k, dev = sim.shape[0], points.shape[1], sim.device
    rows, cols = grid
    ch, cw = crop_shape(grid, cfg.crop_size)
    pad = grid_padding(hw, (ch, cw), cfg.geometry)
    geo = torch.cat([hw, pad]).to(dev)  # one transfer: sizes [M, 2] then pads [M, 2]
    size, pad = geo[:m], geo[m:]
    r = cfg.dtoc_radius
    off = torch.arange(-r, r + 1, device=dev)
    pts = points.to(dev).long()
    pix = pts.flip(-1)[..., None] + off  # [M, K, 2, R]: rows (y) then columns (x)
    inside = (pix >= 0) & (pix < size[:, None, :, None])
    pix = torch.minimum(pix.clamp(min=0), size[:, None, :, None] - 1)
    dt = torch.float64 if sim.dtype == torch.float64 else torch.float32  # float64 for gradcheck
    a = _axis_weights(pix[:, :, 0], size[:, 0], pad[:, 0], ch, rows, dt)  # [M, K, R, rows]
    b = _axis_weights(pix[:, :, 1], size[:, 1], pad[:, 1], cw, cols, dt)  # [M, K, R, cols]

    s = minmax(sim.to(dt)).view(m, rows, cols)
    n = off.numel()
    s_win = (a.reshape(m, k * n, rows) @ s).view(m, k, n, cols) @ b.transpose(-1, -2)  # S on the window

    d2 = (off.view(-1, 1) ** 2 + off.view(1, -1) ** 2).to(dt)
    logits = (s_win - d2).masked_fill(~(inside[:, :, 0, :, None] & inside[:, :, 1, None, :]), float("-inf"))
    p = torch.softmax(logits.flatten(2), -1).view_as(logits)
    offf = off.to(dt)
    shift = torch.stack([p.sum(-2) @ offf, p.sum(-1) @ offf], -1)  # (dx, dy)
    return pts.to(dt) + shift


def dtoc_ref(
    sim: Tensor,
    image_hw: ImageSizes,
    points: Tensor,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Literal reference of ``dtoc``: full H x W maps, one point at a time, in sim's dtype."""
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    m, k = points.shape[0], points.shape[1]
    hw = image_sizes(image_hw, m)
    out = []
    for row in range(m):
        H, W = (int(v) for v in hw[row])
        rows, cols = grid_shape(sim.shape[1], grid_hw)
        ch, cw = crop_shape((rows, cols), cfg.crop_size)
        # 1. full-resolution map S
        s = sim[row]
        lo, hi = s.min(), s.max()
        s = s * 0 if bool(hi == lo) else (s - lo) / (hi - lo)  # a constant map: flat, zero gradient
        s = F.interpolate(s.reshape(1, 1, rows, cols), (ch, cw), mode="bilinear", align_corners=False)
        if cfg.geometry == "center_crop":
            scale = max(ch / H, cw / W)  # = 336 / min(H, W) for a square grid
            pad_h, pad_w = (int(H * scale) - ch) // 2, (int(W * scale) - cw) // 2
        else:
            scale = min(ch / H, cw / W)
            pad_h, pad_w = -((ch - max(1, int(H * scale))) // 2), -((cw - max(1, int(W * scale))) // 2)
        s = F.pad(s, (pad_w, pad_w, pad_h, pad_h))
        S = F.interpolate(s, (H, W), mode="bilinear", align_corners=False)[0, 0]
        # 2. softmax over all pixels
        prob = torch.softmax(S.reshape(-1), 0)
        gy, gx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        gx = gx.reshape(-1).to(prob)
        gy = gy.reshape(-1).to(prob)
        # 3. each point: Gaussian-weighted mean of pixel coordinates under the softmax
        refined = []
        for x, y in points[row].tolist():
            weight = torch.exp(-((gx - x) ** 2 + (gy - y) ** 2)) * prob
            weight = weight / weight.sum()
            refined.append(torch.stack([(gx * weight).sum(), (gy * weight).sum()]))
        out.append(torch.stack(refined) if refined else prob.new_zeros(0, 2))
    return torch.stack(out) if out else sim.new_zeros(0, k, 2)
