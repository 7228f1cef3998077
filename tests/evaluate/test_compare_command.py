"""sasp compare's command layer: options, registries, the module:factory entry point, errors."""
import argparse
import contextlib
import json
import sys
import types

import numpy as np
import pytest

from sasp import cli
from sasp.data import readers
from sasp.data.base import DatasetError
from sasp.evaluate import Arm, Prediction, command
from sasp.evaluate.testing import ThresholdPredictor, ToyReader

QUIET = ["--quiet", "--no-plot", "--resamples", "100"]


def compare(argv):
    """``sasp compare ARGV``: the exit code."""
    return cli.main(["compare", *argv])


@pytest.fixture
def registries(monkeypatch):
    """Registries restored after the test."""
    monkeypatch.setattr(readers, "DATA_KINDS", dict(readers.DATA_KINDS))
    monkeypatch.setattr(command, "DATA_PROTOCOLS", dict(command.DATA_PROTOCOLS))
    monkeypatch.setattr(command, "ARM_BUILDERS", dict(command.ARM_BUILDERS))


@pytest.fixture
def fake_model_module(monkeypatch):
    """A module ``fake_seg_entry`` with ``make(**kw) -> (model, predict)``; records calls and
    whether ``sasp.adapters.disabled`` was active."""
    import sasp.adapters

    state = {"off": 0, "calls": [], "kwargs": None}

    @contextlib.contextmanager
    def disabled(model):
        assert model == "the-model"
        state["off"] += 1
        try:
            yield model
        finally:
            state["off"] -= 1

    def make(**kwargs):
        state["kwargs"] = kwargs

        def predict(model, samples, images):
            sasp_on = state["off"] == 0
            state["calls"].append((sasp_on, [s.id for s in samples]))
            thr = 120 if sasp_on else 150  # "SasP" changes the answer
            return [Prediction(im[..., 0] > thr, True) for im in images]

        return "the-model", predict

    mod = types.ModuleType("fake_seg_entry")
    mod.make = make
    mod.not_callable = 3
    monkeypatch.setitem(sys.modules, "fake_seg_entry", mod)
    monkeypatch.setattr(sasp.adapters, "disabled", disabled)
    return state


def test_add_parser_into_a_host_cli():
    parser = argparse.ArgumentParser(prog="sasp")
    sub = parser.add_subparsers(dest="command")
    command.add_parser(sub)
    args = parser.parse_args(["compare", "--data", "toy", "--out", "x", "--model", "m:f", "--model-arg", "n=3",
                              "--model-arg", "name=lisa", "--batch-size", "4", "--workers", "2"])
    assert args.command == "compare" and args.batch_size == 4 and args.workers == 2
    assert args.model_args == [("n", 3), ("name", "lisa")]  # JSON values where they parse
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--data", "toy", "--out", "x", "--model-arg", "novalue"])


def test_factory_entry_point_runs_baseline_inside_disabled(tmp_path, fake_model_module, capsys):
    rc = compare(["--data", "toy", "--data-arg", "n=5", "--model", "fake_seg_entry:make",
                       "--model-arg", "checkpoint=ckpt", "--device", "cpu", "--batch-size", "2",
                       "--out", str(tmp_path), *QUIET])
    assert rc == 0
    assert fake_model_module["kwargs"] == {"checkpoint": "ckpt", "device": "cpu"}
    calls = fake_model_module["calls"]
    # per batch: baseline (SasP off) first, then candidate on the same samples
    assert calls == [(False, ["toy/0", "toy/1"]), (True, ["toy/0", "toy/1"]), (False, ["toy/2", "toy/3"]),
                     (True, ["toy/2", "toy/3"]), (False, ["toy/4"]), (True, ["toy/4"])]
    out = capsys.readouterr().out
    assert "baseline: make |" in out and "candidate: make+sasp |" in out and f"wrote {tmp_path}" in out
    run = json.loads((tmp_path / "run.json").read_text())["fingerprint"]
    assert run["arms"]["baseline"]["describe"] == {"model": "fake_seg_entry:make", "sasp": False,
                                                   "kwargs": {"checkpoint": "ckpt"}}  # not the device
    # another checkpoint is another run
    rc = compare(["--data", "toy", "--data-arg", "n=5", "--model", "fake_seg_entry:make",
                       "--model-arg", "checkpoint=other", "--device", "cpu", "--out", str(tmp_path), *QUIET])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "holds another run" in err and "kwargs.checkpoint" in err


