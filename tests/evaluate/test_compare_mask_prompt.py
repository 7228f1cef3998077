"""``sasp compare`` with a mask-prompt arm: the SegLlava candidate with the "read-7b+mask"
preset (points and the similarity map as SAM's dense mask prompt) runs and is recorded."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("segment_anything")

from sasp import cli  # noqa: E402


def test_compare_runs_a_mask_prompt_arm(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["compare", "--data", "synthetic", "--data-arg", "size=2", "--split", "val", "--baseline", "tiny",
            "--preset-candidate", "read-7b+mask", "--out", str(out), "--quiet", "--no-plot"]
    assert cli.main(args) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["arm"] for r in rows}) == ["baseline", "candidate-sasp"]
    recorded = json.dumps(json.loads((out / "run.json").read_text()))
    assert '"spatial_prompt": "points+mask"' in recorded
