"""SegLlava on each SAM backend (segment_anything, transformers' SamModel and Sam2Model, the
sam2 package's SAM2Base when installed): the demo path (``segment`` with generation), a training step, SasP points in each backend's own frame
(checked against the backend's own transform / processor on non-square images), the
similarity mask prompt, and the backends' preprocessing and post-processing against theirs."""
from __future__ import annotations

import copy
import sys
import types

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the model package needs transformers")
pytest.importorskip("segment_anything", reason="the model package needs segment_anything")

from transformers import (  # noqa: E402
    LogitsProcessor, LogitsProcessorList, Sam2ImageProcessor, Sam2Processor, SamImageProcessor, SamProcessor,
)

from sasp import SasPConfig, similarity_mask_prompt  # noqa: E402
from sasp.models.seg_llava import build_tiny  # noqa: E402
from sasp.models.seg_llava import sam_backends_hf  # noqa: E402
from sasp.models.seg_llava.sam_backends import get_backend  # noqa: E402
from sasp.testing.sam import tiny_sam_config as tiny_sa_config  # noqa: E402
from sasp.testing.sam_hf import tiny_sam2_config, tiny_sam_config  # noqa: E402

S = 64  # SAM input side of every tiny backend; mask input 16 x 16
# 16 mask-input channels: with 4, the mask embedding's first LayerNorm sees one channel and
# makes the dense prompt constant (no gradient reaches the mask prompt)
CONFIGS = {"segment_anything": {**tiny_sa_config(img_size=S), "mask_in_chans": 16}, "transformers": tiny_sam_config(S), "sam2": tiny_sam2_config(S)}
try:  # the sam2 package: SAM 2.1 Hiera-T at 64 px (random weights)
    import sam2  # noqa: F401
except ImportError:
    pass
else:
    CONFIGS["sam2-package"] = {"backend": "sam2", "config_file": "configs/sam2.1/sam2.1_hiera_t.yaml", "overrides": [f"++model.image_size={S}"]}
FRAMES = {"segment_anything": "resize_longest", "transformers": "resize_longest", "sam2": "square", "sam2-package": "square"}
POINT_KEYS = {"segment_anything": "points", "transformers": "input_points", "sam2": "input_points", "sam2-package": "points"}
MASK_KEYS = {"segment_anything": "masks", "transformers": "input_masks", "sam2": "input_masks", "sam2-package": "masks"}
MODULES = {"segment_anything": "Sam", "transformers": "SamModel", "sam2": "Sam2Model", "sam2-package": "SAM2Base"}
SIZES = [(37, 91), (90, 50), (40, 40)]  # non-square images
PROMPTS = ["Segment the red circle.", "Where is the dog?", "Find the big square."]
ANSWERS = ["Sure, [SEG] and [SEG].", "no", "It is [SEG]."]


