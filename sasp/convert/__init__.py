"""``sasp convert``: released LISA, SESAME, READ and GSVA checkpoints -> SegLlava folders.

    from sasp.convert import convert_checkpoint
    convert_checkpoint("LISA-7B-v1", "seg-llava-lisa-7b", vision_tower="clip-vit-large-patch14")

Needs transformers, safetensors and segment_anything (``pip install "sasp[hf]"``); they are
imported when a conversion runs.
"""
from __future__ import annotations

from .convert import ConversionResult, convert_checkpoint
from .keys import CLIP_RULES, FAMILIES, LLAVA1_DROPPED, LLAVA1_RULES, ConversionError, Family, detect_family, map_key

__all__ = [
    "CLIP_RULES",
    "FAMILIES",
    "LLAVA1_DROPPED",
    "LLAVA1_RULES",
    "ConversionError",
    "ConversionResult",
    "Family",
    "convert_checkpoint",
    "detect_family",
    "map_key",
]
