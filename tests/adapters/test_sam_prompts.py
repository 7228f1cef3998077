"""The prompt hook on a pipeline built on transformers' SamModel (``sasp.testing.sam_hf``'s
LISA double): SasP's points reach SAM as ``input_points`` / ``input_labels`` in SamProcessor's
frame, the similarity mask prompt as ``input_masks``; the styles of the three backends."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch

from sasp import similarity, similarity_as_points, similarity_mask_prompt, to_sam_frame
from sasp.adapters import LISA_SPEC, unwrap, wrap
from sasp.adapters.sam_prompts import SamPromptStyle, prompt_style
from sasp.geometry import to_square_frame

from adapter_cases import CFG, CLIP_PX, IMAGES, N_P, SAM_PX, SEG, testing

sam_hf = pytest.importorskip("sasp.testing.sam_hf", reason="needs transformers' SamModel")
HF_SPEC = LISA_SPEC.replace(name="lisa-sam", sam_backend="transformers")
TRAIN_ROWS = [[[7, SEG, 8], [SEG, 9, 10, SEG]], [[7, 8, 9], [11, SEG]]]
MASK = 16  # the tiny SAM's mask input: 4 x its 4 x 4 image embedding
_STATE: Dict[str, torch.Tensor] = {}


def build() -> torch.nn.Module:
    model = sam_hf.build_tiny_lisa_sam(seed=0)
    if _STATE:
        model.load_state_dict(_STATE)
    else:
        _STATE.update({k: v.clone() for k, v in model.state_dict().items()})
    return model


class Recorder:
    """The projection's input and every prompt-encoder call's final keyword arguments."""

    def __init__(self, model: torch.nn.Module):
        self.hidden: List[torch.Tensor] = []
        self.calls: List[Dict[str, Any]] = []
        self.handles = [
            model.model.text_hidden_fcs[0].register_forward_pre_hook(lambda m, a: self.hidden.append(a[0])),
            model.model.visual_model.prompt_encoder.register_forward_hook(lambda m, a, k, o: self.calls.append(dict(k)), with_kwargs=True),
        ]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def similarities(hidden: torch.Tensor, tokens: torch.Tensor, sizes: List[Tuple[int, int]]) -> Tuple[torch.Tensor, List[List[int]]]:
    """The similarity of every [SEG] (row-major) and its image size, written out by hand."""
    sims, hws = [], []
    for b, row in enumerate(tokens.tolist()):
        k = row.index(testing.IMAGE_TOKEN_INDEX)
        for j, tok in enumerate(row):
            if tok == SEG and j > 0:
                q = j - 1
                e = q + N_P - 1 if q >= k else q
                sims.append(similarity(hidden[b, k : k + N_P], hidden[b, e][None]))
                hws.append(list(sizes[b]))
    return torch.cat(sims), hws


def train_run(model: torch.nn.Module, cfg):
    wrap(model, HF_SPEC, cfg)
    rec = Recorder(model)
    batch = testing.make_batch("lisa", IMAGES, TRAIN_ROWS)
    model.train()
    out = model(**batch)
    rec.remove()
    sizes = [IMAGES[0]] * 2 + [IMAGES[1]] * 2  # rows of image 0, then of image 1
    sim, hws = similarities(rec.hidden[0], batch["input_ids"], sizes)
    return out, rec, sim, hws, cfg.replace(crop_size=CLIP_PX)


def test_points_reach_transformers_sam_in_its_frame():
    out, rec, sim, hws, cfg = train_run(build(), CFG)
    refined, labels, _ = similarity_as_points(sim, hws, cfg)
    assert len(rec.calls) == 2 and sim.shape[0] == 4
    points = torch.cat([c["input_points"] for c in rec.calls])
    got_labels = torch.cat([c["input_labels"] for c in rec.calls])
    assert points.shape == (4, 1, CFG.num_points, 2) and got_labels.shape == (4, 1, CFG.num_points)
    assert torch.equal(got_labels[:, 0], labels)
    torch.testing.assert_close(points[:, 0], to_sam_frame(refined, hws, SAM_PX), atol=1e-5, rtol=0)
    # SamProcessor's own coordinates for the same pixel points
    from transformers import SamImageProcessor, SamProcessor

    proc = SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": SAM_PX}, pad_size={"height": SAM_PX, "width": SAM_PX}))
    for i, (h, w) in enumerate(hws):
        theirs = proc(images=[np.zeros((h, w, 3), np.uint8)], input_points=[[refined[i].tolist()]], return_tensors="pt")["input_points"]
        torch.testing.assert_close(points[i, 0].double(), theirs[0, 0], atol=1e-4, rtol=1e-6)
    assert all(c["input_masks"] is None and c["text_embeds"] is not None for c in rec.calls)
    assert points.requires_grad
    out["loss"].backward()


def test_mask_prompt_reaches_transformers_sam():
    model = build()
    out, rec, sim, hws, cfg = train_run(model, CFG.replace(spatial_prompt="points+mask"))
    masks = torch.cat([c["input_masks"] for c in rec.calls])
    want = similarity_mask_prompt(sim, hws, cfg, None, SAM_PX, MASK, "resize_longest")
    assert masks.shape == (4, 1, MASK, MASK)
    torch.testing.assert_close(masks, want, atol=1e-5, rtol=0)
    assert all(c["input_points"] is not None for c in rec.calls)
    assert masks.requires_grad


def test_mask_prompt_alone_trains_the_llm_through_the_hook():
    model = build()
    wrap(model, HF_SPEC, CFG.replace(spatial_prompt="mask"), prompt="points")
    rec = Recorder(model)
    model.train()
    out = model(**testing.make_batch("lisa", IMAGES, TRAIN_ROWS))
    rec.remove()
    assert all(c["input_points"] is None and c["text_embeds"] is None and c["input_masks"] is not None for c in rec.calls)
    out["mask_loss"].backward()
    llm = sum(float(p.grad.abs().sum()) for p in model.model.layers.parameters() if p.grad is not None)
    assert llm > 0 and model.model.text_hidden_fcs[0][0].weight.grad is None


def test_generation_path_and_unwrap_restore_the_pipeline():
    model, plain = build(), build()
    testing.allow_only(model, [SEG])
    testing.allow_only(plain, [SEG])
    batch = testing.make_eval_batch("lisa", IMAGES, [[7, 8], [SEG, 9]], max_new_tokens=2)
    wrap(model, HF_SPEC, CFG)
    rec = Recorder(model)
    ids, masks = model.evaluate(**batch)
    rec.remove()
    n_seg = int((ids[:, 1:] == SEG).sum())
    assert sum(c["input_points"].shape[0] for c in rec.calls) == n_seg == sum(m.shape[0] for m in masks)
    unwrap(model)
    ids_a, masks_a = model.evaluate(**batch)
    ids_b, masks_b = plain.evaluate(**batch)
    assert torch.equal(ids_a, ids_b) and all(torch.equal(a, b) for a, b in zip(masks_a, masks_b))


def test_styles_of_the_backends():
    from transformers import Sam2Config, Sam2Model

    sam2 = Sam2Model(Sam2Config(**sam_hf.tiny_sam2_config()["config"]))
    style = prompt_style("sam2", sam2.prompt_encoder)
    assert (style.points, style.labels, style.masks, style.point_batch, style.frame) == ("input_points", "input_labels", "input_masks", True, "square")
    assert style.input_size(sam2.prompt_encoder) == SAM_PX and style.mask_size(sam2.prompt_encoder) == MASK
    pts, hw = torch.tensor([[[3.0, 7.0], [90.0, 36.0]]]), [[37, 91]]
    assert torch.equal(style.to_frame(pts, hw, SAM_PX), to_square_frame(pts, hw, SAM_PX))
    sa = testing.tiny_sam().prompt_encoder  # the LISA fork: segment_anything's keywords
    package_like = prompt_style("sam2", sa)
    assert (package_like.points, package_like.labels, package_like.frame) == ("points", None, "square")
    args = prompt_style("segment_anything").inject({"points": None}, pts, torch.ones(1, 2, dtype=torch.long), None, "cpu", torch.float32)
    assert args["points"][0] is not None and args["boxes"] is None and args["masks"] is None
    with pytest.raises(ValueError, match="sam_backend"):
        prompt_style("sam3")
    with pytest.raises(ValueError, match="frame"):
        SamPromptStyle("mine", frame="stretch")
    with pytest.raises(ValueError, match="sam_backend"):
        wrap(build(), LISA_SPEC.replace(sam_backend="sam3"), CFG)
