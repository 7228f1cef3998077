"""sasp.train on the tiny model: loss goes down in both arms, arms start identical, resume
after SIGKILL, 2-process gloo equals 1 process, checkpoints carry their run config."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from train_cases import flat_params, parse_train_args
from train_worker import train

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "train_worker.py")


pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))}


def _losses(trainer) -> list:
    return [h for h in trainer.state.log_history if "loss" in h]


def _order(out: str) -> list:
    with open(os.path.join(out, "data_order", "rank0.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("arm", [None, "read-7b"], ids=["baseline", "sasp"])
def test_short_run_lowers_the_loss_and_logs_its_parts(tmp_path, arm):
    trainer = train(str(tmp_path), max_steps=8, n=4, lr=3e-3, sasp=arm)
    logs = _losses(trainer)
    assert len(logs) == 8
    for h in logs:  # the parts are weighted: they add up to the loss of the same micro-batches
        assert h["ce"] + h["bce"] + h["dice"] == pytest.approx(h["loss"], rel=1e-5)
    first, last = logs[0], logs[-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert last["ce"] < first["ce"] and last["bce"] < first["bce"]


def test_arms_share_initialisation_and_data_order(tmp_path):
    from sasp.train.model import build_model, resolve_sasp, set_arm

    base, _ = build_model("tiny", seed=3)
    sasp, _ = build_model("tiny", seed=3)
    set_arm(sasp, resolve_sasp("read-7b"))
    assert sasp.config.sasp is not None and base.config.sasp is None
    b, s = flat_params(base), flat_params(sasp)
    assert b.keys() == s.keys() and all(torch.equal(b[k], s[k]) for k in b)
    other, _ = build_model("tiny", seed=4)
    assert not torch.equal(flat_params(other)["lm_head.weight"], b["lm_head.weight"])

    runs = {}
    for arm in (None, "read-7b"):
        out = str(tmp_path / str(arm))
        train(out, max_steps=6, n=8, seed=3, sasp=arm)
        runs[arm] = [r["ids"] for r in _order(out)]
    assert runs[None] == runs["read-7b"]
    assert sorted(sum(runs[None][:4], [])) == sorted(f"rects/0/{i}" for i in range(8))  # one epoch, no repeats


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    killed = str(tmp_path / "killed")
    proc = subprocess.run([sys.executable, WORKER, "--out", killed, "--max-steps", "6", "--save-steps", "2", "--kill-at", "3"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(os.listdir(killed)) == ["checkpoint-2", "data_order"]
    assert [r["step"] for r in _order(killed)] == [0, 1, 2]  # step 3 ran (index 2), then the kill

    resumed = train(killed, max_steps=6, save_steps=2, resume=os.path.join(killed, "checkpoint-2"))
    full_dir = str(tmp_path / "full")
    full = train(full_dir, max_steps=6, save_steps=2)
    assert resumed.state.global_step == full.state.global_step == 6
    # data: the resumed run picks up at step 2 with the batches the uninterrupted run saw
    order_full = [r["ids"] for r in _order(full_dir)]
    order_resumed = _order(killed)
    assert [r["step"] for r in order_resumed] == [0, 1, 2, 2, 3, 4, 5]
    assert [r["ids"] for r in order_resumed[3:]] == order_full[2:]
    # weights: bit-identical
    a, b = flat_params(resumed.model), flat_params(full.model)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    losses = lambda t: {h["step"]: h["loss"] for h in t.state.log_history if "loss" in h}  # noqa: E731
    assert all(losses(resumed)[s] == losses(full)[s] for s in (3, 4, 5, 6))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_step_equals_one_process_step(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    params = str(tmp_path / "ddp.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), WORKER, "--out", str(tmp_path / "ddp"), "--max-steps", "1",
           "--batch-size", "2", "--samples", "4", "--params", params]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(params)
    # one process, the same global batch (all 4 samples) in one micro-batch
    single = train(str(tmp_path / "single"), max_steps=1, batch_size=4, n=4)
    one = flat_params(single.model)
    from sasp.train.model import build_model

    start = flat_params(build_model("tiny", seed=0)[0])
    moved = [k for k in one if not torch.equal(one[k], start[k])]
    assert len(moved) > 50  # the step changed the LLM, the projection and the mask decoder
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    ranks = sorted(os.listdir(tmp_path / "ddp" / "data_order"))
    assert ranks == ["rank0.jsonl", "rank1.jsonl"]
    seen = [json.loads(open(tmp_path / "ddp" / "data_order" / r).read())["ids"] for r in ranks]
    assert sorted(seen[0] + seen[1]) == [f"rects/0/{i}" for i in range(4)]


def test_checkpoint_holds_the_run_config_and_resumes_by_command(tmp_path):
    from safetensors.torch import load_file

    from sasp.models.seg_llava import load_model
    from sasp.train.command import run

    out = str(tmp_path / "run")
    argv = ["--model", "tiny", "--data", "train_cases:rects", "--data-arg", "n=6", "--out", out, "--max-steps", "3",
            "--save-steps", "1", "--workers", "1", "--cpu", "--arm", "sasp", "--num-points", "12", "--seed", "5",
            "--lora-r", "2", "--logging-steps", "1"]
    assert run(parse_train_args(argv)) == 0
    for folder, step in (("checkpoint-1", 1), ("checkpoint-3", 3), ("", 3), ("merged", 3)):
        with open(os.path.join(out, folder, "sasp_run.json")) as f:
            rec = json.load(f)
        assert rec["arm"] == "sasp" and rec["seed"] == 5 and rec["global_step"] == step
        assert rec["sasp"]["num_points"] == 12 and rec["sasp"]["t_pos"] == 0.8  # READ-7B with one override
        assert rec["model_config"]["sasp"]["num_points"] == 12
        assert rec["data"] == {"name": "rects", "count": 6}
        assert rec["lora"]["r"] == 2 and rec["training_args"]["max_steps"] == 3
    merged, _ = load_model(os.path.join(out, "merged"))
    assert merged.config.sasp["num_points"] == 12
    straight = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert any("mask_decoder" in k for k in straight) and any("lora_A" in k for k in straight)

    for name in ("checkpoint-2", "checkpoint-3"):
        shutil.rmtree(os.path.join(out, name))
    other = [a if a != "sasp" else "baseline" for a in argv if a not in ("--num-points", "12")]
    assert run(parse_train_args(other + ["--resume", "auto"])) == 2  # another arm: refused
    assert run(parse_train_args(argv)) == 2  # checkpoints there, no --resume: refused
    assert run(parse_train_args(argv + ["--resume", "auto"])) == 0  # continues from checkpoint-1
    assert [r["step"] for r in _order(out)] == [0, 1, 2, 1, 2]
    resumed = load_file(os.path.join(out, "adapter_model.safetensors"))
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
