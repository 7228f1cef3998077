import json
import os
import sys
from pathlib import Path

import pytest

from sasp.evaluate import Arm
from sasp.evaluate.testing import ThresholdPredictor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_arms():
    """(baseline, candidate) threshold arms; extra keyword arguments go to both predictors."""

    def make(base_threshold=150, cand_threshold=120, **kw):
        return [
            Arm(f"t{base_threshold}", ThresholdPredictor(threshold=base_threshold, **kw), {"threshold": base_threshold}),
            Arm(f"t{cand_threshold}", ThresholdPredictor(threshold=cand_threshold, **kw), {"threshold": cand_threshold}),
        ]

    return make


@pytest.fixture
def load_rows():
    """The rows of a JSON-lines file, without the timing field (``seconds``)."""

    def load(path, keep_seconds=False):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        if not keep_seconds:
            for r in rows:
                r.pop("seconds")
        return rows

    return load


@pytest.fixture
def subprocess_env():
    """Environment for child Python processes: this checkout importable, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def python():
    return sys.executable
