"""How segmentations are judged: plain functions on arrays first, one Keras metric for training.

Conventions, one default everywhere, named as MONAI names them:

* ``ignore_empty=True``: a class absent from the ground truth has no Dice or IoU (NaN),
  whatever was predicted, so means over slices or volumes (``np.nanmean``) cover only those
  that hold the class. With ``ignore_empty=False`` a class predicted where the truth has none
  scores 0, and one absent from both stays NaN (0/0).
* ``include_background=True``: class 0 is scored like the others; with False its entry is NaN,
  so arrays stay indexed by class.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import keras
import numpy as np
from keras import ops
from scipy import ndimage

from unetlib.labels import NUM_CLASSES

__all__ = [
    "confusion_matrix",
    "dice_from_confusion",
    "iou_from_confusion",
    "dice_per_class",
    "iou_per_class",
    "hausdorff95",
    "surface_distances",
    "PooledDice",
]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``[true, predicted]`` voxel counts over all voxels given (any shape, integer labels).

    Args:
        y_true: true class indices, any shape.
        y_pred: predicted class indices, the same number of voxels as ``y_true``.
        num_classes: classes counted; labels must lie in ``0..num_classes - 1``.

    Returns:
        An int64 array of shape ``(num_classes, num_classes)``: row = true class, column = predicted.

    Raises:
        ValueError: ``y_true`` and ``y_pred`` hold different numbers of voxels.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {np.shape(y_true)} vs {np.shape(y_pred)}")
    index = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def _per_class(
    numerator: np.ndarray, denominator: np.ndarray, matrix: np.ndarray, ignore_empty: bool, include_background: bool
) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(denominator > 0, numerator / denominator, np.nan)
    if ignore_empty:
        values[matrix.sum(axis=1) == 0] = np.nan  # the truth lacks the class
    if not include_background:
        values[0] = np.nan
    return values


def dice_from_confusion(
    matrix: np.ndarray, *, ignore_empty: bool = True, include_background: bool = True
) -> np.ndarray:
    """Per-class Dice ``2TP / (2TP + FP + FN)`` from a confusion matrix ``[true, predicted]``.

    Args:
        matrix: voxel counts, as :func:`confusion_matrix` returns them.
        ignore_empty: NaN for a class absent from the truth (else 0 when it is only predicted).
        include_background: score class 0 (else NaN there).
    """
    tp = np.diag(matrix).astype(np.float64)
    return _per_class(2 * tp, matrix.sum(axis=0) + matrix.sum(axis=1), matrix, ignore_empty, include_background)


def iou_from_confusion(matrix: np.ndarray, *, ignore_empty: bool = True, include_background: bool = True) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a confusion matrix; arguments as in
    :func:`dice_from_confusion`.

    Args:
        matrix: voxel counts, as :func:`confusion_matrix` returns them.
        ignore_empty: NaN for a class absent from the truth (else 0 when it is only predicted).
        include_background: score class 0 (else NaN there).
    """
    tp = np.diag(matrix).astype(np.float64)
    return _per_class(tp, matrix.sum(axis=0) + matrix.sum(axis=1) - tp, matrix, ignore_empty, include_background)


def dice_per_class(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int = NUM_CLASSES,
    *,
    ignore_empty: bool = True,
    include_background: bool = True,
) -> np.ndarray:
    """Dice of each class, pooled over every voxel given (one slice or a whole split).

    Returns ``num_classes`` values in [0, 1], NaN where undefined (see the module's conventions).

    Args:
        y_true: true class indices, any shape (e.g. ``(256, 128)`` or ``(N, 256, 128)``).
        y_pred: predicted class indices, the same shape.
        num_classes: number of classes scored.
        ignore_empty: NaN for a class absent from the truth (else 0 when it is only predicted).
        include_background: score class 0 (else NaN there).

    Raises:
        ValueError: ``y_true`` and ``y_pred`` hold different numbers of voxels.
    """
    return dice_from_confusion(
        confusion_matrix(y_true, y_pred, num_classes), ignore_empty=ignore_empty, include_background=include_background
    )


