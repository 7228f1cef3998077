"""``sasp compare`` with the SegLlava arms (tiny model, SasP off vs on) on a fixture of every
dataset format and on the synthetic task: every output is written, every sample is scored."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("segment_anything")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import reader_fixtures as fx  # noqa: E402

from sasp import cli  # noqa: E402

CASES = {
    "reasonseg": (fx.write_reasonseg, "val"),
    "refcoco": (fx.write_refer, "val"),
    "grefcoco": (fx.write_grefcoco, "val"),
    "fprefcoco": (fx.write_fprefcoco, "val"),
    "synthetic": (None, "val"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_compare_tiny_seg_llava_on_every_format(kind, tmp_path, capsys):
    writer, split = CASES[kind]
    args = ["compare", "--data", kind, "--split", split, "--baseline", "tiny", "--out", str(tmp_path / "run"), "--quiet"]
    if writer is not None:
        root = tmp_path / "data"
        writer(str(root))
        args += ["--root", str(root)]
    else:
        args += ["--data-arg", "size=3"]
    assert cli.main(args) == 0, capsys.readouterr().err
    out = tmp_path / "run"
    for name in ("samples.jsonl", "summary.json", "summary.md", "compare.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    arms = sorted({r["arm"] for r in rows})
    assert arms == ["baseline", "candidate-sasp"]
    per_arm = {a: [r for r in rows if r["arm"] == a] for a in arms}
    assert len(per_arm["baseline"]) == len(per_arm["candidate-sasp"]) > 0
    assert json.dumps(summary)  # parsed, and names both arms
    text = (out / "summary.md").read_text()
    assert "baseline" in text and "candidate-sasp" in text