def _image(h: int, w: int, seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = (230, 20, 20)
    return img


IMAGES = [_image(h, w, i) for i, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request):
    model, processor = build_tiny(seed=0, sam_config=CONFIGS[request.param])
    return request.param, model, processor


def with_sasp(model, cfg, prompt="both"):
    model = copy.deepcopy(model)
    model.config.with_sasp(cfg, prompt)
    return model


class Recorder:
    """Every prompt-encoder call's keyword arguments (after SasP's, before SAM's own code)."""

    def __init__(self, model):
        self.calls = []
        sam = model.visual_model
        encoder = sam.prompt_encoder if hasattr(sam, "prompt_encoder") else sam.sam_prompt_encoder  # SAM2Base
        self.handle = encoder.register_forward_pre_hook(
            lambda m, a, k: self.calls.append(dict(k)), with_kwargs=True
        )

    def remove(self):
        self.handle.remove()


def _points_of(backend, call):
    """(coords [n, K, 2], labels [n, K]) of one recorded call, in the backend's layout."""
    if POINT_KEYS[backend] == "points":
        return call["points"]
    return call["input_points"][:, 0], call["input_labels"][:, 0]


def _train_batch(processor):
    batch = processor(images=IMAGES, prompts=PROMPTS, answers=ANSWERS)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    gen = torch.Generator().manual_seed(1)
    gt = [(torch.rand(n, h, w, generator=gen) > 0.5).float() for n, (h, w) in zip([2, 0, 1], SIZES)]
    return batch, labels, gt


class OnlySeg(LogitsProcessor):
    """Generation that answers "[SEG]" then ends (random weights otherwise babble)."""

    def __init__(self, seg: int, eos: int, start: int):
        self.seg, self.eos, self.start = seg, eos, start

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        out[:, self.seg if input_ids.shape[1] == self.start else self.eos] = 0
        return out


# --------------------------------------------------------------------------- the demo path and training


def test_segment_with_generation(tiny):
    backend, model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=6, spatial_prompt="points+mask"))
    batch = processor(images=IMAGES, prompts=PROMPTS)
    seg, eos = model.seg_token_idx, processor.tokenizer.eos_token_id
    out = m.segment(**batch, max_new_tokens=3, logits_processor=LogitsProcessorList([OnlySeg(seg, eos, batch["input_ids"].shape[1])]))
    assert out.seg_counts.tolist() == [1, 1, 1]
    assert [tuple(x.shape) for x in out.masks] == [(1, h, w) for h, w in SIZES]
    assert all(x.dtype == torch.bool for x in out.masks)
    assert all(torch.isfinite(x).all() for x in out.mask_logits)
    assert out.points.shape == (3, 6, 2) and out.mask_prompts.shape == (3, 1, 16, 16)
    assert type(m.visual_model).__name__ == MODULES[backend] and m.sam_backend.name == backend
    assert all(isinstance(getattr(m.visual_model, attr), torch.nn.Module) for attr in m.sam_backend.parts.values())


@pytest.mark.parametrize("spatial", ["points", "mask", "points+mask"])
def test_training_step(tiny, spatial):
    _, model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=6, spatial_prompt=spatial))
    batch, labels, gt = _train_batch(processor)
    m.train()
    out = m(**batch, labels=labels, gt_masks=gt)
    assert [tuple(p.shape) for p in out.pred_masks] == [(2, 37, 91), (0, 90, 50), (1, 40, 40)]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    decoder = [g for n, g in grads.items() if n.startswith(("visual_model.mask_decoder.", "visual_model.sam_mask_decoder."))]
    assert any(g is not None and g.abs().sum() > 0 for g in decoder), "SAM's mask decoder trains"
    encoder = [g for n, g in grads.items() if n.startswith(("visual_model.image_encoder.", "visual_model.vision_encoder."))]
    assert encoder and all(g is None for g in encoder), "SAM's image encoder runs without gradient"
    assert grads["text_hidden_fcs.0.0.weight"].abs().sum() > 0


def test_mask_prompt_alone_trains_the_llm(tiny):
    """Mask prompt only, no [SEG] embedding: the mask loss reaches the LLM through the
    similarity map alone."""
    _, model, processor = tiny
    m = with_sasp(model, SasPConfig(spatial_prompt="mask"), "points")
    batch, _, gt = _train_batch(processor)
    m.train()
    out = m(**batch, gt_masks=gt)
    assert out.points is None and out.mask_prompts.requires_grad
    out.mask_loss.backward()
    assert m.text_hidden_fcs[0][0].weight.grad is None, "the [SEG] projection takes no part"
    last = m.model.language_model.layers[-1].mlp.down_proj.weight.grad
    assert last is not None and last.abs().sum() > 0


# --------------------------------------------------------------------------- prompts in each backend's frame


