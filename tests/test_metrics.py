"""Metric values on hand-made masks whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetlib.metrics import confusion_matrix, dice_per_class, hausdorff95, iou_per_class, surface_distances


def test_dice_and_iou_known_values():
    truth = np.zeros((4, 4), int)
    truth[:2, :2] = 1  # 4 pixels of class 1
    pred = np.zeros((4, 4), int)
    pred[:2, :1] = 1  # 2 of them found
    pred[3, 3] = 2  # class 2 hallucinated
    dice = dice_per_class(truth, pred, num_classes=4)
    assert dice[1] == pytest.approx(2 * 2 / (4 + 2))
    assert math.isnan(dice[2]) and math.isnan(dice[3])  # absent from the truth: undefined (MONAI's default)
    assert dice[0] == pytest.approx(2 * 11 / (12 + 13))
    counted = dice_per_class(truth, pred, num_classes=4, ignore_empty=False)
    assert counted[2] == 0.0 and math.isnan(counted[3])  # predicted only: 0; absent from both: 0/0
    assert math.isnan(dice_per_class(truth, pred, num_classes=4, include_background=False)[0])
    iou = iou_per_class(truth, pred, num_classes=4, ignore_empty=False)
    assert iou[1] == pytest.approx(2 / 4) and iou[2] == 0.0 and math.isnan(iou[3])


def test_perfect_prediction_scores_one_and_dice_is_pooled_over_slices():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (3, 8, 8))
    assert np.all(dice_per_class(labels, labels) == 1.0)
    # Pooled: slice A has 1 of 1 voxels right, slice B 0 of 3 → 2*1/(4+1), not mean of per-slice.
    truth = np.zeros((2, 2, 2), int)
    pred = np.zeros((2, 2, 2), int)
    truth[0, 0, 0] = pred[0, 0, 0] = 5
    truth[1, 0, :] = 5
    truth[1, 1, 0] = 5
    assert dice_per_class(truth, pred)[5] == pytest.approx(2 * 1 / (4 + 1))


def test_confusion_matrix_counts_and_rejects_shape_mismatch():
    truth = np.array([0, 1, 1, 2])
    pred = np.array([0, 1, 2, 2])
    matrix = confusion_matrix(truth, pred, num_classes=3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(truth, pred[:3])


def test_hausdorff95_known_shift_in_mm():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=0)  # shifted 3 pixels along axis 0
    assert hausdorff95(a, b) == pytest.approx(3.0)
    assert hausdorff95(a, b, spacing=(2.0, 1.0)) == pytest.approx(6.0)  # 2 mm per pixel on that axis
    assert hausdorff95(a, a) == 0.0


def test_hausdorff95_edge_cases():
    empty = np.zeros((10, 10), bool)
    full = np.zeros((10, 10), bool)
    full[2:5, 2:5] = True
    assert math.isnan(hausdorff95(empty, empty))
    assert hausdorff95(full, empty) == math.inf
    assert hausdorff95(empty, full) == math.inf


def test_score_pools_slices_into_volumes_by_case_week():
    from unetlib.evaluation import score

    truth = np.ones((4, 4, 4), np.uint8)  # body everywhere ...
    pred = truth.copy()
    truth[0, 0, :2] = truth[1, 0, :2] = 5  # ... and 2 prostate pixels in each slice of volume A
    pred[0, 0, :2] = 5  # A: found on its first slice, missed on its second
    pred[2, 3, 3] = 5  # B has no prostate, one pixel predicted
    keys = ["001_week_0_slice_0", "001_week_0_slice_1", "002_week_1_slice_0", "002_week_1_slice_1"]
    report = score(truth, pred, np.ones((4, 2)), "test", keys)

    assert report.volumes == 2
    assert report.pooled_dice[5] == pytest.approx(2 * 2 / (4 + 3))  # the B pixel counts here
    assert report.volume_dice_mean[5] == pytest.approx(2 * 2 / (4 + 2))  # only A holds prostate
    assert report.volume_dice_sd[5] == 0.0
    assert report.slice_dice_mean[5] == pytest.approx(0.5) and report.slice_dice_sd[5] == pytest.approx(0.5)
    assert math.isnan(report.volume_dice_mean[4])  # rectum in no volume: undefined
    data = report.to_dict()
    assert data["volumes"] == 2 and data["per_class"]["rectum"]["volume_dice_mean"] is None
    assert "2 volumes" in report.format_table()
    assert np.isfinite(report.hd95_mm[1])  # body: in every slice of truth and prediction
    quick = score(truth, pred, np.ones((4, 2)), "test", keys, with_hd95=False)  # Dice only, faster
    np.testing.assert_array_equal(quick.pooled_dice, report.pooled_dice)
    assert np.all(np.isnan(quick.hd95_mm))


def test_surface_distances_run_both_ways_in_mm():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=0)
    pred_to_true, true_to_pred = surface_distances(a, b, spacing=(2.0, 1.0))
    assert len(pred_to_true) == len(true_to_pred) == 36  # the 10x10 square's border pixels
    assert pred_to_true.max() == true_to_pred.max() == pytest.approx(6.0)  # the shifted rows, 3 px at 2 mm
    assert pred_to_true.min() == 0.0  # the sides overlap
    assert hausdorff95(a, b, (2.0, 1.0)) == pytest.approx(
        max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95))
    )


def test_comparison_table_has_a_row_per_run_with_its_organ_dice():
    from unetlib.evaluation import format_comparison, score

    truth = np.ones((2, 4, 4), np.uint8)
    truth[:, 0, :2] = 5
    worse = truth.copy()
    worse[0, 0, :2] = 1  # half the prostate pixels missed
    spacing = np.ones((2, 2))
    table = format_comparison({"perfect": score(truth, truth, spacing), "half": score(truth, worse, spacing)})
    header, perfect, half = table.splitlines()
    assert header.split() == ["run", "body", "bone", "bladder", "rectum", "prostate", "mean"]
    assert perfect.split()[0] == "perfect" and perfect.split()[5] == "1.000"
    assert half.split()[0] == "half" and half.split()[5] == f"{2 * 2 / (4 + 2):.3f}"
