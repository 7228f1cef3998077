"""Everything a converted folder holds besides weights: the tokenizer with its ``<image>`` token,
the LLaVA / CLIP / SAM configs, the SasP preset and the processor with LISA's prompt template.

Prompt template: LISA's ``chat.py`` (and SESAME's, READ's and GSVA's validation) builds the
``llava_v1`` conversation of ``model/llava/conversation.py`` (system line, roles "USER" /
"ASSISTANT", separator " ") around ``"<image>\\n" + question``, with ``<image>`` wrapped in
``<im_start>``/``<im_end>`` when ``mm_use_im_start_end`` is set (their released checkpoints), and
``tokenizer_image_token`` turns the single ``<image>`` into the placeholder -200, which the model
expands into N_p patch features. ``SegLlavaProcessor`` writes N_p copies of the ``<image>`` token
instead, so the model sees the same sequence. The text after ``<image>`` is tokenized as a fresh
string by LISA but mid-string by the processor: with ``<im_end>`` in between (released
checkpoints) both give the same ids; without it a Llama tokenizer may differ in one leading
"▁" token.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from sasp.config import PRESETS, SasPConfig

from .keys import IM_END, IM_START, ConversionError, Family, brief
from .source import Checkpoint, TensorInfo, open_checkpoint

IMAGE_TOKEN = "<image>"
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAMA_FIELDS = (
    "hidden_act", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "attention_bias",
    "mlp_bias", "head_dim", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
)
TOWER_PREFIX = "model.vision_tower.vision_tower."


def prompt_template(im_start_end: bool) -> str:
    """LISA's llava_v1 prompt as a ``SegLlavaProcessor`` template (``{prompt}`` = the question)."""
    image = f"{IM_START}{IMAGE_TOKEN}{IM_END}" if im_start_end else IMAGE_TOKEN
    return f"{LLAVA_V1_SYSTEM} USER: {image}\n{{prompt}} ASSISTANT:"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConversionError(f"{path} has no usable tokenizer ({brief(err)})") from None


def single_token_id(tokenizer: Any, token: str, where: str) -> Optional[int]:
    """The id of ``token`` as LISA reads it (``tokenizer(token).input_ids[0]``), or None when the
    tokenizer does not hold it as one token."""
    ids = tokenizer(token, add_special_tokens=False).input_ids
    direct = tokenizer.convert_tokens_to_ids(token)
    if len(ids) != 1 or ids[0] != direct or direct == tokenizer.unk_token_id:
        return None
    return int(direct)


def add_image_token(tokenizer: Any) -> int:
    """The ``<image>`` token's id, added as a special token when the tokenizer lacks it."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def text_config(raw: Mapping[str, Any], vocab_size: int):
    """transformers' ``LlamaConfig`` from the checkpoint's config.json (a Llama config plus LLaVA
    fields), with the vocabulary grown by the image token."""
    from transformers import LlamaConfig

    fields = {k: raw[k] for k in LLAMA_FIELDS if raw.get(k) is not None}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size") if k not in raw]
    if missing:
        raise ConversionError(f"config.json lacks {missing[0]}: not a Llama-based LLaVA checkpoint")
    return LlamaConfig(**fields, vocab_size=int(vocab_size), tie_word_embeddings=False)


def _clip_from_shapes(tensors: Mapping[str, TensorInfo]) -> Any:
    """A CLIP ViT config from the tower's weight shapes (heads of 64 channels, OpenAI's
    quick_gelu and layer-norm epsilon, as every CLIP tower of these families)."""
    from transformers import CLIPVisionConfig

    def shape(suffix: str) -> Tuple[int, ...]:
        for key, info in tensors.items():
            if key.endswith(suffix):
                return info.shape
        raise ConversionError(f"the vision tower has no {suffix!r} weight")

    width, _, patch, _ = shape("embeddings.patch_embedding.weight")
    positions = shape("embeddings.position_embedding.weight")[0]
    side = math.isqrt(positions - 1)
    layers = {int(m.group(1)) for k in tensors for m in [re.search(r"encoder\.layers\.(\d+)\.", k)] if m}
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=shape("mlp.fc1.weight")[0], num_hidden_layers=len(layers),
        num_attention_heads=max(1, width // 64), image_size=side * patch, patch_size=patch, hidden_act="quick_gelu",
    )


def vision_tower(ck: Checkpoint, tower: Optional[str]) -> Tuple[Any, Any, Optional[Checkpoint]]:
    """(CLIPVisionConfig, CLIPImageProcessor, the tower's own checkpoint or None when ``ck`` holds
    the tower weights).

    The tower folder is ``tower`` or, when that is None, the config's ``mm_vision_tower`` if it
    is a local folder (a CLIPModel or CLIPVisionModel checkpoint, e.g. a local copy of
    openai/clip-vit-large-patch14).
    """
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    inside = {k: v for k, v in ck.tensors.items() if k.startswith(TOWER_PREFIX)}
    named = str(ck.config.get("mm_vision_tower") or ck.config.get("vision_tower") or "")
    folder = tower if tower is not None else (named if named and os.path.isdir(named) else None)
    tower_ck = None
    if folder is not None:
        tower_ck = open_checkpoint(folder, "vision tower") if not inside else None
        try:
            config = CLIPVisionConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConversionError(f"vision tower {folder} has no usable CLIP config ({brief(err)})") from None
    elif inside:
        config = _clip_from_shapes(inside)
    else:
        raise ConversionError(
            f"{ck.path} holds no vision-tower weights (the merge scripts leave them out); pass the CLIP folder its "
            f"config names ({named or 'mm_vision_tower'}) with --vision-tower / vision_tower="
        )
    if folder is not None and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        processor = CLIPImageProcessor.from_pretrained(folder)
    else:
        size = int(config.image_size)
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    mm_hidden = ck.config.get("mm_hidden_size")
    if mm_hidden is not None and int(mm_hidden) != int(config.hidden_size):
        raise ConversionError(f"vision tower width {config.hidden_size} does not match the checkpoint's mm_hidden_size {mm_hidden}")
    return config, processor, tower_ck


def sam_config(ck: Checkpoint, given: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``build_sam``'s config: ``given``, else the released variant told by the image-encoder width."""
    from sasp.models.seg_llava.sam import RELEASED_WIDTHS

    if given is not None:
        return dict(given)
    info = ck.tensors.get("model.visual_model.image_encoder.patch_embed.proj.weight")
    if info is None:
        raise ConversionError(f"{ck.path} has no SAM weights (model.visual_model.*): not a LISA-family checkpoint")
    width = int(info.shape[0])
    if width not in RELEASED_WIDTHS:
        raise ConversionError(f"SAM image-encoder width {width} is no released SAM (vit_h/l/b); pass sam_config")
    return {"variant": RELEASED_WIDTHS[width]}


