"""Tiny fake checkpoints with the exact key names of each family's released folders.

The names are read from their code (see ``sasp.convert.keys``): Llama as ``model.*`` +
``lm_head`` (LLaVA's ``LlavaLlamaForCausalLM``), ``model.mm_projector`` (``nn.Linear`` for LISA
and GSVA on LLaVA-1.1; ``mlp2x_gelu`` = ``model.mm_projector.0`` / ``.2`` for SESAME and READ on
LLaVA-1.5), ``model.visual_model.*`` (SAM; LISA's fork keeps segment_anything's parameter names,
checked against the real LISA in ``test_convert_lisa.py``) and ``model.text_hidden_fcs.0.{0,2}``.
SESAME, READ and GSVA classes cannot be built here (their repositories are not packaged), so
their folders are written from these names with random values; config.json carries what their
``save_pretrained`` writes (``architectures``, ``model_type`` "llava", Llama and ``mm_*`` fields).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from lisa_real import build_tokenizer

HIDDEN, LAYERS, CLIP_HIDDEN, CLIP_PX, PATCH = 32, 2, 16, 28, 14
ARCHITECTURES = {"lisa": "LISAForCausalLM", "sesame": "SESAMEForCausalLM", "read": "READForCausalLM", "gsva": "LisaGSVAForCausalLM"}
PROJECTOR = {"lisa": "linear", "gsva": "linear", "sesame": "mlp2x_gelu", "read": "mlp2x_gelu"}


def tiny_sam_config() -> Dict[str, object]:
    from sasp.models.seg_llava.sam import TINY_SAM_CONFIG

    return dict(TINY_SAM_CONFIG)


def family_tokenizer(family: str):
    tok = build_tokenizer(im_start_end=True)
    if family == "gsva":
        tok.add_tokens("[REJ]")
    return tok


def clip_state(seed: int = 1) -> Dict[str, torch.Tensor]:
    """A tiny CLIP vision tower's weights, keys as a CLIPVisionModel of transformers 5 names them."""
    from transformers import CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(clip_config())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def clip_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=CLIP_PX, patch_size=PATCH, projection_dim=16,
    )


