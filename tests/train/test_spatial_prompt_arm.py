"""``sasp train --arm sasp --spatial-prompt ...``: the mask-prompt arm trains and its
checkpoint carries the setting (so ``sasp compare`` reloads it as trained)."""
from __future__ import annotations

import json
import os

import pytest

from sasp.train.command import run
from train_cases import parse_train_args

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_prompt_arm_trains_and_is_saved(tmp_path):
    from sasp.models.seg_llava import load_model

    out = str(tmp_path / "run")
    argv = ["--model", "tiny", "--data", "train_cases:rects", "--data-arg", "n=2", "--out", out, "--max-steps", "1",
            "--workers", "0", "--cpu", "--arm", "sasp", "--spatial-prompt", "points+mask", "--mask-range", "-4", "4",
            "--batch-size", "2", "--logging-steps", "1"]
    assert run(parse_train_args(argv)) == 0
    with open(os.path.join(out, "sasp_run.json")) as f:
        rec = json.load(f)
    assert rec["sasp"]["spatial_prompt"] == "points+mask" and rec["sasp"]["mask_range"] == [-4.0, 4.0]
    model, _ = load_model(out)
    cfg = model.config.sasp_config()
    assert cfg.spatial_prompt == "points+mask" and cfg.mask_range == (-4.0, 4.0) and cfg.num_points == 30


def test_spatial_prompt_needs_the_sasp_arm(tmp_path, capsys):
    argv = ["--model", "tiny", "--data", "train_cases:rects", "--out", str(tmp_path / "b"), "--max-steps", "1",
            "--cpu", "--spatial-prompt", "mask"]
    assert run(parse_train_args(argv)) == 2
    assert "--arm sasp" in capsys.readouterr().err
