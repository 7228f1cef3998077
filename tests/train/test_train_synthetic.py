"""benchmarks/train_synthetic.py: the sasp arm's spatial prompt options reach the run's SasPConfig."""
import importlib.util
import json
import os

import pytest

from sasp.train.model import resolve_sasp

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "train_synthetic.py")


@pytest.fixture()
def driver(monkeypatch):
    """The driver module, with ``experiment`` replaced by a recorder of its options."""
    spec = importlib.util.spec_from_file_location("train_synthetic_under_test", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []
    monkeypatch.setattr(mod, "experiment", lambda arms, seeds, opts, name, jobs: calls.append((arms, seeds, opts, name)))
    mod.calls = calls
    return mod


def _arm(opts):
    """The sasp arm's config as run_one builds it, from the options as options.json stores them."""
    stored = json.loads(json.dumps(opts))
    return resolve_sasp(stored["preset"], **stored["sasp_fields"])


@pytest.mark.parametrize("prompt", ["points", "mask", "points+mask"])
def test_spatial_prompt_and_mask_range_reach_the_arm(driver, prompt):
    driver.main(["run", "--arms", "sasp", "--seeds", "1", "--down-sample", "1", "--spatial-prompt", prompt,
                 "--mask-range", "-4", "6.5", "--name", "x"])
    (arms, seeds, opts, name), = driver.calls
    assert (arms, seeds, name) == (["sasp"], [1], "x")
    cfg = _arm(opts)
    assert cfg.spatial_prompt == prompt and cfg.mask_range == (-4.0, 6.5) and cfg.down_sample == 1
    assert (cfg.num_points, cfg.t_pos, cfg.t_neg) == (30, 0.8, 0.2)  # the rest stays the preset's


def test_without_the_options_the_arm_and_stored_options_are_unchanged(driver):
    driver.main(["run", "--down-sample", "1", "--num-points", "30", "--name", "x"])
    opts = driver.calls[0][2]
    assert opts["sasp_fields"] == {"num_points": 30, "down_sample": 1}  # options.json as before the options existed
    cfg = _arm(opts)
    assert cfg.spatial_prompt == "points" and cfg.mask_range == (-8.0, 8.0)


def test_bad_spatial_prompt_is_refused(driver, capsys):
    with pytest.raises(SystemExit):
        driver.main(["run", "--spatial-prompt", "dense", "--name", "x"])
    assert "--spatial-prompt" in capsys.readouterr().err
    assert driver.calls == []