def family_state(family: str, vocab: int, seed: int = 0, with_tower: bool = False, hidden: int = HIDDEN,
                 layers: int = LAYERS, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """The state dict a merged ``family`` folder holds, with random values (Llama part
    ``hidden`` wide, ``layers`` deep, in ``dtype``)."""
    from sasp.models.seg_llava.sam import build_sam

    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    state: Dict[str, torch.Tensor] = {"model.embed_tokens.weight": rnd(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{name}.weight"] = rnd(hidden, hidden)
        state[p + "mlp.gate_proj.weight"] = rnd(2 * hidden, hidden)
        state[p + "mlp.up_proj.weight"] = rnd(2 * hidden, hidden)
        state[p + "mlp.down_proj.weight"] = rnd(hidden, 2 * hidden)
        state[p + "input_layernorm.weight"] = rnd(hidden)
        state[p + "post_attention_layernorm.weight"] = rnd(hidden)
    state["model.norm.weight"] = rnd(hidden)
    if PROJECTOR[family] == "linear":
        state["model.mm_projector.weight"], state["model.mm_projector.bias"] = rnd(hidden, CLIP_HIDDEN), rnd(hidden)
    else:
        state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"] = rnd(hidden, CLIP_HIDDEN), rnd(hidden)
        state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"] = rnd(hidden, hidden), rnd(hidden)
    torch.manual_seed(seed)
    sam = build_sam(tiny_sam_config())
    for k, v in sam.state_dict().items():
        state["model.visual_model." + k] = v.detach().clone().normal_(generator=gen)
    width = int(tiny_sam_config()["prompt_embed_dim"])
    state["model.text_hidden_fcs.0.0.weight"], state["model.text_hidden_fcs.0.0.bias"] = rnd(hidden, hidden), rnd(hidden)
    state["model.text_hidden_fcs.0.2.weight"], state["model.text_hidden_fcs.0.2.bias"] = rnd(width, hidden), rnd(width)
    state["lm_head.weight"] = rnd(vocab, hidden)
    if with_tower:  # a folder saved without the merge scripts' filter, transformers 4.31 names
        state.update({"model.vision_tower.vision_tower.vision_model." + k: v for k, v in clip_state().items()})
    return state


def write_folder(dst: Path, state: Dict[str, torch.Tensor], config: Dict[str, object], tokenizer, shards: int = 3,
                 safetensors: bool = False) -> List[str]:
    """``save_pretrained``'s layout: sharded weights + index, config.json, tokenizer files."""
    dst.mkdir(parents=True, exist_ok=True)
    total = sum(v.numel() * v.element_size() for v in state.values())
    groups, size = [[]], 0
    for k, v in state.items():  # fill shards up to total / shards bytes, as max_shard_size does
        if size >= total / shards and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += v.numel() * v.element_size()
    ext, stem = ("safetensors", "model") if safetensors else ("bin", "pytorch_model")
    names, weight_map = [], {}
    for i, group in enumerate(groups):
        part = {k: state[k] for k in group}
        name = f"{stem}-{i + 1:05d}-of-{len(groups):05d}.{ext}"
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(dst / name), metadata={"format": "pt"})
        else:
            torch.save(part, dst / name)
        names.append(name)
        weight_map.update({k: name for k in part})
    (dst / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(dst)
    return names


def family_config(family: str, vocab: int, tower: Optional[str], hidden: int = HIDDEN, layers: int = LAYERS,
                  dtype: str = "float32") -> Dict[str, object]:
    """config.json as the family's ``save_pretrained`` writes it (transformers 4.31 fields)."""
    cfg: Dict[str, object] = {
        "architectures": [ARCHITECTURES[family]], "model_type": "llava", "hidden_act": "silu", "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_attention_heads": 4, "num_hidden_layers": layers, "num_key_value_heads": 4,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "tie_word_embeddings": False, "torch_dtype": dtype, "transformers_version": "4.31.0",
        "mm_hidden_size": CLIP_HIDDEN, "mm_use_im_start_end": True, "mm_use_im_patch_token": False,
        "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2, "out_dim": int(tiny_sam_config()["prompt_embed_dim"]),
        "train_mask_decoder": True, "use_mm_proj": True, "image_aspect_ratio": "square",
        "mm_vision_tower": tower or "openai/clip-vit-large-patch14", "vision_tower": tower or "openai/clip-vit-large-patch14",
    }
    if PROJECTOR[family] != "linear":
        cfg["mm_projector_type"] = PROJECTOR[family]
    return cfg


def write_clip_folder(dst: Path, legacy_names: bool = True, full_clip: bool = False) -> Path:
    """A CLIP tower folder: keys ``vision_model.*`` as older transformers saved them (plus a text
    tower when ``full_clip``, as openai/clip-vit-large-patch14 ships a whole CLIPModel)."""
    dst.mkdir(parents=True, exist_ok=True)
    state = {("vision_model." if legacy_names else "") + k: v for k, v in clip_state().items()}
    if full_clip:
        state.update({"text_model.embeddings.token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.tensor(1.0),
                      "visual_projection.weight": torch.randn(8, CLIP_HIDDEN), "text_projection.weight": torch.randn(8, 8),
                      "vision_model.embeddings.position_ids": torch.arange(5)[None]})
    torch.save(state, dst / "pytorch_model.bin")
    clip_config().save_pretrained(dst)
    return dst


def make_family(tmp: Path, family: str, shards: int = 3, safetensors: bool = False, with_tower: bool = False) -> Path:
    """A converted-ready fake ``family`` folder under ``tmp`` (tower in ``tmp/clip-tower``)."""
    tok = family_tokenizer(family)
    tower = None if with_tower else str(write_clip_folder(tmp / "clip-tower"))
    src = tmp / f"{family}-src"
    write_folder(src, family_state(family, len(tok), with_tower=with_tower), family_config(family, len(tok), tower), tok,
                 shards=shards, safetensors=safetensors)
    return src
