"""Shared test bodies over the table of cases in adapter_cases.py (one per family)."""
from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

import pytest
import torch

import sasp
from sasp import similarity, similarity_as_points, to_sam_frame
from sasp.adapters import config_of, disabled, is_wrapped, unwrap, wrap
from sasp.adapters.base import find_core
from sasp.adapters.llava1 import locate_seg_tokens

from adapter_cases import (
    CASES, CFG, CLIP_PX, IMAGES, N_P, REJ, SAM_PX, SEG, Case, Recorder, build, eval_batch, infer_batch, row_sizes, testing,
    train_batch,
)

IMAGE = testing.IMAGE_TOKEN_INDEX
MODES = ["train", "infer", "eval"]


def run(model: torch.nn.Module, case: Case, mode: str) -> Tuple[Dict[str, Any], torch.Tensor, Dict[str, Any]]:
    """Run one pass; returns (outputs, the token rows of the hidden states, the batch)."""
    if mode == "train":
        batch = train_batch(case)
        model.train()
        out = model(**batch)
        return out, batch["input_ids"], batch
    model.eval()
    if mode == "infer":
        batch = infer_batch(case)
        with torch.no_grad():
            out = model(**batch)
        return out, batch["input_ids"], batch  # GSVA's reeval has rewritten input_ids in place
    if case.family == "gsva":
        pytest.skip("GSVA has no generation-based evaluate; it validates through model_forward")
    batch = eval_batch(case)
    testing.allow_only(model, case.eval_allow)
    res = model.evaluate(**batch)
    return {"pred_masks": res[1]}, res[0], batch


def expected_points(
    hidden: torch.Tensor, tokens: torch.Tensor, sizes: torch.Tensor, n_p: int = N_P, long_side: int = SAM_PX
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The points for every [SEG], row-major, computed with the core ops written out by hand."""
    sims, hws = [], []
    for b, row in enumerate(tokens.tolist()):
        if SEG not in row[1:]:
            continue
        k = row.index(IMAGE)
        for j, tok in enumerate(row):
            if tok != SEG or j == 0:
                continue
            q = j - 1  # the hidden state one position before [SEG] ...
            e = q + n_p - 1 if q >= k else q  # ... after the image placeholder became N_p tokens
            sims.append(similarity(hidden[b, k : k + n_p], hidden[b, e][None]))
            hws.append(sizes[b].tolist())
    cfg = CFG.replace(crop_size=CLIP_PX)  # DtoC's intermediate map: CLIP's centre crop
    refined, labels, _ = similarity_as_points(torch.cat(sims), hws, cfg)
    return to_sam_frame(refined, hws, long_side), labels


def count(tokens: torch.Tensor, tok: int) -> int:
    return int((tokens[:, 1:] == tok).sum())


def assert_outputs_equal(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), key
        elif isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            assert len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)), key


def grads(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def detach_text(model: torch.nn.Module):
    """A test hook after SasP's: cut the text embedding so gradients can reach the LLM only
    through the points."""

    def hook(mod, args, kwargs):
        if kwargs.get("text_embeds") is not None:
            kwargs["text_embeds"] = kwargs["text_embeds"].detach()
        return args, kwargs

    return model.model.visual_model.prompt_encoder.register_forward_pre_hook(hook, with_kwargs=True)


def llm_grad_norm(model: torch.nn.Module) -> float:
    """Gradient mass on the LLM's decoder layers (not SAM's, not CLIP's)."""
    return sum(float(p.grad.abs().sum()) for p in model.model.layers.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- table tests


@pytest.mark.parametrize("mode", MODES)
def test_points_equal_core_ops(case: Case, mode: str) -> None:
    model = case.wrap(build(case.family), CFG)
    rec = Recorder(model)
    out, tokens, batch = run(model, case, mode)
    assert len(rec.hidden) == 1
    want, want_labels = expected_points(rec.hidden[0], tokens, row_sizes(batch))
    got, got_labels = rec.points()
    assert got.shape[0] == count(tokens, SEG) > 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got_labels, want_labels)
    for call in rec.prompts:  # text embedding kept after the points
        assert call["text_embeds"] is not None and call["points"][0].shape[0] == call["text_embeds"].shape[0]
    if mode == "train":
        assert got.requires_grad


@pytest.mark.parametrize("mode", MODES)
def test_unwrap_round_trip(case: Case, mode: str) -> None:
    fresh, model = build(case.family), build(case.family)
    before = dict(model.__dict__)
    case.wrap(model, CFG)
    run(model, case, mode)
    assert unwrap(model) is model and not is_wrapped(model)
    assert model.__dict__.keys() == before.keys()
    for mod in model.modules():  # transformers installs output-capturing hooks of its own
        for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
            assert not any(h.__module__.startswith("sasp") for h in hooks.values())
    torch.manual_seed(0)
    got = run(model, case, mode)[0]
    torch.manual_seed(0)
    want = run(fresh, case, mode)[0]
    assert_outputs_equal(got, want)
    if mode == "train":
        got["loss"].backward()
        want["loss"].backward()
        g, w = grads(model), grads(fresh)
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g)


