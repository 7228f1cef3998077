"""SegLlava: LISA's architecture on current libraries, with SasP built in.

transformers' ``LlavaForConditionalGeneration`` + segment_anything's stock ``Sam``; a [SEG]
token whose last-layer hidden state (one position before it) is projected to SAM's prompt
width; LISA's losses. ``config.sasp`` (a SasPConfig as a dict, or None for the baseline)
turns Similarity-as-Points on: SAM is then prompted with the points as well (``sam_prompt``).

Submodules import lazily: ``sasp.models.seg_llava.sam`` and ``.losses`` need only torch and
segment_anything; the classes below need transformers (``pip install "sasp[hf]"``).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegLlavaConfig": "configuration_seg_llava",
    "SegLlavaForCausalLM": "modeling_seg_llava",
    "SegLlavaOutput": "modeling_seg_llava",
    "SegLlavaGeneration": "modeling_seg_llava",
    "InputError": "configuration_seg_llava",
    "SegLlavaProcessor": "processing_seg_llava",
    "build_tiny": "tiny",
    "seg_llava_arms": "evaluation",
    "seg_llava_predictor": "evaluation",
    "build_tiny_tokenizer": "tiny",
    "load_model": "loading",
    "load_pretrained_tiny": "pretrained_tiny",
    "CheckpointError": "sam",
    "build_sam": "sam",
    "TINY_SAM_CONFIG": "sam",
    "dice_loss": "losses",
    "sigmoid_ce_loss": "losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module not in ("sam", "losses"):
        try:
            import transformers  # noqa: F401
        except ImportError as err:
            raise ImportError(f"sasp.models.seg_llava.{name} needs transformers: pip install \"sasp[hf]\"") from err
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
