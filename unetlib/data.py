"""Find, read, validate, normalise and cache HipMRI slices.

The real dataset (and the phantom, which copies its layout) keeps images and masks in
parallel folders under one root::

    ROOT/keras_slices_train/case_004_week_0_slice_0.nii.gz
    ROOT/keras_slices_seg_train/seg_004_week_0_slice_0.nii.gz

An image and its mask share everything after the prefix (the *key*); they are paired by
that key, never by sort order. Every slice is brought to a canonical form: a float32 image
and a uint8 label map of shape ``SLICE_SHAPE`` (256×128); a whole decoded split keeps its
z-scored images as float16 (:data:`SPLIT_IMAGE_DTYPE`). Anything that cannot be brought
there safely raises :class:`DataError` naming the file and the problem; nothing is
silently skipped or zero-filled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from tqdm import tqdm  # text bars, also in notebooks: a saved notebook then shows the finished bar, not a widget's 0%

from unetlib.errors import DataError
from unetlib.files import remove_dead_leftovers, staged_folder
from unetlib.labels import NUM_CLASSES, SLICE_SHAPE
from unetlib.layout import (
    CACHE_FOLDER,
    PHANTOM_VERSION,
    SPLITS,
    has_layout,
    image_dir,
    is_nifti,
    mask_dir,
    phantom_marker,
    volume_key,
)

__all__ = [
    "PROJECT_ROOT",
    "DATA_DIR",
    "DEFAULT_PHANTOM_SIZE",
    "CACHE_VERSION",
    "SPLIT_IMAGE_DTYPE",
    "SlicePair",
    "SplitArrays",
    "scan_split",
    "find_pairs",
    "fit_to_shape",
    "read_image",
    "read_mask",
    "read_pair",
    "normalise",
    "cache_dir",
    "load_split",
    "resolve_data_root",
    "is_outdated_phantom",
    "SPLITS",
    "CACHE_FOLDER",
    "image_dir",
    "mask_dir",
    "is_nifti",
    "has_layout",
    "volume_key",
    "DataError",
]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
"""The repository's ``data/`` folder: real data dropped here is found automatically."""

DEFAULT_PHANTOM_SIZE = "small"
"""Size of the phantom generated on first use when no data is found."""

CACHE_VERSION = 3
"""Bump when the decoded form changes, so old caches are not reused."""

SPLIT_IMAGE_DTYPE = np.float16
"""Storage type of a decoded split's z-scored images. float16 holds about three significant
digits (steps of 0.001 near 1, 0.004 near 5 standard deviations) — far finer than MRI
noise — in half the memory of float32: the full-size train split takes 1.1 GiB instead of
1.75. Batches are cast to float32 on their way to the model. Raw (un-normalised) images stay
float32, where scanner values in the thousands would lose precision."""

_NAME = re.compile(r"^(?P<prefix>case|seg)_(?P<case>\d+)_week_(?P<week>\d+)_slice_(?P<slice>\d+)\.nii(?:\.gz)?$")


@dataclass(frozen=True)
class SlicePair:
    """One image slice and its mask, paired by their shared key.

    Attributes:
        key: the file name after the prefix, without extension, e.g. ``004_week_0_slice_12``.
        image_path: the image file, ``keras_slices_SPLIT/case_KEY.nii.gz`` (or ``.nii``).
        mask_path: the mask file, ``keras_slices_seg_SPLIT/seg_KEY.nii.gz`` (or ``.nii``).
        case: the case number in the name (``004`` → 4).
        week: the week number in the name.
        slice: the slice number in the name (its position in the case-week's volume).
    """

    key: str
    image_path: Path
    mask_path: Path
    case: int
    week: int
    slice: int


class SplitArrays(NamedTuple):
    """A decoded split: ``images[N,256,128,1]`` (float16 z-scores, or float32 raw values),
    ``labels[N,256,128]`` uint8, and the slice keys.

    Attributes:
        images: array ``(N, 256, 128, 1)``: per-slice z-scores as float16, or raw intensities as
            float32 when decoded with ``normalised=False``.
        labels: uint8 array ``(N, 256, 128)`` of class indices 0..5.
        keys: the N slice keys, ordered by case, week and slice like the arrays.
    """

    images: np.ndarray
    labels: np.ndarray
    keys: list[str]


# --------------------------------------------------------------------------- pairing


