"""Discrete selection of SasP: similarity map -> K integer pixel points and labels.

``select_points`` is the fast path: batched over <SEG>s with per-row image sizes, no Python
loop over rows or points, one host round trip per call (the d x d grids down, the points up).
``select_points_ref`` is its literal twin (METHOD.md step by step, one row and one point at a
time) and the test oracle.

Order of the K kept candidates: positives (value >= t_pos) by value, highest first; then
negatives (0 <= value <= t_neg), lowest first; then neutrals in flat-index order. Equal values
keep flat-index order (a stable sort; READ's unstable argsort leaves ties unspecified).
Rows with fewer than K candidate cells (e.g. down_sample 8) are padded with point (0, 0) and
label -1, which SAM reads as "not a point"; shapes stay [M, K].
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes, image_sizes
from ._common import check_sim, eager

# F.interpolate(mode="bilinear", size=...) calls this kernel after checks that cost more than the
# kernel at these sizes; calling it directly gives the same bits
_resize = torch._C._nn.upsample_bilinear2d

# sort keys: the category in the high word (positives, negatives, neutrals, cells off the
# image), the float32 bits of the value in the low word (complemented for positives)
_POS, _NEG, _NEU, _NONE = 0x7FFFFFFF, 1 << 32, 2 << 32, 3 << 32
_LABEL = np.array([1, 0, -1, -1])  # of each category


class SelectOutput(NamedTuple):
    """What ``select_points`` returns (unpacks as ``points, labels``)."""

    points: Tensor  # [M, K, 2] int64 pixel coordinates (x, y), inside the image
    labels: Tensor  # [M, K] int64 in {1, 0, -1}


class Lines(NamedTuple):
    """The D = dh + dw + 2 pixel lines that selected points lie on (``_lines``)."""

    axis: np.ndarray  # [D] 0 for a row line (y), 1 for a column line (x)
    cell: np.ndarray  # [D] the grid row or column of each line
    of_cell: np.ndarray  # [dh * dw + 1, 2] per flat cell (and one more entry for padding) its (x line, y line)
    row_dist: np.ndarray  # [dh * dw] |2 row + 1 - dh| per flat cell
    col_dist: np.ndarray  # [dh * dw] |2 col + 1 - dw| per flat cell
    shape: np.ndarray  # [2] (dh, dw)


class Selection(NamedTuple):
    """The selection on the host (``_select_host``), with what DtoC's windows need of it."""

    points: np.ndarray  # [M, K, 2] int64 (x, y)
    labels: np.ndarray  # [M, K] int64 in {1, 0, -1}
    lines: np.ndarray  # [M, K, 2] each point's (x line, y line), indices into ``centres``
    centres: np.ndarray  # [M, D] the pixel coordinate of each line of each row: points = centres at lines


def selection_shape(grid: Tuple[int, int], down_sample: int) -> Tuple[int, int]:
    """The (dh, dw) grid that selection ranks: the token grid divided by down_sample."""
    dh, dw = grid[0] // down_sample, grid[1] // down_sample
    if dh < 1 or dw < 1:
        raise ValueError(f"down_sample={down_sample} leaves no cell of the {grid[0]}x{grid[1]} token grid")
    return dh, dw


