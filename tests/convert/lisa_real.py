"""A tiny real ``LISAForCausalLM`` (PyPI's ``lisa-on-cuda``: LISA's own model code), its
tokenizer, and a folder saved the way LISA's ``merge_lora_weights_and_save_hf_model.py`` writes it.

LISA's source is never edited; what stands between it and a CPU box with transformers 5 is worked
around as in ``tests/integration/test_lisa_on_cuda.py`` (stub parent packages, Auto* registrations
skipped during the import, ``Tensor.cuda`` a no-op, a tiny SAM from LISA's own fork classes, CLIP's
output-capturing hooks installed once). N_p is 256 (LISA hard-codes the 255 shift): a 224 px CLIP
with 14 px patches, saved to a folder whose name contains "clip".
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import types
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, List, Tuple
from unittest import mock

import torch

PACKAGE = "lisa-on-cuda==1.4.14"
CLIP_PX, SAM_PX, OUT_DIM = 224, 64, 16
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
WORDS = SYSTEM + " USER: ASSISTANT: Sure, it is [SEG]. What is the red circle in this image? Please output segmentation mask."

TINY_LISA_SAM = {
    "variant": "custom", "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_mlp_ratio": 4,
    "use_rel_pos": True, "window_size": 2, "encoder_global_attn_indexes": [1], "image_size": SAM_PX,
    "prompt_embed_dim": OUT_DIM, "mask_in_chans": 4, "decoder_depth": 1, "decoder_mlp_dim": 32, "decoder_num_heads": 2,
    "iou_head_hidden_dim": 16, "pixel_mean": [0.0, 0.0, 0.0], "pixel_std": [1.0, 1.0, 1.0],
}
"""Our ``build_sam`` config for the SAM that ``tiny_sam_builder`` makes from LISA's fork classes."""


def install_root(tmp: Path) -> Path:
    """The folder holding ``lisa_on_cuda`` (``SASP_LISA_ON_CUDA``, or pip --no-deps into ``tmp``).

    Raises:
        RuntimeError: the package is neither given nor installable (the caller skips).
    """
    given = os.environ.get("SASP_LISA_ON_CUDA")
    if given:
        if not (Path(given) / "lisa_on_cuda" / "LISA.py").exists():
            raise RuntimeError(f"SASP_LISA_ON_CUDA={given} holds no lisa_on_cuda/LISA.py")
        return Path(given)
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check", "--target", str(target), PACKAGE]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"cannot install {PACKAGE}: {err}") from None
    if done.returncode != 0:
        raise RuntimeError(f"cannot install {PACKAGE} (offline?): {done.stderr.strip()[-300:]}")
    return target


def tiny_sam_builder(modeling):
    """``build_sam_vit_h`` stand-in: a tiny SAM from LISA's own fork classes with the constants
    of LISA's ``_build_sam`` (LayerNorm eps 1e-6, relative positions, windowed blocks and a global
    one) at test sizes (``TINY_LISA_SAM`` is the same SAM in ``build_sam``'s terms)."""

    def build(checkpoint=None):
        return modeling.Sam(
            image_encoder=modeling.ImageEncoderViT(
                depth=2, embed_dim=32, img_size=SAM_PX, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=2,
                out_chans=OUT_DIM,
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=OUT_DIM, image_embedding_size=(SAM_PX // 16, SAM_PX // 16), input_image_size=(SAM_PX, SAM_PX), mask_in_chans=4
            ),
            mask_decoder=modeling.MaskDecoder(
                num_multimask_outputs=3,
                transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=OUT_DIM, mlp_dim=32, num_heads=2),
                transformer_dim=OUT_DIM, iou_head_depth=3, iou_head_hidden_dim=16,
            ),
            pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3,
        )

    return build


