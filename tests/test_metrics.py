"""sasp.metrics on hand-computed cases (LISA's gIoU / cIoU, SESAME's see accuracy)."""
import numpy as np
import pytest
import torch

from sasp.metrics import SegMetrics, ciou, giou, intersection_union, mask_iou, see_accuracy


def _mask(h, w, cells):
    m = torch.zeros(h, w, dtype=torch.int64)
    for r, c in cells:
        m[r, c] = 1
    return m


# 4x4 masks. pred A covers rows 0-1 (8 px); target A covers columns 0-1 (8 px):
# I = 4 (top-left 2x2), U = 12, IoU = 1/3.
PRED_A = _mask(4, 4, [(r, c) for r in range(2) for c in range(4)])
GT_A = _mask(4, 4, [(r, c) for r in range(4) for c in range(2)])
# pred B = target B = one pixel: I = U = 1, IoU = 1.
PRED_B = _mask(4, 4, [(3, 3)])
GT_B = _mask(4, 4, [(3, 3)])
# empty on empty: U = 0, IoU = 1 by LISA's convention.
EMPTY = torch.zeros(4, 4, dtype=torch.int64)


def test_intersection_union_hand_computed():
    inter, union = intersection_union(torch.stack([PRED_A, PRED_B, EMPTY]), torch.stack([GT_A, GT_B, EMPTY]))
    assert inter.tolist() == [4, 1, 0]
    assert union.tolist() == [12, 1, 0]


def test_giou_mean_of_per_mask_iou_with_empty_on_empty_scoring_one():
    pred = torch.stack([PRED_A, PRED_B, EMPTY])
    gt = torch.stack([GT_A, GT_B, EMPTY])
    # LISA: I / (U + 1e-5), and +1 where U == 0
    expected = (4 / (12 + 1e-5) + 1 / (1 + 1e-5) + 1.0) / 3
    assert giou(pred, gt) == pytest.approx(expected, abs=1e-12)
    assert giou(pred, gt, eps=0) == pytest.approx((1 / 3 + 1 + 1) / 3, abs=1e-12)


def test_ciou_sums_before_dividing():
    pred = torch.stack([PRED_A, PRED_B, EMPTY])
    gt = torch.stack([GT_A, GT_B, EMPTY])
    assert ciou(pred, gt) == pytest.approx(5 / 13, abs=1e-9)  # (4 + 1 + 0) / (12 + 1 + 0)


def test_empty_prediction_on_nonempty_target_scores_zero():
    assert giou(EMPTY, GT_A) == 0.0
    assert ciou(EMPTY, GT_A) == 0.0


def test_ignore_index_excluded_from_both_counts():
    gt = GT_A.clone()
    gt[0, :] = 255  # row 0: 2 target px, 2 pred-only px become unscored
    inter, union = intersection_union(PRED_A, gt)
    # remaining: target = rows 1-3 x cols 0-1 (6 px), pred = row 1 (4 px); I = 2, U = 8
    assert inter.tolist() == [2] and union.tolist() == [8]
    inter, union = intersection_union(PRED_A, gt, ignore_index=None)  # 255 counts as object
    assert inter.tolist() == [6] and union.tolist() == [12]


def test_inputs_numpy_bool_and_2d():
    inter, union = intersection_union(PRED_A.numpy().astype(bool), GT_A.numpy())
    assert inter.tolist() == [4] and union.tolist() == [12]


def test_rejects_non_binary_floats_and_shape_mismatch():
    with pytest.raises(ValueError, match="threshold"):
        giou(torch.randn(4, 4), GT_A)
    with pytest.raises(ValueError, match="same shape"):
        giou(torch.zeros(1, 4, 5), GT_A)
    with pytest.raises(ValueError, match="undefined"):
        giou(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4))


def test_mask_iou():
    assert mask_iou([0, 3], [0, 6], eps=0).tolist() == [1.0, 0.5]


def test_see_accuracy():
    assert see_accuracy([True, False, True, True], [True, True, True, False]) == 0.5
    assert see_accuracy(np.array([0, 1]), [False, True]) == 1.0
    with pytest.raises(ValueError):
        see_accuracy([True], [True, False])


def test_accumulator_matches_dataset_definitions_across_image_sizes():
    m = SegMetrics()
    m.update(torch.stack([PRED_A, PRED_B]), torch.stack([GT_A, GT_B]), [True, True], [True, True])
    big_pred = torch.zeros(2, 6, 7, dtype=torch.int64)
    big_gt = torch.zeros(2, 6, 7, dtype=torch.int64)
    big_pred[0, :3, :3] = 1  # 9 px
    big_gt[0, 1:4, 1:4] = 1  # 9 px, overlap 2x2 = 4 -> I 4, U 14
    # second mask: false premise answered "no object": empty on empty
    m.update(big_pred, big_gt, pred_exists=[True, False], gt_exists=[True, True])
    out = m.compute()
    assert out["num_masks"] == 4 and out["num_queries"] == 4
    ious = [4 / (12 + 1e-5), 1 / (1 + 1e-5), 4 / (14 + 1e-5), 1.0]
    assert out["giou"] == pytest.approx(sum(ious) / 4, abs=1e-12)
    assert out["ciou"] == pytest.approx((4 + 1 + 4) / (12 + 1 + 14), abs=1e-9)
    assert out["see_acc"] == 0.75
    m.reset()
    assert m.compute()["giou"] is None
