"""Paired bootstrap and the summary of rows, on hand-made rows and arrays."""
import numpy as np
import pytest

from sasp.evaluate import stats
from sasp.evaluate.stats import paired_bootstrap, summarize


def _row(index, arm, inter, union, target_empty=False, has_object=True, pred_empty=False, error=None):
    return dict(id=f"s{index}", index=index, arm=arm, intersection=inter, union=union, iou=None,
                pred_empty=pred_empty, target_empty=target_empty, has_target=not target_empty,
                pred_has_object=has_object, seconds=0.1, error=error)


def test_summarize_hand_computed():
    rows = [
        _row(0, "b", 2, 4), _row(0, "c", 3, 4),        # IoU 0.5 -> 0.75: candidate wins
        _row(1, "b", 1, 2), _row(1, "c", 1, 2),        # 0.5 both: tie
        _row(2, "b", 0, 0, True, False, True),         # empty on empty: 1.0 (LISA)
        _row(2, "c", 0, 6, True, True),                # 6 px on an empty target: 0.0, loses
        _row(3, "b", 5, 5), _row(3, "c", None, None, error="predict (c): RuntimeError: x"),  # excluded
    ]
    s = summarize(rows, ("b", "c"), {"name": "hand"}, resamples=50)
    assert (s.samples, s.evaluated, s.excluded) == (4, 3, 1)
    assert (s.baseline.errors, s.candidate.errors) == (0, 1)
    # gIoU: sum of I/(U+1e-5) (1.0 for U = 0) over (3 + 1e-5)
    assert s.baseline.giou == pytest.approx((2 / (4 + 1e-5) + 1 / (2 + 1e-5) + 1.0) / (3 + 1e-5), abs=1e-15)
    assert s.candidate.giou == pytest.approx((3 / (4 + 1e-5) + 1 / (2 + 1e-5) + 0.0) / (3 + 1e-5), abs=1e-15)
    # cIoU: (2 + 1 + 0) / (4 + 2 + 0 + 1e-10) and (3 + 1 + 0) / (4 + 2 + 6 + 1e-10)
    assert s.baseline.ciou == pytest.approx(3 / (6 + 1e-10), abs=1e-15)
    assert s.candidate.ciou == pytest.approx(4 / (12 + 1e-10), abs=1e-15)
    assert (s.wins, s.losses, s.ties) == (1, 1, 1)
    # N-acc: sample 2 is the only no-target one; b rejected it, c did not
    assert (s.baseline.n_acc, s.candidate.n_acc) == (1.0, 0.0)
    assert (s.baseline.t_acc, s.candidate.t_acc) == (1.0, 1.0)
    # see: b's flags (True, True, False) all right; c says present on sample 2 -> 2/3
    assert s.baseline.see_acc == 1.0 and s.candidate.see_acc == pytest.approx(2 / 3)
    assert s.delta_giou == s.candidate.giou - s.baseline.giou


def test_summarize_with_nothing_evaluated():
    rows = [_row(0, "b", None, None, error="image: x"), _row(0, "c", None, None, error="image: x")]
    s = summarize(rows, ("b", "c"), {"name": "x"})
    assert (s.evaluated, s.excluded) == (0, 1) and s.baseline.giou is None and s.delta_giou_ci is None


def _arrays(score):
    n = score.size
    return score, score * 10, np.full(n, 10.0)  # cIoU terms: I = 10 * score, U = 10


@pytest.mark.parametrize("chunk", [1 << 21, 7])  # one chunk, and many (7 elements: 1 resample each)
def test_identical_arms_and_a_constant_shift(monkeypatch, chunk):
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 0.8, 40)
    same = paired_bootstrap(_arrays(base), _arrays(base.copy()), resamples=300)
    assert same["delta_giou"] == (0.0, 0.0) and same["delta_ciou"] == (0.0, 0.0)
    shifted = paired_bootstrap(_arrays(base), _arrays(base + 0.1), resamples=300)
    # every resample's difference is 0.1 * 40 / (40 + 1e-5) (gIoU) and 0.1 (cIoU)
    assert shifted["delta_giou"] == pytest.approx((0.1 * 40 / (40 + 1e-5),) * 2, abs=1e-12)
    assert shifted["delta_ciou"] == pytest.approx((0.1, 0.1), abs=1e-9)


def test_pairing_narrows_the_difference_interval():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 300)
    cand = np.clip(base + rng.normal(0.02, 0.01, 300), 0, 1)
    ci = paired_bootstrap(_arrays(base), _arrays(cand), resamples=1000, seed=3)
    width = lambda iv: iv[1] - iv[0]  # noqa: E731
    # shared resample indices: the difference varies only with the small per-sample noise
    assert width(ci["delta_giou"]) < 0.1 * width(ci["giou_b"])
    assert ci["delta_giou"][0] > 0.015 and ci["delta_giou"][1] < 0.025


def test_interval_width_matches_the_normal_approximation_and_is_seeded():
    rng = np.random.default_rng(4)
    score = rng.uniform(0, 1, 400)
    ci = paired_bootstrap(_arrays(score), _arrays(score), resamples=2000, seed=0)
    lo, hi = ci["giou_b"]
    expected = 2 * 1.96 * score.std() / np.sqrt(400)  # ~0.057
    assert hi - lo == pytest.approx(expected, rel=0.15)
    assert lo < score.mean() < hi
    assert paired_bootstrap(_arrays(score), _arrays(score), resamples=2000, seed=0) == ci
    assert paired_bootstrap(_arrays(score), _arrays(score), resamples=2000, seed=1) != ci


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bootstrap needs"):
        paired_bootstrap(_arrays(np.zeros(0)), _arrays(np.zeros(0)))
    with pytest.raises(ValueError, match="bootstrap needs"):
        paired_bootstrap(_arrays(np.ones(3)), _arrays(np.ones(3)), level=1.0)
