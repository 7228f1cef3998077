"""The model side of training: build or load a SegLlava, pick the arm, choose what trains.

What trains follows LISA (dvlab-research/LISA ``train_ds.py``, ``model/LISA.py``): the CLIP
vision tower, the multimodal projector and SAM's image and prompt encoders are frozen; SAM's
mask decoder, the [SEG] projection ``text_hidden_fcs``, ``lm_head`` and the token embeddings
train; the LLM trains fully, or through LoRA adapters on its attention (``q_proj``,
``v_proj``; r=8, alpha=16, dropout=0.05 in LISA). ``train_vision_tower`` and
``train_projector`` unfreeze the CLIP side (a tiny model trained from scratch needs both).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from sasp.config import PRESETS, SasPConfig
from sasp.models.seg_llava import SegLlavaForCausalLM, SegLlavaProcessor, build_tiny, load_model

__all__ = [
    "LoraSettings",
    "TrainableSettings",
    "apply_lora",
    "arm_name",
    "build_model",
    "configure_trainable",
    "resolve_sasp",
    "set_arm",
    "trainable_parameter_names",
]

LLM_ATTENTION = ("q_proj", "v_proj")
"""LISA's LoRA targets: the LLM's attention query and value projections."""

@dataclass(frozen=True)
class TrainableSettings:
    """Which frozen-by-default parts of the model train as well (LISA freezes all three).

    ``train_sam_encoder`` sets the model's ``config.train_sam_encoder`` (SAM's image encoder
    then runs with gradients); a model trained from scratch needs it, a released SAM does not.
    """

    train_vision_tower: bool = False
    train_projector: bool = False
    train_sam_encoder: bool = False


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM's attention (LISA: r=8, alpha=16, dropout=0.05, q_proj and v_proj)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: Tuple[str, ...] = LLM_ATTENTION

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module name (e.g. q_proj)")


def resolve_sasp(preset: Optional[str] = None, **fields: Any) -> Optional[SasPConfig]:
    """The SasP arm's configuration: a preset name ("read-7b", "read-13b") with optional field
    overrides, fields alone (on top of READ-7B's defaults), or None (baseline) when both are
    empty. ``fields`` with value None are ignored (unset command-line flags)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if preset is None and not fields:
        return None
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown SasP preset {preset!r}; expected one of {sorted(PRESETS)}")
    base = PRESETS[preset] if preset is not None else SasPConfig()
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(SasPConfig)})
    if unknown:
        raise ValueError(f"unknown SasPConfig fields {unknown}")
    return base.replace(**fields)


def arm_name(sasp: Optional[SasPConfig]) -> str:
    """"baseline" for None, "sasp" otherwise."""
    return "baseline" if sasp is None else "sasp"


