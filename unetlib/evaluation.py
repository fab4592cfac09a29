"""Evaluation: predict a split, score every class, and report what the course asks for.

Headline numbers are Dice pooled over the whole split (every voxel of every slice). Beside
them: per-volume Dice (each case-week's 60 slices stacked into one volume, mean ± sd over
the volumes whose ground truth holds the class), per-slice Dice (the same over slices), IoU,
and the 95th-percentile Hausdorff distance in mm.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
from tqdm import tqdm

import unetlib.model  # noqa: F401  (registers the custom layers for loading)
from unetlib.data import find_pairs, load_split, resolve_data_root
from unetlib.errors import DataError
from unetlib.files import write_atomic
from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE, SLICE_SHAPE
from unetlib.layout import volume_key
from unetlib.metrics import confusion_matrix, dice_from_confusion, hausdorff95, iou_from_confusion
from unetlib.postprocess import flip_average, keep_largest_component

__all__ = [
    "predict_batch",
    "load_model",
    "check_model",
    "predict_probabilities",
    "predict_labels",
    "EvaluationReport",
    "format_comparison",
    "score",
    "pixel_spacings",
    "evaluate",
    "write_json",
]

CRITERION_LABEL, CRITERION_MIN_DICE = "prostate", 0.75
"""The course criterion: prostate Dice ≥ 0.75 on the test split."""


def load_model(path: Path | str) -> keras.Model:
    """Load a saved ``.keras`` model for inference (no optimiser or loss needed) and check that it
    fits the kit (:func:`check_model`).

    A legacy HDF5 (``.h5``) Keras model is read as well. A path that exists but holds no readable
    model (an empty, cut-short or foreign file, an archive without its config or weights, a folder)
    is reported as damaged, never as missing.

    Args:
        path: a ``model.keras`` file written by ``unetlib train``.

    Raises:
        FileNotFoundError: nothing exists at ``path`` (or it is a link to nothing).
        DataError: ``path`` cannot be read as a Keras model (the message says why), or the model
            does not take 256x128 single-channel slices and give 6 classes per pixel.
    """
    path = Path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise FileNotFoundError(
                f"{path}: model file not found (a link to {os.readlink(path)}, which does not exist)"
            ) from None
        raise FileNotFoundError(f"{path}: model file not found (train one with `unetlib train`)") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read {path}: no permission to read it")
    why = _why_not_a_model_file(path)
    if why is None:
        with warnings.catch_warnings(record=True) as caught:  # Keras warns, then raises, on mismatched weights
            warnings.simplefilter("always")
            try:
                model = keras.models.load_model(path, compile=False)
            except Exception as exc:  # Keras, zipfile, h5py and json each raise their own kinds
                why = _reason(exc)
        if why is None and not isinstance(model, keras.Model):
            why = f"it holds a {type(model).__name__}, not a model"
    if why is not None:
        raise DataError(f"cannot read {path}: damaged or not a Keras model ({why})")
    for warning in caught:  # the model loaded: what Keras said about it is the user's to see
        warnings.warn(warning.message, stacklevel=2)
    check_model(model, path)
    return model


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _reason(exc: Exception, limit: int = 160) -> str:
    """The gist of an exception's message for a one-line error: its first sentence or line, at most
    ``limit`` characters, or the exception's type when it has no message."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError quotes its text
    text = text.strip().splitlines()[0].strip() if text.strip() else type(exc).__name__
    sentence_end = text.find(". ")
    if 0 < sentence_end < limit:
        text = text[: sentence_end + 1]
    elif len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text.rstrip(".:")


