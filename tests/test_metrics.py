"""sasp.metrics on hand-computed cases (LISA's gIoU / cIoU, GSVA's gRefCOCO rules and N-acc /
T-acc, SESAME's see accuracy)."""
import numpy as np
import pytest
import torch

from sasp.metrics import (
    SegMetrics,
    ciou,
    ciou_from_counts,
    count_intersection_union,
    giou,
    giou_from_scores,
    intersection_union,
    mask_iou,
    nt_accuracy,
    sample_scores,
    see_accuracy,
    sesame_exists,
)


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
    # LISA: terms I / (U + 1e-5), and +1 where U == 0; the sum over (count + 1e-5)
    expected = (4 / (12 + 1e-5) + 1 / (1 + 1e-5) + 1.0) / (3 + 1e-5)
    assert giou(pred, gt) == pytest.approx(expected, abs=1e-15)
    assert giou(pred, gt, eps=0, count_eps=0) == pytest.approx((1 / 3 + 1 + 1) / 3, abs=1e-15)
    assert giou(pred, gt) != giou(pred, gt, count_eps=0)  # the count epsilon is applied


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
    assert out["giou"] == pytest.approx(sum(ious) / (4 + 1e-5), abs=1e-15)
    assert out["ciou"] == pytest.approx((4 + 1 + 4) / (12 + 1 + 14), abs=1e-9)
    assert out["see_acc"] == 0.75
    m.reset()
    assert m.compute()["giou"] is None


# Four per-sample rows for the protocol tests:
#   s0: target 12 px, pred overlaps 4 of them and 8 more: I = 4, U = 16, answer has [SEG]
#   s1: target 3 px, model rejected (no [SEG], empty mask): I = 0, U = 3
#   s2: empty target, rejected, empty mask: I = 0, U = 0
#   s3: empty target, answered [SEG] with a 5 px mask: I = 0, U = 5
INTER = [4, 0, 0, 0]
UNION = [16, 3, 0, 5]
TARGET_EMPTY = [False, False, True, True]
HAS_OBJECT = [True, False, False, True]


def test_lisa_protocol_rows():
    score, ci, cu = sample_scores(INTER, UNION, TARGET_EMPTY, HAS_OBJECT, "lisa")
    # terms: 4/(16+1e-5), 0/(3+1e-5) = 0, U = 0 -> 1, 0/(5+1e-5) = 0
    assert score.tolist() == pytest.approx([4 / (16 + 1e-5), 0.0, 1.0, 0.0], abs=1e-15)
    assert giou_from_scores(score) == pytest.approx((4 / (16 + 1e-5) + 1.0) / (4 + 1e-5), abs=1e-15)
    # cIoU: (4 + 0 + 0 + 0) / (16 + 3 + 0 + 5 + 1e-10) = 4 / 24
    assert ciou_from_counts(ci, cu) == pytest.approx(4 / 24, abs=1e-12)
    assert giou_from_scores(score, count_eps=0) == pytest.approx((0.25 + 1) / 4, abs=1e-5)


def test_lisa_rows_agree_with_mask_functions():
    pred = torch.stack([PRED_A, PRED_B, EMPTY])
    gt = torch.stack([GT_A, GT_B, EMPTY])
    inter, union = intersection_union(pred, gt)
    score, ci, cu = sample_scores(inter, union, [False, False, True], [True, True, False], "lisa")
    assert giou_from_scores(score) == giou(pred, gt)
    assert ciou_from_counts(ci, cu) == ciou(pred, gt)


def test_gsva_protocol_rows():
    score, ci, cu = sample_scores(INTER, UNION, TARGET_EMPTY, HAS_OBJECT, "gsva")
    # s0: 4/(16+1e-8); s1: has a target, scored on its (empty) mask: 0/(3+1e-8) = 0;
    # s2: no target, rejected -> 1; s3: no target, not rejected -> 0
    assert score.tolist() == pytest.approx([4 / (16 + 1e-8), 0.0, 1.0, 0.0], abs=1e-15)
    # cIoU adds (4, 16), (0, 3), (0, 0) for the rejected no-target, (0, 5) for s3: 4 / 24
    assert ci.tolist() == [4, 0, 0, 0] and cu.tolist() == [16, 3, 0, 5]
    assert giou_from_scores(score) == pytest.approx((4 / (16 + 1e-8) + 1.0) / (4 + 1e-5), abs=1e-15)
    # the difference to LISA: a rejected no-target sample keeps its mask out of cIoU
    _, _, cu_mask = sample_scores([0], [7], [True], [False], "gsva")
    assert cu_mask.tolist() == [0.0]
    score_l, _, cu_l = sample_scores([0], [7], [True], [False], "lisa")
    assert cu_l.tolist() == [7.0] and score_l.tolist() == [0.0]


def test_gsva_n_acc_t_acc():
    # no-target: s2 rejected (TP), s3 not (FN) -> N-acc 1/2
    # has-target: s0 accepted (TN), s1 rejected (FP) -> T-acc 1/2
    assert nt_accuracy(TARGET_EMPTY, HAS_OBJECT) == (0.5, 0.5)
    # three no-target all rejected, one has-target accepted
    assert nt_accuracy([True, True, True, False], [False, False, False, True]) == (1.0, 1.0)
    assert nt_accuracy([False, False], [True, False]) == (None, 0.5)


def test_sesame_exists_and_see_accuracy():
    # SESAME: present = [SEG] in the answer and a non-empty mask
    pred_empty = [False, True, True, False]
    exists = sesame_exists(HAS_OBJECT, pred_empty)
    assert exists.tolist() == [True, False, False, True]
    assert sesame_exists([True], [True]).tolist() == [False]  # [SEG] with an empty mask
    # ground truth: s0, s1 have a target; s2, s3 are false premises -> matches s0, s2: 1/2
    assert see_accuracy(exists, [True, True, False, False]) == 0.5


def test_row_functions_reject_bad_input():
    with pytest.raises(ValueError, match="protocol"):
        sample_scores([1], [1], [False], [True], "coco")
    with pytest.raises(ValueError, match="target_empty"):
        sample_scores([1, 1], [1, 1], [False], [True, True])
    with pytest.raises(ValueError, match="inter <= union"):
        sample_scores([3], [2], [False], [True])
    with pytest.raises(ValueError, match="zero samples"):
        giou_from_scores([])


def test_count_intersection_union_numpy_path():
    gt = GT_A.numpy().astype(np.uint8)
    gt[0, :] = 255  # the hand-computed case of test_ignore_index_excluded_from_both_counts
    assert count_intersection_union(PRED_A.numpy().astype(bool), gt) == (2, 8)
    assert count_intersection_union(PRED_A.numpy(), gt, ignore_index=None) == (6, 12)
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (7, 9), (33, 65)]:
        pred = rng.random((h, w)) > 0.5
        target = rng.choice(np.array([0, 1, 255], np.uint8), size=(h, w), p=[0.5, 0.4, 0.1])
        inter, union = intersection_union(pred, target)
        assert count_intersection_union(pred, target) == (int(inter[0]), int(union[0]))
        assert count_intersection_union(pred.astype(np.float32), target) == (int(inter[0]), int(union[0]))
    with pytest.raises(ValueError, match="threshold"):
        count_intersection_union(np.full((2, 2), 0.5), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="same"):
        count_intersection_union(np.zeros((2, 3), bool), np.zeros((2, 2), np.uint8))
