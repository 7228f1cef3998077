"""SasP's ops: functional, batched, each beside its literal reference."""
from .dispatch import backend_for
from .dtoc import dtoc, dtoc_ref
from .mask_prompt import similarity_mask_prompt, similarity_mask_prompt_ref
from .select import select_points, select_points_ref
from .similarity_as_points import SasPOutput, similarity_as_points, similarity_as_points_ref

__all__ = [
    "SasPOutput",
    "backend_for",
    "dtoc",
    "dtoc_ref",
    "select_points",
    "select_points_ref",
    "similarity_as_points",
    "similarity_as_points_ref",
    "similarity_mask_prompt",
    "similarity_mask_prompt_ref",
]