def select_points(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> SelectOutput:
    """Select SasP's discrete point prompts.

    Args: those of ``similarity_as_points``: ``sim`` [M, N_p], ``image_hw`` [M, 2] (H, W) per
    row, ``cfg`` (READ-7B's by default) and ``grid_hw`` (default sqrt(N_p) x sqrt(N_p)).

    Returns:
        SelectOutput: ``points`` [M, K, 2] int64 pixel coordinates (x, y), inside the image,
        and ``labels`` [M, K] int64 in {1, 0, -1} (unpacks as ``points, labels``).
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    hw = host_sizes(image_hw, sim.shape[0])
    grid = grid_shape(sim.shape[-1], grid_hw)
    sel = _select_host(sim, hw, None, cfg, grid)
    return SelectOutput(torch.from_numpy(sel.points).to(sim.device), torch.from_numpy(sel.labels).to(sim.device))


@functools.lru_cache(maxsize=64)
def _lines(dh: int, dw: int) -> Lines:
    """The D = dh + dw + 2 pixel lines that selected points lie on: one per grid row, one per
    grid column, then y = 0 and x = 0 (the point of "not a point" padding).

    A cell lies on the grid padded by p iff its ``row_dist`` and ``col_dist`` are below
    dh + 2p and dw + 2p.
    """
    rows, cols = np.divmod(np.arange(dh * dw), dw)
    axis = np.repeat([0, 1, 0, 1], [dh, dw, 1, 1])
    cell = np.concatenate([np.arange(dh), np.arange(dw), [0, 0]])
    of_cell = np.concatenate([np.stack([dh + cols, rows], -1), [[dh + dw + 1, dh + dw]]])
    return Lines(axis, cell, of_cell, np.abs(2 * rows + 1 - dh), np.abs(2 * cols + 1 - dw), np.array([dh, dw]))


def _selection_grid(sim: Tensor, dh: int, dw: int, grid: Tuple[int, int]) -> np.ndarray:
    """The down-sampled map [M, dh * dw] (float32, host), before normalisation: torch's bilinear
    resize (F.interpolate's kernel, called directly) on sim's device, bit-identical to the
    reference's."""
    g = sim.detach().reshape(-1, 1, *grid)
    g = _resize(g if g.dtype == torch.float32 else g.float(), [dh, dw], False, None)
    return (g if g.device.type == "cpu" else g.cpu()).numpy().reshape(-1, dh * dw)


@functools.lru_cache(maxsize=64)
def _row_base(m: int, n: int) -> np.ndarray:
    """The flat offset of each row of an [M, N] array: [M, 1]."""
    return np.arange(m)[:, None] * n


@eager  # host-side bookkeeping: torch.compile runs it eagerly instead of tracing the numpy
def _select_host(sim: Tensor, hw: np.ndarray, pad: Optional[np.ndarray], cfg: SasPConfig, grid: Tuple[int, int]) -> Selection:
    """The selection on the host, for validated inputs (hw: int64 [M, 2]; pad: the selection
    grid's padding [M, 2] from ``host_padding``, or None; grid: (rows, cols)).

    The d x d grids are resized by torch on sim's device and come to the host in one transfer;
    min-max normalisation (IEEE float32, as torch) and the rest is bookkeeping on [M, d * d]
    arrays. The order is one stable sort of an exact 64-bit key per cell: the category in the
    high word, the float32 bits of the value (non-negative, so its bit pattern orders like the
    value; complemented for positives, highest first) in the low word.

    Returns the points, their labels, and for DtoC's windows each point's lines and each row's
    line centres (see ``Selection`` and ``_lines``).
    """
    m, k = sim.shape[0], cfg.num_points
    dh, dw = selection_shape(grid, cfg.down_sample)
    axis, cell, of_cell, row_dist, col_dist, shape = _lines(dh, dw)
    if m == 0:
        return Selection(np.zeros((0, k, 2), np.int64), np.zeros((0, k), np.int64), np.zeros((0, k, 2), np.int64), np.zeros((0, len(axis)), np.int64))
    g = _selection_grid(sim, dh, dw, grid)
    if pad is None:
        pad = host_padding(hw, (dh, dw), cfg.geometry)
    lo = g.min(1, keepdims=True)
    span = g.max(1, keepdims=True) - lo
    span[span == 0] = np.nan  # a constant row normalises to NaN: all its cells are neutral
    g -= lo  # in place: g is the fresh output of the resize
    g /= span
    bits = (g.view(np.int32) & 0x7FFFFFFF).astype(np.int64)  # -0.0 (a -0 at a +0 minimum) orders as +0.0
    key = np.where(g >= np.float32(cfg.t_pos), _POS - bits, np.where(g <= np.float32(cfg.t_neg), _NEG + bits, _NEU))
    gsize = shape + 2 * pad  # the padded (or cropped) grid
    cropped = pad.min() < 0
    if cropped:  # cells off the image are never chosen
        key[(row_dist >= gsize[:, :1]) | (col_dist >= gsize[:, 1:])] = _NONE
    order = key.argsort(-1, kind="stable")[:, :k]  # ties keep flat-index order
    category = key.take(order + _row_base(m, dh * dw)) >> 32
    if order.shape[1] < k:  # fewer cells than K: pad with "not a point"
        order = np.pad(order, ((0, 0), (0, k - order.shape[1])))
        category = np.pad(category, ((0, 0), (0, k - category.shape[1])), constant_values=_NONE >> 32)
        cropped = True
    lines = of_cell.take(order, 0)  # [M, K, 2]
    if cropped:
        lines[category == _NONE >> 32] = of_cell[-1]

    # pixel coordinates in float32 as READ computes them, (float(cell) + 0.5) * H / gh, then truncation
    scale = (hw / gsize).astype(np.float32).take(axis, 1)  # float(H) / gh, float(W) / gw, rounded from float64
    centres = ((cell + pad.take(axis, 1)).astype(np.float32) + np.float32(0.5)) * scale
    centres = np.minimum(centres, (hw - 1).astype(np.float32).take(axis, 1)).astype(np.int64)
    centres[:, -2:] = 0
    points = centres.take(lines + _row_base(m, len(axis))[..., None])
    return Selection(points, _LABEL.take(category), lines, centres)


def select_points_ref(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> SelectOutput:
    """Literal reference of ``select_points``: METHOD.md's steps, one row and one point at a time."""
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    m, k = sim.shape[0], cfg.num_points
    hw = image_sizes(image_hw, m)
    all_points, all_labels = [], []
    for row in range(m):
        H, W = (int(v) for v in hw[row])
        rows, cols = grid_shape(sim.shape[1], grid_hw)
        dh, dw = rows // cfg.down_sample, cols // cfg.down_sample
        if dh < 1 or dw < 1:
            raise ValueError(f"down_sample={cfg.down_sample} leaves no cell of the {rows}x{cols} token grid")
        # 1. grid, bilinear down-sampling, min-max normalisation
        sm = sim[row].float().reshape(1, 1, rows, cols)
        sm = F.interpolate(sm, (dh, dw), mode="bilinear", align_corners=False)[0, 0]
        constant = bool(sm.max() == sm.min())
        sm = torch.zeros_like(sm) if constant else (sm - sm.min()) / (sm.max() - sm.min())
        # 2. undo the preprocessing: pad (or crop) the grid with -1 over the whole image
        if cfg.geometry == "center_crop":
            scale = max(dh / H, dw / W)  # = d / min(H, W) for a square grid
            pad_h, pad_w = (int(H * scale) - dh) // 2, (int(W * scale) - dw) // 2
        else:
            scale = min(dh / H, dw / W)
            pad_h, pad_w = -((dh - max(1, int(H * scale))) // 2), -((dw - max(1, int(W * scale))) // 2)
        sm = F.pad(sm[None], (pad_w, pad_w, pad_h, pad_h), mode="constant", value=-1)[0]
        gh, gw = sm.shape
        sm = sm.reshape(-1)
        # 3. candidates
        if constant:
            pos_idx = neg_idx = torch.zeros(0, dtype=torch.long)
            neu_idx = (sm >= 0).nonzero()[:, 0]
        else:
            pos_idx = (sm >= cfg.t_pos).nonzero()[:, 0]
            pos_idx = pos_idx[torch.sort(sm[pos_idx], descending=True, stable=True).indices]
            neg_idx = ((sm >= 0) & (sm <= cfg.t_neg)).nonzero()[:, 0]
            neg_idx = neg_idx[torch.sort(sm[neg_idx], stable=True).indices]
            neu_idx = ((sm > cfg.t_neg) & (sm < cfg.t_pos)).nonzero()[:, 0]
        chosen = torch.cat([pos_idx, neg_idx, neu_idx])[:k]
        # 4. pixel coordinates, float32 then truncation
        scale_h, scale_w = float(H) / gh, float(W) / gw
        bound_w = torch.tensor(W - 1, dtype=torch.float32)
        bound_h = torch.tensor(H - 1, dtype=torch.float32)
        points, labels = [], []
        for i in chosen.tolist():
            x = torch.minimum((torch.tensor(i % gw) + 0.5) * scale_w, bound_w)
            y = torch.minimum((torch.tensor(i // gw) + 0.5) * scale_h, bound_h)
            points.append([int(x.item()), int(y.item())])
            labels.append(1 if i in pos_idx.tolist() else 0 if i in neg_idx.tolist() else -1)
        while len(points) < k:  # fewer candidate cells than K: pad with "not a point"
            points.append([0, 0])
            labels.append(-1)
        all_points.append(points)
        all_labels.append(labels)
    points = torch.tensor(all_points, dtype=torch.long).view(m, k, 2)
    labels = torch.tensor(all_labels, dtype=torch.long).view(m, k)
    return SelectOutput(points.to(sim.device), labels.to(sim.device))
