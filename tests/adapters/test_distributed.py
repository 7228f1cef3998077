"""2-process DDP (gloo, CPU, 127.0.0.1): gradients through SasP equal the single-process run."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from adapter_cases import CFG, build, train_batch
from ddp_worker import mask_loss, run
from sasp.adapters import wrap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory: pytest.TempPathFactory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    path = str(tmp_path_factory.mktemp("ddp") / "grads.pt")
    mp.spawn(run, args=(2, _free_port(), path), nprocs=2, join=True)
    return torch.load(path)


def test_ddp_gradients_equal_single_process(case, ddp_grads) -> None:
    model = wrap(build(case.family).train(), case.spec, CFG)
    batch = train_batch(case)
    (mask_loss(model(**batch), batch) / 2).backward()  # DDP averages the two ranks' gradients
    single = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ddp = ddp_grads[case.family]
    assert single["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0
    for name, g in single.items():
        other = ddp.get(name, torch.zeros_like(g))
        torch.testing.assert_close(other, g, rtol=1e-4, atol=1e-7, msg=lambda m: f"{name}: {m}")
    for name in ddp.keys() - single.keys():
        assert not ddp[name].any(), name
