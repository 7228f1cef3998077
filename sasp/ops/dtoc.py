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

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_padding, grid_shape, image_sizes
from ._common import check_sim, eager, minmax


def crop_shape(grid: Tuple[int, int], crop_size: int) -> Tuple[int, int]:
    """DtoC's intermediate map size: crop_size on the grid's longer side (336 x 336 for LLaVA)."""
    rows, cols = grid
    long = max(rows, cols)
    return max(1, crop_size * rows // long), max(1, crop_size * cols // long)


def _axis_taps(pix: np.ndarray, size: np.ndarray, pad: np.ndarray, mid: np.ndarray, n: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The composed 1-D interpolation along each axis, as 4 taps (grid cell, weight) per pixel.

    For integer output pixels ``pix`` [M, K, A, R] (inside the image) along A axes of lengths
    ``size`` [M, A]: the value at a pixel is linear (align_corners=False) from the padded axis
    of length mid + 2 * pad, whose cell q is linear from the n grid cells at q - pad (zero in
    the padding; a negative pad crops); ``mid`` and ``n`` are [A]. Float64 arithmetic, as
    F.interpolate computes for float64. Returns cells [M, K, A, R, 4] int64 and weights
    [M, K, A, R, 4] float64.
    """
    mid, n = mid[:, None, None], n[:, None, None]  # [A, 1, 1]: broadcast against [M, K, A, R, 1]
    padded = (mid + 2 * pad[:, None, :, None, None])
    src = np.maximum((pix[..., None] + 0.5) * (padded / size[:, None, :, None, None]) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), padded - 1)
    l1 = src - i0
    q = np.concatenate([i0, np.minimum(i0 + 1, padded - 1)], -1) - pad[:, None, :, None, None]
    w1 = np.concatenate([1 - l1, l1], -1) * ((q >= 0) & (q < mid))  # zero in the padding
    src2 = np.maximum((np.clip(q, 0, mid - 1) + 0.5) * (n / mid) - 0.5, 0.0)
    j0 = np.minimum(np.floor(src2).astype(np.int64), n - 1)
    l2 = src2 - j0
    return np.concatenate([j0, np.minimum(j0 + 1, n - 1)], -1), np.concatenate([w1 * (1 - l2), w1 * l2], -1)


@eager  # host-side, non-differentiable: torch.compile runs it eagerly
def _window_operators(hw: Tensor, points: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]):
    """Host-side, non-differentiable part of DtoC for integer points [M, K, 2] (x, y): the
    row and column interpolation taps of each window (cells and weights [M, K, 2, R, 4], see
    ``_axis_taps``) and the logit bias [M, K, R, R] (-d^2 inside the image, -inf outside)."""
    pad = grid_padding(hw, crop_shape(grid, cfg.crop_size), cfg.geometry).numpy()
    size = hw.numpy()
    off = np.arange(-cfg.dtoc_radius, cfg.dtoc_radius + 1)
    pix = points[..., ::-1, None] + off  # [M, K, 2, R]: rows (y) then columns (x)
    inside = (pix >= 0) & (pix < size[:, None, :, None])
    pix = np.minimum(np.maximum(pix, 0), size[:, None, :, None] - 1)
    d2 = off[:, None] ** 2 + off[None, :] ** 2
    bias = np.where(inside[:, :, 0, :, None] & inside[:, :, 1, None, :], -d2, -np.inf)
    cells, weights = _axis_taps(pix, size, pad, np.array(crop_shape(grid, cfg.crop_size)), np.array(grid))
    return cells, weights, bias


def _dense(cells: np.ndarray, weights: np.ndarray, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Scatter 4 taps per pixel into dense operator rows [..., n] on the device."""
    w = torch.from_numpy(weights).to(device, dtype)
    return w.new_zeros(weights.shape[:-1] + (n,)).scatter_add_(-1, torch.from_numpy(cells).to(device), w)


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
    """``dtoc`` on validated inputs (hw: CPU int64 [M, 2]; grid: (rows, cols)).

    The window taps are computed on the host (one transfer of the points down if they live
    on a device, five small ones up); only the dense operators, S on the windows, the softmax and the mean offsets run in
    torch, so autograd sees a handful of ops whatever K, H and W are.
    """
    m, k, dev = sim.shape[0], points.shape[1], sim.device
    rows, cols = grid
    pts = points.detach().to("cpu", torch.int64).numpy()
    dt = torch.float64 if sim.dtype == torch.float64 else torch.float32  # float64 for gradcheck
    cells, weights, bias = _window_operators(hw, pts, cfg, grid)
    ab = _dense(cells, weights, max(rows, cols), dev, dt)  # [M, K, 2, R, max(rows, cols)]
    a, b = ab[:, :, 0, :, :rows], ab[:, :, 1, :, :cols]  # row and column operators of each window
    bias = torch.from_numpy(bias).to(dev, dt)
    n = a.shape[2]

    s = minmax(sim.to(dt)).view(m, rows, cols)
    s_win = (a.reshape(m, k * n, rows) @ s).view(m, k, n, cols) @ b.transpose(-1, -2)  # S on the windows
    p = torch.softmax((s_win + bias).view(m, k, n * n), -1).view(m, k, n, n)
    off = torch.arange(-cfg.dtoc_radius, cfg.dtoc_radius + 1, device=dev, dtype=dt)
    shift = torch.stack([p.sum(-2) @ off, p.sum(-1) @ off], -1)  # (dx, dy)
    return torch.from_numpy(pts).to(dev, dt) + shift


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
