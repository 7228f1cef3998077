"""One dispatch guard: which implementation computes SasP (selection + DtoC).

``SASP_BACKEND=torch|triton`` forces a backend; unset (or ``auto``), CUDA tensors use the
fused Triton kernel when Triton imports and the sizes fit the kernel, everything else the torch
path (the automatic choice never imports Triton for CPU tensors). A backend requested by name
that cannot run raises a RuntimeError with the reason; the automatic choice falls back
silently. ``SASP_BACKEND=triton`` on CPU tensors runs Triton's interpreter, and only when
``TRITON_INTERPRET=1`` was set before the kernels were imported (a test vehicle).

The torch path (``sasp.ops.select``, ``sasp.ops.dtoc``) down-samples the map with torch on the
tensor's device and does the rest on the host, vectorised numpy over all <SEG>s, with one
autograd node whose backward is written out; DtoC's windows sit on the selection grid's lines,
computed once per distinct image size. For a CUDA tensor the down-sampled grid and sim
come to the host and the points, labels and refined points go back (the gradient likewise).
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..config import SasPConfig
from ..geometry import ImageSizes, grid_shape, host_padding, host_sizes
from ._common import check_sim, eager
from .dtoc import _dtoc, crop_shape, host_sim
from .select import _lines, _select_host, selection_shape

BACKENDS = ("auto", "torch", "triton")


def triton_unavailable_reason(
    sim: Tensor, cfg: Optional[SasPConfig] = None, grid_hw: Optional[Tuple[int, int]] = None
) -> Optional[str]:
    """Why the Triton kernel cannot run on ``sim`` with ``cfg`` (None when it can)."""
    try:
        from .triton import available
    except ImportError as err:  # pragma: no cover - the subpackage ships with sasp
        return f"sasp.ops.triton failed to import: {err}"
    return available(sim, cfg, grid_hw)


def backend_for(
    sim: Tensor, cfg: Optional[SasPConfig] = None, grid_hw: Optional[Tuple[int, int]] = None
) -> str:
    """The backend that will run for ``sim`` (and ``cfg``, ``grid_hw``): "torch" or "triton"."""
    want = os.environ.get("SASP_BACKEND", "auto").strip().lower() or "auto"
    if want not in BACKENDS:
        raise ValueError(f"SASP_BACKEND={want!r}; expected one of {', '.join(BACKENDS)}")
    if want == "torch" or not isinstance(sim, Tensor) or (want == "auto" and sim.device.type != "cuda"):
        return "torch"  # (a non-tensor goes on to the torch path's ValueError)
    reason = triton_unavailable_reason(sim, cfg, grid_hw)
    if want == "triton" and reason is not None:
        raise RuntimeError(f"SASP_BACKEND=triton was requested but the Triton kernel cannot run: {reason}")
    return "triton" if reason is None else "torch"


def similarity_as_points(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """SasP end to end: similarity [M, N_p] -> (refined [M, K, 2], labels [M, K] int64,
    discrete [M, K, 2] int64). ``refined`` is differentiable (once: both backends' backwards
    are written out) with respect to ``sim``; it is float32, except on the torch path for a
    float64 ``sim`` (float64, so that gradcheck works).
    """
    cfg = cfg or SasPConfig()
    if backend_for(sim, cfg, grid_hw) == "triton":
        from .triton import similarity_as_points_triton

        return similarity_as_points_triton(sim, image_hw, cfg, grid_hw)
    check_sim(sim, False)
    return _similarity_as_points(sim, host_sizes(image_hw, sim.shape[0]), cfg, grid_shape(sim.shape[-1], grid_hw))


@eager  # host-side: torch.compile runs it eagerly
def _similarity_as_points(sim: Tensor, hw: np.ndarray, cfg: SasPConfig, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor]:
    """The torch path on validated inputs (hw: host int64 [M, 2]; grid: (rows, cols)): one
    host copy of sim, the selection, then DtoC with its windows on the selection's lines."""
    m, dev = sim.shape[0], sim.device
    host = host_sim(sim, cfg.check_finite)
    sel = selection_shape(grid, cfg.down_sample)
    pad = host_padding(hw, _grids(sel, crop_shape(grid, cfg.crop_size)), cfg.geometry)  # [M, 2 grids, 2]
    points, labels, lines, centres = _select_host(sim, hw, pad[:, 0], cfg, grid)
    discrete, labels = torch.from_numpy(points).to(dev), torch.from_numpy(labels).to(dev)
    if m == 0:
        dt = torch.float64 if sim.dtype == torch.float64 else torch.float32
        return discrete.to(dt) + 0 * sim.to(dt).sum(), labels, discrete
    windows = _line_windows(hw, lines, centres, _lines(*sel)[0])
    return _dtoc(sim, host, hw, pad[:, 1], points, windows, cfg, grid), labels, discrete


@functools.lru_cache(maxsize=64)
def _grids(*grids: Tuple[int, int]) -> np.ndarray:
    """The grids as one array [G, 2] for ``host_padding`` (cached: built once per config)."""
    return np.array(grids)


def _line_windows(hw: np.ndarray, lines: np.ndarray, centres: np.ndarray, axis: np.ndarray):
    """The DtoC windows of selected points: every line (``select._lines``) of every distinct
    image size, so that rows of equal size share them. Returns the windows' centres, image rows
    and axes [U], and each point's row window and column window [P] (as ``_point_windows``)."""
    m, d = centres.shape
    if m == 1:
        return centres[0], np.zeros(d, np.int64), axis, lines[0, :, 1], lines[0, :, 0]
    _, first, inv = np.unique(hw, axis=0, return_index=True, return_inverse=True)
    window = (inv.reshape(m, 1, 1) * d + lines).reshape(-1, 2)  # [P, 2]: column window, row window
    return centres[first].ravel(), np.repeat(first, d), np.tile(axis, len(first)), window[:, 1], window[:, 0]