def build_model(
    source: str = "tiny",
    seed: int = 0,
    sam_checkpoint: Optional[str] = None,
    sam_config: Optional[Dict[str, Any]] = None,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """``(model, processor)``: ``source="tiny"`` builds the tiny random model from ``seed``;
    otherwise a seg_llava folder or a LLaVA-1.5 folder (``load_model``), whose newly created
    modules (SAM without a checkpoint, the [SEG] projection) are initialised from ``seed``.
    Same seed, same initial weights, in either arm."""
    if source == "tiny":
        return build_tiny(seed=seed)
    if not os.path.isdir(source):
        raise ValueError(f"--model must be 'tiny' or a model folder; {source!r} is not a folder")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return load_model(source, sam_checkpoint=sam_checkpoint, sam_config=sam_config)
    finally:
        torch.random.set_rng_state(state)


def _core(model: nn.Module) -> nn.Module:
    """The SegLlava below PEFT's ``base_model.model``."""
    inner = model
    while not isinstance(inner, SegLlavaForCausalLM):
        nxt = getattr(inner, "base_model", None)
        nxt = getattr(nxt, "model", nxt)
        if nxt is None or nxt is inner:
            raise TypeError(f"expected a SegLlavaForCausalLM (bare or in PEFT), got {type(model).__name__}")
        inner = nxt
    return inner


def set_arm(model: nn.Module, sasp: Optional[SasPConfig], sam_prompt: str = "both") -> nn.Module:
    """Switch ``model`` to the baseline arm (``sasp=None``) or to SasP with ``sasp``; returns it.

    ``sam_prompt`` (SasP arm): SAM gets the points and the [SEG] embedding ("both", READ) or
    the points only ("points").

    The arm is part of the model configuration (``config.sasp``, saved with every
    checkpoint), so a reloaded checkpoint computes what it was trained with."""
    _core(model).config.with_sasp(sasp, sam_prompt if sasp is not None else "both")
    return model


def _sam_parts(core: nn.Module) -> dict:
    """SAM's image encoder, prompt encoder and mask decoder attribute names for the model's
    SAM backend (segment_anything's by default)."""
    backend = getattr(core, "sam_backend", None)
    return dict(getattr(backend, "parts", None) or
                {"image_encoder": "image_encoder", "prompt_encoder": "prompt_encoder", "mask_decoder": "mask_decoder"})


def _frozen_prefixes(settings: TrainableSettings, parts: dict) -> List[str]:
    frozen = [f"visual_model.{parts['prompt_encoder']}"]
    if not settings.train_sam_encoder:
        frozen.append(f"visual_model.{parts['image_encoder']}")
    if not settings.train_vision_tower:
        frozen.append("model.vision_tower")
    if not settings.train_projector:
        frozen.append("model.multi_modal_projector")
    return frozen


def configure_trainable(model: nn.Module, settings: TrainableSettings = TrainableSettings()) -> List[str]:
    """Full fine-tuning: freeze what LISA freezes (minus ``settings``), train the rest.

    Returns the names of the trainable parameters. SAM's prompt encoder stays frozen in both
    arms (LISA, READ). A few mask-decoder parameters never get a gradient (the IoU head and
    the multimask tokens, as in LISA), so DistributedDataParallel needs
    ``find_unused_parameters`` (``Trainer``'s default for this model)."""
    core = _core(model)
    core.config.train_sam_encoder = settings.train_sam_encoder
    frozen = _frozen_prefixes(settings, _sam_parts(core))
    for name, p in core.named_parameters():
        p.requires_grad_(not any(name == f or name.startswith(f + ".") for f in frozen))
    return trainable_parameter_names(model)


def apply_lora(model: nn.Module, lora: LoraSettings, settings: TrainableSettings = TrainableSettings()) -> nn.Module:
    """Wrap ``model`` in a PEFT ``PeftModel``: LoRA on the LLM's attention, and the parts LISA
    trains in full (mask decoder, [SEG] projection, lm_head, embeddings, plus the CLIP side if
    ``settings`` say so) as ``modules_to_save``, so that every checkpoint holds them and
    ``Trainer`` resumes them. ``merge_and_unload()`` turns the result back into a plain model.

    Returns:
        the ``PeftModel``.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("LoRA training needs PEFT: pip install peft") from None
    core = _core(model)
    core.config.train_sam_encoder = settings.train_sam_encoder
    targets = "|".join(sorted(set(lora.targets)))
    # only the LLM's layers: CLIP and SAM have q_proj/v_proj modules of their own
    pattern = rf"model\.language_model\.layers\.\d+\.self_attn\.({targets})"
    names = [n for n, _ in core.named_modules()]
    if not any(re.fullmatch(pattern, n) for n in names):
        raise ValueError(f"no LLM attention module matches the LoRA targets {list(lora.targets)}")
    parts = _sam_parts(core)
    save = [parts["mask_decoder"], "text_hidden_fcs.0", "lm_head", "embed_tokens"]
    if settings.train_projector:
        save.append("multi_modal_projector")
    if settings.train_vision_tower:
        save.append("vision_tower")
    if settings.train_sam_encoder:
        save.append(parts["image_encoder"])
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=pattern,
        modules_to_save=save, bias="none",
    )
    return get_peft_model(core, config)


def trainable_parameter_names(model: nn.Module) -> List[str]:
    """Names of the parameters with ``requires_grad``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