def _their_frame(backend, points, hw):
    """The backend's own transform of pixel points [K, 2] of an (H, W) image."""
    if backend == "segment_anything":
        from segment_anything.utils.transforms import ResizeLongestSide

        return torch.from_numpy(ResizeLongestSide(S).apply_coords(points.double().numpy(), hw))
    if backend == "sam2-package":
        from sam2.utils.transforms import SAM2Transforms

        return SAM2Transforms(S, 0.0).transform_coords(points.float(), normalize=True, orig_hw=hw)
    image = np.zeros((*hw, 3), dtype=np.uint8)
    if backend == "transformers":
        proc = SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": S}, pad_size={"height": S, "width": S}))
    else:
        proc = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": S, "width": S}))
    return proc(images=[image], input_points=[[points.tolist()]], return_tensors="pt")["input_points"][0, 0]


def test_points_reach_sam_in_its_own_frame(tiny):
    backend, model, processor = tiny
    m = with_sasp(model, SasPConfig(num_points=7))
    rec = Recorder(m)
    out = m.segment(**processor(images=IMAGES, prompts=PROMPTS, answers=ANSWERS), max_new_tokens=0)
    rec.remove()
    assert out.seg_rows.tolist() == [0, 0, 2] and len(rec.calls) == 2
    coords, labels = (torch.cat(t) for t in zip(*(_points_of(backend, c) for c in rec.calls)))
    assert torch.equal(labels, out.labels) and coords.dtype == torch.float32
    for i, row in enumerate(out.seg_rows.tolist()):
        theirs = _their_frame(backend, out.points[i].detach(), SIZES[row])
        if backend.startswith("sam2"):  # float32 in SAM 2's processors too: the same products
            assert torch.equal(coords[i], theirs)
        else:
            torch.testing.assert_close(coords[i].double(), theirs, rtol=1e-6, atol=1e-5)
    assert all(c.get(MASK_KEYS[backend]) is None for c in rec.calls)


@pytest.mark.parametrize("spatial", ["mask", "points+mask"])
def test_mask_prompt_reaches_sam(tiny, spatial):
    backend, model, processor = tiny
    cfg = SasPConfig(num_points=5, spatial_prompt=spatial, mask_range=(-6.0, 6.0))
    m = with_sasp(model, cfg)
    batch = processor(images=IMAGES, prompts=PROMPTS, answers=ANSWERS)
    rec = Recorder(m)
    out = m.segment(**batch, max_new_tokens=0)
    rec.remove()
    sent = torch.cat([c[MASK_KEYS[backend]] for c in rec.calls])
    hw = batch["image_hw"][out.seg_rows]
    expect = similarity_mask_prompt(out.similarity, hw, m.config.sasp_config(), m.grid_hw, S, 16, FRAMES[backend])
    torch.testing.assert_close(sent, expect, rtol=0, atol=0)
    torch.testing.assert_close(out.mask_prompts, expect, rtol=0, atol=0)
    if spatial == "points+mask":
        assert all(c.get(POINT_KEYS[backend]) is not None for c in rec.calls)
    elif backend == "sam2":  # Sam2Model.forward's convention without points: one "not a point"
        assert all(c["input_points"].shape[-2] == 1 and (c["input_labels"] == -1).all() for c in rec.calls)
    else:
        assert all(c.get(POINT_KEYS[backend]) is None for c in rec.calls)
    base = with_sasp(model, cfg.replace(spatial_prompt="points")).segment(**batch, max_new_tokens=0)
    if spatial == "points+mask":
        assert not torch.equal(out.mask_logits[0], base.mask_logits[0]), "the mask prompt changes SAM's answer"


# --------------------------------------------------------------------------- preprocessing and post-processing