def sasp_preset(family: Family, choice: str, hidden_size: int) -> Optional[SasPConfig]:
    """"auto": the family's released setting (READ: READ-13B's for 13B-class models, hidden size
    >= 5120, else READ-7B's; the others none); "none"; or a preset name ("read-7b", "read-13b")."""
    if choice == "none":
        return None
    if choice == "auto":
        if family.sasp_presets is None:
            return None
        return family.sasp_presets[1] if hidden_size >= 5120 else family.sasp_presets[0]
    if choice not in PRESETS:
        raise ConversionError(f"unknown SasP setting {choice!r}; expected auto, none or one of {sorted(PRESETS)}")
    return PRESETS[choice]


def build_config(raw: Mapping[str, Any], fam: Family, ids: Mapping[str, int], projector: str, rows: int, image_id: int,
                 vision_cfg: Any, sam: Mapping[str, Any], preset: Optional[SasPConfig]):
    """The ``SegLlavaConfig`` of a converted checkpoint: LLaVA fields from the LISA-style config
    (CLIP layer ``mm_vision_select_layer``, patch tokens only), ``center_crop`` geometry (CLIP's
    resize-and-crop, as all four families preprocess), the token ids, SAM and SasP."""
    from sasp.models.seg_llava.configuration_seg_llava import SegLlavaConfig

    side = int(vision_cfg.image_size) // int(vision_cfg.patch_size)
    try:
        return SegLlavaConfig(
            vision_config=vision_cfg, text_config=text_config(raw, rows), image_token_index=int(image_id),
            image_seq_length=side * side, vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)),
            vision_feature_select_strategy="default", projector_hidden_act="linear" if projector == "linear" else "gelu",
            multimodal_projector_bias=True, tie_word_embeddings=False, sam_config=dict(sam), out_dim=int(raw.get("out_dim", 256)),
            image_geometry="center_crop", sasp=preset, dtype=raw.get("torch_dtype") or raw.get("dtype"),
            converted_from={"family": fam.name, "architectures": list(raw.get("architectures") or [])}, **ids,
        )
    except (ValueError, TypeError) as err:
        raise ConversionError(f"config.json does not give a valid SegLlava config ({brief(err)})") from None


def build_processor(tokenizer: Any, image_processor: Any, patch_size: int, sam_image_size: int, template: str):
    from transformers import LlavaProcessor

    from sasp.models.seg_llava.processing_seg_llava import SegLlavaProcessor

    llava = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=int(patch_size),
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return SegLlavaProcessor(llava, sam_image_size=int(sam_image_size), prompt_template=template)
