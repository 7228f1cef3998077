"""Fused Triton kernels for SasP. Importing this package never imports Triton itself."""
from __future__ import annotations

from typing import Optional

from torch import Tensor


def available(sim: Tensor) -> Optional[str]:
    """Why the fused kernel cannot run on ``sim``, or None when it can."""
    return "the fused Triton kernel is not built yet"


def similarity_as_points_triton(sim, image_hw, cfg, grid_hw=None):  # pragma: no cover
    raise RuntimeError(available(sim))
