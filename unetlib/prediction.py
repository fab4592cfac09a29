"""Prediction on NIfTI files: slices in, label maps out with the input's affine and header."""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import logging
from pathlib import Path

import keras
import nibabel as nib
import numpy as np

from unetlib.data import fit_to_shape, is_nifti, normalise, read_image
from unetlib.errors import DataError
from unetlib.evaluation import check_model, predict_batch
from unetlib.files import atomic_path
from unetlib.postprocess import keep_largest_component

__all__ = ["output_name", "predict_files"]

logger = logging.getLogger(__name__)


def _inputs(paths: list[Path | str]) -> list[Path]:
    """Expand folders into their NIfTI files (warning about every other entry, which is not
    predicted); a path that is neither a NIfTI file nor a folder is an error."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            entries = sorted(path.iterdir())
            found = [p for p in entries if p.is_file() and is_nifti(p)]
            if not found:
                raise DataError(f"{path}: folder holds no .nii/.nii.gz files")
            others = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in found]
            if others:
                what = "entry that is not a NIfTI file" if len(others) == 1 else "entries that are not NIfTI files"
                logger.warning("%s: not predicting %d %s: %s", path, len(others), what, ", ".join(others))
            files.extend(found)
        elif path.is_file() and is_nifti(path):
            files.append(path)
        else:
            raise DataError(f"{path}: not a NIfTI file or a folder of them")
    return files


def output_name(path: Path, suffix: str = "") -> str:
    """``case_…`` inputs become ``seg_…`` like the dataset's masks; others get ``_seg``.

    Args:
        path: the input file; only its name is used.
        suffix: added before the extension, e.g. ``"_prob"`` for probability maps.

    Returns:
        The output's file name, always ending ``.nii.gz``: ``case_004_week_0_slice_3.nii`` →
        ``seg_004_week_0_slice_3.nii.gz``, ``scan.nii.gz`` → ``scan_seg.nii.gz``.
    """
    stem = path.name.split(".nii")[0]
    stem = "seg_" + stem[len("case_") :] if stem.startswith("case_") else stem + "_seg"
    return f"{stem}{suffix}.nii.gz"


def _check_targets(files: list[Path], out: Path, probabilities: bool, overwrite: bool) -> None:
    """Check every output path before anything is written: unique names, not inside a
    dataset's image or mask folders, and no existing file replaced unless ``overwrite``."""
    for folder in (out, *out.resolve().parents):
        if folder.name.startswith("keras_slices_"):
            raise DataError(
                f"{out}: inside the dataset folder {folder}; predictions there could replace "
                "or be mistaken for its images and masks. Choose an --out outside the dataset"
            )
    suffixes = ("", "_prob") if probabilities else ("",)
    sources: dict[Path, Path] = {}
    for path in files:
        for suffix in suffixes:
            target = out / output_name(path, suffix)
            if target in sources:
                raise DataError(
                    f"{sources[target]} and {path} would both be written to {target}; "
                    "predict them into separate --out folders"
                )
            sources[target] = path
    existing = [target for target in sources if target.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{out}: {len(existing)} output file(s) already exist (e.g. {existing[0].name}); "
            "pass --overwrite to replace them, or choose another --out"
        )


