"""GSVA (LeapLabTHU/GSVA, ``LisaGSVAForCausalLM``): ``model = wrap_gsva(model)``.

Every pass goes through ``model_forward``: rows are conversations, ``offset`` maps them to
images and ``label_list[i]`` holds image i's original size. A row may hold several [SEG] and
[REJ]; SAM runs once per row on its [SEG] embeddings only ([REJ] gets no mask and no points).
With ``inference=True, reeval=True`` GSVA rewrites [REJ] -> [SEG] in the caller's
``input_ids`` in place before the projection runs; the hidden-state hook reads the tokens then,
so the rewritten [SEG]s get points too, exactly as they get SAM calls. [REJ] needs no entry in
the spec: only [SEG] tokens are gathered for SAM, and only they get points.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from sasp.config import SasPConfig

from .base import PromptMode, SegPipelineSpec, wrap
from .lisa import read_model_forward
from .llava1 import computes_own_points

__all__ = ["GSVA_SPEC", "wrap_gsva"]

GSVA_SPEC = SegPipelineSpec(
    name="gsva",
    entry_points={"model_forward": read_model_forward},
    computes_points=computes_own_points,
)


def wrap_gsva(model: nn.Module, cfg: Optional[SasPConfig] = None, prompt: PromptMode = "both") -> nn.Module:
    """Retrofit a GSVA model with SasP in place; returns it. See ``sasp.adapters.wrap``."""
    return wrap(model, GSVA_SPEC, cfg, prompt)
