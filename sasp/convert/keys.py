"""Key mapping tables: LISA-family checkpoints -> ``SegLlavaForCausalLM``, and the families.

The four families share one layout, read from their code:

- dvlab-research/LISA ``model/LISA.py`` (``LISAForCausalLM(LlavaLlamaForCausalLM)``, SAM and the
  projection built by ``LisaMetaModel.initialize_lisa_modules`` on ``self.model``) and
  ``model/llava/model/{language_model/llava_llama.py, llava_arch.py}`` (Llama as ``model.*`` +
  ``lm_head``; ``model.mm_projector`` a ``Linear``; the CLIP wrapper ``model.vision_tower`` whose
  ``CLIPVisionModel`` sits at ``model.vision_tower.vision_tower``);
- see-say-segment/sesame ``model/SESAME.py`` (``SesameMetaModel``, same names) with LLaVA-1.5's
  ``build_vision_projector`` (``mlp2x_gelu``: ``mm_projector.0`` / ``mm_projector.2``);
- rui-qian/READ ``model/READ.py`` (``ReadMetaModel``, SESAME's code plus SasP, which adds no
  weights);
- LeapLabTHU/GSVA ``model/modeling_lisa_gsva.py`` (``LisaGSVAMetaModel.init_seg_and_proj``, same
  names; SAM may be ViT-H, -L or -B; a [REJ] token besides [SEG]).

Their merge scripts save every weight except the vision tower's (``"vision_tower" not in k``), so
CLIP comes from the folder their config names (``mm_vision_tower``), mapped by ``CLIP_RULES``.
Targets are transformers 5's LLaVA names (``model.language_model.*``, ``model.vision_tower.*``,
``model.multi_modal_projector.linear_1/linear_2``, ``lm_head``) plus ours (``visual_model.*``:
segment_anything's ``Sam``; ``text_hidden_fcs.0.{0,2}``: LISA's projection).

The tables are tested against LISA's own model code (PyPI ``lisa-on-cuda``: logits and masks of
a converted model equal the original's); SESAME, READ and GSVA, whose repositories are not
packaged, are tested on folders written with the key names above.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

from sasp.config import READ_13B, READ_7B, SasPConfig


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message is one line naming the key, file or
    setting at fault."""


