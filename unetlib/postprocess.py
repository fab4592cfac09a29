"""Inference options: flip test-time augmentation and 3D largest-connected-component clean-up.

- **Flip TTA** (:func:`flip_average`): predict each slice and its left-right mirror image, flip
  the second prediction back and average the two softmax outputs. It costs a second forward
  pass and evens out the model's left-right quirks. The mirror is the training augmentation's
  (:data:`unetlib.pipeline.FLIP_AXIS`), so the model has seen such images.
- **Largest component** (:func:`keep_largest_component`): a bladder and a prostate are each one
  piece of tissue, so in each volume (a case-week, its slices stacked by their ``slice_N``
  number) every separate 3D fragment of those classes but the largest is a false positive.
  Those fragments become body, the tissue around them (nnU-Net learns the same step from the
  training data; here it is fixed by anatomy).

Both are off by default: ``unetlib evaluate`` and ``unetlib predict`` take ``--tta`` and
``--largest-component``, and :func:`unetlib.evaluation.evaluate` ``tta=`` and ``largest_component=``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import ndimage

from unetlib.labels import BLADDER, BODY, PROSTATE
from unetlib.layout import slice_number, volume_key
from unetlib.pipeline import FLIP_AXIS

__all__ = ["ONE_PIECE", "flip_average", "keep_largest_component"]

ONE_PIECE = (BLADDER, PROSTATE)
"""Classes that are one connected piece in every volume."""


def flip_average(predict, images: np.ndarray) -> np.ndarray:
    """The mean of ``predict(images)`` and of ``predict`` on the mirrored images, flipped back.

    Args:
        predict: maps a batch ``(B, H, W, 1)`` to per-pixel outputs ``(B, H, W, C)``.
        images: the batch.

    Returns:
        float32 outputs, the same shape as ``predict``'s.
    """
    plain = np.asarray(predict(images), np.float32)
    mirrored = np.asarray(predict(np.flip(images, axis=FLIP_AXIS)), np.float32)
    return (plain + np.flip(mirrored, axis=FLIP_AXIS)) / 2


def keep_largest_component(
    labels: np.ndarray, keys: list[str], classes: tuple[int, ...] = ONE_PIECE, fill: int = BODY
) -> np.ndarray:
    """Keep, per volume and class, only the largest 3D connected piece; the rest becomes ``fill``.

    Slices are grouped into volumes by their keys' case-week (:func:`~unetlib.layout.volume_key`)
    and stacked in the order of their ``slice_N`` numbers, with an empty slice standing in for each
    missing number, so two pieces never touch across a gap. Pieces touch through a face, an edge or
    a corner (26-connectivity). A key without a slice number is a volume of its own.

    Args:
        labels: predicted class indices ``(N, H, W)``.
        keys: the N slice keys (``004_week_0_slice_12``) or file names without extension.
        classes: the classes to clean up (default :data:`ONE_PIECE`: bladder and prostate).
        fill: the class removed pieces become (default body).

    Returns:
        A cleaned copy of ``labels``.

    Raises:
        ValueError: ``keys`` does not hold one key per slice, or two slices of a volume share a
            slice number (``slice_3`` and ``slice_03``).
    """
    if len(keys) != len(labels):
        raise ValueError(f"{len(labels)} label maps but {len(keys)} keys; expected one key per slice")
    cleaned = labels.copy()
    volumes: dict[str, list[tuple[int, int]]] = defaultdict(list)  # volume -> (slice number, index) pairs
    for index, key in enumerate(keys):
        number = slice_number(key)
        volume = volume_key(key) if number is not None else f"{key} (alone)"
        volumes[volume].append((number or 0, index))
    structure = np.ones((3, 3, 3), bool)
    for volume, members in volumes.items():
        numbers = np.array([number for number, _ in members])
        if len(set(numbers.tolist())) < len(numbers):
            raise ValueError(f"volume {volume}: two slices share a slice number; expected one each")
        indices = np.array([index for _, index in members])
        stack = np.zeros((numbers.max() - numbers.min() + 1,) + labels.shape[1:], labels.dtype)
        stack[numbers - numbers.min()] = labels[indices]
        for c in classes:
            pieces, count = ndimage.label(stack == c, structure)
            if count > 1:
                sizes = np.bincount(pieces.ravel())[1:]
                stack[(pieces > 0) & (pieces != 1 + int(np.argmax(sizes)))] = fill
        cleaned[indices] = stack[numbers - numbers.min()]
    return cleaned
