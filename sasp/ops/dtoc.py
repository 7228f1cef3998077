"""Discrete-to-Continuous (DtoC): differentiable refinement of SasP's integer points.

The function (METHOD.md): S = resize_{HxW}(pad0(resize_{crop}(minmax(s)))) over the image,
p = softmax(S) over all H*W pixels, and each point (x, y) moves to the mean pixel coordinate
under the weights exp(-((gx - x)^2 + (gy - y)^2)) * p.

``dtoc`` computes it without ever building an H x W map:
- The softmax normaliser cancels in the ratio, so only exp(S_j) near the point matters.
- Both resizes are separable and linear, so S restricted to rows Y and columns X is
  A_Y @ minmax(s) @ A_X^T, where a row of A composes the two 1-D bilinear interpolations (at
  most 4 non-zeros). A window's rows reach only L consecutive grid rows (L is about 3 when
  the image is larger than the token grid), so each window costs O(r^2 L) and O(r L + L^2)
  memory, independent of H and W.
- Window bound: the square window of radius r keeps every pixel with Chebyshev distance <= r.
  A pixel outside has Euclidean distance d >= r + 1, Gaussian weight <= exp(-(r+1)^2), and
  since S lies in [0, 1] its softmax weight is at most e times that of the centre pixel (which
  has Gaussian weight 1). The 8k pixels of ring k move the mean by at most k + r each, so the
  window changes a refined coordinate by at most  e * sum_{k>r} 8k (k + r) exp(-k^2),
  = 1.4e-8 px for the default r = 4 (7e-5 px for r = 3). The gradient's error has the same
  absolute bound (about 1e-11 for r = 4); relative to a gradient that is itself tiny (a point
  on a flat stretch of S) it can be larger.
Gradients reach ``sim`` through S and its min-max normalisation; the integer points carry none.
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


def crop_shape(grid: Tuple[int, int], crop_size: int) -> Tuple[int, int]:
    """DtoC's intermediate map size: crop_size on the grid's longer side (336 x 336 for LLaVA)."""
    rows, cols = grid
    long = max(rows, cols)
    return max(1, crop_size * rows // long), max(1, crop_size * cols // long)


# the two taps of a linear interpolation (floor, floor + 1) and their weights w0 + w1 * frac,
# on leading axes so that the pixel axes stay innermost
_TAP = np.array([0, 1]).reshape(2, 1, 1)
_W0, _W1 = np.array([1.0, 0.0]).reshape(2, 1, 1), np.array([-1.0, 1.0]).reshape(2, 1, 1)


@functools.lru_cache(maxsize=64)
def _crop_taps(grid: Tuple[int, int], mid: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The linear resize (align_corners=False) of the grid's rows to mid[0] samples, then of its
    columns to mid[1]: the 2 taps (grid cells, weights [2, mid[0] + mid[1]]) of every sample,
    in float64 as F.interpolate computes."""
    size = np.concatenate([np.full(mid[0], mid[0]), np.full(mid[1], mid[1])])
    n = np.concatenate([np.full(mid[0], grid[0]), np.full(mid[1], grid[1])])
    src = np.maximum((np.concatenate([np.arange(mid[0]), np.arange(mid[1])]) + 0.5) * (n / size) - 0.5, 0.0)
    j0 = np.minimum(src.astype(np.int64), n - 1)  # src >= 0: truncation is floor
    return np.minimum(j0 + _TAP[:, 0], n - 1), _W0[:, 0] + _W1[:, 0] * (src - j0)


