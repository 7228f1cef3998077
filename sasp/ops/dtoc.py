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
- A window depends only on its centre along one axis and on its image's geometry, so windows
  are computed once and shared: ``dtoc`` de-duplicates the points' (image size, axis, centre);
  ``similarity_as_points`` computes one window per line of the selection grid (its points lie
  on those rows and columns) and distinct image size.
- Window bound: the square window of radius r keeps every pixel with Chebyshev distance <= r.
  A pixel outside has Euclidean distance d >= r + 1, Gaussian weight <= exp(-(r+1)^2), and
  since S lies in [0, 1] its softmax weight is at most e times that of the centre pixel (which
  has Gaussian weight 1). The 8k pixels of ring k move the mean by at most k + r each, so the
  window changes a refined coordinate by at most  e * sum_{k>r} 8k (k + r) exp(-k^2),
  = 1.4e-8 px for the default r = 4 (7e-5 px for r = 3). The gradient with respect to S has an
  error of the same order (about 1e-11 for r = 4); with respect to sim it is scaled by
  1 / (max - min) of the row (the min-max normalisation) and adds up over the points, so
  relative to a gradient that is itself tiny (points on a flat stretch of S) it can be large.
Gradients reach ``sim`` through S and its min-max normalisation; the integer points carry none.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes, image_sizes
from ._common import check_sim, eager, nonfinite_row


class HostSim(NamedTuple):
    """sim on the host (``host_sim``)."""

    x: np.ndarray  # [M, N] float32 (float64 for a float64 sim)
    lo: np.ndarray  # [M, 1] row minima
    hi: np.ndarray  # [M, 1] row maxima


class Windows(NamedTuple):
    """The distinct DtoC windows of a set of points: U windows, P points.

    A window is one axis of one point's square: its centre pixel along that axis, on one
    image. Points with equal (image size, axis, centre) share it.
    """

    centre: np.ndarray  # [U] centre pixel of each window along its axis
    row: np.ndarray  # [U] the image (a row of hw) each window belongs to
    axis: np.ndarray  # [U] 0: rows (y), 1: columns (x)
    iy: np.ndarray  # [P] each point's row window (index into U)
    ix: np.ndarray  # [P] each point's column window (index into U)


class WindowTables(NamedTuple):
    """The non-differentiable part of DtoC (``_window_tables``), points on the last axis."""

    ay: np.ndarray  # [2r+1, L, P] local operators of the window rows
    ax: np.ndarray  # [2r+1, L, P] local operators of the window columns
    bias: np.ndarray  # [2r+1, 2r+1, P] logit bias: -dy^2 - dx^2 inside the image, -inf beyond
    patch: np.ndarray  # [L, L, P] flat indices of each point's patch in sim


class _Constants(NamedTuple):
    """What DtoC's windows need of the configuration alone (``_constants``)."""

    mid: np.ndarray  # [2] the intermediate (crop) lengths of rows and columns
    crop_cells: np.ndarray  # [2, T] int64 grid cells of the crop table's two taps
    crop_weights: np.ndarray  # [2, T] float64 weights of the crop table's two taps
    axes: np.ndarray  # [2, 4] per axis: the table's first and last index, the last grid line, the stride
    off: np.ndarray  # [R, 1] window offsets -r..r
    bias: np.ndarray  # [R, 1] -off^2 in the table dtype


class _Saved(NamedTuple):
    """What ``_Windows.forward`` keeps on the host for the backward."""

    at_lo: np.ndarray  # [M, N] bool: sim equals its row minimum
    at_hi: np.ndarray  # [M, N] bool: sim equals its row maximum
    s: np.ndarray  # [M, N] min-max normalised sim
    span: np.ndarray  # [M, 1] max - min (inf for a constant row)
    ay: np.ndarray
    ax: np.ndarray
    patch: np.ndarray
    offsets: np.ndarray  # [(2r+1)^2, 2] (dx, dy) of the window pixels
    p: np.ndarray  # [(2r+1)^2, P] the window softmax
    shift: np.ndarray  # [P, 2] the refined points' offsets


