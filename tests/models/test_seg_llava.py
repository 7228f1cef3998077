"""SegLlavaForCausalLM: LISA's architecture on transformers' LLaVA + stock SAM, SasP native.

One tiny random model per module (built offline in well under a second); every test that
changes it works on a copy.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the model package needs transformers")
pytest.importorskip("segment_anything", reason="the model package needs segment_anything")

from transformers import LlavaConfig, LlavaForConditionalGeneration, LogitsProcessor, LogitsProcessorList  # noqa: E402

from sasp import SasPConfig, similarity, similarity_as_points, to_sam_frame  # noqa: E402
from sasp.models.seg_llava import (  # noqa: E402
    CheckpointError,
    InputError,
    SegLlavaForCausalLM,
    build_sam,
    build_tiny,
    dice_loss,
    load_model,
    sigmoid_ce_loss,
    TINY_SAM_CONFIG,
)
from sasp.models.seg_llava.processing_seg_llava import SEG_TOKEN  # noqa: E402
from sasp.models.seg_llava.sam import SAM_PIXEL_MEAN, load_sam_weights, sam_variant_of  # noqa: E402

SIZES = [(60, 80), (90, 50), (40, 40)]
PROMPTS = ["Segment the red circle.", "Where is the dog?", "Find the big square."]


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = (230, 20, 20)
    return img


IMAGES = [image(h, w, i) for i, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny(seed=0)
    return model, processor


class Script(LogitsProcessor):
    """Force each row's answer, token by token (then EOS), through generate()."""

    def __init__(self, plans, prompt_len, eos):
        self.plans, self.prompt_len, self.eos = plans, prompt_len, eos

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, float("-inf"))
        for r, plan in enumerate(self.plans):
            out[r, plan[step] if step < len(plan) else self.eos] = 0
        return out


def token_ids(processor, words):
    return [processor.tokenizer.convert_tokens_to_ids(w) for w in words]


# --------------------------------------------------------------------------- build + layout


