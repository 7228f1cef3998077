"""SasP's ops: functional, batched, each beside its literal reference."""
from .dispatch import backend_for, similarity_as_points
from .dtoc import dtoc, dtoc_ref
from .select import select_points, select_points_ref

__all__ = ["backend_for", "dtoc", "dtoc_ref", "select_points", "select_points_ref", "similarity_as_points"]
