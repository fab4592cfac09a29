"""Segmentation losses on integer label maps; one-hot exists only inside the graph.

``y_true`` is ``[batch, H, W]`` integer labels and ``y_pred`` ``[batch, H, W, C]`` softmax
probabilities. Written with ``keras.ops`` so they are not tied to one backend.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import keras
from keras import ops

from unetlib.config import LOSSES
from unetlib.labels import NUM_CLASSES

__all__ = ["EPSILON", "CrossEntropy", "SoftDice", "DiceCrossEntropy", "get_loss"]

EPSILON = 1e-6


class _BatchLoss(keras.losses.Loss):
    """A loss computed over a whole batch at once: one number, not one per slice.

    Under ``tf.distribute`` every replica computes the loss on its part of the global batch, and
    the replicas' gradients are added up; so each replica must contribute its loss divided by
    the number of replicas, for the sum to be their mean. Keras does that itself for losses
    with one value per slice, not for a single number; this class does it (and Keras reports
    the undivided mean in the logs).
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        import tensorflow as tf

        loss = super().__call__(y_true, y_pred, sample_weight)
        return loss / tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="unetlib")
class CrossEntropy(_BatchLoss):
    """Categorical cross-entropy on integer labels, optionally weighted per class.

    Equivalent to one-hot categorical cross-entropy, without one-hot arrays: the
    probability of the true class is picked per pixel. ``class_weights`` scales each
    pixel's term by the weight of its true class (normalised by the mean weight seen).

    Args:
        class_weights: one weight per class (6 for HipMRI), or None for an unweighted mean.
        name: the loss's name.
        **kwargs: passed on to ``keras.losses.Loss`` (e.g. ``reduction``, ``dtype``).
    """

    def __init__(self, class_weights=None, name="cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        """Mean (or class-weighted mean) of ``-log p(true class)`` over every pixel of the batch.

        Args:
            y_true: class indices ``(batch, height, width)``, any integer or float dtype.
            y_pred: softmax probabilities ``(batch, height, width, classes)``.

        Returns:
            The batch's loss, a scalar tensor.
        """
        labels = ops.cast(y_true, "int32")
        per_pixel = keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        if self.class_weights is None:
            return ops.mean(per_pixel)
        weights = ops.take(ops.convert_to_tensor(self.class_weights, dtype=per_pixel.dtype), labels)
        return ops.sum(per_pixel * weights) / (ops.sum(weights) + EPSILON)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="unetlib")
class SoftDice(_BatchLoss):
    """1 − mean soft Dice over the foreground classes, pooled over the whole batch.

    Pooling over the batch (as nnU-Net does) keeps the loss defined when a class, like the
    prostate, is absent from some slices; a class absent from the whole batch and not
    predicted contributes a Dice near 1 through the smoothing term.

    Args:
        num_classes: number of classes in the labels and predictions; class 0 is left out of the mean.
        smooth: added to numerator and denominator of each class's Dice.
        name: the loss's name.
        **kwargs: passed on to ``keras.losses.Loss``.
    """

    def __init__(self, num_classes=NUM_CLASSES, smooth=1.0, name="soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.smooth = num_classes, smooth

    def call(self, y_true, y_pred):
        """1 − the mean over classes 1.. of the batch-pooled soft Dice.

        Args:
            y_true: class indices ``(batch, height, width)``, any integer or float dtype.
            y_pred: softmax probabilities ``(batch, height, width, classes)``.

        Returns:
            The batch's loss, a scalar tensor.
        """
        target = ops.one_hot(ops.cast(y_true, "int32"), self.num_classes, dtype=y_pred.dtype)
        axes = (0, 1, 2)
        intersection = ops.sum(target * y_pred, axis=axes)
        totals = ops.sum(target, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * intersection + self.smooth) / (totals + self.smooth)
        return 1.0 - ops.mean(dice[1:])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="unetlib")
class DiceCrossEntropy(_BatchLoss):
    """Soft Dice + cross-entropy (the nnU-Net default): Dice copes with imbalance, CE with calibration.

    Args:
        class_weights: per-class weights for the cross-entropy term only, or None.
        num_classes: number of classes in the labels and predictions.
        name: the loss's name.
        **kwargs: passed on to ``keras.losses.Loss``.
    """

    def __init__(self, class_weights=None, num_classes=NUM_CLASSES, name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights, self.num_classes = class_weights, num_classes
        self.dice = SoftDice(num_classes)
        self.cross_entropy = CrossEntropy(class_weights)

    def call(self, y_true, y_pred):
        """The soft Dice loss plus the cross-entropy, unweighted sum.

        Args:
            y_true: class indices ``(batch, height, width)``, any integer or float dtype.
            y_pred: softmax probabilities ``(batch, height, width, classes)``.

        Returns:
            The batch's loss, a scalar tensor.
        """
        return self.dice.call(y_true, y_pred) + self.cross_entropy.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "num_classes": self.num_classes}


def get_loss(name: str, class_weights=None) -> keras.losses.Loss:
    """The loss a config names, one of :data:`unetlib.config.LOSSES`: ``ce``, ``dice`` or ``dice_ce``.

    Args:
        name: ``"ce"``, ``"dice"`` or ``"dice_ce"``.
        class_weights: per-class cross-entropy weights, or None; ignored by ``"dice"``.

    Raises:
        ValueError: ``name`` is not one of :data:`unetlib.config.LOSSES`.
    """
    makers = {
        "ce": lambda: CrossEntropy(class_weights),
        "dice": SoftDice,
        "dice_ce": lambda: DiceCrossEntropy(class_weights),
    }
    assert tuple(makers) == LOSSES  # one list of names, in config.py
    if name not in makers:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return makers[name]()
