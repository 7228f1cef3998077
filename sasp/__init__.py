"""sasp: Similarity as Points (READ, CVPR 2025) for <SEG>-token segmentation models.

``import sasp`` imports torch and numpy only; adapters import transformers and
segment_anything lazily, and the Triton kernels import Triton lazily.
"""
from .config import PRESETS, READ_7B, READ_13B, SasPConfig
from .geometry import to_sam_frame
from .modules import DtoC, SasP
from .ops import backend_for, dtoc, dtoc_ref, select_points, select_points_ref, similarity_as_points, similarity_as_points_ref
from .ops import similarity_mask_prompt, similarity_mask_prompt_ref
from .similarity import similarity

__version__ = "0.1.0"

_ADAPTER_EXPORTS = ("wrap", "unwrap", "disabled", "wrap_lisa", "wrap_gsva", "wrap_sesame", "SegPipelineSpec")


def __getattr__(name: str):
    """Lazy adapter exports: ``from sasp import wrap_lisa`` imports ``sasp.adapters`` on first use."""
    if name in _ADAPTER_EXPORTS:
        from . import adapters

        return getattr(adapters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "READ_7B",
    "READ_13B",
    "DtoC",
    "SasP",
    "SasPConfig",
    "backend_for",
    "dtoc",
    "dtoc_ref",
    "select_points",
    "select_points_ref",
    "similarity",
    "similarity_as_points",
    "similarity_as_points_ref",
    "similarity_mask_prompt",
    "similarity_mask_prompt_ref",
    "to_sam_frame",
    *_ADAPTER_EXPORTS,
]
