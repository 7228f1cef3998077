"""Loading ``(model, processor)`` from a folder, and turning a LLaVA-1.5 checkpoint into one."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping, Optional, Tuple, Type, Union

from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from .configuration_seg_llava import InputError, SegLlavaConfig
from .modeling_seg_llava import SegLlavaForCausalLM
from .processing_seg_llava import SEG_TOKEN, SegLlavaProcessor
from .sam import CheckpointError, build_sam, load_sam_weights, sam_variant_of
from .sam_backends import get_backend

_CONFIG_SKIP = ("model_type", "transformers_version", "architectures", "_name_or_path")


def from_llava(
    llava: Union[str, os.PathLike, LlavaForConditionalGeneration],
    processor: Optional[Union[SegLlavaProcessor, LlavaProcessor]] = None,
    sam_config: Optional[Mapping[str, Any]] = None,
    sam_checkpoint: Optional[Union[str, os.PathLike]] = None,
    config_overrides: Optional[Mapping[str, Any]] = None,
    model_class: Type[SegLlavaForCausalLM] = SegLlavaForCausalLM,
    **from_pretrained_kwargs: Any,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """Turn a LLaVA-1.5-style checkpoint (folder, hub id or loaded model) into a SegLlava model.

    The LLaVA weights load through ``from_pretrained`` (``from_pretrained_kwargs``: dtype,
    device_map ...); [SEG] is added to the tokenizer and the embeddings are resized; SAM comes
    from ``sam_checkpoint`` (constructor initialisation when None) and the projection starts
    from its constructor initialisation, as in LISA before training. ``config_overrides`` set
    ``SegLlavaConfig`` fields (loss weights, image_geometry, sasp ...).

    Returns:
        (model, processor), the model in eval mode.
    """
    sam_config = dict(sam_config or {"variant": "vit_h"})
    extra = dict(config_overrides or {})
    if get_backend(sam_config).name != "segment_anything":
        extra.setdefault("out_dim", get_backend(sam_config).config_prompt_width(sam_config))
    extra.setdefault("out_dim", int(build_sam(sam_config).prompt_encoder.embed_dim) if sam_config.get("variant") == "custom" else 256)
    if isinstance(llava, LlavaForConditionalGeneration):
        if processor is None:
            raise ValueError("pass the processor that goes with the loaded LLaVA model")
        fields = {k: v for k, v in llava.config.to_dict().items() if k not in _CONFIG_SKIP}
        model = model_class(SegLlavaConfig(**fields, sam_config=sam_config, **extra))
        missing, unexpected = model.load_state_dict(llava.state_dict(), strict=False)
        missing = [k for k in missing if not k.startswith(("visual_model.", "text_hidden_fcs."))]
        if missing or unexpected:
            raise CheckpointError(f"not a LLaVA model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.generation_config = copy.deepcopy(llava.generation_config)
        model.to(llava.dtype)
    else:
        if processor is None:
            processor = LlavaProcessor.from_pretrained(llava)
        fields = {k: v for k, v in LlavaConfig.from_pretrained(llava).to_dict().items() if k not in _CONFIG_SKIP}
        config = SegLlavaConfig(**fields, sam_config=sam_config, **extra)
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report would list every SAM key as missing
        try:
            model, info = model_class.from_pretrained(llava, config=config, output_loading_info=True, **from_pretrained_kwargs)
        finally:
            hf_logging.set_verbosity(level)
        missing = [k for k in info["missing_keys"] if not k.startswith(("visual_model.", "text_hidden_fcs."))]
        if missing or info["unexpected_keys"]:
            raise CheckpointError(
                f"{llava} is not a LLaVA-1.5 checkpoint for this architecture: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(info['unexpected_keys'])[:3]}"
            )
    if isinstance(processor, LlavaProcessor):
        processor = SegLlavaProcessor(processor)
    tokenizer = processor.tokenizer
    tokenizer.add_tokens([SEG_TOKEN], special_tokens=True)
    model.config.seg_token_id = int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if sam_checkpoint is not None:
        load_sam_weights(model.visual_model, sam_checkpoint)
    processor.sam_image_size = model.sam_backend.input_size(model.visual_model)
    processor.sam_backend = model.sam_backend.name
    return model.eval(), processor


def _read_config(path: str) -> dict:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(f"{path} has no config.json: not a transformers checkpoint folder")
    try:
        with open(config_file) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_file} is not readable JSON ({err})") from None


def load_model(
    path: Union[str, os.PathLike],
    sam_checkpoint: Optional[str] = None,
    sam_config: Optional[Mapping[str, Any]] = None,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """``(model, processor)`` from a folder written by ``save_pretrained`` (model and processor
    side by side), or a LLaVA-1.5 folder converted on the fly (SAM from ``sam_checkpoint``, its
    variant read from the file, or ``sam_config``; default vit_h, untrained).

    Raises:
        InputError: the folder does not exist.
        CheckpointError: a checkpoint of another family, or unreadable files (one line).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"model folder not found: {path}")
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path} is a file; a model is a folder written by save_pretrained (config.json + weights) "
            "or a LLaVA-1.5 folder; SAM .pth files go to --sam-checkpoint"
        )
    raw = _read_config(path)
    kind = raw.get("model_type")
    arch = ", ".join(raw.get("architectures") or []) or "unknown"
    if kind == SegLlavaConfig.model_type:
        try:
            model = SegLlavaForCausalLM.from_pretrained(path).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise CheckpointError(f"cannot load the model weights from {path} ({type(err).__name__}: {err})") from None
        try:
            processor = SegLlavaProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{path} has no usable processor files ({type(err).__name__}: {err}); save them next to the model "
                "with processor.save_pretrained(folder)"
            ) from None
        if sam_checkpoint is not None:
            load_sam_weights(model.visual_model, sam_checkpoint)
        return model, processor
    if kind == "llava" and not any("LISA" in a or "Lisa" in a for a in raw.get("architectures") or []):
        if sam_config is None and sam_checkpoint is not None:
            sam_config = {"variant": sam_variant_of(sam_checkpoint)}
        try:
            return from_llava(path, sam_config=sam_config, sam_checkpoint=sam_checkpoint)
        except (OSError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot load the LLaVA checkpoint {path} ({type(err).__name__}: {err})") from None
    hint = " It is a LISA checkpoint: load it with LISA's code and wrap it with sasp.wrap_lisa." if "LISA" in arch else ""
    raise CheckpointError(f"{path} holds a {kind!r} model ({arch}), not a seg_llava or LLaVA-1.5 checkpoint.{hint}")
