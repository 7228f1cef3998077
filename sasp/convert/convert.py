"""``convert_checkpoint``: a released LISA / SESAME / READ / GSVA folder -> a SegLlava folder,
streamed one weight file at a time.

Plan first, write second: every source key is mapped (``keys.LLAVA1_RULES``) and the result is
compared, name by name and shape by shape, with a ``SegLlavaForCausalLM`` built on the meta
device, so a bad folder fails with one line before anything is written. Then each source file
is read, renamed and written as one output shard (.safetensors) and released before the next, so
the peak memory is about one shard. The output goes to a temporary sibling folder that replaces
``dst`` only when complete.

Two weights have no counterpart in transformers' LLaVA and are built exactly:
- a one-layer ``Linear`` projector (LISA and GSVA on LLaVA-1.1) becomes ``linear_1`` = that layer,
  activation "linear" (the identity) and ``linear_2`` = the identity matrix with zero bias, so
  ``linear_2(act(linear_1(x))) == linear_1(x)`` in floating point (x @ I adds exact zeros);
- the ``<image>`` token gets a zero row in ``embed_tokens`` (never read: image positions take
  the patch features) and in ``lm_head`` (a logit of 0; ``segment`` never generates it), so the
  logits over the original vocabulary are unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from . import assets
from .keys import CLIP_DROPPED, CLIP_RULES, FAMILIES, ConversionError, Family, detect_family, map_key, projector_kind
from .source import Checkpoint, open_checkpoint, read_tensors

EMBED, HEAD = "model.language_model.embed_tokens.weight", "lm_head.weight"
LINEAR_2 = "model.multi_modal_projector.linear_2."


@dataclass
class ConversionResult:
    """What ``convert_checkpoint`` wrote.

    Attributes:
        path: the SegLlava folder.
        family: "lisa", "sesame", "read" or "gsva".
        tensors: number of tensors written; source_bytes: size of the source weight files.
        notes: one line per decision a user may want to know (tower source, projector, SasP).
    """

    path: str
    family: str
    tensors: int
    source_bytes: int
    notes: List[str] = field(default_factory=list)


@dataclass
class _Plan:
    """target name -> (source file or None, source key or None), target shapes, write order."""

    sources: Dict[str, Tuple[Optional[str], Optional[str]]]
    shapes: Dict[str, Tuple[int, ...]]
    files: List[str]


def _resolve_family(ck: Checkpoint, family: Optional[str], has_rej: bool, projector: str) -> Family:
    archs = ", ".join(str(a) for a in ck.config.get("architectures") or []) or "none"
    detected = detect_family(ck.config, has_rej)
    if family is not None:
        if family not in FAMILIES:
            raise ConversionError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
        if detected is not None and detected != family and ck.config.get("architectures"):
            raise ConversionError(
                f"{ck.path} is a {FAMILIES[detected].label} checkpoint (architectures: {archs}), not "
                f"{FAMILIES[family].label}; pass --family {detected} or leave --family out"
            )
        return FAMILIES[family]
    if detected is None and not ck.config.get("architectures") and projector == "linear":
        detected = "lisa"  # LLaVA-1.1's linear projector without [REJ]: LISA's layout
    if detected is None:
        raise ConversionError(
            f"cannot tell the family of {ck.path} (architectures: {archs}); pass --family lisa|sesame|read|gsva"
        )
    return FAMILIES[detected]


def _token_ids(tokenizer: Any, fam: Family, path: str) -> Dict[str, int]:
    ids = {}
    for token, name in [("[SEG]", "seg_token_id"), *fam.extra_tokens.items()]:
        got = assets.single_token_id(tokenizer, token, path)
        if got is None:
            raise ConversionError(f"the tokenizer in {path} has no {token} token, which {fam.label} checkpoints add")
        ids[name] = got
    return ids


def _plan(ck: Checkpoint, fam: Family, tower: Optional[Checkpoint], projector: str, rows: int) -> _Plan:
    sources: Dict[str, Tuple[Optional[str], Optional[str]]] = {}
    shapes: Dict[str, Tuple[int, ...]] = {}
    groups = [(ck, fam.rules, fam.dropped)] + ([(tower, CLIP_RULES, CLIP_DROPPED)] if tower is not None else [])
    for source, rules, dropped in groups:
        for key, info in source.tensors.items():
            target = map_key(key, rules, dropped, os.path.basename(info.file))
            if target is None:
                continue
            if target in sources:
                raise ConversionError(f"{key!r} and {sources[target][1]!r} both map to {target!r}")
            sources[target] = (info.file, key)
            shapes[target] = info.shape
    for name in (EMBED, HEAD):
        if name in shapes:
            shapes[name] = (rows,) + shapes[name][1:]
    if projector == "linear":
        hidden = shapes["model.multi_modal_projector.linear_1.weight"][0]
        for part, shape in (("weight", (hidden, hidden)), ("bias", (hidden,))):
            sources[LINEAR_2 + part] = (None, None)
            shapes[LINEAR_2 + part] = shape
    files = list(ck.files) + (list(tower.files) if tower is not None else [])
    return _Plan(sources, shapes, files)


def _expected(config: Any) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of a ``SegLlavaForCausalLM`` state dict, built on the meta device."""
    from sasp.models.seg_llava.modeling_seg_llava import SegLlavaForCausalLM

    try:
        with torch.device("meta"):
            model = SegLlavaForCausalLM(config)
    except ValueError as err:
        raise ConversionError(f"the converted config does not build a SegLlava model: {err}") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check(plan: _Plan, expected: Mapping[str, Tuple[int, ...]]) -> None:
    def origin(name: str) -> str:
        key = plan.sources[name][1]
        return f" (from {key!r})" if key else ""

    unexpected = sorted(set(plan.shapes) - set(expected))
    if unexpected:
        raise ConversionError(f"{unexpected[0]!r}{origin(unexpected[0])} has no place in the SegLlava model for this config")
    missing = sorted(set(expected) - set(plan.shapes))
    if missing:
        raise ConversionError(f"the checkpoint lacks a weight for {missing[0]!r} ({len(missing)} missing in all)")
    for name in sorted(expected):
        if tuple(plan.shapes[name]) != tuple(expected[name]):
            raise ConversionError(
                f"{name!r}{origin(name)} has shape {tuple(plan.shapes[name])}, the model expects {tuple(expected[name])}"
            )