def test_disabled(case: Case) -> None:
    fresh, model = build(case.family), build(case.family)
    case.wrap(model, CFG)
    rec = Recorder(model)
    with disabled(model):
        with disabled(model):
            pass
        got = run(model, case, "infer")[0]
    assert not rec.points()[0].shape[0]
    assert_outputs_equal(got, run(fresh, case, "infer")[0])
    run(model, case, "infer")
    assert rec.points()[0].shape[0] > 0  # on again after the block
    with sasp.disabled(fresh):  # a no-op on a model never wrapped
        pass


def test_state_dict_round_trip(case: Case, tmp_path) -> None:
    fresh, model = build(case.family), build(case.family)
    names = [n for n, _ in model.named_parameters()]
    keys = list(model.state_dict().keys())
    case.wrap(model, CFG)
    assert [n for n, _ in model.named_parameters()] == names
    assert list(model.state_dict().keys()) == keys
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    torch.save(model.state_dict(), tmp_path / "wrapped.pt")
    fresh.load_state_dict(torch.load(tmp_path / "wrapped.pt"), strict=True)
    with disabled(model):
        assert_outputs_equal(run(model, case, "infer")[0], run(fresh, case, "infer")[0])
    reloaded = case.wrap(build(case.family), CFG)
    reloaded.load_state_dict(fresh.state_dict(), strict=True)
    assert_outputs_equal(run(reloaded, case, "infer")[0], run(model, case, "infer")[0])


def test_bf16(case: Case) -> None:
    """A bf16 model: similarity in float32, float32 points into the bf16 SAM (LISA's fork casts)."""
    model = case.wrap(build(case.family).to(torch.bfloat16), CFG)
    rec = Recorder(model)
    batch = infer_batch(case)
    batch.update({k: batch[k].to(torch.bfloat16) for k in ("images", "images_clip")})
    with torch.no_grad():
        out = model(**batch)
    got, _ = rec.points()
    assert got.dtype == torch.float32 and got.shape[0] > 0 and torch.isfinite(got).all()
    want, _ = expected_points(rec.hidden[0], batch["input_ids"], row_sizes(batch))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert all(torch.isfinite(m.float()).all() for m in out["pred_masks"])


def test_deepcopy(case: Case) -> None:
    """A deep copy (an EMA model, say) is wired to its own modules, not to the original's.
    (Pickling the whole model fails in transformers 5 itself: its output-capturing hooks are
    local functions.)"""
    model = case.wrap(build(case.family), CFG)
    copies = [copy.deepcopy(model), copy.deepcopy(model)]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # the original drifts; the copies must not follow it
    for other in copies:
        assert is_wrapped(other)
        rec = Recorder(other)
        got = run(other, case, "infer")[0]
        assert rec.points()[0].shape[0] > 0 and len(rec.hidden) == 1
        with disabled(other):
            assert_outputs_equal(run(other, case, "infer")[0], run(build(case.family), case, "infer")[0])
        assert not torch.equal(got["pred_masks"][0], run(build(case.family), case, "infer")[0]["pred_masks"][0])
        unwrap(other)
        assert not is_wrapped(other) and is_wrapped(model)


def test_gradient_reaches_llm_through_points(case: Case) -> None:
    model = case.wrap(build(case.family), CFG)
    detach_text(model)
    out = run(model, case, "train")[0]
    out["mask_loss"].backward()
    assert llm_grad_norm(model) > 0
    model.zero_grad(set_to_none=True)
    with disabled(model):
        out = run(model, case, "train")[0]
    out["mask_loss"].backward()
    assert llm_grad_norm(model) == 0


@pytest.mark.parametrize("prompt", ["points", "text"])
def test_prompt_modes(case: Case, prompt: str) -> None:
    model = case.wrap(build(case.family), CFG, prompt=prompt)
    rec = Recorder(model)
    out, tokens, batch = run(model, case, "infer")
    if prompt == "text":
        assert not rec.points()[0].shape[0]
        assert_outputs_equal(out, run(build(case.family), case, "infer")[0])
    else:
        assert all(call["text_embeds"] is None for call in rec.prompts)
        want, _ = expected_points(rec.hidden[0], tokens, row_sizes(batch))
        torch.testing.assert_close(rec.points()[0], want, atol=1e-5, rtol=0)


