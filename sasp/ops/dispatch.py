"""The dispatch guard: which implementation computes ``similarity_as_points``.

``SASP_BACKEND=torch|triton`` forces a backend; unset (or ``auto``), CUDA tensors use the
fused Triton kernel (``sasp.ops.triton.similarity_as_points``) when Triton imports and the
sizes fit the kernel, everything else the torch path (``sasp.ops.similarity_as_points``; the
automatic choice never imports Triton for CPU tensors). A backend requested by name that
cannot run raises a RuntimeError with the reason; the automatic choice falls back silently.
``SASP_BACKEND=triton`` on CPU tensors runs Triton's interpreter, and only when
``TRITON_INTERPRET=1`` was set before the kernels were imported (a test vehicle).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from torch import Tensor

from ..config import SasPConfig

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
