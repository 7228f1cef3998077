"""Fused Triton kernels of ``similarity_as_points``. Importing this package never imports
Triton itself.

``available`` says whether the fused kernel can run on a tensor (and why not);
``similarity_as_points_triton`` imports the kernels (and Triton) on first use.

Needs torch >= 2.4 (``torch.library.custom_op``) and triton >= 3.4 (``triton.knobs``);
``missing_requirements`` says what this environment lacks, without importing Triton.

Where the kernel runs:
- CUDA tensors, when Triton imports;
- CPU tensors only under Triton's interpreter: ``TRITON_INTERPRET=1`` must be set before the
  kernels are defined (before ``sasp.ops.triton.similarity_as_points_kernels`` is first
  imported). This is a test vehicle (slow); the automatic dispatch never picks it for CPU
  tensors.
Limits of the kernel (beyond them the dispatcher falls back to the torch path):
- token grid at most ``MAX_GRID_SIDE`` x ``MAX_GRID_SIDE`` (64 x 64, N_p <= 4096);
- ``dtoc_radius`` at most ``MAX_RADIUS`` (15), ``num_points`` at most ``MAX_POINTS`` (4096);
- similarity dtype float16, bfloat16, float32 or float64.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from typing import Optional, Tuple

import torch
from torch import Tensor

MAX_GRID_SIDE = 64
MAX_RADIUS = 15
MAX_POINTS = 4096
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

MIN_TORCH = (2, 4)
"""``torch.library.custom_op`` (the kernel's custom op) and ``torch.compiler.is_compiling``."""
MIN_TRITON = (3, 4)
"""``triton.knobs`` (whether the kernels were defined under Triton's interpreter)."""

_KERNEL_MODULE = __name__ + ".similarity_as_points_kernels"
_TRITON_DISTRIBUTIONS = ("triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu")


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _triton_version() -> str:
    for name in _TRITON_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "of unknown version"


def _triton_has_knobs() -> Optional[bool]:
    """Whether the installed Triton has ``triton.knobs`` (None: Triton is not installed). Looks
    for the module's file instead of importing Triton, which would fix TRITON_INTERPRET."""
    if "triton" in sys.modules:
        return hasattr(sys.modules["triton"], "knobs")
    spec = importlib.util.find_spec("triton")
    if spec is None:
        return None
    folders = spec.submodule_search_locations or [os.path.dirname(spec.origin or "")]
    return any(os.path.exists(os.path.join(folder, "knobs.py")) for folder in folders)


@functools.lru_cache(maxsize=None)
def missing_requirements() -> Optional[str]:
    """What the fused kernel needs that this environment lacks (None when nothing), e.g.
    "needs torch >= 2.4 and triton >= 3.4 (found torch 2.0.1, triton 2.0.0)". Does not import
    Triton."""
    need = f"needs torch >= {'.'.join(map(str, MIN_TORCH))} and triton >= {'.'.join(map(str, MIN_TRITON))}"
    has_knobs = _triton_has_knobs()
    if has_knobs is None:
        return f"triton is not installed; the fused kernel {need} (pip install \"sasp[triton]\")"
    compiler = getattr(torch, "compiler", None)
    torch_ok = hasattr(torch.library, "custom_op") and hasattr(compiler, "is_compiling")
    if torch_ok and has_knobs:
        return None
    return f"the fused kernel {need} (found torch {torch.__version__}, triton {_triton_version()})"


def kernel_limits(sim: Tensor, cfg=None, grid_hw: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """Why the kernel's sizes or dtype do not fit ``sim`` and ``cfg`` (None when they do).

    Malformed inputs (wrong rank, N_p not a grid) are left to the op's own ValueErrors.
    """
    if sim.dtype not in DTYPES:
        return f"similarity dtype {sim.dtype} is not supported (float16, bfloat16, float32, float64)"
    if sim.dim() != 2:
        return None
    n_p = sim.shape[-1]
    if grid_hw is not None:
        rows, cols = (int(v) for v in grid_hw)
    else:
        rows = cols = int(round(n_p ** 0.5))
    if max(rows, cols) > MAX_GRID_SIDE:
        return f"token grid {rows}x{cols} exceeds the kernel's {MAX_GRID_SIDE}x{MAX_GRID_SIDE} limit"
    if cfg is not None:
        if cfg.dtoc_radius > MAX_RADIUS:
            return f"dtoc_radius={cfg.dtoc_radius} exceeds the kernel's limit {MAX_RADIUS}"
        if cfg.num_points > MAX_POINTS:
            return f"num_points={cfg.num_points} exceeds the kernel's limit {MAX_POINTS}"
    return None


def available(sim: Tensor, cfg=None, grid_hw: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """Why the fused kernel cannot run on ``sim`` (with ``cfg``, ``grid_hw``), or None when it can.

    Imports Triton only for tensors the kernel could run on (CUDA, or CPU with
    TRITON_INTERPRET=1), so the automatic choice on CPU stays Triton-free.
    """
    if not isinstance(sim, Tensor):
        return f"expected a tensor, got {type(sim).__name__}"
    dev = sim.device.type
    if dev == "cpu":
        if not _interpret_requested():
            return "CPU tensors run the Triton kernel only in Triton's interpreter (set TRITON_INTERPRET=1)"
    elif dev != "cuda":
        return f"device {sim.device} is not supported (CUDA, or CPU under TRITON_INTERPRET=1)"
    reason = kernel_limits(sim, cfg, grid_hw)
    if reason is not None:
        return reason
    missing = missing_requirements()
    if missing is not None:
        return missing
    try:
        from . import similarity_as_points as kernels
    except Exception as err:  # a broken Triton install: report it instead of crashing
        return f"importing the Triton kernels failed: {type(err).__name__}: {err}"
    if dev == "cpu" and not kernels.INTERPRETED:
        return (
            "the Triton kernels were compiled before TRITON_INTERPRET=1 was set; set it before "
            f"{_KERNEL_MODULE} is first imported"
        )
    return None


def similarity_as_points_triton(sim, image_hw, cfg=None, grid_hw=None):
    """The fused kernel's ``similarity_as_points`` (see
    ``sasp.ops.triton.similarity_as_points.similarity_as_points_triton``)."""
    from .similarity_as_points import similarity_as_points_triton as run

    return run(sim, image_hw, cfg, grid_hw)


__all__ = [
    "MAX_GRID_SIDE",
    "MAX_POINTS",
    "MAX_RADIUS",
    "MIN_TORCH",
    "MIN_TRITON",
    "available",
    "kernel_limits",
    "missing_requirements",
    "similarity_as_points_triton",
]