def _index_folder(
    folder: Path, prefix: str, problems: list[str], ignored: list[str] | None = None
) -> dict[str, tuple[Path, re.Match]]:
    """Map key -> (path, name match) for the NIfTI files of one folder, noting bad names.

    Every other entry is accounted for. One with a NIfTI name that is no readable file (a folder,
    a broken link, a file without read permission) is a problem. Anything else (README files,
    thumbnails, sub-folders) is not part of the dataset and goes to ``ignored`` with the reason;
    hidden entries (``.DS_Store``) share one message per folder.
    """
    index: dict[str, tuple[Path, re.Match]] = {}
    ignored = [] if ignored is None else ignored
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        problems.append(f"{folder}: cannot list the folder ({exc.strerror or exc})")
        return index
    hidden: list[str] = []
    for path in entries:
        try:
            path.stat()  # follows links
            unreadable = None if os.access(path, os.R_OK) else "no permission to read it"
        except FileNotFoundError:  # a link whose target is gone, or an entry removed meanwhile
            unreadable = (
                f"a broken link (to {os.readlink(path)}, which does not exist)"
                if path.is_symlink()
                else "removed while the folder was read"
            )
        except OSError as exc:  # no permission to look at it, a loop of links
            unreadable = f"cannot be read ({exc.strerror or exc})"
        if not is_nifti(path):
            if path.name.startswith(".") and unreadable is None:
                hidden.append(path.name)
            else:
                kind = "a folder" if path.is_dir() else "not a NIfTI file"
                ignored.append(f"{path}: {unreadable or kind}; ignored")
            continue
        if unreadable or not path.is_file():
            kind = "a folder, not a NIfTI file" if path.is_dir() else "not a regular file"
            problems.append(f"{path}: {unreadable or kind}")
            continue
        match = _NAME.match(path.name)
        if match is None or match["prefix"] != prefix:
            problems.append(f"{path}: name does not follow {prefix}_XXX_week_W_slice_S.nii.gz")
            continue
        key = path.name[len(prefix) + 1 :].split(".nii")[0]
        if key in index:
            problems.append(f"{path}: duplicate of {index[key][0].name} (same key {key})")
            continue
        index[key] = (path, match)
    if hidden:
        shown = ", ".join(hidden[:5]) + (", …" if len(hidden) > 5 else "")
        ignored.append(f"{folder}: {len(hidden)} hidden item{'s' if len(hidden) > 1 else ''} ({shown}); ignored")
    return index


def scan_split(root: Path | str, split: str, *, ignored: list[str] | None = None) -> tuple[list[SlicePair], list[str]]:
    """Pair a split's images with masks; return the pairs and every pairing problem found.

    Most code wants :func:`find_pairs`, which raises on problems; the dataset checker uses
    this to list all of them at once, and to list what it ignored. Every entry of the two
    folders is either paired, a problem, or ignored: entries that are not NIfTI files (a README,
    thumbnails, sub-folders, ``.DS_Store``) are not part of the dataset and do not stop training.

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.
        ignored: a list to append one message to per entry that is not part of the dataset, naming
            it and why, e.g. ``ROOT/keras_slices_train/notes.txt: not a NIfTI file; ignored`` (hidden
            entries: one message per folder); None when the caller does not need them.

    Returns:
        ``(pairs, problems)``: the pairs ordered by case, week and slice, and one message per
        missing or unreadable folder, badly named or duplicate file, NIfTI name that is no readable
        file (a folder, a broken link, no read permission), image without mask or mask without
        image. A missing folder gives no pairs.

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    images_folder, masks_folder = image_dir(root, split), mask_dir(root, split)
    problems: list[str] = []
    for folder in (images_folder, masks_folder):
        if not folder.is_dir():
            problems.append(f"{folder}: {'not a folder' if folder.exists() else 'folder not found'}")
    if problems:
        return [], problems
    images = _index_folder(images_folder, "case", problems, ignored)
    masks = _index_folder(masks_folder, "seg", problems, ignored)
    for key in sorted(images.keys() - masks.keys()):
        problems.append(f"{images[key][0]}: no mask (expected {masks_folder / ('seg_' + key + '.nii.gz')})")
    for key in sorted(masks.keys() - images.keys()):
        problems.append(f"{masks[key][0]}: no image (expected {images_folder / ('case_' + key + '.nii.gz')})")
    pairs = []
    for key in images.keys() & masks.keys():
        path, match = images[key]
        pairs.append(SlicePair(key, path, masks[key][0], int(match["case"]), int(match["week"]), int(match["slice"])))
    pairs.sort(key=lambda p: (p.case, p.week, p.slice))
    return pairs, problems


def find_pairs(root: Path | str, split: str) -> list[SlicePair]:
    """Every image of ``split`` paired with its mask, ordered by case, week and slice.

    Raises :class:`DataError` listing each image without a mask, mask without an image,
    badly named NIfTI file or missing folder. Non-NIfTI files are ignored.

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.

    Raises:
        DataError: any pairing problem (see :func:`scan_split`), or no NIfTI slices at all.
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    pairs, problems = scan_split(root, split)
    if problems:
        raise DataError(_summarise(problems))
    if not pairs:
        raise DataError(f"{image_dir(root, split)}: no NIfTI slices found")
    return pairs


