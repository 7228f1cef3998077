"""The adapters on CUDA (skipped without a GPU): the hooks run where the model runs, the
dispatcher picks the Triton kernel there, and the injected points match the torch path on CPU."""
from __future__ import annotations

import pytest
import torch

from adapter_cases import CFG, Case, Recorder, build, eval_batch, infer_batch, row_sizes, testing, train_batch
from sasp import backend_for
from test_adapters import count, detach_text, expected_points, llm_grad_norm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def to(batch, device, dtype=None):
    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device, dtype) if (dtype is not None and x.is_floating_point()) else x.to(device)
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return {k: move(v) for k, v in batch.items()}


@pytest.mark.parametrize("mode", ["train", "infer", "eval"])
def test_points_on_cuda_match_cpu(case: Case, mode: str) -> None:
    if mode == "eval" and case.family == "gsva":
        pytest.skip("GSVA has no generation-based evaluate")
    model = case.wrap(build(case.family).cuda(), CFG)
    rec = Recorder(model)
    if mode == "train":
        model.train()
        detach_text(model)
        batch = to(train_batch(case), "cuda")
        out = model(**batch)
        tokens = batch["input_ids"]
        out["mask_loss"].backward()
        assert llm_grad_norm(model) > 0
    elif mode == "infer":
        batch = to(infer_batch(case), "cuda")
        with torch.no_grad():
            model(**batch)
        tokens = batch["input_ids"]
    else:
        batch = to(eval_batch(case), "cuda")
        testing.allow_only(model, case.eval_allow)
        tokens = model.evaluate(**batch)[0]
    hidden = rec.hidden[0]
    assert hidden.is_cuda
    print(f"{case.family}/{mode}: backend {backend_for(hidden[0, :64, 0][None].float())}")
    got, got_labels = rec.points()
    assert got.is_cuda and got.shape[0] == count(tokens, testing.SEG)
    want, want_labels = expected_points(hidden.detach().float().cpu(), tokens.cpu(), row_sizes(batch))
    torch.testing.assert_close(got.detach().cpu(), want, atol=2e-3, rtol=0)
    assert torch.equal(got_labels.cpu(), want_labels)


def test_bf16_on_cuda(case: Case) -> None:
    model = case.wrap(build(case.family).cuda().to(torch.bfloat16), CFG)
    rec = Recorder(model)
    with torch.no_grad():
        out = model(**to(infer_batch(case), "cuda", torch.bfloat16))
    got, _ = rec.points()
    assert got.dtype == torch.float32 and torch.isfinite(got).all() and got.shape[0] > 0
    assert all(torch.isfinite(m.float()).all() for m in out["pred_masks"])