@contextlib.contextmanager
def lisa_modules(root: Path) -> Iterator[types.SimpleNamespace]:
    """LISA's modules (``LISA``, ``conversation``, ``mm_utils``) imported from ``root``; every
    ``lisa_on_cuda`` module is removed from ``sys.modules`` afterwards."""
    import transformers

    saved = {k: v for k, v in sys.modules.items() if k == "lisa_on_cuda" or k.startswith("lisa_on_cuda.")}
    for name in ("lisa_on_cuda", "lisa_on_cuda.utils", "lisa_on_cuda.llava", "lisa_on_cuda.llava.model", "lisa_on_cuda.segment_anything"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(root.joinpath(*name.split(".")))]
        sys.modules[name] = mod
    try:
        with contextlib.ExitStack() as stack:
            for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM):
                stack.enter_context(mock.patch.object(cls, "register", staticmethod(lambda *args, **kwargs: None)))
            modeling = importlib.import_module("lisa_on_cuda.segment_anything.modeling")
            sys.modules["lisa_on_cuda.segment_anything"].build_sam_vit_h = tiny_sam_builder(modeling)
            lisa = importlib.import_module("lisa_on_cuda.LISA")
            conversation = importlib.import_module("lisa_on_cuda.llava.conversation")
            mm_utils = importlib.import_module("lisa_on_cuda.llava.mm_utils")
        yield types.SimpleNamespace(LISA=lisa, conversation=conversation, mm_utils=mm_utils)
    finally:
        for k in [k for k in sys.modules if k == "lisa_on_cuda" or k.startswith("lisa_on_cuda.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def build_tokenizer(im_start_end: bool = True):
    """A Llama-like tokenizer built in code: ``<s>`` prepended, a Metaspace pre-tokenizer that
    marks word starts with "▁" (first section only, as Llama's), punctuation split off; then
    ``[SEG]`` and ``<im_start>``/``<im_end>`` added as LISA's merge script adds them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    specials = ["<unk>", "<s>", "</s>"]
    pieces: Dict[str, int] = {s: i for i, s in enumerate(specials)}
    for piece in ["\n", "\u2581\n", "\u2581"] + [p for p, _ in pre.pre_tokenize_str(WORDS)]:
        for form in (piece, piece.lstrip("\u2581"), "\u2581" + piece.lstrip("\u2581")):
            if form:
                pieces.setdefault(form, len(pieces))
    core = Tokenizer(models.WordLevel(pieces, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", padding_side="right")
    tok.pad_token = tok.unk_token
    tok.add_tokens("[SEG]")
    if im_start_end:
        tok.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return tok


def build_lisa(mods: types.SimpleNamespace, tmp: Path, vocab_size: int, seg_token_idx: int, im_start_end: bool = True, seed: int = 0):
    """The real ``LISAForCausalLM`` with tiny random weights, built as LISA's scripts do, in
    eval mode (call under a no-op ``Tensor.cuda``). Returns (model, clip folder)."""
    import transformers

    torch.manual_seed(seed)
    clip_dir = tmp / "tiny-clip-vit"
    clip_config = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=CLIP_PX, patch_size=14, projection_dim=16
    )
    transformers.CLIPVisionModel(clip_config).save_pretrained(clip_dir)
    transformers.CLIPImageProcessor(size={"shortest_edge": CLIP_PX}, crop_size={"height": CLIP_PX, "width": CLIP_PX}).save_pretrained(clip_dir)
    config = mods.LISA.LlavaLlamaForCausalLM.config_class(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=False,
    )
    config.mm_hidden_size = clip_config.hidden_size
    config.mm_vision_select_layer = -2
    model = mods.LISA.LISAForCausalLM(
        config, seg_token_idx=seg_token_idx, vision_tower=str(clip_dir), train_mask_decoder=True, out_dim=OUT_DIM,
        ce_loss_weight=1.0, dice_loss_weight=0.5, bce_loss_weight=2.0, use_mm_start_end=im_start_end,
    )
    inner = model.get_model()
    inner.config.mm_vision_select_feature = "patch"
    inner.config.pretrain_mm_mlp_adapter = None
    inner.initialize_vision_modules(inner.config)
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4.x
        pass
    else:
        maybe_install_capturing_hooks(inner)
    inner.initialize_lisa_modules(inner.config)
    model.generation_config.use_cache = False
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return model.eval(), clip_dir


CONFIG_KEYS_431 = (
    "bos_token_id", "eos_token_id", "hidden_act", "hidden_size", "initializer_range", "intermediate_size",
    "max_position_embeddings", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "pad_token_id",
    "pretraining_tp", "rms_norm_eps", "tie_word_embeddings", "use_cache", "vocab_size", "freeze_mm_mlp_adapter",
    "image_aspect_ratio", "image_grid_pinpoints", "mm_hidden_size", "mm_use_im_patch_token", "mm_use_im_start_end",
    "mm_vision_select_feature", "mm_vision_select_layer", "mm_vision_tower", "out_dim", "pretrain_mm_mlp_adapter",
    "train_mask_decoder", "tune_mm_mlp_adapter", "use_mm_proj", "vision_tower",
)


def save_like_merge_script(model, tokenizer, dst: Path, shards: int = 4, safetensors: bool = False) -> List[str]:
    """Write ``model`` as LISA's merge script leaves it under transformers 4.31: every weight but
    the vision tower's, sharded ``pytorch_model-0000i-of-0000n.bin`` with
    ``pytorch_model.bin.index.json`` (or ``model-*.safetensors``), a 4.31-style config.json and
    the tokenizer. Returns the shard file names."""
    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if "vision_tower" not in k}
    keys = list(state)
    total = sum(v.numel() * v.element_size() for v in state.values())
    budget, groups, size = total / shards, [[]], 0
    for k in keys:
        if size >= budget and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += state[k].numel() * state[k].element_size()
    ext = "safetensors" if safetensors else "bin"
    stem = "model" if safetensors else "pytorch_model"
    names, weight_map = [], {}
    for i, group in enumerate(groups):
        name = f"{stem}-{i + 1:05d}-of-{len(groups):05d}.{ext}"
        part = {k: state[k] for k in group}
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(dst / name), metadata={"format": "pt"})
        else:
            torch.save(part, dst / name)
        names.append(name)
        weight_map.update({k: name for k in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    cfg = model.config
    raw = {k: getattr(cfg, k) for k in CONFIG_KEYS_431 if hasattr(cfg, k)}
    raw.update(architectures=[type(model).__name__], model_type="llava", torch_dtype="float32", transformers_version="4.31.0",
               rope_scaling=None, _name_or_path="tiny-lisa")
    (dst / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True))
    tokenizer.save_pretrained(dst)
    return names


def lisa_prompt(mods: types.SimpleNamespace, question: str, im_start_end: bool = True) -> str:
    """The prompt text LISA's ``chat.py`` builds (llava_v1 template, ``<image>`` + newline)."""
    conv = mods.conversation.conv_templates["llava_v1"].copy()
    conv.messages = []
    prompt = "<image>\n" + question
    if im_start_end:
        prompt = prompt.replace("<image>", "<im_start><image><im_end>")
    conv.append_message(conv.roles[0], prompt)
    conv.append_message(conv.roles[1], "")
    return conv.get_prompt()


def expand_image(ids: List[int], n_p: int, image_id: int) -> List[int]:
    """LISA's ids with the -200 placeholder replaced by N_p copies of ``image_id``."""
    out: List[int] = []
    for t in ids:
        out.extend([image_id] * n_p if t == -200 else [t])
    return out


def sam_inputs(seed: int, sizes: List[Tuple[int, int]]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Random SAM-frame images [n, 3, S, S] and their resized sizes (ResizeLongestSide)."""
    gen = torch.Generator().manual_seed(seed)
    resized = [(round(h * SAM_PX / max(h, w)), round(w * SAM_PX / max(h, w))) for h, w in sizes]
    return torch.randn(len(sizes), 3, SAM_PX, SAM_PX, generator=gen), resized
