"""Checks and small helpers shared by the ops."""
from __future__ import annotations

import torch
from torch import Tensor


def check_sim(sim: Tensor, check_finite: bool = True) -> None:
    """Raise a ValueError for a malformed similarity [M, N_p] or one holding NaN/Inf."""
    if not isinstance(sim, Tensor) or sim.dim() != 2:
        shape = tuple(sim.shape) if isinstance(sim, Tensor) else type(sim).__name__
        raise ValueError(f"similarity must be a tensor [M, N_p], got {shape}")
    if not sim.is_floating_point():
        raise ValueError(f"similarity must be floating point, got {sim.dtype}")
    if check_finite and sim.numel():
        bad = ~torch.isfinite(sim).all(-1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise ValueError(f"similarity of <SEG> row {row} contains NaN or Inf")


def minmax(x: Tensor, dim: int = -1) -> Tensor:
    """(x - min) / (max - min) along ``dim``; a constant slice (max == min) maps to zeros.

    READ divides by zero there and propagates NaN; sasp defines the result instead: with
    zeros every cell is a neutral candidate (label -1, i.e. no point prompt) and DtoC sees a
    flat map.
    """
    lo = x.amin(dim, keepdim=True)
    span = x.amax(dim, keepdim=True) - lo
    flat = span == 0
    return torch.where(flat, torch.zeros_like(x), (x - lo) / torch.where(flat, torch.ones_like(span), span))