def predict_files(
    model: keras.Model,
    inputs: list[Path | str],
    out: Path | str,
    *,
    probabilities: bool = False,
    overwrite: bool = False,
    batch_size: int = 16,
    tta: bool = False,
    largest_component: bool = False,
) -> list[Path]:
    """Segment NIfTI slices and write one label file per input under ``out``.

    Each input is read, validated and brought to 256×128 exactly as the loader does;
    the predicted labels are cropped/padded back to the input's own shape (trailing
    axis included) and saved as uint8 with the input's affine and header. With
    ``probabilities`` a float32 ``…_prob.nii.gz`` holding the 6 class probabilities
    (last axis) is written beside each.

    Nothing is written until every output name has been checked (see :func:`_check_targets`);
    each file is written atomically. If an input turns out to be unreadable, the error
    says how many outputs were already written, and which.

    Args:
        model: a trained UNet, e.g. from :func:`unetlib.evaluation.load_model`.
        inputs: NIfTI files, or folders whose ``.nii``/``.nii.gz`` files are all predicted (a
            warning lists each other entry of such a folder).
        out: the folder for the outputs; created if missing. It must not lie inside a dataset's
            ``keras_slices_*`` folders.
        probabilities: also write the class probabilities as ``…_prob.nii.gz``.
        overwrite: replace existing output files (otherwise they stop the command).
        batch_size: slices per forward pass.
        tta: flip test-time augmentation (:func:`unetlib.evaluation.predict_batch`).
        largest_component: keep only the largest 3D piece of bladder and prostate per volume, the
            inputs grouped into volumes by the case-week and ``slice_N`` of their names
            (:func:`~unetlib.postprocess.keep_largest_component`); every input is then predicted
            before the first file is written.

    Returns:
        The label files written, in input order (the probability files are not listed).

    Raises:
        DataError: the model does not fit the kit (:func:`unetlib.evaluation.check_model`), an input
            is neither a NIfTI file nor a folder holding some, two inputs share an output name,
            ``out`` lies inside a dataset folder, outputs already exist without ``overwrite``, or an
            input cannot be read.
    """
    check_model(model)
    files = _inputs(inputs)
    out = Path(out)
    _check_targets(files, out, probabilities, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pending: list[tuple[Path, np.ndarray]] = []  # label maps predicted, not yet written
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        try:
            batch = np.stack([normalise(read_image(path)) for path in chunk])[..., None]
        except DataError as exc:
            done = f"{written[0].name} … {written[-1].name}" if written else "none"
            raise DataError(
                f"{exc}\nStopped there: {len(written)} of {len(files)} label file(s) were written to {out} "
                f"({done}); the inputs after it were not predicted"
            ) from None
        probs = predict_batch(model, batch, tta)
        for path, prob in zip(chunk, probs):
            if probabilities:
                _write_probabilities(out, path, prob)
            pending.append((path, np.argmax(prob, axis=-1).astype(np.uint8)))
        if not largest_component:  # else every slice of a volume must be predicted first
            written += [_write_labels(out, path, labels) for path, labels in pending]
            pending = []
    if pending:
        keys = [path.name.split(".nii")[0] for path, _ in pending]  # ..._week_W_slice_N: the volumes
        cleaned = keep_largest_component(np.stack([labels for _, labels in pending]), keys)
        written += [_write_labels(out, path, labels) for (path, _), labels in zip(pending, cleaned)]
    return written


def _write_labels(out: Path, path: Path, labels: np.ndarray) -> Path:
    """Write the label map predicted for input ``path``, brought back to its shape, with its affine
    and header; returns the file written."""
    source = nib.load(path)
    header = source.header.copy()
    header.set_data_dtype(np.uint8)
    target = out / output_name(path)
    with atomic_path(target) as partial:
        labels = fit_to_shape(labels, source.shape[:2]).reshape(source.shape)
        nib.save(nib.Nifti1Image(labels, source.affine, header), partial)
    return target


def _write_probabilities(out: Path, path: Path, prob: np.ndarray) -> None:
    """Write the class probabilities predicted for input ``path`` as ``…_prob.nii.gz`` (classes last)."""
    source = nib.load(path)
    maps = np.stack([fit_to_shape(prob[..., c], source.shape[:2]) for c in range(prob.shape[-1])], axis=-1)
    header = source.header.copy()
    header.set_data_dtype(np.float32)
    with atomic_path(out / output_name(path, "_prob")) as partial:
        nib.save(nib.Nifti1Image(maps.astype(np.float32), source.affine, header), partial)