@pytest.mark.parametrize("argv, message", [
    (["--data", "nope", "--arms", "toy"], "unknown data kind 'nope'; known:"),
    (["--data", "toy", "--model", "fake_seg_entry:missing"], "has no attribute 'missing'"),
    (["--data", "toy", "--model", "fake_seg_entry:not_callable"], "is not callable"),
    (["--data", "toy", "--model", "nomodule_xyz:make"], "cannot import nomodule_xyz"),
    (["--data", "toy", "--model", "nocolon"], "expected 'module:name'"),
    (["--data", "toy"], "say which models to compare"),
    (["--data", "toy", "--arms", "toy", "--model", "fake_seg_entry:make"], "--model goes with --arms factory"),
    (["--data", "toy", "--arms", "nope"], "unknown arm builder 'nope'"),
    (["--data", "toy", "--arms", "toy", "--batch-size", "0"], "--batch-size"),
    (["--data", "toy", "--arms", "toy", "--limit", "0"], "--limit must be >= 1"),
    (["--data", "toy", "--arms", "toy", "--data-arg", "colour=red"], "--data toy:"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, fake_model_module, capsys, argv, message):
    assert compare([*argv, "--out", str(tmp_path / "o"), *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sasp compare: error: ") and err.count("\n") == 1 and message in err


def test_registered_reader_missing_module_and_dataset_error(tmp_path, registries, capsys):
    command.register_data_kind("later", "sasp.data.not_written_yet:Reader")
    assert compare(["--data", "later", "--root", str(tmp_path), "--arms", "toy", "--out", str(tmp_path / "o")]) == 2
    assert "data kind 'later' is not available here: cannot import sasp.data.not_written_yet" in capsys.readouterr().err

    def broken_root(root, split="val"):
        raise DatasetError(f"{root}/refs.json: missing")

    command.register_data_kind("broken", broken_root)
    assert compare(["--data", "broken", "--root", str(tmp_path), "--arms", "toy", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"sasp compare: error: {tmp_path}/refs.json: missing\n"
    assert compare(["--data", "broken", "--root", str(tmp_path / "nowhere"), "--arms", "toy",
                         "--out", str(tmp_path / "o")]) == 2
    assert "dataset root not found" in capsys.readouterr().err
    assert compare(["--data", "broken", "--arms", "toy", "--out", str(tmp_path / "o")]) == 2
    assert "--data broken needs --root" in capsys.readouterr().err


def test_plugged_in_reader_and_arm_builder(tmp_path, registries):
    seen = {}

    def reader(root, split="val", n=4):
        seen["reader"] = (root, split, n)
        return ToyReader(n, no_target=[0])

    def builder(args):
        seen["builder"] = (args.baseline, args.candidate, args.preset_baseline, args.preset_candidate, args.arm_args)
        return (Arm("lisa", ThresholdPredictor(min_pixels=10**9), {"ckpt": args.baseline}),
                Arm("read", ThresholdPredictor(), {"ckpt": args.candidate}))

    command.register_data_kind("mine", reader, protocol="gsva")
    command.register_arm_builder("seg_llava", builder)
    rc = compare(["--data", "mine", "--root", str(tmp_path), "--split", "testA", "--data-arg", "n=6",
                       "--limit", "5", "--baseline", "a", "--candidate", "b", "--preset-candidate", "read-7b",
                       "--arm-arg", "dtype=bf16", "--out", str(tmp_path / "o"), *QUIET])
    assert rc == 0
    assert seen["reader"] == (str(tmp_path), "testA", 6)
    assert seen["builder"] == ("a", "b", None, "read-7b", {"dtype": "bf16"})  # seg_llava by default
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["protocol"] == "gsva" and summary["samples"] == 5 and summary["dataset"]["limit"] == 5
    assert summary["baseline"]["n_acc"] == 1.0  # the rejecting arm, on the one no-target sample


def test_nothing_evaluated_exits_1(tmp_path, capsys):
    rc = compare(["--data", "toy", "--data-arg", "n=2", "--data-arg", "missing=[0, 1]", "--arms", "toy",
                       "--out", str(tmp_path), *QUIET])
    assert rc == 1 and "no sample could be evaluated" in capsys.readouterr().err


def test_masks_of_the_fake_factory_are_scored(tmp_path, fake_model_module):
    assert compare(["--data", "toy", "--data-arg", "n=3", "--model", "fake_seg_entry:make",
                         "--out", str(tmp_path), *QUIET]) == 0
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    image, target = ToyReader(3)._draw(0)
    mask = image[..., 0] > 150
    scored = target != 255
    assert rows[0]["intersection"] == int((mask & (target == 1) & scored).sum())
    assert rows[0]["union"] == int(((mask | (target == 1)) & scored).sum())
    assert np.isclose(rows[0]["iou"], rows[0]["intersection"] / (rows[0]["union"] + 1e-5), rtol=0, atol=1e-15)
