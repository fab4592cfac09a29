"""The synthetic phantom: real layout and quirks, determinism, split separation and hardness."""

from __future__ import annotations

import filecmp

import nibabel as nib
import numpy as np
import pytest

from unetlib.data import SPLITS, find_pairs, image_dir, load_split, mask_dir
from unetlib.labels import NUM_CLASSES, PROSTATE
from unetlib.phantom import ODD_CASE, ODD_WEEK, SIZES, generate_phantom


def test_layout_names_and_counts(tiny_phantom):
    for split in SPLITS:
        images = sorted(p.name for p in image_dir(tiny_phantom, split).iterdir())
        masks = sorted(p.name for p in mask_dir(tiny_phantom, split).iterdir())
        assert len(images) == len(masks) == SIZES["tiny"].count(split)
        assert all(n.startswith("case_") and n.endswith(".nii.gz") for n in images)
        assert [n.replace("seg_", "case_") for n in masks] == images


def test_files_look_like_the_real_dataset(tiny_phantom):
    pair = find_pairs(tiny_phantom, "train")[40]
    image, mask = nib.load(pair.image_path), nib.load(pair.mask_path)
    assert image.shape[:2] == (256, 128) or image.shape[:2] == (256, 144)
    assert np.issubdtype(image.get_data_dtype(), np.floating)
    assert np.issubdtype(mask.get_data_dtype(), np.floating)  # masks stored as floats
    values = np.unique(np.asanyarray(mask.dataobj))
    assert set(values) <= set(range(NUM_CLASSES)) and len(values) >= 4
    spacing = image.header.get_zooms()[:2]
    assert all(1.6 <= s <= 1.7 for s in spacing)
    np.testing.assert_allclose(image.affine, mask.affine)


def test_quirks_are_present(tiny_phantom):
    shapes = {}
    for split in SPLITS:
        for pair in find_pairs(tiny_phantom, split):
            shapes.setdefault(split, set()).add(nib.load(pair.image_path).shape)
            if (pair.case, pair.week) == (ODD_CASE, ODD_WEEK):
                assert nib.load(pair.image_path).shape == (256, 144) and split == "train"
    assert (256, 144) in shapes["train"]
    for split in SPLITS:  # a trailing singleton axis in every split
        assert (256, 128, 1) in shapes[split]


def test_splits_are_separated_by_case(tiny_phantom):
    cases = {split: {p.case for p in find_pairs(tiny_phantom, split)} for split in SPLITS}
    assert not cases["train"] & cases["validate"]
    assert not cases["train"] & cases["test"]
    assert not cases["validate"] & cases["test"]


def test_same_seed_same_bytes_whatever_the_workers(tiny_phantom, tmp_path):
    again = generate_phantom(tmp_path / "again", "tiny", seed=0, workers=1, progress=False)
    for split in SPLITS:
        for folder in (image_dir, mask_dir):
            names = sorted(p.name for p in folder(tiny_phantom, split).iterdir())
            match, mismatch, errors = filecmp.cmpfiles(folder(tiny_phantom, split), folder(again, split), names, shallow=False)
            assert not mismatch and not errors and len(match) == len(names)


def test_another_seed_gives_other_data(tiny_phantom, tmp_path):
    other = generate_phantom(tmp_path / "other", "tiny", seed=1, workers=2, progress=False)
    first, second = find_pairs(tiny_phantom, "train")[0], find_pairs(other, "train")[0]
    assert first.image_path.read_bytes() != second.image_path.read_bytes()


def test_refuses_to_overwrite_unless_asked(tiny_phantom):
    with pytest.raises(FileExistsError, match="already exists"):
        generate_phantom(tiny_phantom, "tiny")


def test_prostate_is_tiny_and_often_absent(tiny_phantom):
    labels = np.concatenate([load_split(tiny_phantom, s, progress=False).labels for s in SPLITS])
    fraction = np.mean(labels == PROSTATE)
    assert 0 < fraction < 0.02
    present = np.any(labels == PROSTATE, axis=(1, 2))
    assert 0.15 < present.mean() < 0.6  # many slices have none
    for label in range(NUM_CLASSES):
        assert np.any(labels == label)


def _best_threshold_band_dice(images: np.ndarray, target: np.ndarray, bins: int = 400) -> float:
    """Prostate Dice of the best rule 'lo <= intensity < hi', searched over all bin pairs."""
    edges = np.linspace(images.min(), images.max(), bins + 1)
    index = np.clip(np.searchsorted(edges, images, side="right") - 1, 0, bins - 1)
    total = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=bins))])
    hits = np.concatenate([[0], np.cumsum(np.bincount(index[target], minlength=bins))])
    lo, hi = np.triu_indices(bins + 1, 1)
    dice = 2 * (hits[hi] - hits[lo]) / ((total[hi] - total[lo]) + target.sum())
    return float(dice.max())


def test_a_single_threshold_band_cannot_find_the_prostate(tiny_phantom):
    split = load_split(tiny_phantom, "train", progress=False)
    images = split.images[..., 0].ravel()
    target = (split.labels == PROSTATE).ravel()
    best = _best_threshold_band_dice(images, target)
    assert best < 0.5, f"prostate is separable by intensity alone (Dice {best:.2f})"
    # The search itself works: a label that is separable by intensity scores high.
    separable = target + np.random.default_rng(0).normal(0, 0.1, target.shape)
    assert _best_threshold_band_dice(separable, target) > 0.95
