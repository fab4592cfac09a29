"""The tf.data input pipeline: shuffle, augment (image and mask together), batch, prefetch.

The decoded split stays one NumPy array in memory; the pipeline streams indices and
gathers each batch from it, so no second copy of the data is made.

On a CPU the model's kernels already keep every core busy, so the pipeline gets a small,
fixed share of them (:func:`pipeline_threads`) instead of tf.data's autotuning: autotuned
parallel maps compete with the model for the cores and slow training down, while one thread
still prepares batches many times faster than the model consumes them. ``make bench``
measures both settings.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import math
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "FLIP_AXIS",
    "MAX_ROTATION_DEGREES",
    "SCALE_RANGE",
    "PREFETCH_BATCHES",
    "pipeline_threads",
    "augment_batch",
    "make_dataset",
    "steps_for",
]

FLIP_AXIS = 1
"""The axis of a batch ``(B, H, W, C)`` that a left-right flip mirrors (the slice's 256-pixel side),
in augmentation and in flip test-time augmentation (:mod:`unetlib.postprocess`)."""
MAX_ROTATION_DEGREES = 10.0
SCALE_RANGE = (0.9, 1.1)
INTENSITY_SCALE, INTENSITY_SHIFT = 0.1, 0.1


PREFETCH_BATCHES = 2
"""Batches prepared ahead of the model; with parallel calls fixed, more would not come sooner."""


def pipeline_threads() -> int:
    """Parallel calls per pipeline step: a quarter of this machine's cores, at least one."""
    return max(1, (os.cpu_count() or 1) // 4)


def _affine_transforms(count, height: int, width: int, seed) -> tf.Tensor:
    """Per-sample projective transforms: a random rotation and scaling about the centre."""
    rotation_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    angle = tf.random.stateless_uniform([count], rotation_seed, -1.0, 1.0) * (MAX_ROTATION_DEGREES * math.pi / 180)
    scale = tf.random.stateless_uniform([count], scale_seed, *SCALE_RANGE)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cy, cx = (height - 1) / 2, (width - 1) / 2
    # Maps output pixel (x, y) to input pixel: rotate/scale about the centre.
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = cx - a0 * cx - a1 * cy
    b2 = cy - b0 * cx - b1 * cy
    zeros = tf.zeros_like(cos)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, labels: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment a batch; the same geometry is applied to each image and its mask.

    Left-right flips, rotations up to ±10°, scaling 0.9–1.1 (bilinear for images, nearest
    neighbour for labels so they stay exact class indices), and a random intensity
    scale/shift on the z-scored image. ``seed`` is a shape-[2] integer tensor: the same
    seed gives the same augmentation.

    Args:
        images: z-scored images ``(B, H, W, 1)``, float16 or float32.
        labels: class indices ``(B, H, W)``, any integer dtype.
        seed: shape-[2] integer tensor for TensorFlow's stateless random ops.

    Returns:
        ``(images, labels)``: float32 ``(B, H, W, 1)`` and ``(B, H, W)`` in ``labels``' dtype.
    """
    flip_seed, geometry_seed, intensity_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    images = tf.cast(images, tf.float32)  # a split's float16 images come out as float32
    count = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    masks = tf.cast(labels[..., None], tf.float32)

    flip = tf.random.stateless_uniform([count], flip_seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[FLIP_AXIS]), images)
    masks = tf.where(flip[:, None, None, None], tf.reverse(masks, axis=[FLIP_AXIS]), masks)

    transforms = _affine_transforms(count, height, width, geometry_seed)
    # Pixels rotated in from outside the slice take each image's own background (its
    # minimum), not 0: after z-scoring, 0 is mid-grey tissue intensity, not air.
    background = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    images = keras.ops.image.affine_transform(images - background, transforms, interpolation="bilinear") + background
    masks = keras.ops.image.affine_transform(masks, transforms, interpolation="nearest")

    gain_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(intensity_seed, 2))
    gain = 1.0 + tf.random.stateless_uniform([count, 1, 1, 1], gain_seed, -INTENSITY_SCALE, INTENSITY_SCALE)
    shift = tf.random.stateless_uniform([count, 1, 1, 1], shift_seed, -INTENSITY_SHIFT, INTENSITY_SHIFT)
    images = images * gain + shift
    return images, tf.cast(masks[..., 0], labels.dtype)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    indices: np.ndarray | None = None,
    shuffle: bool = False,
    augment: bool = False,
    repeat: bool = False,
    seed: int = 0,
    parallel_calls: int | None = None,
    autotune: bool = False,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """A dataset of ``(images [B,H,W,1] float32, labels [B,H,W] uint8)`` batches.

    ``indices`` selects (and may repeat) the slices to stream, without copying the arrays;
    by default every slice once. With ``shuffle`` the order changes every epoch
    (reproducibly, from ``seed``); with ``augment`` each batch is augmented by
    :func:`augment_batch` with a seed derived from ``seed`` and the batch's position in the
    stream; with ``repeat`` the stream never ends (pair it with ``steps_per_epoch``).
    ``parallel_calls`` is how many batches are gathered and augmented at once (default
    :func:`pipeline_threads`), with :data:`PREFETCH_BATCHES` prepared ahead and tf.data's
    autotuner off. ``autotune=True`` instead lets tf.data choose the parallelism and the
    prefetch buffer itself (then ``parallel_calls`` must be left unset). ``start_batch`` starts
    the stream at that batch, with the order and augmentation it has there, so a resumed run
    continues the stream rather than repeating its first epoch.

    Args:
        images: a split's images ``(N, H, W, 1)``, float16 or float32 (batches come out as float32).
        labels: its class indices ``(N, H, W)``, uint8.
        batch_size: slices per batch; the last batch of a finite stream may be smaller.
        indices: the slices to stream, as positions in ``images`` (repeats allowed); None: each once.
        shuffle: reshuffle the order every epoch.
        augment: apply :func:`augment_batch` to every batch.
        repeat: repeat the stream forever.
        seed: seed for the shuffle order and the augmentation.
        parallel_calls: batches gathered and augmented at once; None: :func:`pipeline_threads`.
        autotune: let tf.data choose the parallelism and prefetch buffer.
        start_batch: batches of the stream to pass over first (only their indices are drawn).

    Raises:
        ValueError: ``images`` and ``labels`` differ in length, or both ``parallel_calls`` and
            ``autotune`` are given.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label maps")
    height, width = images.shape[1:3]

    def gather(batch_indices):
        batch_indices = np.sort(batch_indices)  # sorted reads are friendlier to the memory system
        return images[batch_indices].astype(np.float32), labels[batch_indices]

    def load(batch_indices):
        batch_images, batch_labels = tf.numpy_function(gather, [batch_indices], [tf.float32, tf.uint8], stateful=False)
        batch_images.set_shape([None, height, width, 1])
        batch_labels.set_shape([None, height, width])
        return batch_images, batch_labels

    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle:
        dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if autotune and parallel_calls is not None:
        raise ValueError("give parallel_calls or autotune=True, not both")
    parallel_calls = tf.data.AUTOTUNE if autotune else parallel_calls or pipeline_threads()
    dataset = dataset.batch(batch_size).skip(start_batch).map(load, num_parallel_calls=parallel_calls)
    if augment:
        dataset = dataset.enumerate(start=start_batch).map(
            lambda step, batch: augment_batch(*batch, tf.stack([tf.cast(seed, tf.int64), step])),
            num_parallel_calls=parallel_calls,
        )
    options = tf.data.Options()
    options.autotune.enabled = autotune  # when fixed: no tuner competing with the model for the cores
    return dataset.prefetch(tf.data.AUTOTUNE if autotune else PREFETCH_BATCHES).with_options(options)


def steps_for(count: int, batch_size: int) -> int:
    """Batches needed to see every slice once.

    Args:
        count: number of slices.
        batch_size: slices per batch.

    Returns:
        ``ceil(count / batch_size)``, at least 1.
    """
    return max(1, math.ceil(count / batch_size))