def iou_per_class(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int = NUM_CLASSES,
    *,
    ignore_empty: bool = True,
    include_background: bool = True,
) -> np.ndarray:
    """Intersection over union of each class, pooled; the same conventions as :func:`dice_per_class`.

    Args:
        y_true: true class indices, any shape.
        y_pred: predicted class indices, the same shape.
        num_classes: number of classes scored.
        ignore_empty: NaN for a class absent from the truth (else 0 when it is only predicted).
        include_background: score class 0 (else NaN there).

    Raises:
        ValueError: ``y_true`` and ``y_pred`` hold different numbers of voxels.
    """
    return iou_from_confusion(
        confusion_matrix(y_true, y_pred, num_classes), ignore_empty=ignore_empty, include_background=include_background
    )


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (the mask minus its erosion)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(true_mask: np.ndarray, pred_mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance between two binary 2D masks, in mm.

    Distances are measured between the masks' boundary pixels with ``spacing`` (mm per
    pixel along each axis). The result is the larger of the two directed 95th percentiles
    (true → predicted, predicted → true), as MONAI computes it. Edge cases: both masks
    empty → NaN (nothing to compare); exactly one empty → ``inf`` (the structure was
    missed or hallucinated entirely).

    Args:
        true_mask: the true structure as a 2D boolean (or 0/1) array.
        pred_mask: the predicted structure, the same shape.
        spacing: pixel size in mm along the array's rows and columns.
    """
    true_mask, pred_mask = np.asarray(true_mask, bool), np.asarray(pred_mask, bool)
    if not true_mask.any() and not pred_mask.any():
        return float("nan")
    if not true_mask.any() or not pred_mask.any():
        return float("inf")
    pred_to_true, true_to_pred = surface_distances(true_mask, pred_mask, spacing)
    return float(max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95)))


def surface_distances(
    true_mask: np.ndarray, pred_mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each boundary pixel of the prediction to the nearest boundary pixel
    of the truth, and from each true boundary pixel to the prediction's (both masks non-empty).

    Args:
        true_mask: the true structure as a 2D boolean (or 0/1) array.
        pred_mask: the predicted structure, the same shape.
        spacing: pixel size in mm along the array's rows and columns.

    Returns:
        ``(prediction → truth, truth → prediction)``: float64 arrays with one distance per
        boundary pixel of the prediction and of the truth respectively.
    """
    true_edge, pred_edge = _surface(np.asarray(true_mask, bool)), _surface(np.asarray(pred_mask, bool))
    to_true = ndimage.distance_transform_edt(~true_edge, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=spacing)
    return to_true[pred_edge], to_pred[true_edge]


@keras.saving.register_keras_serializable(package="unetlib")
class PooledDice(keras.metrics.Metric):
    """Mean hard Dice of some classes, pooled over every pixel seen in the epoch.

    Predictions are the argmax class. Per class, intersections and totals accumulate
    over all batches; the result averages the classes that occurred (in truth or
    prediction), so a class absent from the whole epoch does not count.

    Args:
        class_ids: the classes averaged; by default 1..5, every class but the background.
        num_classes: number of classes the model predicts (kept in the metric's config).
        name: the metric's name; Keras logs it as ``NAME`` and ``val_NAME``.
        **kwargs: passed on to ``keras.metrics.Metric`` (e.g. ``dtype``).
    """

    def __init__(
        self, class_ids=tuple(range(1, NUM_CLASSES)), num_classes=NUM_CLASSES, name="foreground_dice", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.class_ids, self.num_classes = list(class_ids), num_classes
        self.intersection = self.add_variable(shape=(len(self.class_ids),), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(len(self.class_ids),), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add one batch's per-class intersections and totals.

        Args:
            y_true: true class indices, shape ``(batch, height, width)``.
            y_pred: class probabilities (or scores), shape ``(batch, height, width, classes)``;
                the argmax is the predicted class.
            sample_weight: ignored; every pixel counts once.
        """
        labels = ops.cast(y_true, "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        classes = ops.convert_to_tensor(self.class_ids, dtype="int32")
        truth = ops.cast(ops.expand_dims(labels, -1) == classes, "float32")
        guess = ops.cast(ops.expand_dims(predicted, -1) == classes, "float32")
        axes = tuple(range(len(labels.shape)))
        self.intersection.assign_add(ops.sum(truth * guess, axis=axes))
        self.total.assign_add(ops.sum(truth, axis=axes) + ops.sum(guess, axis=axes))

    def result(self):
        seen = ops.cast(self.total > 0, "float32")
        dice = 2.0 * self.intersection / ops.maximum(self.total, 1.0)
        return ops.sum(dice * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        self.intersection.assign(ops.zeros_like(self.intersection))
        self.total.assign(ops.zeros_like(self.total))

    def get_config(self):
        return {**super().get_config(), "class_ids": self.class_ids, "num_classes": self.num_classes}
