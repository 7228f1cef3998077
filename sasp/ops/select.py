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
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes, image_sizes
from ._common import check_sim, eager

_POS, _NEG, _NEU, _NONE = 0, 1, 2, 3
_LABEL = np.array([1, 0, -1, -1])  # of each category


def _selection_grid(sim: Tensor, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """The down-sampled map [M, dh, dw] (float32), before normalisation."""
    rows, cols = grid
    dh, dw = rows // cfg.down_sample, cols // cfg.down_sample
    if dh < 1 or dw < 1:
        raise ValueError(f"down_sample={cfg.down_sample} leaves no cell of the {rows}x{cols} token grid")
    g = F.interpolate(sim.float().reshape(-1, 1, rows, cols), (dh, dw), mode="bilinear", align_corners=False)
    return g.view(-1, dh, dw)


def select_points(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, Tensor]:
    """Select SasP's discrete point prompts.

    Args:
        sim (Tensor): [M, N_p] similarity of each <SEG> with its image's patch tokens.
        image_hw (Tensor | list): [M, 2] original image size (H, W) of each row.
        cfg (SasPConfig): settings; READ-7B's by default.
        grid_hw (tuple): (rows, cols) of the token grid; default sqrt(N_p) x sqrt(N_p).

    Returns:
        points (Tensor): [M, K, 2] int64 pixel coordinates (x, y), inside the image.
        labels (Tensor): [M, K] int64 in {1, 0, -1}.
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    hw = host_sizes(image_hw, sim.shape[0])
    return _select(sim, hw, cfg, grid_shape(sim.shape[-1], grid_hw))


def _select(sim: Tensor, hw: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``select_points`` on validated inputs (hw: host int64 [M, 2]; grid: (rows, cols))."""
    points, labels = _select_host(sim, hw, cfg, grid)
    return torch.from_numpy(points).to(sim.device), torch.from_numpy(labels).to(sim.device)


@functools.lru_cache(maxsize=64)
def _cells(dh: int, dw: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per flat cell of a dh x dw grid: |2 row + 1 - dh| and |2 col + 1 - dw| (a cell lies in
    the grid padded by p iff they are below dh + 2p and dw + 2p)."""
    rows, cols = np.divmod(np.arange(dh * dw), dw)
    return np.abs(2 * rows + 1 - dh), np.abs(2 * cols + 1 - dw)


@eager  # host-side bookkeeping: torch.compile runs it eagerly instead of tracing the numpy
def _select_host(sim: Tensor, hw: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The selection as host arrays: points [M, K, 2] int64 and labels [M, K] int64.

    The d x d grids are resized by torch on sim's device (bit-identical to the reference) and
    come to the host in one transfer; min-max normalisation (IEEE float32, as torch) and the
    rest is bookkeeping on [M, d * d] arrays, where numpy's per-call cost is a fraction of
    torch's. The order is one stable sort of an exact 64-bit key per cell: category in the
    high word, the float32 bits of the value (non-negative, so its bit pattern orders like
    the value; complemented for positives, highest first) in the low word.
    """
    m, k = sim.shape[0], cfg.num_points
    if m == 0:
        return np.zeros((0, k, 2), np.int64), np.zeros((0, k), np.int64)
    g = _selection_grid(sim.detach(), cfg, grid)
    _, dh, dw = g.shape
    g = g.reshape(m, dh * dw).cpu().numpy()
    lo = g.min(1, keepdims=True)
    span = g.max(1, keepdims=True) - lo
    flat = span == 0
    span[flat] = 1  # a constant row: g - lo = 0, so it maps to zeros
    g = (g - lo) / span

    pad = host_padding(hw, (dh, dw), cfg.geometry)  # signed (pad_h, pad_w) [M, 2]
    gsize = (dh, dw) + 2 * pad  # the padded (or cropped) grid
    row_dist, col_dist = _cells(dh, dw)
    valid = (row_dist < gsize[:, :1]) & (col_dist < gsize[:, 1:])
    live = valid & ~flat  # a constant row has only neutrals
    pos = live & (g >= np.float32(cfg.t_pos))
    neg = live & (g <= np.float32(cfg.t_neg))  # g >= 0 holds after min-max normalisation
    bits = g.view(np.int32).astype(np.int64)
    key = np.where(pos, (_POS << 32) + 0x7FFFFFFF - bits, np.where(neg, (_NEG << 32) + bits, np.where(valid, _NEU << 32, _NONE << 32)))
    idx = np.argsort(key, -1, kind="stable")[:, :k]  # ties keep flat-index order
    n = idx.shape[-1]
    kept = key[np.arange(m)[:, None], idx] >> 32  # category

    # pixel coordinates in float32 as READ computes them, (float(cell) + 0.5) * H / gh, then truncation
    scale = (hw / gsize).astype(np.float32)  # float(H) / gh, float(W) / gw, rounded from float64
    bound = (hw - 1).astype(np.float32)
    half = np.float32(0.5)
    points = np.zeros((m, k, 2), np.int64)
    points[:, :n, 0] = np.minimum(((idx % dw + pad[:, 1:]).astype(np.float32) + half) * scale[:, 1:], bound[:, 1:])
    points[:, :n, 1] = np.minimum(((idx // dw + pad[:, :1]).astype(np.float32) + half) * scale[:, :1], bound[:, :1])
    points[:, :n][kept == _NONE] = 0
    labels = np.full((m, k), -1, np.int64)
    labels[:, :n] = _LABEL[kept]
    return points, labels


def select_points_ref(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, Tensor]:
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
    return points.to(sim.device), labels.to(sim.device)
