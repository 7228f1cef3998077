"""Discrete selection of SasP: similarity map -> K integer pixel points and labels.

``select_points`` is the fast path: batched over <SEG>s with per-row image sizes, no Python
loop over points, no per-element host synchronisation. ``select_points_ref`` is its literal
twin (METHOD.md step by step, one row and one point at a time) and the test oracle.

Order of the K kept candidates: positives (value >= t_pos) by value, highest first; then
negatives (0 <= value <= t_neg), lowest first; then neutrals in flat-index order. Equal values
keep flat-index order (a stable sort; READ's unstable argsort leaves ties unspecified).
Rows with fewer than K candidate cells (e.g. down_sample 8) are padded with point (0, 0) and
label -1, which SAM reads as "not a point"; shapes stay [M, K].
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_padding, grid_shape, image_sizes
from ._common import check_sim, minmax

_POS, _NEG, _NEU, _NONE = 0, 1, 2, 3
_LABEL = (1, 0, -1, -1)


def _selection_grid(sim: Tensor, cfg: SasPConfig, grid: Tuple[int, int]) -> Tensor:
    """The down-sampled, min-max normalised map [M, dh, dw] (float32)."""
    rows, cols = grid
    dh, dw = rows // cfg.down_sample, cols // cfg.down_sample
    if dh < 1 or dw < 1:
        raise ValueError(f"down_sample={cfg.down_sample} leaves no cell of the {rows}x{cols} token grid")
    g = F.interpolate(sim.float().reshape(-1, 1, rows, cols), (dh, dw), mode="bilinear", align_corners=False)
    g = g.flatten(1)
    return minmax(g).view(-1, dh, dw)


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
    hw = image_sizes(image_hw, sim.shape[0])
    return _select(sim, hw, cfg, grid_shape(sim.shape[-1], grid_hw))


def _layout(hw: Tensor, dh: int, dw: int, geometry: str):
    """Host-side per-row layout of the (dh, dw) grid: signed pads (pad_h, pad_w) [M, 2] int64,
    the float32 bounds and pixel scales (W - 1, H - 1, W / gw, H / gh) [M, 4], and which grid
    rows and columns survive a crop [M, dh + dw]."""
    pad = grid_padding(hw, (dh, dw), geometry).numpy()
    hwn = hw.numpy()
    gsize = np.array([dh, dw]) + 2 * pad
    scale = (hwn.astype(np.float64) / gsize).astype(np.float32)  # READ: float(H) / gh, then f32
    fmeta = np.concatenate([scale, (hwn - 1).astype(np.float32)], 1)[:, ::-1].copy()  # (x, y) order
    r, c = np.arange(dh), np.arange(dw)
    keep = np.concatenate([(r + pad[:, :1] >= 0) & (r < dh + pad[:, :1]), (c + pad[:, 1:] >= 0) & (c < dw + pad[:, 1:])], 1)
    return torch.from_numpy(pad), torch.from_numpy(fmeta), torch.from_numpy(keep)


def _select(sim: Tensor, hw: Tensor, cfg: SasPConfig, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``select_points`` on validated inputs (hw: CPU int64 [M, 2]; grid: (rows, cols))."""
    m, k, dev = sim.shape[0], cfg.num_points, sim.device
    if m == 0:
        return sim.new_zeros((0, k, 2), dtype=torch.long), sim.new_zeros((0, k), dtype=torch.long)
    g = _selection_grid(sim, cfg, grid)
    _, dh, dw = g.shape
    pad, fmeta, keep = (t.to(dev) for t in _layout(hw, dh, dw, cfg.geometry))
    valid = (keep[:, :dh, None] & keep[:, None, dh:]).flatten(1)
    g = g.flatten(1)

    live = valid & (g.amax(-1, keepdim=True) > 0)  # a constant row (all zeros) has only neutrals
    pos = live & (g >= cfg.t_pos)
    neg = live & (g <= cfg.t_neg)  # g >= 0 holds after min-max normalisation
    cat = torch.where(pos, _POS, torch.where(neg, _NEG, torch.where(valid, _NEU, _NONE)))
    key = torch.where(pos, -g, torch.where(neg, g, 0.0))
    order = key.sort(dim=-1, stable=True).indices  # within a category: by value, ties by index
    order = order.gather(-1, cat.gather(-1, order).sort(dim=-1, stable=True).indices)
    n = min(k, order.shape[-1])
    idx = order[:, :n]
    kept = cat.gather(-1, idx)

    cell = torch.stack([idx.remainder(dw), idx.div(dw, rounding_mode="floor")], -1) + pad.flip(-1)[:, None]
    xy = torch.minimum((cell.float() + 0.5) * fmeta[:, None, 2:], fmeta[:, None, :2]).long()
    points = xy.masked_fill((kept == _NONE)[..., None], 0)
    labels = torch.tensor(_LABEL, device=dev)[kept]
    if n < k:
        points = F.pad(points, (0, 0, 0, k - n))
        labels = F.pad(labels, (0, k - n), value=-1)
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
