"""SESAME (see-say-segment/sesame, ``SESAMEForCausalLM``) and READ's released checkpoints,
which are SESAME-structured: ``model = wrap_sesame(model)``.

``model_forward`` takes ``sam_mask_shape_list[i] = (resized (h, w), original (H, W))`` per image
and ``offset``; ``evaluate`` generates and reads the last step's hidden states, one row per
image; rows without [SEG] get ``None`` and skip SAM (and get no points). READ's own class
(``READForCausalLM``) already prompts SAM with its points: ``wrap_sesame`` refuses it, and the
prompt hook never adds points to a call that carries some.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn

from sasp.config import SasPConfig

from .base import CallContext, PromptMode, SegPipelineSpec, wrap
from .llava1 import computes_own_points, image_sizes, rows_from_offset

__all__ = ["SESAME_SPEC", "wrap_sesame"]


def _original_sizes(shapes: Any) -> list:
    return [s[1] for s in shapes]


def read_model_forward(core: nn.Module, args: Mapping[str, Any]) -> CallContext:
    """``model_forward(images, images_clip, input_ids, labels, attention_masks, offset,
    masks_list, sam_mask_shape_list, inference=False)``."""
    sizes = _original_sizes(args["sam_mask_shape_list"])
    return CallContext(tokens=args["input_ids"], image_hw=rows_from_offset(args["offset"], sizes))


def read_evaluate(core: nn.Module, args: Mapping[str, Any]) -> CallContext:
    """``evaluate(images_clip, images, input_ids, sam_mask_shape_list, max_new_tokens)``."""
    return CallContext(tokens=None, image_hw=image_sizes(_original_sizes(args["sam_mask_shape_list"])))


SESAME_SPEC = SegPipelineSpec(
    name="sesame",
    entry_points={"model_forward": read_model_forward, "evaluate": read_evaluate},
    computes_points=computes_own_points,
)


def wrap_sesame(model: nn.Module, cfg: Optional[SasPConfig] = None, prompt: PromptMode = "both") -> nn.Module:
    """Retrofit a SESAME model (or a READ checkpoint loaded into SESAME's class) with SasP in
    place; returns it. See ``sasp.adapters.wrap``."""
    return wrap(model, SESAME_SPEC, cfg, prompt)
