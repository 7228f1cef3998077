"""Parity of a converted checkpoint with the real LISA it came from (``lisa-on-cuda``'s
``LISAForCausalLM``, tiny random weights, saved as LISA's merge script saves it, 4 shards).

Checked on the same inputs, without SasP and with SasP (ours: ``config.sasp = READ_7B``; theirs:
``sasp.wrap_lisa(lisa, READ_7B)``):
- logits over LISA's vocabulary: bit-identical;
- mask logits: bit-identical when both sides run SAM's decoder on the same batch (one row, its
  [SEG]s together), and the binary masks identical everywhere. LISA decodes all [SEG]s of an
  image in one call, ours one call per row; a different batch size changes the GEMM blocking,
  hence |diff| <= 1e-6 (measured 5e-8) there. ``generate`` adds the KV cache on our side (LISA
  recomputes without it): same tokens, mask logits within 1e-6;
- the SasP points and labels SAM receives: identical for one [SEG]; for several [SEG]s in a row
  the labels are identical and the points within 1e-4 px of SAM's frame (measured 4e-6): the
  adapter takes each [SEG]'s similarity as its own [1, D] x [D, N_p] product, our model all of a
  row's [SEG]s as one batched product, and the two kernels round the float32 sums differently,
  which DtoC's soft-argmax carries into the points;
- the processor: LISA's token ids (llava_v1 template + ``tokenizer_image_token``) with -200 as
  N_p image tokens, CLIP pixels as LISA's CLIPImageProcessor gives them, SAM pixels as
  ``chat.py``'s preprocessing.

Our model runs as a deep copy: ``from_pretrained`` leaves some weights at 32-byte offsets of the
memory-mapped file and CPU GEMM kernels round differently by alignment (|diff| ~1e-8 in SAM's
decoder); freshly allocated weights, as LISA's, give bit-identical results.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import sasp
from sasp import READ_7B
from sasp.geometry import to_sam_frame

from lisa_real import CLIP_PX, SAM_PX, expand_image, lisa_prompt, sam_inputs

QUESTION = "What is the red circle in this image? Please output segmentation mask."
H, W = 48, 40


@pytest.fixture(scope="module")
def ours(lisa_case):
    return copy.deepcopy(lisa_case.ours)  # freshly allocated (aligned) weights, as LISA's


def _ids(case, answer: str):
    return case.mods.mm_utils.tokenizer_image_token(lisa_prompt(case.mods, QUESTION) + " " + answer, case.tok)


def _pair(case, rows):
    """LISA's ids [R, T] (one -200) and ours [R, T + N_p - 1]."""
    return torch.tensor(rows), torch.tensor([expand_image(r, 256, case.image_id) for r in rows])


def _clip(seed: int, n: int = 1):
    return torch.randn(n, 3, CLIP_PX, CLIP_PX, generator=torch.Generator().manual_seed(seed))


def test_converted_folder_loads_completely(lisa_case) -> None:
    info, cfg = lisa_case.info, lisa_case.ours.config
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert cfg.seg_token_id == lisa_case.seg_id and cfg.image_token_id == lisa_case.V
    assert cfg.image_geometry == "center_crop" and cfg.sasp is None and cfg.vision_config.image_size == CLIP_PX
    assert cfg.image_seq_length == 256 and cfg.projector_hidden_act == "linear"
    assert cfg.text_config.rms_norm_eps == lisa_case.lisa.config.rms_norm_eps
    assert len(lisa_case.shards) == 4 and len(list(lisa_case.dst.glob("model-*.safetensors"))) == 5  # 4 shards + CLIP
    assert lisa_case.proc.prompt_template.format(prompt=QUESTION) == lisa_prompt(lisa_case.mods, QUESTION)


def test_logits_match_bitwise(lisa_case, ours) -> None:
    x, xe = _pair(lisa_case, [_ids(lisa_case, "Sure, it is [SEG]."), _ids(lisa_case, "[SEG] [SEG] it is.")])
    px = _clip(0, 2)
    with torch.no_grad():
        theirs = lisa_case.mods.LISA.LlavaLlamaForCausalLM.forward(
            lisa_case.lisa, images=px, input_ids=x, attention_mask=torch.ones_like(x)).logits
        mine = ours(input_ids=xe, pixel_values=px, attention_mask=torch.ones_like(xe)).logits
    assert mine.shape == theirs.shape[:2] + (lisa_case.V + 1,)
    assert torch.equal(mine[..., : lisa_case.V], theirs)
    assert torch.equal(mine[..., lisa_case.V], torch.zeros_like(mine[..., 0]))  # the <image> row's logit