def _axis_taps(pix: np.ndarray, size: np.ndarray, pad: np.ndarray, axis: np.ndarray, grid: Tuple[int, int], mid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The composed 1-D interpolation along an axis, as 4 taps (grid cell, weight) per pixel.

    For integer output pixels ``pix`` [R, U] (inside the image) on axes of length ``size``
    [U] (``axis`` [U]: 0 for rows, 1 for columns): the value at a pixel is linear
    (align_corners=False) from the padded axis of length mid + 2 * pad, whose cell q is linear
    from the grid's cells at q - pad (zero in the padding; a negative pad crops). The second
    step depends only on q: a lookup. Float64 arithmetic, as F.interpolate computes for
    float64. Returns cells [4, R, U] int64 and weights [4, R, U] float64.
    """
    mid_a = mid[axis]
    padded = mid_a + 2 * pad
    src = np.maximum((pix + 0.5) * (padded / size) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), padded - 1)  # src >= 0: truncation is floor
    q = np.minimum(i0 + _TAP, padded - 1) - pad  # [2, R, U]
    w1 = (_W0 + _W1 * (src - i0)) * ((q >= 0) & (q < mid_a))  # zero in the padding
    cells, weights = _crop_taps(grid, tuple(mid))
    at = np.minimum(np.maximum(q, 0), mid_a - 1) + axis * mid[0]  # rows' taps first, then the columns'
    return cells[:, at].reshape(4, *pix.shape), (w1 * weights[:, at]).reshape(4, *pix.shape)


def _unique(key: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(key, return_index=True, return_inverse=True) for a 1-D int64 array,
    without its overhead: the distinct keys, one position of each, and the inverse."""
    order = np.argsort(key)
    sorted_key = key[order]
    new = np.empty(len(key), bool)
    new[0], new[1:] = True, sorted_key[1:] != sorted_key[:-1]
    inv = np.empty(len(key), np.int64)
    inv[order] = np.cumsum(new) - 1
    return sorted_key[new], order[new], inv


@functools.lru_cache(maxsize=64)
def _window_constants(grid: Tuple[int, int], crop_size: int, radius: int):
    """Intermediate and grid lengths (rows, cols), window offsets [R, 1] and -offset^2 [R, 1]."""
    off = np.arange(-radius, radius + 1)[:, None]
    return np.array(crop_shape(grid, crop_size)), np.array(grid), off, -(off * off).astype(np.float64)


def _window_tables(hw: np.ndarray, points: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int], dtype):
    """The non-differentiable part of DtoC for integer points [M, K, 2] (x, y) inside the images.

    S on a point's window is A_Y @ s[Y0 : Y0 + L, X0 : X0 + L] @ A_X^T: the taps of the 2r+1
    window rows (columns) reach at most L consecutive grid rows (columns) from Y0 (X0), so
    each window needs an L x L patch of the grid and two local operators [2r+1, L]. A
    window depends only on its centre along each axis and on the image's geometry, and a
    batch has few distinct ones (SasP's points are cell centres), so the taps are computed
    once per distinct (image size, axis, centre) and gathered per point.

    Returns, with the P = M * K points on the last axis: the local operators ay, ax
    [2r+1, L, P] (``dtype``), the logit biases by, bx [2r+1, P] (-offset^2 inside the image,
    -inf outside: the Gaussian exp(-dx^2 - dy^2) is separable) and the flat indices
    [L, L, P] of the patches in sim.
    """
    m, k = points.shape[:2]
    rows, cols = grid
    mid, n, off, neg_sq = _window_constants(grid, cfg.crop_size, cfg.dtoc_radius)

    # one key per (image size, axis, centre): equal sizes share their windows
    span = int(hw.max()) + 1
    if span > 1_600_000:  # keys below 2 * span^3 must fit int64
        raise ValueError(f"image side {span - 1} px exceeds DtoC's limit of 1.6M px")
    code = hw @ np.array([2 * span, 2])  # (H * span + W) * 2, then + axis (0: rows, 1: columns)
    key = (code[:, None, None] + np.arange(2)) * span + points[..., ::-1]  # [M, K, 2]: y then x
    uniq, first, inv = _unique(key.ravel())
    row, a = first // (2 * k), first % 2
    size, pad, n_a = hw[row, a], host_padding(hw, tuple(mid), cfg.geometry)[row, a], n[a]

    pix = off + uniq % span  # [R, U]
    inside = (pix >= 0) & (pix < size)
    cells, weights = _axis_taps(np.minimum(np.maximum(pix, 0), size - 1), size, pad, a, grid, mid)
    base = cells.min((0, 1))
    local = cells - base
    width = int(local.max()) + 1
    n_r, n_u = pix.shape
    flat = (np.arange(n_r)[:, None] * width + local) * n_u + np.arange(n_u)
    ops = np.bincount(flat.ravel(), weights.ravel(), n_r * width * n_u).reshape(n_r, width, n_u).astype(dtype)
    bias = np.where(inside, neg_sq, -np.inf).astype(dtype)

    iy, ix = inv.reshape(m * k, 2).T
    lines = np.minimum(base + np.arange(width)[:, None], n_a - 1)  # beyond the grid: weight 0
    ly, lx = np.take(lines, iy, 1), np.take(lines, ix, 1)  # np.take keeps the points innermost
    patch = (np.arange(m * k) // k) * (rows * cols) + ly[:, None] * cols + lx
    return np.take(ops, iy, 2), np.take(ops, ix, 2), np.take(bias, iy, 1), np.take(bias, ix, 1), patch


class _Windows(torch.autograd.Function):
    """refined = points + the softmax-weighted mean offset on each point's window of S.

    On the host, with a hand-written backward: numpy, points on the last axis, a few dozen
    array ops where torch's per-op cost would dominate. For a device tensor, sim comes to
    the host and the refined points go back (the gradient likewise in backward).

    Forward: s = minmax(sim); S_w = ay @ s[patch] @ ax^T + by + bx (per axis, broadcast);
    p = softmax(S_w); shift = (sum p * dx, sum p * dy). Backward: dL/dS_w = p * (gx * (dx -
    shift_x) + gy * (dy - shift_y)), back through the operators into the patches, summed
    into s, then through the min-max normalisation (ties at the minimum or maximum share its
    gradient equally, as torch's amin/amax do; a constant row gets zero). The products with
    the L x L patches are einsums (L is about 3 for images larger than the token grid).
    """

    @staticmethod
    def forward(ctx, sim, points, tables, offsets):
        ay, ax, by, bx, patch = tables
        n_r = ay.shape[0]
        x = sim.detach().to("cpu", torch.float64).numpy()  # may share sim's memory: not kept
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        span = hi - lo
        flat = span[:, 0] == 0
        span[flat] = 1  # a constant row: x - lo = 0, so s = 0
        s = ((x - lo) / span).astype(ay.dtype)
        t = np.einsum("ilp,lmp->imp", ay, s.ravel()[patch])  # ay @ patch: [R, L, P]
        logits = np.einsum("imp,jmp->ijp", t, ax)  # @ ax^T: [R, R, P]
        logits += by[:, None] + bx
        logits = logits.reshape(n_r * n_r, -1)
        p = np.exp(logits - logits.max(0), out=logits)
        p /= p.sum(0)
        shift = offsets @ p  # [2, P]: (dx, dy)
        ctx.save_for_backward(sim)  # for autograd's check that sim is not modified in place
        ctx.host = (x == lo, x == hi, s, span, flat, ay, ax, patch, offsets, p, shift)
        ctx.sim_dtype, ctx.sim_device = sim.dtype, sim.device
        return torch.from_numpy(points + shift.T.reshape(points.shape)).to(sim.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ctx.saved_tensors  # raises if sim was modified in place since the forward
        at_lo, at_hi, s, span, flat, ay, ax, patch, offsets, p, shift = ctx.host
        n_r = ay.shape[0]
        g = grad.detach().to("cpu").numpy().reshape(-1, 2).T.astype(s.dtype)  # [2, P]
        g_logits = (p * (offsets.T @ g - (shift * g).sum(0))).reshape(n_r, n_r, -1)
        g_t = np.einsum("ijp,jmp->imp", g_logits, ax)
        g_patch = np.einsum("ilp,imp->lmp", ay, g_t)
        g_s = np.bincount(patch.ravel(), g_patch.ravel(), s.size).reshape(s.shape) / span
        g_lo = (g_s * (s - 1)).sum(1, keepdims=True) / at_lo.sum(1, keepdims=True)
        g_hi = (g_s * s).sum(1, keepdims=True) / at_hi.sum(1, keepdims=True)
        g_x = g_s + at_lo * g_lo - at_hi * g_hi
        g_x[flat] = 0
        return torch.from_numpy(g_x).to(ctx.sim_device, ctx.sim_dtype), None, None, None


@functools.lru_cache(maxsize=16)
def _offsets(radius: int, dtype) -> np.ndarray:
    """(dx, dy) of the (2r+1)^2 window pixels, row-major: [2, (2r+1)^2]."""
    off = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(off, off, indexing="ij")
    return np.stack([dx.ravel(), dy.ravel()]).astype(dtype)


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
        Tensor: [M, K, 2] refined points (x, y) in pixels, float32 (float64 for float64 sim);
        differentiable once with respect to ``sim`` (the backward is written out: no second
        derivatives).
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != sim.shape[0]:
        raise ValueError(f"points must have shape [{sim.shape[0]}, K, 2], got {tuple(points.shape)}")
    m, dev = sim.shape[0], sim.device
    hw = host_sizes(image_hw, m)
    dt = torch.float64 if sim.dtype == torch.float64 else torch.float32
    if m == 0 or points.shape[1] == 0:
        return torch.zeros(points.shape, dtype=dt, device=dev) + 0 * sim.to(dt).sum()
    if points.is_floating_point() and not torch.equal(points, points.round()):
        raise ValueError("points must be whole pixel coordinates (DtoC refines integer points)")
    pts = points.detach().to("cpu", torch.int64).numpy()
    outside = ((pts < 0) | (pts >= hw[:, None, ::-1])).any(-1)
    if outside.any():
        r, i = np.argwhere(outside)[0]
        raise ValueError(f"point {i} of <SEG> row {r}, {tuple(pts[r, i].tolist())}, lies outside its {hw[r, 0]}x{hw[r, 1]} image")
    return _dtoc(sim, hw, pts, cfg, grid_shape(sim.shape[-1], grid_hw))


@eager  # host-side: torch.compile runs it eagerly
def _dtoc(sim: Tensor, hw: np.ndarray, points: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """``dtoc`` on validated inputs (hw: host int64 [M, 2]; points: host int64 [M, K, 2]
    inside the images; grid: (rows, cols)): one autograd node."""
    dt = np.float64 if sim.dtype == torch.float64 else np.float32  # float64 for gradcheck
    tables = _window_tables(hw, points, cfg, grid, dt)
    return _Windows.apply(sim, points.astype(dt), tables, _offsets(cfg.dtoc_radius, dt))


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