def test_tiny_model_layout(tiny):
    model, processor = tiny
    cfg = model.config
    assert cfg.model_type == "seg_llava"
    assert model.seg_token_idx == processor.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    assert model.num_patches == (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 == 144
    assert isinstance(model.text_hidden_fcs[0], torch.nn.Sequential)
    assert model.text_hidden_fcs[0][-2].out_features == model.visual_model.prompt_encoder.embed_dim == cfg.out_dim
    from segment_anything.modeling import PromptEncoder, Sam

    assert type(model.visual_model) is Sam and type(model.visual_model.prompt_encoder) is PromptEncoder
    assert not any(k.startswith("visual_model.") and "pixel_" in k for k in model.state_dict())


def test_processor_expands_image_into_consecutive_patch_tokens(tiny):
    model, processor = tiny
    batch = processor(images=IMAGES, prompts=PROMPTS)
    ids = batch["input_ids"]
    is_img = ids == model.config.image_token_id
    assert is_img.sum(1).tolist() == [model.num_patches] * len(SIZES)
    for row in is_img:  # one block of N_p consecutive positions: the patch hidden states
        pos = row.nonzero()[:, 0]
        assert (pos.diff() == 1).all()
    assert (batch["attention_mask"][:, -1] == 1).all(), "rows are left-padded"
    assert batch["image_hw"].tolist() == [list(s) for s in SIZES]
    long = model.visual_model.image_encoder.img_size
    assert batch["sam_pixel_values"].shape == (3, 3, long, long)
    for (h, w), (sh, sw) in zip(SIZES, batch["sam_input_hw"].tolist()):
        assert max(sh, sw) == long and abs(sh / sw - h / w) < 0.05


def test_sam_builder_uses_the_registry_for_released_variants():
    from segment_anything.modeling import Sam

    sam = build_sam({"variant": "vit_b"})
    assert type(sam) is Sam and sam.image_encoder.img_size == 1024 and sam.prompt_encoder.embed_dim == 256
    with pytest.raises(ValueError, match="unknown SAM variant"):
        build_sam({"variant": "vit_x"})


# --------------------------------------------------------------------------- training forward


def _train_batch(processor):
    answers = ["Sure, [SEG] and [SEG].", "no", "It is [SEG]."]
    batch = processor(images=IMAGES, prompts=PROMPTS, answers=answers)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    gen = torch.Generator().manual_seed(1)
    gt = [(torch.rand(n, h, w, generator=gen) > 0.5).float() for n, (h, w) in zip([2, 0, 1], SIZES)]
    return batch, labels, gt


def test_training_forward_is_lisas_weighted_loss(tiny):
    model, processor = tiny
    model = copy.deepcopy(model)
    model.config.ce_loss_weight, model.config.bce_loss_weight, model.config.dice_loss_weight = 0.7, 1.5, 0.25
    batch, labels, gt = _train_batch(processor)
    model.train()
    out = model(**batch, labels=labels, gt_masks=gt)
    assert [m.shape for m in out.pred_masks] == [(2, 60, 80), (0, 90, 50), (1, 40, 40)]
    plain = LlavaForConditionalGeneration.forward(model, input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                                                     attention_mask=batch["attention_mask"], labels=labels)
    torch.testing.assert_close(out.ce_loss, 0.7 * plain.loss)
    preds = [p for p in out.pred_masks if len(p)]
    gts = [g for g in gt if len(g)]
    bce = sum(sigmoid_ce_loss(p, g, len(g)) * len(g) for p, g in zip(preds, gts)) / 3
    dice = sum(dice_loss(p, g, len(g)) * len(g) for p, g in zip(preds, gts)) / 3
    torch.testing.assert_close(out.mask_bce_loss, 1.5 * bce)
    torch.testing.assert_close(out.mask_dice_loss, 0.25 * dice)
    torch.testing.assert_close(out.loss, out.ce_loss + out.mask_bce_loss + out.mask_dice_loss)
    out.loss.backward()
    assert model.text_hidden_fcs[0][0].weight.grad.abs().sum() > 0
    assert model.visual_model.mask_decoder.output_upscaling[0].weight.grad.abs().sum() > 0
    assert model.visual_model.image_encoder.patch_embed.proj.weight.grad is None  # SAM's encoder: no_grad


def test_training_forward_rejects_mask_count_mismatch(tiny):
    model, processor = tiny
    batch, labels, gt = _train_batch(processor)
    gt[2] = gt[2].repeat(2, 1, 1)
    with pytest.raises(InputError, match="row 2"):
        model(**batch, gt_masks=gt)


def test_lisa_losses_hand_computed():
    logits = torch.tensor([[[20.0, -20.0], [20.0, -20.0]]])
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert dice_loss(logits, target, 1).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_ce_loss(logits, target, 1).item() == pytest.approx(0.0, abs=1e-6)
    zero = torch.zeros(2, 1, 2)
    # sigmoid(0) = 1/2 everywhere: BCE = ln 2 per pixel, per mask; sum over 2 masks / 2
    assert sigmoid_ce_loss(zero, torch.ones(2, 1, 2), 2).item() == pytest.approx(np.log(2), rel=1e-6)
    # Dice of p = 1/2 on a full target of 2 px with LISA's scale 1000 and eps 1e-6:
    # numerator 2 * (2 * 0.5 / 1000) = 0.002, denominator 1 / 1000 + 2 / 1000 = 0.003
    expected = 1 - (0.002 + 1e-6) / (0.003 + 1e-6)
    assert dice_loss(zero[:1], torch.ones(1, 1, 2), 1).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- inference


def _scripted(model, processor, plans, **kw):
    batch = processor(images=IMAGES, prompts=PROMPTS)
    script = Script(plans, batch["input_ids"].shape[1], processor.tokenizer.eos_token_id)
    out = model.segment(**batch, max_new_tokens=6, logits_processor=LogitsProcessorList([script]), **kw)
    return batch, out


def test_generate_then_masks_batch_several_seg_and_no_object(tiny):
    model, processor = tiny
    plans = [token_ids(processor, ["sure", "[SEG]", "and", "[SEG]"]), token_ids(processor, ["no"]),
             token_ids(processor, ["it", "is", "[SEG]"])]
    batch, out = _scripted(model, processor, plans)
    assert processor.decode(out.sequences, batch["input_ids"].shape[1]) == ["sure [SEG] and [SEG]", "no", "it is [SEG]"]
    assert out.seg_counts.tolist() == [2, 0, 1]
    assert out.has_object.tolist() == [True, False, True]
    assert [tuple(m.shape) for m in out.masks] == [(2, 60, 80), (0, 90, 50), (1, 40, 40)]
    assert all(m.dtype == torch.bool for m in out.masks)
    assert all(torch.equal(m, l > 0) for m, l in zip(out.masks, out.mask_logits))


def test_generated_hidden_states_match_a_full_forward(tiny):
    """segment() stitches generate()'s per-step hidden states; scoring the same sequences in
    one forward (max_new_tokens=0) must give the same masks."""
    model, processor = tiny
    plans = [token_ids(processor, ["sure", "[SEG]", "and", "[SEG]"]), token_ids(processor, ["it", "[SEG]"]),
             token_ids(processor, ["[SEG]"])]
    batch, gen = _scripted(model, processor, plans, output_hidden_states=True)
    full = dict(batch)
    full["input_ids"] = gen.sequences
    full["attention_mask"] = (gen.sequences != processor.tokenizer.pad_token_id).long()
    full["attention_mask"][:, : batch["input_ids"].shape[1]] = batch["attention_mask"]
    ref = model.segment(**full, max_new_tokens=0, output_hidden_states=True)
    for a, b in zip(gen.mask_logits, ref.mask_logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_batched_inference_equals_one_row_at_a_time(tiny):
    model, processor = tiny
    answers = ["Sure, [SEG].", "[SEG] and [SEG].", "no"]
    batch = processor(images=IMAGES, prompts=PROMPTS, answers=answers)
    out = model.segment(**batch, max_new_tokens=0)
    for i in range(len(SIZES)):
        one = processor(images=[IMAGES[i]], prompts=[PROMPTS[i]], answers=[answers[i]])
        single = model.segment(**one, max_new_tokens=0)
        torch.testing.assert_close(out.mask_logits[i], single.mask_logits[0], atol=1e-4, rtol=1e-4)


def test_bad_inputs_raise_clear_errors(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(InputError, match="empty"):
        processor(images=[IMAGES[0]], prompts=["   "])
    with pytest.raises(InputError, match=r"\[SEG\]"):
        processor(images=[IMAGES[0]], prompts=["segment [SEG] now"])
    with pytest.raises(InputError, match="not found"):
        processor(images=[str(tmp_path / "missing.png")], prompts=["a"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        processor(images=[str(bad)], prompts=["a"])
    with pytest.raises(InputError, match="2 images for 1 prompts"):
        processor(images=IMAGES[:2], prompts=["a"])
    long = processor(images=[IMAGES[0]], prompts=["red " * 400])
    with pytest.raises(InputError, match="context of 512 tokens"):
        model.segment(**long, max_new_tokens=8)


# --------------------------------------------------------------------------- save / load


def test_save_pretrained_from_pretrained_round_trip(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, proc2 = load_model(tmp_path)
    assert type(loaded) is SegLlavaForCausalLM and loaded.config.seg_token_id == model.config.seg_token_id
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(loaded.visual_model.pixel_mean, model.visual_model.pixel_mean)
    torch.testing.assert_close(loaded.visual_model.pixel_std, model.visual_model.pixel_std)
    batch = processor(images=IMAGES[:1], prompts=PROMPTS[:1], answers=["[SEG]"])
    batch2 = proc2(images=IMAGES[:1], prompts=PROMPTS[:1], answers=["[SEG]"])
    assert all(torch.equal(batch[k], batch2[k]) for k in batch)
    # equal weights; the loaded tensors may sit at other memory alignments, which can change
    # the order of CPU kernels' float32 reductions in the last bit
    torch.testing.assert_close(model.segment(**batch, max_new_tokens=0).mask_logits[0],
                               loaded.segment(**batch2, max_new_tokens=0).mask_logits[0], atol=1e-6, rtol=0)


def test_from_llava_keeps_the_llava_weights(tiny, tmp_path):
    model, processor = tiny
    base = LlavaForConditionalGeneration(LlavaConfig(**{
        k: v for k, v in model.config.to_dict().items()
        if k in ("vision_config", "text_config", "image_token_index", "image_seq_length")
    })).eval()
    base.save_pretrained(tmp_path)
    processor.llava_processor.save_pretrained(tmp_path)
    seg, proc = load_model(tmp_path, sam_config=TINY_SAM_CONFIG)  # a "llava" folder: converted
    assert seg.config.seg_token_id == proc.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    sd = seg.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(sd[k], v), k
    # what a LLaVA checkpoint lacks starts as SAM's and nn's constructors make it
    sam = seg.visual_model
    assert torch.equal(sam.image_encoder.neck[1].weight, torch.ones_like(sam.image_encoder.neck[1].weight))
    assert not sam.image_encoder.pos_embed.any() and not sam.image_encoder.blocks[0].attn.rel_pos_h.any()
    torch.testing.assert_close(sam.pixel_mean.flatten(), torch.tensor(SAM_PIXEL_MEAN))
    assert all(torch.isfinite(v).all() for v in sd.values())
    assert 0.5 < sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.std() < 1.5


def test_wrong_family_checkpoints_are_refused(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="'bert' model"):
        load_model(bert)
    lisa = tmp_path / "lisa"
    lisa.mkdir()
    (lisa / "config.json").write_text(json.dumps({"model_type": "llava", "architectures": ["LISAForCausalLM"]}))
    with pytest.raises(CheckpointError, match="sasp convert|wrap_lisa"):
        load_model(lisa)
    pth = tmp_path / "sam.pth"
    torch.save({"x": torch.zeros(1)}, pth)
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(pth)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_incomplete_checkpoint_folders_are_refused(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "no_processor")
    with pytest.raises(CheckpointError, match="processor"):
        load_model(tmp_path / "no_processor")
    (tmp_path / "no_weights").mkdir()
    model.config.save_pretrained(tmp_path / "no_weights")
    with pytest.raises(CheckpointError, match="cannot load the model weights"):
        load_model(tmp_path / "no_weights")


def test_sam_checkpoints_load_and_wrong_ones_are_refused(tiny, tmp_path):
    model, _ = tiny
    other, _ = build_tiny(seed=1)
    path = tmp_path / "sam.pth"
    torch.save(model.visual_model.state_dict(), path)
    load_sam_weights(other.visual_model, path)
    assert all(torch.equal(a, b) for a, b in zip(model.visual_model.state_dict().values(), other.visual_model.state_dict().values()))
    wrong = tmp_path / "vit_b.pth"
    torch.save(build_sam({"variant": "custom", **{**TINY_SAM_CONFIG, "encoder_embed_dim": 48}}).state_dict(), wrong)
    with pytest.raises(CheckpointError, match="of another shape"):
        load_sam_weights(other.visual_model, wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_sam_weights(other.visual_model, junk)
    with pytest.raises(CheckpointError, match="not a readable"):
        sam_variant_of(junk)
    with pytest.raises(CheckpointError, match="not a released SAM"):
        sam_variant_of(path)  # the tiny SAM is no released variant
    vit_b = tmp_path / "vit_b_like.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, vit_b)
    assert sam_variant_of(vit_b) == "vit_b"




# --------------------------------------------------------------------------- SasP, native


class PromptRecorder:
    """Records the points of every prompt-encoder call and the sparse prompt of every decoder call."""

    def __init__(self, model):
        self.calls, self.sparse = [], []
        sam = model.visual_model
        self.handles = [
            sam.prompt_encoder.register_forward_pre_hook(self.on_prompt, with_kwargs=True),
            sam.mask_decoder.register_forward_pre_hook(self.on_decode, with_kwargs=True),
        ]

    def on_prompt(self, module, args, kwargs):
        pts = kwargs.get("points")
        self.calls.append(None if pts is None else (pts[0].detach().clone(), pts[1].clone()))

    def on_decode(self, module, args, kwargs):
        self.sparse.append(kwargs["sparse_prompt_embeddings"].detach().clone())

    def remove(self):
        for h in self.handles:
            h.remove()


def expected_points(model, tokens, hidden, image_hw, cfg):
    """SasP's points for every [SEG], written out: patch positions = image tokens, the
    feature one position before [SEG], the core ops; in pixels and in SAM's frame."""
    sims, hws = [], []
    img_id, seg_id = model.config.image_token_id, model.seg_token_idx
    for b, row in enumerate(tokens.tolist()):
        patches = [j for j, t in enumerate(row) if t == img_id]
        for j, t in enumerate(row):
            if t == seg_id:
                sims.append(similarity(hidden[b, patches], hidden[b, j - 1][None]))
                hws.append(image_hw[b].tolist())
    sim = torch.cat(sims)
    refined, labels, _ = similarity_as_points(sim, hws, cfg)
    return sim, refined, to_sam_frame(refined, hws, model.visual_model.image_encoder.img_size), labels


def with_sasp(model, cfg, prompt="both"):
    model = copy.deepcopy(model)
    model.config.with_sasp(cfg, prompt)
    return model


def test_config_sasp_is_validated_and_serialised(tiny, tmp_path):
    model, processor = tiny
    assert model.config.sasp is None and model.config.sasp_config() is None
    m = with_sasp(model, SasPConfig(num_points=12, geometry="pad_square", crop_size=999))
    eff = m.config.sasp_config()
    assert (eff.num_points, eff.geometry, eff.crop_size) == (12, "center_crop", 168), "geometry and crop from the model"
    with pytest.raises(ValueError, match="needs SasP"):
        model.config.with_sasp(None, "points")
    with pytest.raises(ValueError, match="sam_prompt"):
        model.config.with_sasp(SasPConfig(), "pixels")
    with pytest.raises(ValueError, match="t_neg"):
        model.config.with_sasp({"t_neg": 0.9, "t_pos": 0.5})
    m.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.config.sasp_config() == eff and loaded.config.sam_prompt == "both"


def test_sasp_points_reach_sam_as_the_ops_compute_them(tiny):
    model, processor = tiny
    batch = processor(images=IMAGES, prompts=PROMPTS, answers=["Sure, [SEG] and [SEG].", "no", "[SEG]"])
    base = model.segment(**batch, max_new_tokens=0, output_hidden_states=True)
    assert base.points is None and base.labels is None and base.similarity.shape == (3, 144)
    cfg = SasPConfig(num_points=12)
    m = with_sasp(model, cfg)
    rec = PromptRecorder(m)
    out = m.segment(**batch, max_new_tokens=0)
    rec.remove()
    sim, refined, coords, labels = expected_points(m, batch["input_ids"], base.hidden_states, batch["image_hw"], m.config.sasp_config())
    assert out.seg_rows.tolist() == [0, 0, 2]
    torch.testing.assert_close(out.similarity, sim)
    torch.testing.assert_close(out.points, refined)
    assert torch.equal(out.labels, labels)
    assert len(rec.calls) == 2, "one prompt-encoder call per row with [SEG]"
    torch.testing.assert_close(torch.cat([c for c, _ in rec.calls]), coords)
    assert torch.equal(torch.cat([l for _, l in rec.calls]), labels)
    assert not torch.equal(out.mask_logits[0], base.mask_logits[0])


@pytest.mark.parametrize("mode", ["both", "points", "text"])
def test_prompt_modes_decide_what_sam_sees(tiny, mode):
    """both: K point tokens + SAM's padding point + the [SEG] embedding; points: the [SEG]
    embedding is dropped; text: exactly the baseline (no points computed, none reported)."""
    model, processor = tiny
    k = 9
    batch = processor(images=IMAGES[:2], prompts=PROMPTS[:2], answers=["[SEG]", "[SEG] [SEG]"])
    base_rec = PromptRecorder(model)
    base = model.segment(**batch, max_new_tokens=0)
    base_rec.remove()
    m = with_sasp(model, SasPConfig(num_points=k), mode)
    rec = PromptRecorder(m)
    out = m.segment(**batch, max_new_tokens=0)
    rec.remove()
    tokens = {"both": k + 2, "points": k + 1, "text": 1}[mode]
    assert [s.shape[:2] for s in rec.sparse] == [(1, tokens), (2, tokens)]
    text_embeds = [s[:, -1] for s in base_rec.sparse]  # the baseline's only token: the [SEG] embedding
    if mode == "text":
        assert out.points is None and out.labels is None
        assert all(torch.equal(a, b) for a, b in zip(out.mask_logits, base.mask_logits))
    else:
        assert out.points.shape == (3, k, 2)
        has_text = [any(torch.equal(s[i, j], t[i]) for j in range(s.shape[1])) for s, t in zip(rec.sparse, text_embeds) for i in range(len(t))]
        assert all(has_text) if mode == "both" else not any(has_text)
        assert not torch.equal(out.mask_logits[1], base.mask_logits[1])


def test_points_only_training_reaches_the_llm_through_dtoc(tiny):
    model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=8), "points")
    batch, _, gt = _train_batch(processor)
    m.train()
    out = m(**batch, gt_masks=gt)
    assert out.points.requires_grad and out.labels.shape == (out.points.shape[0], 8)
    out.mask_loss.backward()
    last = m.model.language_model.layers[-1].mlp.down_proj.weight.grad
    assert last is not None and last.abs().sum() > 0
    assert m.text_hidden_fcs[0][0].weight.grad is None, "points only: the [SEG] projection takes no part"
    assert torch.isfinite(out.mask_loss)


def test_generation_with_sasp_points(tiny):
    model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=8))
    plans = [token_ids(processor, ["[SEG]", "[SEG]"]), token_ids(processor, ["no"]), token_ids(processor, ["[SEG]"])]
    rec = PromptRecorder(m)
    _, out = _scripted(m, processor, plans, output_hidden_states=True)
    rec.remove()
    assert out.seg_counts.tolist() == [2, 0, 1] and len(rec.calls) == 2
    _, refined, coords, labels = expected_points(m, out.sequences, out.hidden_states, torch.tensor(SIZES), m.config.sasp_config())
    torch.testing.assert_close(torch.cat([c for c, _ in rec.calls]), coords, atol=1e-3, rtol=1e-4)
    assert torch.equal(out.labels, labels)


def test_bfloat16_model_with_sasp_points(tiny):
    """Stock SAM encodes point coordinates in float32; the model keeps that buffer float32."""
    model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=10)).to(torch.bfloat16)
    pe = m.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    assert pe.dtype == torch.float32
    torch.testing.assert_close(pe, model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)
    batch = processor(images=IMAGES[:2], prompts=PROMPTS[:2], answers=["[SEG]", "[SEG] [SEG]"])
    for key in ("pixel_values", "sam_pixel_values"):
        batch[key] = batch[key].to(torch.bfloat16)
    out = m.segment(**batch, max_new_tokens=0)
    assert [x.shape[0] for x in out.mask_logits] == [1, 2] and out.similarity.dtype == torch.float32
    assert all(torch.isfinite(x.float()).all() for x in out.mask_logits)


def test_sasp_through_peft(tiny):
    peft = pytest.importorskip("peft")
    model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=6))
    lora = peft.get_peft_model(m, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    batch = processor(images=IMAGES[:2], prompts=PROMPTS[:2], answers=["[SEG]", "[SEG] [SEG]"])
    out = lora.segment(**batch, max_new_tokens=0)
    assert [x.shape[0] for x in out.masks] == [1, 2] and out.points.shape == (3, 6, 2)


# --------------------------------------------------------------------------- image formats


def _twins(tmp_path):
    """A plain 8-bit RGB PNG and, with the same pixels, a 16-bit greyscale PNG, an RGBA PNG and
    an EXIF-rotated JPEG (stored rotated, tagged to be turned back)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (48, 72), dtype=np.uint8)
    grey[10:30, 20:50] = 250
    rgb = np.repeat(grey[..., None], 3, -1)
    paths = {"rgb": tmp_path / "rgb.png", "grey16": tmp_path / "grey16.png", "rgba": tmp_path / "rgba.png"}
    Image.fromarray(rgb).save(paths["rgb"])
    Image.fromarray(grey.astype(np.uint16) * 257).save(paths["grey16"])
    Image.fromarray(np.dstack([rgb, np.full(grey.shape, 255, np.uint8)])).save(paths["rgba"])
    # the JPEG twin: compare against its own decoded pixels (JPEG is lossy), stored rotated
    jpeg = tmp_path / "rotated.jpg"
    stored = Image.fromarray(np.rot90(rgb, 1).copy())  # what the camera wrote
    exif = stored.getexif()
    exif[0x0112] = 6  # orientation 6: turn 90 degrees clockwise to view
    stored.save(jpeg, exif=exif, quality=100)
    with Image.open(jpeg) as im:
        upright = np.rot90(np.asarray(im.convert("RGB")), -1).copy()
    Image.fromarray(upright).save(tmp_path / "jpeg_twin.png")
    return paths, jpeg, tmp_path / "jpeg_twin.png"


def test_16bit_exif_and_alpha_images_give_their_8bit_twins_mask(tiny, tmp_path):
    model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=6))
    paths, jpeg, jpeg_twin = _twins(tmp_path)

    def run(path):
        batch = processor(images=[str(path)], prompts=[PROMPTS[0]], answers=["[SEG]"])
        return batch["image_hw"], m.segment(**batch, max_new_tokens=0).masks[0]

    hw, ref = run(paths["rgb"])
    for key in ("grey16", "rgba"):
        hw2, mask = run(paths[key])
        assert torch.equal(hw2, hw) and torch.equal(mask, ref), key
    hw_j, mask_j = run(jpeg)
    hw_t, mask_t = run(jpeg_twin)
    assert hw_j.tolist() == [[48, 72]] and torch.equal(hw_j, hw_t) and torch.equal(mask_j, mask_t)