def _masks(case, ours, rows, cfg):
    """(LISA's mask logits for the image, ours concatenated over rows, the points each side gave SAM)."""
    x, xe = _pair(case, rows)
    sam_img, resized = sam_inputs(1, [(H, W)])
    px, n = _clip(3), len(rows)
    seen = []
    hook = case.lisa.model.visual_model.prompt_encoder.register_forward_hook(
        lambda m, a, k, o: seen.append(k.get("points")), with_kwargs=True)
    ours.config.with_sasp(cfg)
    if cfg is not None:
        sasp.wrap_lisa(case.lisa, cfg)
    try:
        with torch.no_grad():
            out = case.lisa.model_forward(
                images=sam_img, images_clip=px, input_ids=x, labels=None, attention_masks=torch.ones_like(x),
                offset=torch.tensor([0, n]), masks_list=[torch.zeros(1, H, W)], label_list=[torch.zeros(H, W)],
                resize_list=resized, inference=True)
            seg = ours.segment(input_ids=xe, pixel_values=px.expand(n, -1, -1, -1), sam_pixel_values=sam_img.expand(n, -1, -1, -1),
                               image_hw=torch.tensor([H, W]), sam_input_hw=torch.tensor(resized[0]), max_new_tokens=0)
    finally:
        hook.remove()
        sasp.unwrap(case.lisa)
        ours.config.with_sasp(None)
    return out["pred_masks"][0], torch.cat(seg.mask_logits), seen, seg


@pytest.mark.parametrize("cfg", [None, READ_7B], ids=["baseline", "sasp"])
def test_masks_match(lisa_case, ours, cfg) -> None:
    one = _ids(lisa_case, "Sure, it is [SEG].")
    two = _ids(lisa_case, "[SEG] [SEG] it is.")
    for rows in ([one], [two]):  # one decoder call on both sides
        theirs, mine, points, seg = _masks(lisa_case, ours, rows, cfg)
        assert theirs.shape == mine.shape == (rows[0].count(lisa_case.seg_id), H, W)
        exact = cfg is None or len(mine) == 1  # several [SEG]s with SasP: see the module docstring
        if exact:
            assert torch.equal(theirs, mine)
        else:
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
        assert torch.equal(mine > 0, theirs > 0)
        if cfg is None:
            assert points == [None] and seg.points is None
            continue
        coords, labels = points[0]
        want = to_sam_frame(seg.points, torch.tensor([[H, W]] * len(seg.points)), SAM_PX)
        torch.testing.assert_close(coords, want, atol=0 if exact else 1e-4, rtol=0)
        assert torch.equal(labels, seg.labels) and (labels == 1).any()
    theirs, mine, _, _ = _masks(lisa_case, ours, [one, two], cfg)  # LISA: one call of 3, ours: 1 + 2
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    assert torch.equal(mine > 0, theirs > 0) and 0.05 < float((mine > 0).float().mean()) < 0.95


def test_generation_matches(lisa_case, ours) -> None:
    prompt = lisa_case.mods.mm_utils.tokenizer_image_token(lisa_prompt(lisa_case.mods, QUESTION), lisa_case.tok)
    suppress = [t for t in range(lisa_case.V) if t != lisa_case.seg_id]  # random weights: force [SEG] answers
    sam_img, resized = sam_inputs(2, [(H, W)])
    px = _clip(4)
    old = lisa_case.lisa.generation_config.suppress_tokens
    lisa_case.lisa.generation_config.suppress_tokens = suppress
    try:
        with torch.no_grad():
            ids, theirs = lisa_case.lisa.evaluate(px, sam_img, torch.tensor([prompt]), resized, [(H, W)], max_new_tokens=3)
            seg = ours.segment(input_ids=torch.tensor([expand_image(prompt, 256, lisa_case.image_id)]), pixel_values=px,
                               sam_pixel_values=sam_img, image_hw=torch.tensor([H, W]), sam_input_hw=torch.tensor(resized[0]),
                               max_new_tokens=3, suppress_tokens=suppress)
    finally:
        lisa_case.lisa.generation_config.suppress_tokens = old
    assert ids[0, -3:].tolist() == seg.sequences[0, -3:].tolist() == [lisa_case.seg_id] * 3
    torch.testing.assert_close(seg.mask_logits[0], theirs[0], atol=1e-6, rtol=0)
    assert torch.equal(seg.masks[0], theirs[0] > 0)


def test_processor_builds_lisa_inputs(lisa_case, ours) -> None:
    """Our processor on an image + question == what LISA's chat.py feeds its model."""
    import importlib

    from transformers import CLIPImageProcessor

    transforms = importlib.import_module("lisa_on_cuda.segment_anything.utils.transforms")
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    batch = lisa_case.proc([image], [QUESTION])
    want = lisa_case.mods.mm_utils.tokenizer_image_token(lisa_prompt(lisa_case.mods, QUESTION), lisa_case.tok)
    assert batch["input_ids"][0].tolist() == expand_image(want, 256, lisa_case.image_id)
    clip = CLIPImageProcessor.from_pretrained(lisa_case.clip_dir).preprocess(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], clip, atol=1e-6, rtol=0)
    resized = transforms.ResizeLongestSide(SAM_PX).apply_image(image)  # chat.py: resize, normalise, pad
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)) / torch.tensor(
        [58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = torch.nn.functional.pad(x, (0, SAM_PX - x.shape[2], 0, SAM_PX - x.shape[1]))
    torch.testing.assert_close(batch["sam_pixel_values"][0], x, atol=1e-5, rtol=0)
    assert batch["sam_input_hw"][0].tolist() == list(resized.shape[:2])
