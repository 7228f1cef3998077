"""Checks and small helpers shared by the ops."""
from __future__ import annotations

import functools
import sys

import torch
from torch import Tensor


def eager(fn):
    """Run ``fn`` (host-side numpy bookkeeping) eagerly under ``torch.compile``.

    ``torch.compiler.disable`` would import dynamo, and with it Triton, at ``import sasp``; this
    wrapper builds the disabled function only once dynamo is loaded, i.e. when compiling.
    """
    disabled = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(_compiler_disable()(fn))
        return disabled[0](*args, **kwargs)

    return wrapper


def _compiler_disable():
    """``torch.compiler.disable``; torch 2.0, which has no ``torch.compiler``, has it as
    ``torch._dynamo.disable``."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "disable"):
        return compiler.disable
    from torch._dynamo import disable

    return disable


def check_sim(sim: Tensor, check_finite: bool = True) -> None:
    """Raise a ValueError for a malformed similarity [M, N_p] or one holding NaN/Inf."""
    if not isinstance(sim, Tensor) or sim.dim() != 2:
        shape = tuple(sim.shape) if isinstance(sim, Tensor) else type(sim).__name__
        raise ValueError(f"similarity must be a tensor [M, N_p], got {shape}")
    if not sim.is_floating_point():
        raise ValueError(f"similarity must be floating point, got {sim.dtype}")
    if check_finite and sim.numel() and not bool(torch.isfinite(sim).all()):
        raise nonfinite_row(int((~torch.isfinite(sim).all(-1)).nonzero()[0]))


def nonfinite_row(row: int) -> ValueError:
    """The error for a similarity row holding NaN or Inf (``cfg.check_finite``)."""
    return ValueError(f"similarity of <SEG> row {row} contains NaN or Inf")
