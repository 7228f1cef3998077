"""What trains (LISA's split, LoRA on the LLM's attention only) and how the arm is chosen."""
from __future__ import annotations

import pytest
import torch

from sasp import READ_7B, READ_13B
from sasp.train.model import LoraSettings, TrainableSettings, apply_lora, build_model, configure_trainable, resolve_sasp, set_arm


def test_resolve_sasp_presets_overrides_and_errors():
    assert resolve_sasp() is None
    assert resolve_sasp("read-13b") == READ_13B
    assert resolve_sasp("read-7b", num_points=12, t_pos=None) == READ_7B.replace(num_points=12)
    assert resolve_sasp(None, t_neg=0.1) == READ_7B.replace(t_neg=0.1)
    with pytest.raises(ValueError, match="unknown SasP preset 'read-99b'"):
        resolve_sasp("read-99b")
    with pytest.raises(ValueError, match=r"unknown SasPConfig fields \['points'\]"):
        resolve_sasp("read-7b", points=3)


def test_set_arm_round_trips_through_the_config():
    model, _ = build_model("tiny", seed=0)
    set_arm(model, READ_7B.replace(num_points=5), "points")
    assert model.config.sasp["num_points"] == 5 and model.config.sam_prompt == "points"
    set_arm(model, None)
    assert model.config.sasp is None and model.config.sam_prompt == "both"


def test_full_fine_tuning_freezes_what_lisa_freezes():
    model, _ = build_model("tiny", seed=0)
    names = configure_trainable(model)
    frozen = ("model.vision_tower.", "model.multi_modal_projector.", "visual_model.image_encoder.", "visual_model.prompt_encoder.")
    assert not [n for n in names if n.startswith(frozen)]
    for part in ("model.language_model.layers.0.mlp.up_proj.weight", "lm_head.weight", "model.language_model.embed_tokens.weight",
                 "text_hidden_fcs.0.0.weight", "visual_model.mask_decoder.output_upscaling.0.weight"):
        assert part in names
    assert model.config.train_sam_encoder is False
    names = configure_trainable(model, TrainableSettings(True, True, True))
    assert model.config.train_sam_encoder is True
    assert {"model.vision_tower.", "model.multi_modal_projector.", "visual_model.image_encoder."} <= {
        p for n in names for p in frozen if n.startswith(p)}
    assert not [n for n in names if n.startswith("visual_model.prompt_encoder.")]


def test_lora_targets_the_llm_attention_only_and_saves_the_heads():
    model, _ = build_model("tiny", seed=0)
    configure_trainable(model)
    peft_model = apply_lora(model, LoraSettings(r=2))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".language_model.layers." in n and (".q_proj." in n or ".v_proj." in n) for n in lora)
    assert len(lora) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    others = {n.split(".modules_to_save.")[0].rsplit(".", 1)[-1] for n in trainable if "lora_" not in n}
    assert others == {"mask_decoder", "0", "lm_head", "embed_tokens"}  # "0": text_hidden_fcs.0
    assert not any("vision_tower" in n or "image_encoder" in n or "k_proj.lora" in n for n in trainable)
    with pytest.raises(ValueError, match="no LLM attention module matches"):
        apply_lora(build_model("tiny", seed=0)[0], LoraSettings(r=2, targets=("nonexistent",)))
    # merged back, the model computes what the wrapped one does
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids = torch.tensor([[6, 7, 8]])
    want = peft_model.eval()(input_ids=ids).logits  # eval: no LoRA dropout
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids).logits, want, rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("backend", ["transformers", "sam2"])
def test_freezing_and_lora_follow_the_sam_backend_parts(backend):
    """LISA's split on other SAM backends: prompt encoder and image encoder frozen, mask
    decoder trained (and kept by LoRA), whatever the backend calls them."""
    pytest.importorskip("peft")
    from sasp.models.seg_llava import build_tiny
    from sasp.testing.sam_hf import tiny_sam2_config, tiny_sam_config

    config = {"transformers": tiny_sam_config, "sam2": tiny_sam2_config}[backend](64)
    model, _ = build_tiny(seed=0, sam_config=config)
    parts = model.sam_backend.parts
    trainable = configure_trainable(model, TrainableSettings())
    for part, frozen in (("image_encoder", True), ("prompt_encoder", True), ("mask_decoder", False)):
        names = [n for n, _ in model.named_parameters() if n.startswith(f"visual_model.{parts[part]}.")]
        assert names, part
        assert all((n in trainable) != frozen for n in names), part
    lora = apply_lora(model, LoraSettings(r=2), TrainableSettings())
    kept = [n for n, p in lora.named_parameters() if p.requires_grad and f".{parts['mask_decoder']}." in n]
    assert kept and all("modules_to_save" in n for n in kept)