def _why_not_a_model_file(path: Path) -> str | None:
    """Why ``path`` cannot hold a Keras model, judged from what it is and its first bytes; None when
    it may (a zip archive, as ``.keras`` files are, or a legacy HDF5 file): Keras then decides."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "a TensorFlow SavedModel folder; the kit reads .keras files"
        return "a folder, not a .keras file"
    try:
        with open(path, "rb") as file:
            head = file.read(len(_HDF5_SIGNATURE))
    except OSError as exc:  # an I/O error: a failing disk or network share
        return exc.strerror or str(exc)
    if not head:
        return "the file is empty"
    if head.startswith(_HDF5_SIGNATURE) or zipfile.is_zipfile(path):
        return None
    if head.startswith(b"PK"):
        return "a zip archive cut short, as an interrupted copy or download leaves it"
    return "not a zip archive, as a .keras file is"


def check_model(model: keras.Model, source: Path | str | None = None) -> None:
    """Check that ``model`` fits the kit: one input of 256x128 single-channel slices, shape
    ``(None, 256, 128, 1)`` (height and width may be left open), and one output of 6 class
    probabilities per pixel, ``(None, 256, 128, 6)``. A model that does not would be scored or
    written without sense (a 3-class model's labels are not the kit's labels), so it is refused.

    Args:
        model: the Keras model to check.
        source: what to call the model in messages, e.g. its file; None names it by ``model.name``.

    Raises:
        DataError: ``model`` is not a Keras model, or its input or output does not fit; the message
            says what it has and what the kit expects.
    """
    name = str(source) if source is not None else f"model {getattr(model, 'name', '?')!r}"
    height, width = SLICE_SHAPE
    wanted_in, wanted_out = f"(None, {height}, {width}, 1)", f"(None, {height}, {width}, {NUM_CLASSES})"
    if not isinstance(model, keras.Model):
        raise DataError(f"{name}: a {type(model).__name__}, not a Keras model")
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):  # a subclassed or not yet built model: no declared input
        inputs = None
    if inputs is not None:
        if len(inputs) != 1:
            raise DataError(f"{name}: takes {len(inputs)} inputs; the kit feeds one, a batch of slices {wanted_in}")
        shape = tuple(inputs[0].shape)
        if len(shape) != 4:
            raise DataError(f"{name}: takes input of shape {shape}; the kit feeds batches of slices {wanted_in}")
        if shape[-1] != 1:
            raise DataError(
                f"{name}: takes {shape[-1]} channels per pixel (input {shape}); "
                f"the kit's slices have 1 (one MRI intensity per pixel), input {wanted_in}"
            )
        if any(have is not None and have != want for have, want in zip(shape[1:3], SLICE_SHAPE)):
            raise DataError(
                f"{name}: takes slices of {shape[1]}x{shape[2]} (input {shape}); "
                f"the kit's slices are {height}x{width}, input {wanted_in}"
            )
        if "float" not in str(inputs[0].dtype):
            raise DataError(f"{name}: takes {inputs[0].dtype} input; the kit feeds float32 z-scored slices")
    try:
        output = model.compute_output_spec(keras.KerasTensor((None, height, width, 1), dtype="float32"))
    except Exception as exc:  # the model cannot run on the kit's slices at all
        raise DataError(f"{name}: cannot be applied to {height}x{width} slices {wanted_in} ({_reason(exc)})") from None
    outputs = list(output.values()) if isinstance(output, dict) else output
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if len(outputs) != 1:
        raise DataError(f"{name}: gives {len(outputs)} outputs; the kit expects one, class probabilities {wanted_out}")
    shape = tuple(outputs[0].shape)
    if len(shape) != 4 or tuple(shape[1:3]) != SLICE_SHAPE:
        raise DataError(
            f"{name}: outputs shape {shape} for {height}x{width} slices; "
            f"the kit needs one probability per class and pixel, {wanted_out}"
        )
    if shape[-1] != NUM_CLASSES:
        raise DataError(
            f"{name}: outputs {shape[-1]} class{'es' if shape[-1] != 1 else ''} per pixel; "
            f"the kit segments {NUM_CLASSES} ({', '.join(LABELS)})"
        )


def predict_batch(model: keras.Model, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """The softmax output of one batch of images ``(B, H, W, 1)``, float32; with ``tta``, the mean
    of the outputs for the images and their mirror images (:func:`~unetlib.postprocess.flip_average`).

    Args:
        model: a UNet taking ``(batch, H, W, 1)`` float32 images.
        images: the batch, float16 or float32 (fed as float32).
        tta: average with the prediction of the left-right mirrored batch, flipped back.
    """
    images = np.asarray(images, np.float32)
    if tta:
        return flip_average(model.predict_on_batch, images)
    return np.asarray(model.predict_on_batch(images), np.float32)


def _predicted_batches(model: keras.Model, images: np.ndarray, batch_size: int, progress: bool, tta: bool):
    """``(start, softmax of images[start:start + batch_size])`` batch by batch, with a progress bar."""
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress):
        yield start, predict_batch(model, images[start : start + batch_size], tta)


def predict_probabilities(
    model: keras.Model, images: np.ndarray, batch_size: int = 16, progress: bool = True, tta: bool = False
) -> np.ndarray:
    """The softmax output ``[N,H,W,classes]`` float32 for images ``[N,H,W,1]``: one probability per
    class and pixel (6 float32 per pixel, about 0.8 MB a slice; use :func:`predict_labels` for
    labels alone).

    Args:
        model: a UNet taking ``(batch, H, W, 1)`` float32 images, e.g. from :func:`load_model`.
        images: z-scored slices ``(N, H, W, 1)``, float16 or float32 (fed as float32).
        batch_size: slices per forward pass.
        progress: show a progress bar over the batches.
        tta: flip test-time augmentation (:func:`predict_batch`): twice the work.
    """
    out = np.empty(images.shape[:3] + (model.output_shape[-1],), dtype=np.float32)
    for start, probabilities in _predicted_batches(model, images, batch_size, progress, tta):
        out[start : start + batch_size] = probabilities
    return out


def predict_labels(
    model: keras.Model, images: np.ndarray, batch_size: int = 16, progress: bool = True, tta: bool = False
) -> np.ndarray:
    """Label maps ``[N,H,W]`` uint8 (argmax of the softmax) for images ``[N,H,W,1]``.

    Args:
        model: a UNet taking ``(batch, H, W, 1)`` float32 images, e.g. from :func:`load_model`.
        images: z-scored slices ``(N, H, W, 1)``, float16 or float32 (fed as float32).
        batch_size: slices per forward pass.
        progress: show a progress bar over the batches.
        tta: flip test-time augmentation (:func:`predict_batch`): twice the work.
    """
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for start, probabilities in _predicted_batches(model, images, batch_size, progress, tta):
        out[start : start + batch_size] = np.argmax(probabilities, axis=-1)
    return out


@dataclass
class EvaluationReport:
    """Per-class scores of one split; ``to_dict`` gives the JSON the CLI writes.

    Every per-class array has one float64 entry per class (6, background first) and is NaN
    where the score is undefined (see :func:`score`).

    Attributes:
        split: the split's name, e.g. ``"test"`` (empty when not given to :func:`score`).
        slices: number of slices scored (N).
        pooled_dice: Dice per class over every voxel of the split (the headline number).
        iou: intersection over union per class, pooled the same way.
        slice_dice_mean: mean per-slice Dice per class, over the slices whose truth holds it.
        slice_dice_sd: standard deviation of those per-slice Dice values.
        volume_dice_mean: mean per-volume (case-week) Dice per class, over the volumes holding it.
        volume_dice_sd: standard deviation of those per-volume Dice values.
        volumes: number of volumes (case-weeks) the slices form.
        hd95_mm: mean 95th-percentile Hausdorff distance per class in mm, over the slices where
            truth and prediction both hold the class; NaN for the background and without HD95.
        confusion: int64 voxel counts ``(6, 6)``, ``[true, predicted]``.
        per_slice_dice: Dice per slice and class ``(N, 6)``.
        keys: the slice keys, in the order of ``per_slice_dice`` (empty when not given).
    """

    split: str
    slices: int
    pooled_dice: np.ndarray
    iou: np.ndarray
    slice_dice_mean: np.ndarray
    slice_dice_sd: np.ndarray
    volume_dice_mean: np.ndarray
    volume_dice_sd: np.ndarray
    volumes: int
    hd95_mm: np.ndarray
    confusion: np.ndarray
    per_slice_dice: np.ndarray = field(repr=False)  # [N, C], NaN where undefined
    keys: list[str] = field(repr=False, default_factory=list)

    @property
    def mean_foreground_dice(self) -> float:
        return float(np.nanmean(self.pooled_dice[1:]))

    @property
    def passed(self) -> bool:
        value = self.pooled_dice[LABELS.index(CRITERION_LABEL)]
        return bool(np.isfinite(value) and value >= CRITERION_MIN_DICE)

    def to_dict(self) -> dict:
        per_class = {
            name: {
                "dice": _number(self.pooled_dice[c]),
                "iou": _number(self.iou[c]),
                "hd95_mm": _number(self.hd95_mm[c]),
                "slice_dice_mean": _number(self.slice_dice_mean[c]),
                "slice_dice_sd": _number(self.slice_dice_sd[c]),
                "volume_dice_mean": _number(self.volume_dice_mean[c]),
                "volume_dice_sd": _number(self.volume_dice_sd[c]),
            }
            for c, name in enumerate(LABELS)
        }
        return {
            "split": self.split,
            "slices": self.slices,
            "volumes": self.volumes,
            "per_class": per_class,
            "mean_foreground_dice": _number(self.mean_foreground_dice),
            "criterion": {"label": CRITERION_LABEL, "min_dice": CRITERION_MIN_DICE, "passed": self.passed},
            "confusion_matrix": self.confusion.tolist(),
        }

    def format_table(self) -> str:
        lines = [
            f"Split: {self.split} ({self.slices} slices, {self.volumes} volumes)",
            f"{'class':<11}{'Dice':>7}{'volume Dice (mean ± sd)':>25}{'slice Dice (mean ± sd)':>25}"
            f"{'IoU':>7}{'HD95 mm':>9}",
        ]
        for c, name in enumerate(LABELS):
            lines.append(
                f"{name:<11}{self.pooled_dice[c]:>7.3f}"
                f"{self.volume_dice_mean[c]:>16.3f} ± {self.volume_dice_sd[c]:<6.3f}"
                f"{self.slice_dice_mean[c]:>16.3f} ± {self.slice_dice_sd[c]:<6.3f}"
                f"{self.iou[c]:>7.3f}{self.hd95_mm[c]:>9.2f}"
            )
        lines.append(f"mean foreground Dice: {self.mean_foreground_dice:.3f}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(
            f"course criterion ({CRITERION_LABEL} Dice >= {CRITERION_MIN_DICE}): {verdict} "
            f"({self.pooled_dice[PROSTATE]:.3f})"
        )
        return "\n".join(lines)


def format_comparison(reports: dict[str, EvaluationReport]) -> str:
    """Pooled Dice per organ of several runs on the same split, one row per run.

    Args:
        reports: each run's report, by the name shown in its row; at least one.

    Returns:
        A fixed-width text table: one column per organ (body .. prostate) and their mean.
    """
    width = max(len(name) for name in reports) + 2
    lines = [f"{'run':<{width}}" + "".join(f"{name:>10}" for name in LABELS[1:]) + f"{'mean':>8}"]
    for name, report in reports.items():
        lines.append(
            f"{name:<{width}}"
            + "".join(f"{value:>10.3f}" for value in report.pooled_dice[1:])
            + f"{report.mean_foreground_dice:>8.3f}"
        )
    return "\n".join(lines)


def _number(value: float) -> float | None | str:
    """JSON-safe: NaN becomes null, infinity the string "inf"."""
    value = float(value)
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else round(value, 5)


def score(
    y_true: np.ndarray, y_pred: np.ndarray, spacings: np.ndarray, split: str = "", keys=None, *, with_hd95: bool = True
) -> EvaluationReport:
    """Score predicted label maps against the truth; ``spacings[N, 2]`` are mm per pixel.

    Slices are grouped into volumes by the case-week of their ``keys``
    (``004_week_0_slice_12`` belongs to ``004_week_0``); without keys the split is one volume.
    Per-slice and per-volume Dice are undefined (NaN) where the truth lacks the class, so
    their means cover only slices or volumes that hold it; a class predicted there counts
    in the pooled Dice. HD95 per class is the mean over slices where the class is present
    in both truth and prediction (finite distances); slices where it was missed or
    hallucinated show up in the per-slice Dice instead. HD95 is the slow part (a distance
    transform per slice and class); ``with_hd95=False`` skips it and reports NaN.

    Args:
        y_true: true class indices ``(N, H, W)``.
        y_pred: predicted class indices ``(N, H, W)``.
        spacings: ``(N, 2)`` pixel sizes in mm along rows and columns, e.g. from :func:`pixel_spacings`.
        split: the split's name, recorded in the report.
        keys: the N slice keys (``004_week_0_slice_12``), or None.
        with_hd95: compute the Hausdorff distances.

    Raises:
        ValueError: ``y_true`` and ``y_pred`` hold different numbers of voxels.
    """
    confusion = confusion_matrix(y_true, y_pred)
    per_slice = np.full((len(y_true), NUM_CLASSES), np.nan)
    distances = np.full((len(y_true), NUM_CLASSES), np.nan)
    keys = list(keys or [])
    volume_of = [volume_key(key) for key in keys] if len(keys) == len(y_true) else [""] * len(y_true)
    volume_confusion: dict[str, np.ndarray] = {}
    for index, (truth, guess) in enumerate(zip(y_true, y_pred)):
        slice_confusion = confusion_matrix(truth, guess)
        volume_confusion[volume_of[index]] = volume_confusion.get(volume_of[index], 0) + slice_confusion
        per_slice[index] = dice_from_confusion(slice_confusion)
        for c in range(1, NUM_CLASSES) if with_hd95 else ():
            present_true, present_pred = truth == c, guess == c
            if present_true.any() and present_pred.any():
                distances[index, c] = hausdorff95(present_true, present_pred, tuple(spacings[index]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes never present
        slice_mean, slice_sd = np.nanmean(per_slice, axis=0), np.nanstd(per_slice, axis=0)
        per_volume = np.array([dice_from_confusion(matrix) for matrix in volume_confusion.values()])
        volume_mean, volume_sd = np.nanmean(per_volume, axis=0), np.nanstd(per_volume, axis=0)
        hd95 = np.nanmean(distances, axis=0)
    return EvaluationReport(
        split,
        len(y_true),
        dice_from_confusion(confusion),
        iou_from_confusion(confusion),
        slice_mean,
        slice_sd,
        volume_mean,
        volume_sd,
        len(volume_confusion),
        hd95,
        confusion,
        per_slice,
        keys,
    )


def pixel_spacings(root: Path | str, split: str) -> np.ndarray:
    """mm per pixel of every slice of a split, read from the NIfTI headers (cheap).

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.

    Returns:
        A float array ``(N, 2)``, in the order of :func:`~unetlib.data.find_pairs` (and of
        :func:`~unetlib.data.load_split`).

    Raises:
        DataError: the split's files cannot be paired.
        ValueError: ``split`` is not one of ``SPLITS``.
    """
    return np.array([nib.load(p.image_path).header.get_zooms()[:2] for p in find_pairs(root, split)], dtype=float)


def evaluate(
    model: keras.Model | Path | str,
    root: Path | str | None = None,
    split: str = "test",
    *,
    progress: bool = True,
    with_hd95: bool = True,
    tta: bool = False,
    largest_component: bool = False,
) -> tuple[EvaluationReport, np.ndarray]:
    """Predict ``split`` with ``model`` and score it (see :func:`score`); returns the report and
    the predictions. The inference options are :mod:`unetlib.postprocess`'s.

    Args:
        model: a Keras model, or the path of a saved ``.keras`` file.
        root: the data root; None resolves it like the CLI (:func:`~unetlib.data.resolve_data_root`).
        split: ``"train"``, ``"validate"`` or ``"test"``.
        progress: show progress bars while decoding and predicting.
        with_hd95: compute Hausdorff distances (the slow part).
        tta: flip test-time augmentation (:func:`predict_batch`).
        largest_component: keep only the largest 3D piece of bladder and prostate per volume
            (:func:`~unetlib.postprocess.keep_largest_component`).

    Returns:
        ``(report, predictions)``; the predictions are uint8 label maps ``(N, 256, 128)``.

    Raises:
        FileNotFoundError: ``model`` is a path with no file.
        DataError: the model file or the split's data cannot be read, or the model does not fit the
            kit (:func:`check_model`).
    """
    if isinstance(model, keras.Model):
        check_model(model)
    else:
        model = load_model(model)
    root = resolve_data_root(root)
    data = load_split(root, split, progress=progress)
    predictions = predict_labels(model, data.images, progress=progress, tta=tta)
    if largest_component:
        predictions = keep_largest_component(predictions, data.keys)
    return score(
        data.labels, predictions, pixel_spacings(root, split), split, data.keys, with_hd95=with_hd95
    ), predictions


def write_json(report: EvaluationReport, path: Path | str) -> None:
    """Write ``report.to_dict()`` as JSON to ``path``, atomically.

    Args:
        report: the scores to write; NaN becomes ``null`` and infinity ``"inf"``.
        path: the JSON file to write; its folder must exist.
    """
    write_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
