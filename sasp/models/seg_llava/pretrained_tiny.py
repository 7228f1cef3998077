"""The trained tiny SegLlava that ships with sasp: offline, one call, about 1 MB.

    from sasp.models.seg_llava import load_pretrained_tiny
    model, processor = load_pretrained_tiny()

What it is: ``build_tiny`` (CLIP 168 px / 14 px patches, a 12 x 12 token grid; a 2-layer Llama;
SAM's stock classes at 256 px, all random at the start) trained from scratch on the synthetic
reasoning-segmentation task (``sasp.data.synthetic``) in the SasP arm: SAM is prompted with
the [SEG] embedding and the SasP points (K 30, t_pos 0.8, t_neg 0.2, down_sample 1: the full
12 x 12 grid, the 144 selection cells READ-7B has after halving its 24 x 24 grid). The saved
``config.sasp`` is that setting, so the loaded model computes what it was trained with.
``benchmarks/RESULTS.md`` ("Training with SasP on the synthetic task") has the recipe and its
scores. It is a demonstration model: it knows the synthetic shapes and nothing else.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Tuple

if TYPE_CHECKING:
    from .modeling_seg_llava import SegLlavaForCausalLM
    from .processing_seg_llava import SegLlavaProcessor

PRETRAINED_TINY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", "tiny-synthetic")
"""The folder of the shipped model (``save_pretrained`` layout: safetensors weights, config,
processor and tokenizer files)."""


def has_pretrained_tiny() -> bool:
    """True when the shipped model's files are installed (config and weights)."""
    return all(os.path.isfile(os.path.join(PRETRAINED_TINY_DIR, f)) for f in ("config.json", "model.safetensors"))


def load_pretrained_tiny(device: str = "cpu") -> Tuple["SegLlavaForCausalLM", "SegLlavaProcessor"]:
    """``(model, processor)``: the trained tiny model in eval mode on ``device``.

    Raises:
        FileNotFoundError: the shipped files are missing (an install without package data).
    """
    if not has_pretrained_tiny():
        raise FileNotFoundError(
            f"the trained tiny model is not installed ({PRETRAINED_TINY_DIR} lacks config.json or "
            "model.safetensors); reinstall sasp from a wheel or a checkout that has it"
        )
    from transformers.utils import logging as hf_logging

    from .loading import load_model

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 1 MB load needs no "Loading weights" bar
    try:
        model, processor = load_model(PRETRAINED_TINY_DIR)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return model.to(device).eval(), processor