def test_peft_lora(case: Case) -> None:
    peft = pytest.importorskip("peft")
    base = build(case.family)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert find_core(lora) is base and find_core(lora.base_model) is base
    assert wrap(lora, case.spec, CFG) is lora and is_wrapped(lora) and is_wrapped(base)
    rec = Recorder(base)
    detach_text(base)
    lora.train()
    batch = train_batch(case)
    out = lora(**batch)
    want, want_labels = expected_points(rec.hidden[0], batch["input_ids"], row_sizes(batch))
    got, got_labels = rec.points()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got_labels, want_labels)
    out["mask_loss"].backward()
    lora_grad = sum(float(p.grad.abs().sum()) for n, p in lora.named_parameters() if "lora_B" in n and p.grad is not None)
    assert lora_grad > 0
    unwrap(lora)
    assert not is_wrapped(base)


def test_wrap_twice(case: Case) -> None:
    model = case.wrap(build(case.family), CFG)
    hooks = len(model.model.text_hidden_fcs[0]._forward_pre_hooks)
    assert case.wrap(model, CFG) is model  # same settings: a no-op
    assert len(model.model.text_hidden_fcs[0]._forward_pre_hooks) == hooks
    rec = Recorder(model)
    _, tokens, _ = run(model, case, "infer")
    assert rec.points()[0].shape[0] == count(tokens, SEG)
    with pytest.raises(ValueError, match="already wrapped"):
        case.wrap(model, CFG.replace(num_points=4))
    assert config_of(model).num_points == CFG.num_points


# --------------------------------------------------------------------------- family-specific


def test_gsva_rej_gets_no_points() -> None:
    case = next(c for c in CASES if c.family == "gsva")
    model = case.wrap(build("gsva"), CFG)
    rec = Recorder(model)
    rows = case.infer_rows[:2]  # every row keeps a [SEG]: GSVA's SAM needs one per row without reeval
    batch = testing.make_batch("gsva", IMAGES[:1], [rows], seed=3, inference=True)
    batch["reeval"] = False
    ids = batch["input_ids"].clone()
    model(**batch)
    assert torch.equal(batch["input_ids"], ids)
    assert rec.points()[0].shape[0] == count(ids, SEG) < count(ids, SEG) + count(ids, REJ)
    rec.points_before = rec.points()[0].shape[0]
    batch["reeval"] = True
    model(**batch)  # rewrites [REJ] -> [SEG] in place; the rewritten ones get points too
    assert count(batch["input_ids"], REJ) == 0
    assert rec.points()[0].shape[0] - rec.points_before == count(ids, SEG) + count(ids, REJ)


def test_read_class_is_refused_and_never_doubled() -> None:
    case = next(c for c in CASES if c.family == "sesame")
    with pytest.raises(ValueError, match="points twice"):
        sasp.wrap_sesame(build("read"))
    forced = wrap(build("read"), case.spec.replace(computes_points=lambda core: False), CFG)
    rec = Recorder(forced)
    run(forced, case, "infer")
    for call in rec.prompts:  # READ's own single point, untouched
        assert call["points"][0].shape[1] == 1 and call["text_embeds"] is not None


def test_seg_row_without_image_raises() -> None:
    case = next(c for c in CASES if c.family == "lisa")
    model = case.wrap(build("lisa"), CFG).train()
    batch = train_batch(case)
    batch["input_ids"][1, 2] = 5  # row 1 loses its <image>; LLaVA then embeds it as text only
    with pytest.raises(ValueError, match="row 1 has a \\[SEG\\] token but no image"):
        model(**batch)


def test_locate_seg_tokens_layouts() -> None:
    n_p = 4
    placeholder = torch.tensor([[1, IMAGE, 5, SEG, 6, SEG], [1, 5, 6, 7, IMAGE, SEG]])
    rows, pos, start = locate_seg_tokens(placeholder, SEG, IMAGE, n_p)
    assert rows.tolist() == [0, 0, 1] and start.tolist() == [1, 4]
    assert pos.tolist() == [2 + 3, 4 + 3, 4 + 3]  # the last [SEG] follows the image: its last patch
    expanded = torch.tensor([[1] + [IMAGE] * n_p + [5, SEG]])
    rows, pos, start = locate_seg_tokens(expanded, SEG, IMAGE, n_p)
    assert rows.tolist() == [0] and pos.tolist() == [5] and start.tolist() == [1]
    with pytest.raises(ValueError, match="row 0 holds 2 image tokens"):
        locate_seg_tokens(torch.tensor([[IMAGE, IMAGE, SEG]]), SEG, IMAGE, n_p)


def test_retrofit_example_runs(capsys) -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "retrofit_lisa.py"
    runpy.run_path(str(example), run_name="__main__")
    assert "unwrapped: identical to the original LISA" in capsys.readouterr().out