def _convert_tensor(name: str, tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if name in (EMBED, HEAD) and tensor.shape[0] < rows:
        pad = tensor.new_zeros((rows - tensor.shape[0],) + tuple(tensor.shape[1:]))
        return torch.cat([tensor, pad])
    return tensor.contiguous()


def _write(plan: _Plan, tmp: str, rows: int, projector_file: Optional[str]) -> int:
    """Stream every source file into one output shard each; returns the number of tensors."""
    from safetensors.torch import save_file

    by_key = {(f, k): t for t, (f, k) in plan.sources.items() if f is not None}
    n = len(plan.files)
    weight_map: Dict[str, str] = {}
    for i, file in enumerate(plan.files):
        out_name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        shard: Dict[str, torch.Tensor] = {}
        storages = set()
        for key, tensor in read_tensors(file):
            target = by_key.get((file, key))
            if target is None:
                continue  # a dropped buffer
            out = _convert_tensor(target, tensor, rows)
            ptr = out.untyped_storage().data_ptr()
            shard[target] = out.clone() if ptr in storages else out
            storages.add(ptr)
        if file == projector_file:
            w1 = shard["model.multi_modal_projector.linear_1.weight"]
            hidden = w1.shape[0]
            shard[LINEAR_2 + "weight"] = torch.eye(hidden, dtype=w1.dtype)
            shard[LINEAR_2 + "bias"] = torch.zeros(hidden, dtype=w1.dtype)
        if shard:  # a file of dropped buffers only leaves no shard
            save_file(shard, os.path.join(tmp, out_name), metadata={"format": "pt"})
            weight_map.update({k: out_name for k in shard})
        del shard
    if n > 1:
        total = sum(os.path.getsize(os.path.join(tmp, f)) for f in set(weight_map.values()))
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    return len(weight_map)


def convert_checkpoint(
    src: Union[str, os.PathLike],
    dst: Union[str, os.PathLike],
    family: Optional[str] = None,
    vision_tower: Optional[Union[str, os.PathLike]] = None,
    sam_config: Optional[Mapping[str, Any]] = None,
    sasp: str = "auto",
    overwrite: bool = False,
) -> ConversionResult:
    """Convert a merged LISA / SESAME / READ / GSVA folder into a SegLlava folder.

    Args:
        src: the folder the family's ``merge_lora_weights_and_save_hf_model.py`` writes
            (config.json, weights sharded with an index or single, tokenizer files).
        dst: the SegLlava folder to write (model, config, processor); must not exist unless
            ``overwrite``.
        family: "lisa", "sesame", "read" or "gsva"; None detects it from config.json's
            ``architectures`` (and the tokenizer's [REJ] / the projector when it has none).
        vision_tower: CLIP folder (CLIPModel or CLIPVisionModel checkpoint) when ``src`` holds no
            vision-tower weights (the merge scripts drop them); default: the config's
            ``mm_vision_tower`` when that is a local folder.
        sam_config: ``build_sam`` config; default: the released variant (vit_h/l/b) told by the
            image-encoder width.
        sasp: "auto" (READ: READ-7B's setting, READ-13B's for 13B-class models; the others:
            none), "none", "read-7b" or "read-13b".

    Returns:
        ConversionResult. Load the folder with ``sasp.models.seg_llava.load_model(dst)``.

    Raises:
        ConversionError: one line naming the file, key, token or setting at fault; nothing is
            left at ``dst`` then.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)) and not overwrite:
        raise ConversionError(f"{dst} already exists; choose a new folder or pass overwrite=True (--overwrite)")
    if os.path.abspath(dst) == os.path.abspath(src):
        raise ConversionError("the destination must differ from the source folder")
    ck = open_checkpoint(src, "source")
    projector = projector_kind(list(ck.tensors), ck.config, src)
    tokenizer = assets.load_tokenizer(src)
    fam = _resolve_family(ck, family, assets.single_token_id(tokenizer, "[REJ]", src) is not None, projector)
    ids = _token_ids(tokenizer, fam, src)
    if str(ck.config.get("mm_vision_select_feature", "patch")) != "patch":
        raise ConversionError("only mm_vision_select_feature='patch' (CLS dropped) converts to LLaVA's 'default' strategy")
    embed = ck.tensors.get("model.embed_tokens.weight")
    if embed is None:
        raise ConversionError(f"{src} has no model.embed_tokens.weight: not a LLaVA-1.x checkpoint")
    vocab = int(embed.shape[0])
    if len(tokenizer) > vocab:
        raise ConversionError(f"the tokenizer has {len(tokenizer)} tokens but the embeddings only {vocab} rows")
    image_id = assets.add_image_token(tokenizer)
    rows = max(vocab, image_id + 1)
    vision_cfg, image_processor, tower_ck = assets.vision_tower(ck, os.fspath(vision_tower) if vision_tower else None)
    sam = assets.sam_config(ck, sam_config)
    raw = ck.config
    preset = assets.sasp_preset(fam, sasp, int(raw.get("hidden_size", 0)))
    config = assets.build_config(raw, fam, ids, projector, rows, image_id, vision_cfg, sam, preset)
    side = int(vision_cfg.image_size) // int(vision_cfg.patch_size)
    plan = _plan(ck, fam, tower_ck, projector, rows)
    _check(plan, _expected(config))
    projector_file = plan.sources["model.multi_modal_projector.linear_1.weight"][0] if projector == "linear" else None
    parent = os.path.dirname(os.path.abspath(dst)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sasp-convert-", dir=parent)
    try:
        count = _write(plan, tmp, rows, projector_file)
        config.save_pretrained(tmp)
        from transformers import GenerationConfig

        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        ).save_pretrained(tmp)
        sam_size = int(sam.get("image_size", 1024))
        template = assets.prompt_template(bool(raw.get("mm_use_im_start_end", False)))
        assets.build_processor(tokenizer, image_processor, vision_cfg.patch_size, sam_size, template).save_pretrained(tmp)
        if os.path.exists(dst):
            shutil.rmtree(dst) if os.path.isdir(dst) else os.remove(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    notes = [
        f"family: {fam.label} ({', '.join(str(a) for a in raw.get('architectures') or []) or 'detected'})",
        f"vision tower: {'from ' + tower_ck.path if tower_ck is not None else 'from the checkpoint'} "
        f"({vision_cfg.image_size} px, N_p = {side * side})",
        f"projector: {projector}" + (" (linear_2 = identity, activation 'linear')" if projector == "linear" else ""),
        f"SAM: {sam.get('variant')}; [SEG] = {ids['seg_token_id']}, <image> = {image_id}"
        + (f", [REJ] = {ids['rej_token_id']}" if "rej_token_id" in ids else ""),
        f"SasP: {'off' if preset is None else preset}",
        "prompt: LISA's llava_v1 template" + (" with <im_start>/<im_end>" if raw.get("mm_use_im_start_end") else
                                              " without <im_start>/<im_end> (Llama tokenizers may differ from LISA in the "
                                              "one token after <image>)"),
    ]
    return ConversionResult(dst, fam.name, count, ck.total_bytes + (tower_ck.total_bytes if tower_ck else 0), notes)