def _summarise(problems: list[str], limit: int = 10) -> str:
    shown = problems[:limit]
    more = f"\n... and {len(problems) - limit} more problems" if len(problems) > limit else ""
    return "\n".join(shown) + more


# --------------------------------------------------------------------------- reading


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.asanyarray(nib.load(path).dataobj)
    except Exception as exc:  # nibabel, gzip and zlib each raise their own kinds
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc


def _squeeze_to_slice(data: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton axes (256×128×1 → 256×128); anything else must already be 2D."""
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise DataError(f"{path}: expected a 2D slice, got an array of shape {data.shape}")
    return data


def fit_to_shape(array: np.ndarray, shape: tuple[int, int] = SLICE_SHAPE) -> np.ndarray:
    """Centre-crop and/or zero-pad a 2D array to ``shape`` (no interpolation, labels stay exact).

    Args:
        array: a 2D array of any dtype.
        shape: the target ``(height, width)``; by default ``SLICE_SHAPE`` (256, 128).

    Returns:
        A new array of ``shape`` with ``array``'s dtype.
    """
    out = np.zeros(shape, dtype=array.dtype)
    src, dst = [], []
    for have, want in zip(array.shape, shape):
        if have >= want:  # crop: keep the centre
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:  # pad: place in the centre
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = array[tuple(src)]
    return out


def read_image(path: Path | str) -> np.ndarray:
    """Read an image slice as float32 of shape ``SLICE_SHAPE``; raw intensities, not normalised.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file holding a 2D slice (trailing axes of size 1 are dropped).

    Raises:
        DataError: the file cannot be read, is not 2D, or holds non-numeric, complex or non-finite
            values, or values beyond the float32 range.
    """
    return _read_image(Path(path))[0]


def read_mask(path: Path | str) -> np.ndarray:
    """Read a mask slice as a uint8 label map (0..5) of shape ``SLICE_SHAPE``.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file holding a 2D slice of whole numbers 0..5, stored as
            integers or floats (trailing axes of size 1 are dropped).

    Raises:
        DataError: the file cannot be read, is not 2D, or holds non-numeric, non-finite or
            non-integer values, or labels outside 0..5.
    """
    return _read_mask(Path(path))[0]


def _read_image(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    data = _squeeze_to_slice(_load_array(path), path)
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: image has non-numeric type {data.dtype}")
    if np.iscomplexobj(data):
        raise DataError(
            f"{path}: image holds complex values ({data.dtype}); expected real intensities "
            "(save the magnitude, e.g. np.abs)"
        )
    bad = np.count_nonzero(~np.isfinite(data))
    if bad:
        raise DataError(f"{path}: {bad} non-finite intensity values (NaN or inf)")
    largest = float(np.max(np.abs(data))) if data.size else 0.0
    if largest > float(np.finfo(np.float32).max):
        raise DataError(
            f"{path}: intensities up to {largest:.3g} exceed the float32 range (±3.4e38) the network computes in"
        )
    return fit_to_shape(data.astype(np.float32, copy=False)), data.shape


def _read_mask(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    data = _squeeze_to_slice(_load_array(path), path)
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: mask has non-numeric type {data.dtype}")
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: mask holds non-finite values (NaN or inf)")
    fractional = data[data != np.round(data)]
    if fractional.size:
        raise DataError(
            f"{path}: mask holds non-integer values (e.g. {float(fractional.flat[0])!r}); "
            f"labels must be whole numbers 0..{NUM_CLASSES - 1}"
        )
    outside = np.unique(data[(data < 0) | (data >= NUM_CLASSES)])
    if outside.size:
        values = ", ".join(f"{v:g}" for v in outside[:5])
        raise DataError(f"{path}: label {values} outside 0..{NUM_CLASSES - 1}")
    return fit_to_shape(data.astype(np.uint8)), data.shape


def read_pair(pair: SlicePair) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read and validate one pair; returns ``(image, labels, adjusted)``.

    ``adjusted`` is True when the slice was centre-cropped/padded to ``SLICE_SHAPE``.

    Args:
        pair: the image and mask files, as :func:`find_pairs` returns them.

    Returns:
        ``image``: float32 ``(256, 128)`` raw intensities; ``labels``: uint8 ``(256, 128)``
        class indices 0..5; ``adjusted``: bool.

    Raises:
        DataError: either file is unusable (see :func:`read_image`, :func:`read_mask`), or the
            mask's shape on disk differs from the image's.
    """
    image, image_shape = _read_image(pair.image_path)
    labels, mask_shape = _read_mask(pair.mask_path)
    if image_shape != mask_shape:
        raise DataError(
            f"{pair.mask_path}: shape {mask_shape} differs from its image {pair.image_path.name} {image_shape}"
        )
    return image, labels, image_shape != SLICE_SHAPE


def normalise(image: np.ndarray) -> np.ndarray:
    """Per-slice z-score (the course's convention): zero mean, unit variance.

    A constant slice has no spread to divide by; it becomes all zeros instead of NaN.

    Args:
        image: raw intensities of one slice, any shape and numeric dtype.

    Returns:
        A float32 array of the same shape (computed in float64).
    """
    image = np.asarray(image, dtype=np.float64)
    std = image.std()
    centred = image - image.mean()
    return (centred / std if std > 1e-8 else centred).astype(np.float32)


# --------------------------------------------------------------------------- whole splits + cache


def cache_dir(root: Path | str) -> Path:
    """Where decoded splits are cached: ``UNETLIB_CACHE``, else ``ROOT/.unetlib-cache``.

    A read-only data root falls back to ``~/.cache/unetlib/<hash of root>``.

    Args:
        root: the data root whose splits are cached.
    """
    if os.environ.get("UNETLIB_CACHE"):
        return Path(os.environ["UNETLIB_CACHE"])
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / CACHE_FOLDER
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "unetlib" / digest


def _fingerprint(root: Path | str, pairs: Iterable[SlicePair], normalised: bool) -> str:
    """Changes whenever the data root or a file of the split changes: a file added, removed,
    replaced (inode) or rewritten in place (size, modification or change time)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} normalised={normalised} root={Path(root).resolve()}".encode())
    for pair in pairs:
        for path in (pair.image_path, pair.mask_path):
            stat = path.stat()
            digest.update(
                f"\n{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}\t{stat.st_ino}".encode()
            )
    return digest.hexdigest()[:20]


def _read_cache(cached: Path, count: int) -> SplitArrays | None:
    """A cached split, or None when there is none. A cache that cannot be read or does not
    match the split is reported in one line and removed, so the caller rebuilds it."""
    if not (cached / "keys.json").is_file():
        return None
    try:
        split = SplitArrays(
            np.load(cached / "images.npy"),
            np.load(cached / "labels.npy"),
            json.loads((cached / "keys.json").read_text())["keys"],
        )
        if not len(split.images) == len(split.labels) == len(split.keys) == count:
            raise ValueError(f"holds {len(split.keys)} slices, the split has {count}")
        return split
    except (OSError, ValueError, KeyError, EOFError) as exc:
        logger.warning("decode cache %s is unreadable (%s); rebuilding it", cached, str(exc).splitlines()[0][:120])
        shutil.rmtree(cached, ignore_errors=True)
        return None


def load_split(
    root: Path | str,
    split: str,
    *,
    normalised: bool = True,
    use_cache: bool = True,
    progress: bool = True,
) -> SplitArrays:
    """Decode a whole split into ``images[N,256,128,1]`` and ``labels[N,256,128]`` uint8.

    The first call reads every NIfTI file (with a progress bar) into preallocated arrays, so
    memory stays near the size of the arrays themselves; the result is cached on disk and
    later calls load it in seconds. The cache is keyed on every file's name, size and
    modification time, so any change to the data is picked up. Images are z-scored per
    slice and stored as :data:`SPLIT_IMAGE_DTYPE` (float16), unless ``normalised=False``
    (raw values, float32).

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.
        normalised: z-score each slice (:func:`normalise`) and store float16; False keeps raw
            float32 intensities. The two forms are cached separately.
        use_cache: read and write the on-disk cache (:func:`cache_dir`); False always decodes and
            writes nothing.
        progress: show a progress bar while decoding.

    Raises:
        DataError: the split's files cannot be paired (:func:`find_pairs`) or a slice cannot be
            read (:func:`read_pair`).
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    pairs = find_pairs(root, split)
    cached = cache_dir(root) / f"{split}-{_fingerprint(root, pairs, normalised)}"
    if use_cache and (found := _read_cache(cached, len(pairs))) is not None:
        return found

    images = np.empty((len(pairs), *SLICE_SHAPE, 1), dtype=SPLIT_IMAGE_DTYPE if normalised else np.float32)
    labels = np.empty((len(pairs), *SLICE_SHAPE), dtype=np.uint8)
    adjusted = 0
    # zlib releases the GIL while inflating, so a few threads overlap decompression.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        decoded = pool.map(read_pair, pairs)
        for index, (image, label_map, was_adjusted) in enumerate(
            tqdm(decoded, total=len(pairs), desc=f"decode {split}", unit="slice", disable=not progress)
        ):
            images[index, ..., 0] = normalise(image) if normalised else image
            labels[index] = label_map
            adjusted += was_adjusted
    if adjusted:
        logger.info("%s: %d slices centre-cropped/padded to %dx%d", split, adjusted, *SLICE_SHAPE)
    keys = [pair.key for pair in pairs]
    if use_cache:
        _write_cache(cached, images, labels, {"keys": keys, "adjusted": adjusted})
    return SplitArrays(images, labels, keys)


def _write_cache(target: Path, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    """Write a split's cache atomically (:func:`~unetlib.files.staged_folder`) and remove the
    split's stale caches and what killed writers left in the cache folder."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        split = target.name.rsplit("-", 1)[0]
        for stale in parent.glob(f"{split}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        remove_dead_leftovers(parent)
        with staged_folder(target) as staging:
            np.save(staging / "images.npy", images)
            np.save(staging / "labels.npy", labels)
            (staging / "keys.json").write_text(json.dumps(meta))
    except FileExistsError:
        pass  # another process wrote the same entry first: same files, keep theirs
    except OSError as exc:  # a full or read-only disk only costs speed next time
        logger.warning("could not cache decoded split in %s: %s", parent, exc)


# --------------------------------------------------------------------------- where the data is


def resolve_data_root(explicit: Path | str | None = None, *, generate: bool = True) -> Path:
    """Pick the data root the kit works on, the same way for CLI and notebooks.

    Order: ``explicit`` argument → ``UNETLIB_DATA`` environment variable → real data under
    ``data/`` (the folder itself or one folder below it) → ``data/phantom/``, generated on
    first use (small size, seed 0) when ``generate`` is true, and rewritten (same size and seed)
    when an older phantom generator wrote it.

    Args:
        explicit: a data root chosen by the caller (e.g. ``--data``); None to look further.
        generate: generate the phantom when no data is found; if False, ``data/phantom/`` is
            returned even when it does not exist.

    Returns:
        The data root; an ``explicit`` or ``UNETLIB_DATA`` one as given, with ``~`` expanded.

    Raises:
        DataError: ``explicit`` or ``UNETLIB_DATA`` names a folder without the HipMRI layout.
    """
    for candidate, origin in ((explicit, "argument"), (os.environ.get("UNETLIB_DATA") or None, "UNETLIB_DATA")):
        if candidate is not None:
            path = Path(candidate).expanduser()
            if not has_layout(path):
                raise DataError(
                    f"{path} (from {origin}): not a HipMRI data root; expected folders "
                    "keras_slices_{train,validate,test} and keras_slices_seg_{train,validate,test}"
                )
            return path
    if has_layout(DATA_DIR):
        return DATA_DIR
    if DATA_DIR.is_dir():
        for child in sorted(DATA_DIR.iterdir()):
            # Hidden folders are never data: e.g. a phantom writer's staging folder (.phantom.PID.partial).
            if child.is_dir() and child.name != "phantom" and not child.name.startswith(".") and has_layout(child):
                return child
    phantom_root = DATA_DIR / "phantom"
    if generate and not has_layout(phantom_root):
        from unetlib.phantom import generate_phantom  # only when needed: reading data never loads the generator

        logger.warning("no real data found; generating the synthetic phantom in %s", phantom_root)
        generate_phantom(phantom_root, DEFAULT_PHANTOM_SIZE)
    elif generate and is_outdated_phantom(phantom_root):
        from unetlib.phantom import generate_phantom

        marker = phantom_marker(phantom_root)
        logger.warning(
            "%s was written by phantom version %s; rewriting it with version %d",
            phantom_root,
            marker.get("version", "1 or 2"),
            PHANTOM_VERSION,
        )
        generate_phantom(phantom_root, marker.get("size", DEFAULT_PHANTOM_SIZE), marker.get("seed", 0), overwrite=True)
    return phantom_root


def is_outdated_phantom(root: Path | str) -> bool:
    """True when ``root`` holds a phantom that an older (or newer) phantom generator wrote: its
    marker says the kit made it, with another version or none. Real data never is.

    Args:
        root: the data root to look in.
    """
    marker = phantom_marker(root)
    return marker is not None and marker.get("version") != PHANTOM_VERSION
