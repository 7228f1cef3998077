"""compare(): rows, error rows, resume rules, refusal of foreign folders, summary contents."""
import json

import numpy as np
import pytest

from sasp.data.base import IGNORE
from sasp.evaluate import Arm, Prediction, RunMismatchError, compare
from sasp.evaluate.rows import RunError, merge_rows, rank_file, read_rows
from sasp.evaluate.testing import ThresholdPredictor, ToyReader
from sasp.metrics import ciou, giou, nt_accuracy

FIELDS = {"id", "index", "arm", "intersection", "union", "iou", "pred_empty", "target_empty",
          "has_target", "pred_has_object", "seconds", "error"}


class Counting:
    """Wraps a predictor and records the sample ids it was asked about."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, samples, images):
        self.seen += [s.id for s in samples]
        return self.inner(samples, images)


def run(reader, arms, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("plot", False)
    kw.setdefault("resamples", 200)
    return compare(reader, arms, out, **kw)


def test_rows_and_summary_match_an_independent_computation(tmp_path, make_arms, load_rows):
    reader = ToyReader(12, no_target=[2, 5])
    summary = run(reader, make_arms(), tmp_path, plot=True)
    rows = load_rows(tmp_path / "samples.jsonl")
    assert [(r["index"], r["arm"]) for r in rows] == [(i, a) for i in range(12) for a in ("t150", "t120")]
    assert all(set(r) | {"seconds"} == FIELDS and r["error"] is None for r in rows)
    # the oracle: the fake model's masks scored by sasp.metrics' batch functions, sample by sample
    for threshold, arm in ((150, summary.baseline), (120, summary.candidate)):
        preds, gts, has_obj, empty = [], [], [], []
        for i in range(12):
            image, target = reader._draw(i)
            mask = image[..., 0] > threshold
            pad = np.zeros((30, 32), bool), np.zeros((30, 32), np.uint8)  # equal shapes for one batch
            p, t = pad[0].copy(), pad[1].copy()
            p[: mask.shape[0], : mask.shape[1]] = mask
            t[: target.shape[0], : target.shape[1]] = target
            preds.append(p)
            gts.append(t)
            has_obj.append(bool(mask.any()))
            empty.append(not target.any())
        assert arm.giou == pytest.approx(giou(np.stack(preds), np.stack(gts)), abs=1e-12)
        assert arm.ciou == pytest.approx(ciou(np.stack(preds), np.stack(gts)), abs=1e-12)
        assert (arm.n_acc, arm.t_acc) == nt_accuracy(empty, has_obj)
        lo, hi = arm.giou_ci
        assert lo < arm.giou < hi
    assert summary.delta_giou == pytest.approx(summary.candidate.giou - summary.baseline.giou, abs=0)
    assert summary.wins + summary.losses + summary.ties == 12 == summary.evaluated
    assert summary.losses > summary.wins  # threshold 120 lets the background in
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary.to_dict()))
    assert "| candidate - baseline |" in (tmp_path / "summary.md").read_text()


def test_error_rows_are_counted_and_left_out(tmp_path, make_arms, load_rows):
    reader = ToyReader(10, missing=[1], broken=[4])
    arms = make_arms()
    arms[1] = Arm("t120", ThresholdPredictor(threshold=120, fail_ids=["toy/7"]), {"threshold": 120})
    summary = run(reader, arms, tmp_path, batch_size=3)
    rows = {(r["index"], r["arm"]): r for r in load_rows(tmp_path / "samples.jsonl")}
    assert rows[(1, "t150")]["error"].startswith("image: FileNotFoundError")
    assert rows[(4, "t120")]["error"] == "target: SampleError: toy sample 4: broken annotation"
    assert rows[(7, "t120")]["error"] == "predict (t120): RuntimeError: fake model failure on toy/7"
    # the failing sample's batch (6, 7, 8) was retried one by one: its neighbours are fine
    assert rows[(6, "t120")]["error"] is None and rows[(8, "t120")]["error"] is None
    assert rows[(7, "t150")]["error"] is None
    assert (summary.samples, summary.evaluated, summary.excluded) == (10, 7, 3)
    assert (summary.baseline.errors, summary.candidate.errors) == (2, 3)
    ok = [r for r in load_rows(tmp_path / "samples.jsonl") if r["arm"] == "t150" and r["index"] not in (1, 4, 7)]
    assert summary.baseline.giou == pytest.approx(sum(r["iou"] for r in ok) / (7 + 1e-5), abs=1e-12)


def test_fail_fast_raises_the_model_error(tmp_path):
    arms = [Arm("a", ThresholdPredictor(fail_ids=["toy/2"]), {}), Arm("b", ThresholdPredictor(), {})]
    with pytest.raises(RuntimeError, match="toy/2"):
        run(ToyReader(5), arms, tmp_path, fail_fast=True)


def test_bad_predictions_become_error_rows(tmp_path, load_rows):
    def wrong_shape(samples, images):
        return [Prediction(np.zeros((3, 3), bool), True) for _ in samples]

    def wrong_count(samples, images):
        return []

    arms = [Arm("shape", wrong_shape, {}), Arm("count", wrong_count, {})]
    summary = run(ToyReader(2), arms, tmp_path)
    rows = load_rows(tmp_path / "samples.jsonl")
    assert "mask shape (3, 3) differs" in rows[0]["error"]
    assert "returned 0 predictions for 1 samples" in rows[1]["error"]
    assert summary.evaluated == 0 and summary.baseline.giou is None


def test_batching_and_workers_do_not_change_results(tmp_path, make_arms, load_rows):
    reader = ToyReader(11, no_target=[3], broken=[6])
    a = run(reader, make_arms(), tmp_path / "a", batch_size=1, num_workers=0)
    b = run(reader, make_arms(), tmp_path / "b", batch_size=4, num_workers=2)
    assert a == b
    assert load_rows(tmp_path / "a" / "samples.jsonl") == load_rows(tmp_path / "b" / "samples.jsonl")
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()


def test_resume_skips_done_rows_and_recomputes_a_truncated_line(tmp_path, make_arms, load_rows):
    reader = ToyReader(9)
    ref = run(reader, make_arms(), tmp_path / "ref")
    arms = make_arms()
    run(reader, arms, tmp_path / "run")
    path = rank_file(tmp_path / "run", 0)
    lines = path.read_bytes().splitlines(keepends=True)
    # keep 11 complete rows (samples 0-4 both arms, sample 5 baseline) + half of the 12th
    path.write_bytes(b"".join(lines[:11]) + lines[11][: len(lines[11]) // 2])
    for name in ("samples.jsonl", "summary.json"):
        (tmp_path / "run" / name).unlink()
    counted = [Arm(a.name, Counting(a.predict), a.describe) for a in arms]
    again = run(reader, counted, tmp_path / "run")
    assert counted[0].predict.seen == [f"toy/{i}" for i in range(6, 9)]
    assert counted[1].predict.seen == [f"toy/{i}" for i in range(5, 9)]  # sample 5's line was cut
    assert again == ref
    rows = read_rows(path)
    assert len(rows) == 18 and len({(r["index"], r["arm"]) for r in rows}) == 18
    assert load_rows(tmp_path / "run" / "samples.jsonl") == load_rows(tmp_path / "ref" / "samples.jsonl")
    assert (tmp_path / "run" / "summary.json").read_bytes() == (tmp_path / "ref" / "summary.json").read_bytes()
    # a finished run resumed again computes nothing
    counted = [Arm(a.name, Counting(a.predict), a.describe) for a in arms]
    assert run(reader, counted, tmp_path / "run") == ref
    assert counted[0].predict.seen == [] and counted[1].predict.seen == []


def test_foreign_folder_is_refused_in_one_line(tmp_path, make_arms):
    run(ToyReader(3), make_arms(), tmp_path)
    with pytest.raises(RunMismatchError) as err:
        run(ToyReader(3), make_arms(cand_threshold=100), tmp_path)
    assert "\n" not in str(err.value) and "arms.candidate" in str(err.value)
    with pytest.raises(RunMismatchError, match="reader.count"):
        run(ToyReader(4), make_arms(), tmp_path)
    with pytest.raises(RunMismatchError, match="metrics.protocol"):
        run(ToyReader(3), make_arms(), tmp_path, protocol="gsva")
    (tmp_path / "run.json").unlink()
    with pytest.raises(RunMismatchError, match="no run.json"):
        run(ToyReader(3), make_arms(), tmp_path)


def test_corrupt_complete_line_and_duplicates_are_reported(tmp_path, make_arms):
    run(ToyReader(3), make_arms(), tmp_path)
    path = rank_file(tmp_path, 0)
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:2]) + "{not json}\n" + "".join(text[2:]))
    with pytest.raises(RunError, match=r"samples.rank0.jsonl:3: not a JSON line"):
        run(ToyReader(3), make_arms(), tmp_path)
    rows = [json.loads(t) for t in text]
    with pytest.raises(RunError, match="two 't150' rows"):
        merge_rows(rows + rows[:1], ("t150", "t120"), 3)
    with pytest.raises(RunError, match="2 rows are missing"):
        merge_rows(rows[:-2], ("t150", "t120"), 3)


def test_gsva_protocol_scores_no_target_samples_by_rejection(tmp_path, load_rows):
    reader = ToyReader(6, no_target=[0, 1])
    # baseline rejects everything (min_pixels huge); candidate answers [SEG] everywhere
    arms = [Arm("reject", ThresholdPredictor(min_pixels=10**9), {}), Arm("accept", ThresholdPredictor(threshold=-1), {})]
    s = run(reader, arms, tmp_path, protocol="gsva")
    rows = {(r["index"], r["arm"]): r for r in load_rows(tmp_path / "samples.jsonl")}
    assert rows[(0, "reject")]["iou"] == 1.0 and rows[(0, "accept")]["iou"] == 0.0
    assert (s.baseline.n_acc, s.baseline.t_acc) == (1.0, 0.0)
    assert (s.candidate.n_acc, s.candidate.t_acc) == (0.0, 1.0)
    # the accepting arm's masks cover whole images: no-target samples add their area to cIoU's union
    inter = sum(rows[(i, "accept")]["intersection"] for i in range(2, 6))
    union = sum(rows[(i, "accept")]["union"] for i in range(6))
    assert s.candidate.ciou == pytest.approx(inter / union, abs=1e-12)
    # the target's ignored row is out of both counts
    image, target = reader._draw(2)
    assert rows[(2, "accept")]["union"] == int((target != IGNORE).sum())


def test_bad_arguments(tmp_path, make_arms):
    with pytest.raises(ValueError, match="exactly two arms"):
        run(ToyReader(2), make_arms()[:1], tmp_path)
    with pytest.raises(ValueError, match="distinct names"):
        run(ToyReader(2), [make_arms()[0]] * 2, tmp_path)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        run(ToyReader(2), [Arm("a", ThresholdPredictor(), {"x": object()}), make_arms()[1]], tmp_path)
    with pytest.raises(ValueError, match="protocol"):
        run(ToyReader(2), make_arms(), tmp_path, protocol="coco")