def brief(err: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters, for one-line messages."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text[:200]}"


Rule = Tuple[str, str]
"""(regular expression over a whole source key, replacement template)."""

LLAVA1_RULES: Tuple[Rule, ...] = (
    (r"model\.embed_tokens\.weight", "model.language_model.embed_tokens.weight"),
    (r"model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.(weight|bias)",
     r"model.language_model.layers.\1.\2.\3"),
    (r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight", r"model.language_model.layers.\1.\2.weight"),
    (r"model\.norm\.weight", "model.language_model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.mm_projector\.(weight|bias)", r"model.multi_modal_projector.linear_1.\1"),
    (r"model\.mm_projector\.0\.(weight|bias)", r"model.multi_modal_projector.linear_1.\1"),
    (r"model\.mm_projector\.2\.(weight|bias)", r"model.multi_modal_projector.linear_2.\1"),
    (r"model\.vision_tower\.vision_tower\.(?:vision_model\.)?(.+)", r"model.vision_tower.\1"),
    (r"model\.visual_model\.((?:image_encoder|prompt_encoder|mask_decoder)\..+)", r"visual_model.\1"),
    (r"model\.text_hidden_fcs\.0\.([02])\.(weight|bias)", r"text_hidden_fcs.0.\1.\2"),
)
"""LLaVA-1.x + LISA head (all four families) -> SegLlava."""

LLAVA1_DROPPED: Tuple[Rule, ...] = (
    (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", "rotary frequencies (recomputed from the config)"),
    (r"model\.vision_tower\.vision_tower\.(?:vision_model\.)?embeddings\.position_ids", "CLIP position ids (a constant buffer)"),
)
"""Source keys that are buffers our model recomputes (older transformers saved them)."""

CLIP_RULES: Tuple[Rule, ...] = ((r"(?:vision_model\.)?((?:embeddings|pre_layrnorm|encoder|post_layernorm)\..+)", r"model.vision_tower.\1"),)
"""A CLIP checkpoint (``CLIPModel`` or ``CLIPVisionModel`` folder, e.g.
openai/clip-vit-large-patch14) -> the vision tower."""

CLIP_DROPPED: Tuple[Rule, ...] = (
    (r"(?:vision_model\.)?embeddings\.position_ids", "CLIP position ids (a constant buffer)"),
    (r"text_model\..+", "CLIP's text encoder (LLaVA uses the vision encoder only)"),
    (r"text_projection\.weight|visual_projection\.weight|logit_scale", "CLIP's contrastive head (unused by LLaVA)"),
)


@dataclass(frozen=True)
class Family:
    """One checkpoint family: how to recognise it and what its converted config gets.

    Attributes:
        name: "lisa", "sesame", "read" or "gsva".
        architectures: ``config.json`` ``architectures`` entries its scripts write.
        label: the name users know.
        extra_tokens: tokens besides [SEG] whose ids go into the config (name -> config field).
        sasp_presets: (7B-class, 13B-class) SasP settings the family was released with, or None.
    """

    name: str
    architectures: Tuple[str, ...]
    label: str
    extra_tokens: Dict[str, str] = field(default_factory=dict)
    sasp_presets: Optional[Tuple[SasPConfig, SasPConfig]] = None
    rules: Tuple[Rule, ...] = LLAVA1_RULES
    dropped: Tuple[Rule, ...] = LLAVA1_DROPPED


FAMILIES: Dict[str, Family] = {
    "lisa": Family("lisa", ("LISAForCausalLM",), "LISA"),
    "sesame": Family("sesame", ("SESAMEForCausalLM",), "SESAME"),
    "read": Family("read", ("READForCausalLM",), "READ", sasp_presets=(READ_7B, READ_13B)),
    "gsva": Family("gsva", ("LisaGSVAForCausalLM",), "GSVA", extra_tokens={"[REJ]": "rej_token_id"}),
}

SEG_TOKEN, IM_START, IM_END = "[SEG]", "<im_start>", "<im_end>"


def _compile(rules: Sequence[Rule]) -> Tuple[Tuple["re.Pattern[str]", str], ...]:
    return tuple((re.compile(p), r) for p, r in rules)


_CACHE: Dict[Tuple[Rule, ...], Tuple[Tuple["re.Pattern[str]", str], ...]] = {}


def map_key(key: str, rules: Sequence[Rule], dropped: Sequence[Rule], where: str) -> Optional[str]:
    """Our name for a source key, or None when the key is a dropped buffer (checked first).

    Raises:
        ConversionError: the key matches no rule (``where`` says which file it came from).
    """
    for table in (tuple(rules), tuple(dropped)):
        if table not in _CACHE:
            _CACHE[table] = _compile(table)
    for pattern, _ in _CACHE[tuple(dropped)]:
        if pattern.fullmatch(key):
            return None
    for pattern, target in _CACHE[tuple(rules)]:
        m = pattern.fullmatch(key)
        if m:
            return m.expand(target)
    raise ConversionError(f"{where}: unknown key {key!r}; it has no place in a SegLlava model")


def detect_family(config: Dict[str, object], has_rej: bool) -> Optional[str]:
    """The family named by ``config.json``'s ``architectures``; else GSVA when the tokenizer has
    [REJ]; else None (SESAME and READ checkpoints are indistinguishable by their weights)."""
    archs = [str(a) for a in (config.get("architectures") or [])]
    for fam in FAMILIES.values():
        if any(a in fam.architectures for a in archs):
            return fam.name
    return "gsva" if has_rej else None


def projector_kind(keys: Sequence[str], config: Dict[str, object], where: str) -> str:
    """"linear" (LISA/GSVA's LLaVA-1.1 ``nn.Linear``) or "mlp2x_gelu" (LLaVA-1.5), from the keys,
    checked against ``mm_projector_type`` when the config has it."""
    names = {k for k in keys if k.startswith("model.mm_projector.")}
    if names == {"model.mm_projector.weight", "model.mm_projector.bias"}:
        kind = "linear"
    elif names == {f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}:
        kind = "mlp2x_gelu"
    elif not names:
        raise ConversionError(f"{where} has no model.mm_projector weights: not a LLaVA-based checkpoint")
    else:
        raise ConversionError(
            f"{where}: projector {sorted(names)[-1]!r} is neither LLaVA's linear nor mlp2x_gelu; transformers' LLaVA "
            "projector has two linear layers"
        )
    declared = config.get("mm_projector_type")
    if declared is not None and declared != kind:
        raise ConversionError(f"{where}: config says mm_projector_type={declared!r} but the weights are {kind!r}")
    return kind
