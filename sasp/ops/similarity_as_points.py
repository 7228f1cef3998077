"""Similarity as Points (SasP): selection then DtoC, the op a <SEG> pipeline calls.

``similarity_as_points`` is the public op: the dispatch guard (``sasp.ops.dispatch``) sends
CUDA tensors to the fused Triton kernel (``sasp.ops.triton.similarity_as_points``) and
everything else to the torch path below. ``similarity_as_points_ref`` is its literal twin
and the test oracle: ``select_points_ref`` then ``dtoc_ref``, one row at a time.

The torch path down-samples the map with torch on the tensor's device and does the rest on
the host, vectorised numpy over all <SEG>s, with one autograd node whose backward is written
out (``sasp.ops.dtoc``). It does not de-duplicate the points' windows as ``dtoc`` does: its
points lie on the rows and columns of the selection grid, so DtoC's windows are computed once
per grid line and distinct image size. For a CUDA tensor the down-sampled grid and sim come
to the host and the points, labels and refined points go back (the gradient likewise).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes, image_sizes
from ._common import check_sim, eager
from .dispatch import backend_for
from .dtoc import Windows, _dtoc, crop_shape, dtoc_ref, host_sim
from .select import _lines, _select_host, select_points_ref, selection_shape


class SasPOutput(NamedTuple):
    """What ``similarity_as_points`` returns; unpacks as ``refined, labels, discrete``."""

    refined: Tensor  # [M, K, 2] refined points (x, y) in pixels, differentiable in sim
    labels: Tensor  # [M, K] int64 in {1, 0, -1}
    discrete: Tensor  # [M, K, 2] int64 discrete points (x, y)


def similarity_as_points(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> SasPOutput:
    """SasP end to end: similarity map -> refined point prompts, labels and discrete points.

    Args:
        sim (Tensor): [M, N_p] similarity of each <SEG> with its image's patch tokens.
        image_hw (Tensor | list): [M, 2] original image size (H, W) of each row.
        cfg (SasPConfig): settings; READ-7B's by default.
        grid_hw (tuple): (rows, cols) of the token grid; default sqrt(N_p) x sqrt(N_p).

    Returns:
        SasPOutput: ``refined`` [M, K, 2], ``labels`` [M, K] int64, ``discrete`` [M, K, 2]
        int64 (unpacks as ``refined, labels, discrete``). ``refined`` is differentiable (once:
        both backends' backwards are written out) with respect to ``sim``; it is float32,
        except on the torch path for a float64 ``sim`` (float64, so that gradcheck works).
    """
    cfg = cfg or SasPConfig()
    if backend_for(sim, cfg, grid_hw) == "triton":
        from .triton import similarity_as_points_triton

        return similarity_as_points_triton(sim, image_hw, cfg, grid_hw)
    check_sim(sim, False)
    return _similarity_as_points(sim, host_sizes(image_hw, sim.shape[0]), cfg, grid_shape(sim.shape[-1], grid_hw))


@eager  # host-side: torch.compile runs it eagerly
def _similarity_as_points(sim: Tensor, hw: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]) -> SasPOutput:
    """The torch path on validated inputs (hw: host int64 [M, 2]; grid: (rows, cols)): one
    host copy of sim, the selection, then DtoC with its windows on the selection's lines."""
    m, dev = sim.shape[0], sim.device
    host = host_sim(sim, cfg.check_finite)
    sel_grid = selection_shape(grid, cfg.down_sample)
    pad = host_padding(hw, _grids(sel_grid, crop_shape(grid, cfg.crop_size)), cfg.geometry)  # [M, 2 grids, 2]
    sel = _select_host(sim, hw, pad[:, 0], cfg, grid)
    discrete, labels = torch.from_numpy(sel.points).to(dev), torch.from_numpy(sel.labels).to(dev)
    if m == 0:
        dt = torch.float64 if sim.dtype == torch.float64 else torch.float32
        return SasPOutput(discrete.to(dt) + 0 * sim.to(dt).sum(), labels, discrete)
    windows = _line_windows(hw, sel.lines, sel.centres, _lines(*sel_grid).axis)
    return SasPOutput(_dtoc(sim, host, hw, pad[:, 1], sel.points, windows, cfg, grid), labels, discrete)


@functools.lru_cache(maxsize=64)
def _grids(*grids: Tuple[int, int]) -> np.ndarray:
    """The grids as one array [G, 2] for ``host_padding`` (cached: built once per config)."""
    return np.array(grids)


def _line_windows(hw: np.ndarray, lines: np.ndarray, centres: np.ndarray, axis: np.ndarray) -> Windows:
    """The DtoC windows of selected points: every line (``select._lines``) of every distinct
    image size, so that rows of equal size share them. ``lines`` [M, K, 2] and ``centres``
    [M, D] come from the selection (``Selection``), ``axis`` [D] from ``_lines``."""
    m, d = centres.shape
    if m == 1:
        return Windows(centres[0], np.zeros(d, np.int64), axis, lines[0, :, 1], lines[0, :, 0])
    _, first, inv = np.unique(hw, axis=0, return_index=True, return_inverse=True)
    window = (inv.reshape(m, 1, 1) * d + lines).reshape(-1, 2)  # [P, 2]: column window, row window
    return Windows(centres[first].ravel(), np.repeat(first, d), np.tile(axis, len(first)), window[:, 1], window[:, 0])


def similarity_as_points_ref(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> SasPOutput:
    """Literal reference of ``similarity_as_points``: for each row, ``select_points_ref`` then
    ``dtoc_ref`` (full H x W maps, one point at a time). The selection runs in float32 as the
    fast paths do; ``refined`` has sim's dtype (pass float64 for an oracle)."""
    cfg = cfg or SasPConfig()
    check_sim(sim, cfg.check_finite)
    m, k = sim.shape[0], cfg.num_points
    hw = image_sizes(image_hw, m)
    refined, labels, discrete = [], [], []
    for row in range(m):
        points, row_labels = select_points_ref(sim[row : row + 1], hw[row : row + 1], cfg, grid_hw)
        refined.append(dtoc_ref(sim[row : row + 1], hw[row : row + 1], points, cfg, grid_hw))
        labels.append(row_labels)
        discrete.append(points)
    if m == 0:
        empty = torch.zeros(0, k, 2, dtype=torch.long, device=sim.device)
        return SasPOutput(sim.new_zeros(0, k, 2) + 0 * sim.sum(), empty[..., 0], empty)
    return SasPOutput(torch.cat(refined), torch.cat(labels), torch.cat(discrete))
