"""SESAME, READ and GSVA (and LISA's layout) on fake folders with their exact key names.

Their model classes cannot be built here (the repositories are not packaged), so these tests
check the mapping itself: every source tensor lands, unchanged, under the name the tables give;
the converted folder loads with no missing or unexpected key; config fields per family (SasP
preset, [REJ], projector activation); detection from ``architectures``. The numerics of the
shared layout are checked against the real LISA in ``test_convert_lisa.py``.
"""
from __future__ import annotations

import pytest
import torch

from sasp import READ_13B, READ_7B
from sasp.convert import FAMILIES, LLAVA1_RULES, ConversionError, convert_checkpoint, map_key
from sasp.convert.assets import sasp_preset
from sasp.convert.keys import CLIP_DROPPED, CLIP_RULES, LLAVA1_DROPPED
from sasp.convert.source import read_tensors

from fakes import CLIP_PX, family_state, make_family, tiny_sam_config, write_clip_folder

# (source key as the family's save_pretrained writes it, our key): one row per rule
TABLE = [
    ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
    ("model.layers.3.self_attn.q_proj.weight", "model.language_model.layers.3.self_attn.q_proj.weight"),
    ("model.layers.0.mlp.down_proj.weight", "model.language_model.layers.0.mlp.down_proj.weight"),
    ("model.layers.31.post_attention_layernorm.weight", "model.language_model.layers.31.post_attention_layernorm.weight"),
    ("model.norm.weight", "model.language_model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.mm_projector.weight", "model.multi_modal_projector.linear_1.weight"),
    ("model.mm_projector.0.bias", "model.multi_modal_projector.linear_1.bias"),
    ("model.mm_projector.2.weight", "model.multi_modal_projector.linear_2.weight"),
    ("model.vision_tower.vision_tower.vision_model.encoder.layers.23.mlp.fc1.weight", "model.vision_tower.encoder.layers.23.mlp.fc1.weight"),
    ("model.vision_tower.vision_tower.embeddings.class_embedding", "model.vision_tower.embeddings.class_embedding"),
    ("model.visual_model.image_encoder.blocks.7.attn.rel_pos_h", "visual_model.image_encoder.blocks.7.attn.rel_pos_h"),
    ("model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
     "visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    ("model.visual_model.mask_decoder.output_hypernetworks_mlps.3.layers.2.bias", "visual_model.mask_decoder.output_hypernetworks_mlps.3.layers.2.bias"),
    ("model.text_hidden_fcs.0.0.weight", "text_hidden_fcs.0.0.weight"),
    ("model.text_hidden_fcs.0.2.bias", "text_hidden_fcs.0.2.bias"),
    ("model.layers.5.self_attn.rotary_emb.inv_freq", None),
]


@pytest.mark.parametrize("source,target", TABLE)
def test_key_table(source: str, target) -> None:
    assert map_key(source, LLAVA1_RULES, LLAVA1_DROPPED, "f") == target


@pytest.mark.parametrize("key", ["model.layers.0.self_attn.rotary.weight", "model.text_hidden_fcs.1.0.weight",
                                 "model.visual_model.extra.weight", "base_model.model.lm_head.weight"])
def test_unknown_keys_are_named(key: str) -> None:
    with pytest.raises(ConversionError, match="unknown key") as err:
        map_key(key, LLAVA1_RULES, LLAVA1_DROPPED, "shard.bin")
    assert key in str(err.value) and "shard.bin" in str(err.value) and "\n" not in str(err.value)


def test_clip_table() -> None:
    assert map_key("vision_model.encoder.layers.0.mlp.fc2.bias", CLIP_RULES, CLIP_DROPPED, "f") == "model.vision_tower.encoder.layers.0.mlp.fc2.bias"
    assert map_key("post_layernorm.weight", CLIP_RULES, CLIP_DROPPED, "f") == "model.vision_tower.post_layernorm.weight"
    for dropped in ("text_model.encoder.layers.0.mlp.fc1.weight", "logit_scale", "visual_projection.weight",
                    "vision_model.embeddings.position_ids"):
        assert map_key(dropped, CLIP_RULES, CLIP_DROPPED, "f") is None


def _load(dst):
    from sasp.models.seg_llava.modeling_seg_llava import SegLlavaForCausalLM

    model, info = SegLlavaForCausalLM.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("safetensors", [False, True], ids=["bin", "safetensors"])
def test_family_converts_every_tensor(tmp_path, family: str, safetensors: bool) -> None:
    src = make_family(tmp_path, family, safetensors=safetensors)
    result = convert_checkpoint(src, tmp_path / "out", sam_config=tiny_sam_config())  # family from config.json
    assert result.family == family
    model = _load(tmp_path / "out")
    ours = model.state_dict()
    vocab = model.config.text_config.vocab_size - 1
    for file in sorted(src.glob("*.bin")) + sorted(src.glob("*.safetensors")):
        for key, tensor in read_tensors(str(file)):
            target = map_key(key, LLAVA1_RULES, LLAVA1_DROPPED, file.name)
            got = ours[target][:vocab] if target.endswith(("embed_tokens.weight", "lm_head.weight")) else ours[target]
            assert torch.equal(got, tensor), key
    cfg = model.config
    assert cfg.image_token_id == vocab and cfg.image_geometry == "center_crop" and cfg.vision_config.image_size == CLIP_PX
    assert cfg.converted_from["family"] == family
    if family in ("lisa", "gsva"):  # LLaVA-1.1's one Linear: identity second layer, identity activation
        assert cfg.projector_hidden_act == "linear"
        eye = model.model.multi_modal_projector.linear_2
        assert torch.equal(eye.weight, torch.eye(eye.weight.shape[0])) and not eye.bias.any()
    else:
        assert cfg.projector_hidden_act == "gelu"
    assert (cfg.sasp is not None) == (family == "read")
    if family == "read":
        assert cfg.sasp_config() == READ_7B.replace(crop_size=CLIP_PX)
    assert (getattr(cfg, "rej_token_id", None) is not None) == (family == "gsva")


def test_gsva_keeps_rej_and_seg_ids(tmp_path) -> None:
    from transformers import AutoTokenizer

    src = make_family(tmp_path, "gsva")
    convert_checkpoint(src, tmp_path / "out", sam_config=tiny_sam_config())
    model = _load(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.config.seg_token_id == tok.convert_tokens_to_ids("[SEG]")
    assert model.config.rej_token_id == tok.convert_tokens_to_ids("[REJ]") != model.config.seg_token_id
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>")


def test_read_presets_by_size_and_flag(tmp_path) -> None:
    read = FAMILIES["read"]
    assert sasp_preset(read, "auto", 4096) == READ_7B and sasp_preset(read, "auto", 5120) == READ_13B
    assert sasp_preset(FAMILIES["lisa"], "auto", 5120) is None and sasp_preset(read, "none", 4096) is None
    assert sasp_preset(FAMILIES["sesame"], "read-13b", 4096) == READ_13B
    src = make_family(tmp_path, "read")
    convert_checkpoint(src, tmp_path / "out", sam_config=tiny_sam_config(), sasp="read-13b")
    assert _load(tmp_path / "out").config.sasp_config() == READ_13B.replace(crop_size=CLIP_PX)


def test_tower_inside_the_checkpoint(tmp_path) -> None:
    """A folder saved with its CLIP tower (transformers 4.31 names): no --vision-tower needed."""
    src = make_family(tmp_path, "lisa", with_tower=True)
    result = convert_checkpoint(src, tmp_path / "out", sam_config=tiny_sam_config())
    assert "from the checkpoint" in " ".join(result.notes)
    model = _load(tmp_path / "out")
    want = family_state("lisa", model.config.text_config.vocab_size - 1, with_tower=True)
    assert torch.equal(model.state_dict()["model.vision_tower.encoder.layers.1.mlp.fc1.weight"],
                       want["model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"])


def test_full_clip_folder_as_tower(tmp_path) -> None:
    """openai/clip-vit-large-patch14 is a whole CLIPModel: its text tower is left out."""
    src = make_family(tmp_path, "sesame")
    tower = write_clip_folder(tmp_path / "clip-full", full_clip=True)
    convert_checkpoint(src, tmp_path / "out", sam_config=tiny_sam_config(), vision_tower=tower)
    _load(tmp_path / "out")


def test_released_sam_variant_from_width(tmp_path) -> None:
    """Without sam_config the variant comes from the image-encoder width; a tiny width is none."""
    src = make_family(tmp_path, "lisa")
    with pytest.raises(ConversionError, match="width 32 is no released SAM"):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