def test_preprocessing_matches_the_backends_own(tiny):
    """Our SAM input gives the image embedding the backend's own pipeline gives."""
    backend, model, processor = tiny
    batch = processor(images=IMAGES[:2], prompts=PROMPTS[:2])
    ours = model.get_visual_embs(batch["sam_pixel_values"])
    sam = model.visual_model
    for i, img in enumerate(IMAGES[:2]):
        if backend == "segment_anything":
            from segment_anything import SamPredictor

            predictor = SamPredictor(sam)
            predictor.set_image(img)
            assert tuple(batch["sam_input_hw"][i].tolist()) == predictor.input_size
            torch.testing.assert_close(ours[i : i + 1], predictor.features)
            continue
        if backend == "sam2-package":
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            predictor = SAM2ImagePredictor(sam)
            predictor._bb_feat_sizes = [(S // 4,) * 2, (S // 8,) * 2, (S // 16,) * 2]  # it assumes 1024 px
            predictor.set_image(img)
            their = predictor._features["high_res_feats"] + [predictor._features["image_embed"]]
            assert all(torch.equal(a[i : i + 1], b) for a, b in zip(ours, their))
            continue
        if backend == "transformers":
            their = SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": S}, pad_size={"height": S, "width": S}))
            enc = their(images=[img], return_tensors="pt")
            assert batch["sam_input_hw"][i].tolist() == enc["reshaped_input_sizes"][0].tolist()
            torch.testing.assert_close(ours[i : i + 1], sam.get_image_embeddings(enc["pixel_values"]))
        else:
            enc = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": S, "width": S}))(images=[img], return_tensors="pt")
            theirs = sam.get_image_embeddings(enc["pixel_values"])
            for level, their_level in zip(ours, theirs):
                torch.testing.assert_close(level[i : i + 1], their_level)


def test_sam2_package_decodes_as_its_predictor(tiny):
    """Points only: the backend's prompt call, decoder call and post-processing give what the
    package's SAM2ImagePredictor.predict gives."""
    backend, model, processor = tiny
    if backend != "sam2-package":
        pytest.skip("the sam2 package's own predictor")
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sasp.models.seg_llava.sam_backends import SamPrompt

    sam, be = model.visual_model, model.sam_backend
    predictor = SAM2ImagePredictor(sam)
    predictor._bb_feat_sizes = [(S // 4,) * 2, (S // 8,) * 2, (S // 16,) * 2]
    predictor.set_image(IMAGES[0])
    pts, labels = np.array([[10.0, 20.0], [80.0, 5.0]]), np.array([1, 0])
    masks, _, low = predictor.predict(point_coords=pts, point_labels=labels, multimask_output=False, return_logits=True)
    emb = be.image_embeddings(sam, processor.preprocess_sam(IMAGES[:1])[0], False)
    coords = be.to_frame(torch.tensor(pts, dtype=torch.float32)[None], torch.tensor([SIZES[0]]), S)
    with torch.no_grad():
        ours = be.decode(sam, emb, 0, SamPrompt(n=1, coords=coords, labels=torch.tensor([[1, 0]])), torch.float32)
    torch.testing.assert_close(ours[0], torch.as_tensor(low), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(be.postprocess(sam, ours, (S, S), SIZES[0])[0], torch.as_tensor(masks)[0], rtol=1e-5, atol=1e-5)


def test_postprocessing_matches_the_processors():
    low = torch.randn(2, 1, 16, 16)
    for name, size, hw in (("transformers", (26, 64), (37, 91)), ("sam2", (64, 64), (90, 50))):
        backend = get_backend(name)
        sam = types.SimpleNamespace(prompt_encoder=types.SimpleNamespace(input_image_size=S))
        ours = backend.postprocess(sam, low, size, hw)
        if name == "transformers":
            theirs = SamImageProcessor(pad_size={"height": S, "width": S}).post_process_masks([low], [hw], [size], binarize=False)[0]
        else:
            theirs = Sam2ImageProcessor().post_process_masks([low], [hw], binarize=False)[0]
        torch.testing.assert_close(ours, theirs[:, 0], rtol=0, atol=0)


def test_backend_choice_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown SAM backend 'sam3'"):
        get_backend({"backend": "sam3"})
    monkeypatch.setitem(sys.modules, "transformers", types.ModuleType("transformers"))  # no Sam2Model
    monkeypatch.setitem(sys.modules, "sam2", None)  # and no sam2 package
    with pytest.raises(ImportError, match=r"pip install"):
        sam_backends_hf.sam2_backend()
