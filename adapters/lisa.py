"""LISA (dvlab-research/LISA, ``LISAForCausalLM``): ``model = wrap_lisa(model)``.

LISA's training and validation both go through ``model_forward`` (rows = conversations,
``offset`` maps them to images, ``label_list[i]`` has image i's original size); ``evaluate``
generates with ``output_hidden_states=True`` and reads the last step's hidden states, whose rows
are the generated ``sequences`` (``original_size_list[i]`` per row). CLIP preprocessing is
"resize shortest side, centre crop".
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn

from sasp.config import SasPConfig

from .base import CallContext, PromptMode, SegPipelineSpec, wrap
from .llava1 import computes_own_points, image_sizes, rows_from_offset

__all__ = ["LISA_SPEC", "wrap_lisa"]


def read_model_forward(core: nn.Module, args: Mapping[str, Any]) -> CallContext:
    """``model_forward(images, images_clip, input_ids, ..., offset, ..., label_list, ...)``."""
    sizes = [m.shape[-2:] for m in args["label_list"]]
    return CallContext(tokens=args["input_ids"], image_hw=rows_from_offset(args["offset"], sizes))


def read_evaluate(core: nn.Module, args: Mapping[str, Any]) -> CallContext:
    """``evaluate(images_clip, images, input_ids, resize_list, original_size_list, ...)``: the
    tokens are the ``sequences`` that ``generate`` returns."""
    return CallContext(tokens=None, image_hw=image_sizes(args["original_size_list"]))


LISA_SPEC = SegPipelineSpec(
    name="lisa",
    entry_points={"model_forward": read_model_forward, "evaluate": read_evaluate},
    computes_points=computes_own_points,
)


def wrap_lisa(model: nn.Module, cfg: Optional[SasPConfig] = None, prompt: PromptMode = "both") -> nn.Module:
    """Retrofit a LISA model with SasP in place; returns it. See ``sasp.adapters.wrap``."""
    return wrap(model, LISA_SPEC, cfg, prompt)