def crop_shape(grid: Tuple[int, int], crop_size: int) -> Tuple[int, int]:
    """DtoC's intermediate map size: crop_size on the grid's longer side (336 x 336 for LLaVA)."""
    rows, cols = grid
    long = max(rows, cols)
    return max(1, crop_size * rows // long), max(1, crop_size * cols // long)


# the two taps of a linear interpolation (floor, floor + 1) and their weights w0 + w1 * frac,
# on a leading axis so that the window axes stay innermost
_TAP = np.array([0, 1]).reshape(2, 1, 1)
_W0, _W1 = np.array([1.0, 0.0]).reshape(2, 1, 1), np.array([-1.0, 1.0]).reshape(2, 1, 1)


@functools.lru_cache(maxsize=64)
def _constants(grid: Tuple[int, int], crop_size: int, radius: int, dtype: type) -> _Constants:
    """What DtoC's windows need of the configuration alone (``_Constants``).

    The crop table (``crop_cells``, ``crop_weights``) is the linear resize (align_corners=
    False, float64 as F.interpolate computes) of the grid's rows to mid[0] samples, then of its
    columns to mid[1]: the 2 taps of each sample q at index base + 1 + q, with a zero-weight
    entry on either side (q = -1 and q = mid: the zero padding beyond the crop) whose cell is
    the nearest grid line, so that cells never decrease along the table. ``axes`` holds per
    axis the table's first and last index (base, base + mid + 1), the last grid line and the
    stride of a grid line in the flat map.
    """
    mid = crop_shape(grid, crop_size)
    cells, weights = [], []
    for n, size in zip(grid, mid):
        src = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
        j0 = np.minimum(src.astype(np.int64), n - 1)  # src >= 0: truncation is floor
        cells += [[[0], [0]], np.stack([j0, np.minimum(j0 + 1, n - 1)]), [[n - 1], [n - 1]]]
        weights += [[[0.0], [0.0]], np.stack([1.0 - (src - j0), src - j0]), [[0.0], [0.0]]]
    base = np.array([0, mid[0] + 2])
    axes = np.stack([base, base + np.array(mid) + 1, np.array(grid) - 1, [grid[1], 1]], -1)
    off = np.arange(-radius, radius + 1)[:, None]
    return _Constants(np.array(mid), np.concatenate(cells, 1), np.concatenate(weights, 1), axes, off, -(off * off).astype(dtype))


@functools.lru_cache(maxsize=256)
def _slots(n_r: int, width: int, n_u: int) -> np.ndarray:
    """The flat position of line 0 of window row r of window u in an [R, L, U] array: [R, U]."""
    return np.arange(n_r)[:, None] * (width * n_u) + np.arange(n_u)


@functools.lru_cache(maxsize=64)
def _row_offsets(m: int, k: int, n: int) -> np.ndarray:
    """The flat offset of each of the M * K points' row in sim [M, N]: [P]."""
    return np.arange(m * k) // k * n


def _window_tables(windows: Windows, hw: np.ndarray, pad: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int], dtype: type) -> WindowTables:
    """The non-differentiable part of DtoC: the windows' local operators and biases.

    S on a point's window is A_Y @ s[Y0 : Y0 + L, X0 : X0 + L] @ A_X^T: the taps of the 2r+1
    window rows (columns) reach at most L consecutive grid lines from Y0 (X0), so each window
    needs an L x L patch of the grid and two local operators [2r+1, L]. A window depends only
    on its centre along one axis and on its image's geometry, and a batch has few distinct
    ones, so they are computed once per window and gathered per point.

    Args: the windows (``Windows``: U windows, P points); image sizes hw and the crop's
    padding [M, 2].

    Returns the local operators ay, ax [2r+1, L, P] (``dtype``), the logit bias [2r+1, 2r+1,
    P] (the Gaussian exp(-dx^2 - dy^2) is separable) and the flat indices [L, L, P] of the
    patches in sim (``WindowTables``).
    """
    centre, row, axis, iy, ix = windows
    mid, crop_cells, crop_weights, axes, off, bias = _constants(grid, cfg.crop_size, cfg.dtoc_radius, dtype)
    padded = mid + 2 * pad  # per image and axis: the zero-padded crop, resized to the image
    at_image = row * 2 + axis  # into the [M, 2] arrays, flat
    last, ratio = hw.take(at_image) - 1, (padded / hw).take(at_image)
    shift = (axes[:, 0] + 1 - pad).take(at_image)  # crop sample q sits at base + 1 + q in the table
    lo, hi, line_max, stride = axes.take(axis, 0).T
    top = np.minimum(padded.take(at_image) - 1 + shift, hi)  # the last sample, or the zero entry after the crop

    pix = centre + off  # [R, U]
    inner = np.minimum(np.maximum(pix, 0), last)
    src = np.maximum((inner + 0.5) * ratio - 0.5, 0.0)
    i0 = src.astype(np.int64)  # src >= 0: truncation is floor
    at = np.maximum(np.minimum(i0 + shift + _TAP, top), lo)  # [2, R, U] into the crop table
    cells = crop_cells.take(at, 1)  # [2 (crop tap), 2 (image tap), R, U], non-decreasing along each axis
    weights = crop_weights.take(at, 1) * (_W0 + _W1 * (src - i0))
    base = cells[0, 0, 0]  # the window's first grid line, [U]
    n_r, n_u = pix.shape
    width = int((cells[1, 1, -1] - base).max()) + 1
    # the local operators [R, L, U]: each tap's weight summed into its line (relative to base)
    to = (cells - base) * n_u + _slots(n_r, width, n_u)
    ops = np.bincount(to.ravel(), weights.ravel(), n_r * width * n_u).reshape(n_r, width, n_u).astype(dtype)
    bias = np.where(pix == inner, bias, -np.inf)  # [R, U]

    lines = np.minimum(base + np.arange(width)[:, None], line_max) * stride  # flat offsets of the grid lines [L, U]; beyond the grid: weight 0
    prow = _row_offsets(len(hw), len(iy) // len(hw), grid[0] * grid[1])
    patch = (lines.take(iy, 1) + prow)[:, None] + lines.take(ix, 1)
    # take, not fancy indexing: its results are C-contiguous, which einsum needs to be fast
    return WindowTables(ops.take(iy, 2), ops.take(ix, 2), bias.take(iy, 1)[:, None] + bias.take(ix, 1), patch)


def _point_windows(hw: np.ndarray, points: np.ndarray) -> Windows:
    """The distinct windows of integer points [M, K, 2] (x, y): one per (image size, axis,
    centre), so that equal sizes share their windows."""
    span = int(hw.max()) + 1
    if span > 1_600_000:  # keys below 2 * span^3 must fit int64
        raise ValueError(f"image side {span - 1} px exceeds DtoC's limit of 1.6M px")
    code = hw @ np.array([2 * span, 2])  # (H * span + W) * 2, then + axis (0: rows, 1: columns)
    key = (code[:, None, None] + np.arange(2)) * span + points[..., ::-1]  # [M, K, 2]: y then x
    uniq, first, inv = np.unique(key.ravel(), return_index=True, return_inverse=True)
    iy, ix = inv.reshape(-1, 2).T
    return Windows(uniq % span, first // (2 * points.shape[1]), first % 2, iy, ix)


def host_sim(sim: Tensor, check_finite: bool) -> HostSim:
    """sim [M, N] on the host as a numpy array x, float32 (float64 for a float64 sim), without a
    copy where it already is one, and its row minima and maxima [M, 1]; a NaN or Inf raises a
    ValueError naming the row."""
    x = sim.detach()
    want = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.dtype != want or x.device.type != "cpu":
        x = x.to("cpu", want)
    x = x.numpy()
    lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)  # a NaN propagates, an Inf is an extreme
    if check_finite and x.size and not math.isfinite(float(lo.min()) + float(hi.max())):
        raise nonfinite_row(int((~np.isfinite(x).all(1)).argmax()))
    return HostSim(x, lo, hi)


class _Windows(torch.autograd.Function):
    """refined = points + the softmax-weighted mean offset on each point's window of S.

    On the host, with a hand-written backward: numpy, points on the last axis, a few dozen
    array ops where torch's per-op cost would dominate. For a device tensor, sim comes to
    the host and the refined points go back (the gradient likewise in backward).

    Forward: s = minmax(sim); S_w = ay @ s[patch] @ ax^T + bias; p = softmax(S_w); shift =
    (sum p * dx, sum p * dy). S lies in [0, 1] and the bias is at most 0, with 0 at the centre
    pixel (inside the image), so exp(S_w) needs no max subtracted: it is at most e and sums to
    at least 1. Backward: dL/dS_w = p * (gx * (dx - shift_x) + gy * (dy - shift_y)), back
    through the operators into the patches, summed into s, then through the min-max
    normalisation (ties at the minimum or maximum share its gradient equally, as torch's
    amin/amax do; a constant row gets zero). The products with the L x L patches are einsums
    (L is about 3 for images larger than the token grid).
    """

    @staticmethod
    def forward(ctx, sim: Tensor, host: HostSim, points: np.ndarray, tables: WindowTables, offsets: np.ndarray) -> Tensor:
        x, lo, hi = host
        ay, ax, bias, patch = tables
        span = hi - lo
        if math.isinf(span.max()):  # a range beyond float32's (values near +-3.4e38): normalise in float64
            lo, span = lo.astype(np.float64), hi.astype(np.float64) - lo
        span[span == 0] = np.inf  # a constant row: s = 0, and no gradient
        s = x - lo
        s /= span
        s = s.astype(x.dtype, copy=False)
        logits = np.einsum("imp,jmp->ijp", np.einsum("ilp,lmp->imp", ay, s.take(patch)), ax)  # [R, R, P]
        logits += bias
        p = np.exp(logits, out=logits).reshape(-1, logits.shape[-1])
        p /= p.sum(0)
        shift = p.T @ offsets  # [P, 2]: (dx, dy)
        ctx.save_for_backward(sim)  # for autograd's check that sim is not modified in place
        ctx.host = _Saved(x == lo, x == hi, s, span, ay, ax, patch, offsets, p, shift)
        ctx.sim_dtype, ctx.sim_device = sim.dtype, sim.device
        out = torch.from_numpy(points + shift.reshape(points.shape))
        return out if sim.device.type == "cpu" else out.to(sim.device)

    @staticmethod
    def backward(ctx, grad):
        # written out in numpy: with create_graph=True, once_differentiable makes differentiating
        # the gradient again raise (instead of giving zero); otherwise its wrapper is overhead
        return (_windows_backward_once if torch.is_grad_enabled() else _windows_backward)(ctx, grad)


def _windows_backward(ctx, grad):
    """``_Windows.backward`` (see the class docstring)."""
    ctx.saved_tensors  # raises if sim was modified in place since the forward
    at_lo, at_hi, s, span, ay, ax, patch, offsets, p, shift = ctx.host
    g = grad.cpu().numpy().reshape(-1, 2).astype(s.dtype, copy=False)  # [P, 2]
    g_logits = (p * (offsets @ g.T - (shift * g).sum(1))).reshape(ay.shape[0], ax.shape[0], -1)
    g_patch = np.einsum("ilp,imp->lmp", ay, np.einsum("ijp,jmp->imp", g_logits, ax))
    g_s = np.bincount(patch.ravel(), g_patch.ravel(), s.size).reshape(s.shape) / span
    g_hi = (g_s * s).sum(1, keepdims=True)
    g_lo = g_hi - g_s.sum(1, keepdims=True)  # sum g_s * (s - 1)
    g_x = g_s + at_lo * (g_lo / at_lo.sum(1, keepdims=True)) - at_hi * (g_hi / at_hi.sum(1, keepdims=True))
    out = torch.from_numpy(g_x.astype(s.dtype))
    if ctx.sim_device.type != "cpu" or ctx.sim_dtype != out.dtype:
        out = out.to(ctx.sim_device, ctx.sim_dtype)
    return out, None, None, None, None


_windows_backward_once = torch.autograd.function.once_differentiable(_windows_backward)


@functools.lru_cache(maxsize=16)
def _offsets(radius: int, dtype) -> np.ndarray:
    """(dx, dy) of the (2r+1)^2 window pixels, row-major: [(2r+1)^2, 2]."""
    off = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(off, off, indexing="ij")
    return np.stack([dx.ravel(), dy.ravel()], -1).astype(dtype)


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
    check_sim(sim, False)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != sim.shape[0]:
        raise ValueError(f"points must have shape [{sim.shape[0]}, K, 2], got {tuple(points.shape)}")
    m, dev = sim.shape[0], sim.device
    hw = host_sizes(image_hw, m)
    grid = grid_shape(sim.shape[-1], grid_hw)
    if m == 0 or points.shape[1] == 0:
        dt = torch.float64 if sim.dtype == torch.float64 else torch.float32
        return torch.zeros(points.shape, dtype=dt, device=dev) + 0 * sim.to(dt).sum()
    if points.is_floating_point() and not torch.equal(points, points.round()):
        raise ValueError("points must be whole pixel coordinates (DtoC refines integer points)")
    return _dtoc_points(sim, hw, points, cfg, grid)


@eager  # host-side: torch.compile runs it eagerly
def _dtoc_points(sim: Tensor, hw: np.ndarray, points: Tensor, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """``dtoc`` on validated inputs (hw: host int64 [M, 2]; points [M, K, 2] whole; grid:
    (rows, cols)): the points must lie inside their images."""
    pts = points.detach().to("cpu", torch.int64).numpy()
    outside = ((pts < 0) | (pts >= hw[:, None, ::-1])).any(-1)
    if outside.any():
        r, i = np.argwhere(outside)[0]
        raise ValueError(f"point {i} of <SEG> row {r}, {tuple(pts[r, i].tolist())}, lies outside its {hw[r, 0]}x{hw[r, 1]} image")
    host = host_sim(sim, cfg.check_finite)
    pad = host_padding(hw, crop_shape(grid, cfg.crop_size), cfg.geometry)
    return _dtoc(sim, host, hw, pad, pts, _point_windows(hw, pts), cfg, grid)


def _dtoc(sim: Tensor, host: HostSim, hw: np.ndarray, pad: np.ndarray, points: np.ndarray, windows: Windows, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """DtoC on validated inputs, as one autograd node: sim and ``host_sim(sim)``; hw and
    the crop's padding [M, 2] (host int64); integer points [M, K, 2] inside the images; their
    ``Windows``."""
    dt = host.x.dtype
    tables = _window_tables(windows, hw, pad, cfg, grid, dt.type)
    return _Windows.apply(sim, host, points.astype(dt), tables, _offsets(cfg.dtoc_radius, dt.type))


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
