"""The HipMRI folder layout: which folders a data root holds and how its files are named.

A data root holds, per split, ``keras_slices_SPLIT/case_*.nii.gz`` images and
``keras_slices_seg_SPLIT/seg_*.nii.gz`` masks; an image and its mask share the name after the
prefix, the slice *key* ``CASE_week_WEEK_slice_SLICE``. Both the loader (:mod:`unetlib.data`)
and the phantom writer (:mod:`unetlib.phantom`) follow this module, so neither imports the
other's internals, and code that only needs names (figures, reports) need not load either.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "SPLITS",
    "CACHE_FOLDER",
    "PHANTOM_MARKER",
    "PHANTOM_VERSION",
    "image_dir",
    "mask_dir",
    "is_nifti",
    "has_layout",
    "phantom_marker",
    "slice_number",
    "volume_key",
]

SPLITS: tuple[str, ...] = ("train", "validate", "test")

CACHE_FOLDER = ".unetlib-cache"
"""The decoded-split cache's folder inside a writable data root (see :func:`unetlib.data.cache_dir`)."""


PHANTOM_MARKER = ".unetlib-phantom.json"
"""Written into every phantom root: its size, seed and generator version, and a sign that the kit made it."""
PHANTOM_VERSION = 3
"""The phantom generator's version; a phantom of another version is rewritten (see :func:`phantom_marker`).
3: zonal T2 prostate anatomy, the field of view placed on the pelvis, hips in their sockets."""


def phantom_marker(root: Path | str) -> dict | None:
    """What the phantom marker in ``root`` records (``size``, ``seed``, ``version``; phantoms
    written before versions were recorded have none), or None where there is no readable marker.

    Args:
        root: the data root to look in.
    """
    try:
        marker = json.loads((Path(root) / PHANTOM_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def image_dir(root: Path | str, split: str) -> Path:
    """The folder holding a split's image slices.

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.

    Returns:
        ``ROOT/keras_slices_SPLIT`` (whether or not it exists).

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    return Path(root) / f"keras_slices_{_check_split(split)}"


def mask_dir(root: Path | str, split: str) -> Path:
    """The folder holding a split's mask slices.

    Args:
        root: the data root.
        split: ``"train"``, ``"validate"`` or ``"test"``.

    Returns:
        ``ROOT/keras_slices_seg_SPLIT`` (whether or not it exists).

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`.
    """
    return Path(root) / f"keras_slices_seg_{_check_split(split)}"


def is_nifti(path: Path | str) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names.

    Args:
        path: a file name or path; only its name is looked at, the file need not exist.
    """
    name = Path(path).name
    return name.endswith(".nii") or name.endswith(".nii.gz")


def has_layout(root: Path | str) -> bool:
    """True when ``root`` holds the image and mask folders of at least one split.

    Args:
        root: the folder to look in.
    """
    return any(image_dir(root, s).is_dir() and mask_dir(root, s).is_dir() for s in SPLITS)


def slice_number(key: str) -> int | None:
    """The ``N`` of a slice key or file name ending in ``slice_N``: ``004_week_0_slice_12`` → 12
    (None when it has none).

    Args:
        key: a slice key or a file name without its extension.
    """
    found = re.search(r"(?:^|_)slice_(\d+)$", key)
    return int(found.group(1)) if found else None


def volume_key(key: str) -> str:
    """The case-week (volume) a slice key belongs to: ``004_week_0_slice_12`` → ``004_week_0``.

    Args:
        key: a slice key (:attr:`unetlib.data.SlicePair.key`).
    """
    return key.split("_slice_")[0]
