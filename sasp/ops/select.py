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

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_padding, grid_shape, image_sizes
from ._common import check_sim, minmax

_POS, _NEG, _NEU, _NONE = 0, 1, 2, 3
_LABEL = (1, 0, -1, -1)


def _selection_grid(sim: Tensor, cfg: SasPConfig, grid_hw: Optional[Tuple[int, int]]) -> Tensor:
    """The down-sampled, min-max normalised map [M, dh, dw] (float32)."""
    rows, cols = grid_shape(sim.shape[-1], grid_hw)
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
    m, k, dev = sim.shape[0], cfg.num_points, sim.device
    hw = image_sizes(image_hw, m)
    if m == 0:
        return sim.new_zeros((0, k, 2), dtype=torch.long), sim.new_zeros((0, k), dtype=torch.long)
    g = _selection_grid(sim, cfg, grid_hw)
    _, dh, dw = g.shape
    pad = grid_padding(hw, (dh, dw), cfg.geometry)  # [M, 2] signed (pad_h, pad_w)
    gsize = torch.tensor([dh, dw]) + 2 * pad  # padded grid (gh, gw) per row
    pad_d, gsize_d = pad.to(dev), gsize.to(dev)

    r = torch.arange(dh, device=dev).view(1, dh, 1)
    c = torch.arange(dw, device=dev).view(1, 1, dw)
    gr, gc = r + pad_d[:, 0, None, None], c + pad_d[:, 1, None, None]  # cell in the padded grid
    valid = (gr >= 0) & (gr < gsize_d[:, 0, None, None]) & (gc >= 0) & (gc < gsize_d[:, 1, None, None])

    pos = valid & (g >= cfg.t_pos)
    neg = valid & (g >= 0) & (g <= cfg.t_neg)
    flat = (g.amax((1, 2)) == 0).view(-1, 1, 1)  # constant rows: minmax gave zeros, nothing is pos/neg
    pos, neg = pos & ~flat, neg & ~flat
    cat = torch.full_like(g, _NONE, dtype=torch.long)
    cat = cat.masked_fill(valid, _NEU).masked_fill(neg, _NEG).masked_fill(pos, _POS).flatten(1)
    key = torch.where(pos, -g, torch.where(neg, g, torch.zeros_like(g))).flatten(1)

    order = key.sort(dim=-1, stable=True).indices
    order = order.gather(-1, cat.gather(-1, order).sort(dim=-1, stable=True).indices)
    n = min(k, order.shape[-1])
    idx, kept = order[:, :n], cat.gather(-1, order[:, :n])

    scale = (hw.to(torch.float64).to(dev) / gsize_d.to(torch.float64)).to(torch.float32)  # (H/gh, W/gw)
    bound = (hw - 1).to(torch.float32).to(dev)
    cell_r = idx.div(dw, rounding_mode="floor") + pad_d[:, 0, None]
    cell_c = idx.remainder(dw) + pad_d[:, 1, None]
    x = torch.minimum((cell_c.float() + 0.5) * scale[:, 1, None], bound[:, 1, None]).long()
    y = torch.minimum((cell_r.float() + 0.5) * scale[:, 0, None], bound[:, 0, None]).long()
    none = kept == _NONE
    points = torch.stack([x, y], -1).masked_fill(none[..., None], 0)
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
