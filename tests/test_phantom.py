"""The synthetic phantom: real layout, geometry and quirks, determinism, split separation,
3D continuity, human-like masks, real-data statistics and hardness."""

from __future__ import annotations

from collections import defaultdict

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from unetlib.data import SPLITS, find_pairs, image_dir, load_split, mask_dir, read_image, read_mask
from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE
from unetlib.phantom import ODD_CASE, ODD_HEIGHT, ODD_WEEK, SIZES, SLICES_PER_VOLUME, generate_phantom, render_case_week
from unetlib.phantom.anatomy import HIP_JOINT_MM, TISSUES, Grid, Pelvis
from unetlib.phantom.dataset import plan_case_weeks
from unetlib.phantom.statistics import (
    REAL_SLICE_PRESENCE,
    REAL_VOXEL_FRACTIONS,
    best_intensity_band_dice,
    gland_position,
    slice_presence,
    tissue_brightness,
    volume_label_fractions,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_layout_names_and_counts(tiny_phantom):
    for split in SPLITS:
        images = sorted(p.name for p in image_dir(tiny_phantom, split).iterdir())
        masks = sorted(p.name for p in mask_dir(tiny_phantom, split).iterdir())
        assert len(images) == len(masks) == SIZES["tiny"].count(split)
        assert all(n.startswith("case_") and n.endswith(".nii.gz") for n in images)
        assert [n.replace("seg_", "case_") for n in masks] == images


def test_every_case_week_is_60_consecutive_slices(tiny_phantom):
    for split in SPLITS:
        slices = defaultdict(list)
        for pair in find_pairs(tiny_phantom, split):
            slices[pair.case, pair.week].append(pair.slice)
        assert slices and all(sorted(s) == list(range(SLICES_PER_VOLUME)) for s in slices.values())


def test_files_carry_the_real_geometry(tiny_phantom):
    pairs = [p for p in find_pairs(tiny_phantom, "train") if (p.case, p.week) == (ODD_CASE, 0)]
    first, second = (nib.load(p.image_path) for p in pairs[:2])
    assert np.issubdtype(first.get_data_dtype(), np.floating)
    assert np.issubdtype(nib.load(pairs[0].mask_path).get_data_dtype(), np.floating)  # masks stored as floats
    # A coronal cut of an L, P, S volume: the slice's axes are L and S, its third axis P.
    assert nib.aff2axcodes(first.affine) == ("L", "S", "P")
    in_plane, superior = first.header.get_zooms()[:2]
    assert 1.41 <= in_plane <= 1.88 and superior == pytest.approx(1.56)
    # The next slice sits one voxel further posterior (RAS y decreases), nothing else moves.
    step = second.affine[:3, 3] - first.affine[:3, 3]
    np.testing.assert_allclose(step, first.affine[:3, 2], atol=1e-4)
    assert step[1] == pytest.approx(-in_plane, abs=1e-4)
    for pair in pairs:
        np.testing.assert_allclose(nib.load(pair.image_path).affine, nib.load(pair.mask_path).affine)


def test_quirks_are_present(tiny_phantom):
    shapes = defaultdict(set)
    for split in SPLITS:
        for pair in find_pairs(tiny_phantom, split):
            shape = nib.load(pair.image_path).shape
            shapes[split].add(shape)
            if (pair.case, pair.week) == (ODD_CASE, ODD_WEEK):
                assert shape == (256, ODD_HEIGHT) and split == "train"
    assert (256, ODD_HEIGHT) in shapes["train"]
    for split in SPLITS:  # a trailing singleton axis in every split
        assert (256, 128, 1) in shapes[split]


def test_splits_are_separated_by_case(tiny_phantom):
    cases = {split: {p.case for p in find_pairs(tiny_phantom, split)} for split in SPLITS}
    assert not cases["train"] & cases["validate"]
    assert not cases["train"] & cases["test"]
    assert not cases["validate"] & cases["test"]


def test_another_seed_gives_other_data():
    first, second = render_case_week(0, 19, 0), render_case_week(1, 19, 0)
    assert first.images.shape == second.images.shape and not np.array_equal(first.images, second.images)


def test_refuses_to_overwrite_unless_asked(tiny_phantom):
    with pytest.raises(FileExistsError, match="already exists"):
        generate_phantom(tiny_phantom, "tiny")


def test_consecutive_slices_are_continuous(tiny_phantom):
    """Neighbouring slices are cuts 1.68 mm apart through one 3D body: nearly the same picture,
    and much more alike than slices 15 apart; organs grow and shrink gradually."""
    pairs = [p for p in find_pairs(tiny_phantom, "test")]
    images = np.stack([read_image(p.image_path) for p in pairs])
    masks = np.stack([read_mask(p.mask_path) for p in pairs])

    def correlation(gap: int) -> float:
        return float(
            np.mean([np.corrcoef(images[i].ravel(), images[i + gap].ravel())[0, 1] for i in range(len(images) - gap)])
        )

    assert correlation(1) > 0.85
    assert correlation(1) > correlation(15) + 0.1
    areas = np.count_nonzero(masks == PROSTATE, axis=(1, 2))
    present = np.flatnonzero(areas)
    assert np.all(np.diff(present) == 1), "the prostate appears in one run of consecutive slices"
    body_overlap = [_dice(masks[i] > 0, masks[i + 1] > 0) for i in range(len(masks) - 1)]
    assert min(body_overlap) > 0.95


@pytest.fixture(scope="module")
def four_case_weeks():
    """Four case-weeks of seed 0 rendered in memory, with their tissue maps and true labels."""
    return [render_case_week(0, case, week) for case, week in ((3, 0), (8, 1), (21, 0), (30, 2))]


def test_masks_agree_with_the_true_shapes_like_a_second_observer(four_case_weeks):
    """The stored masks are a rater's: close to the true organs, never identical to them."""
    inside_mask = inside_truth = both = 0
    for slices in four_case_weeks:
        mask, truth = slices.masks == PROSTATE, slices.truth == PROSTATE
        both += np.count_nonzero(mask & truth)
        inside_mask += np.count_nonzero(mask)
        inside_truth += np.count_nonzero(truth)
        assert _dice(slices.masks == LABELS.index("body"), slices.truth == LABELS.index("body")) > 0.97
    agreement = 2 * both / (inside_mask + inside_truth)
    assert 0.8 <= agreement <= 0.95


def test_t2_contrast_follows_the_literature(four_case_weeks):
    """Urine brightest; the peripheral zone at most about as bright as fat, never darker than the
    transition zone, clearly brighter in most men (``benchmarks/phantom_report.py`` measures the
    ratio over a whole phantom); the capsule a dark line against the peripheral zone and the fat
    around it, the stroma in front dark, the venous plexus bright."""
    ratios = []
    for slices in four_case_weeks:
        t = tissue_brightness(slices)
        assert t["urine"] == 1.0 and max(t.values()) == 1.0
        assert 1.15 * t["fat"] > t["peripheral_zone"] > t["muscle"]
        assert t["transition_zone"] > t["muscle"] and t["marrow"] > t["muscle"] > t["cortex"]
        assert t["capsule"] < min(t["fat"], t["peripheral_zone"]) and t["stroma"] < t["transition_zone"]
        assert t["venous_plexus"] > max(t["transition_zone"], t["muscle"]) and t["air"] < 0.1
        ratios.append(t["peripheral_zone"] / t["transition_zone"])
    assert all(1.0 <= ratio <= 2.6 for ratio in ratios) and max(ratios) > 1.6, ratios


def test_the_gland_is_where_a_pelvis_field_of_view_puts_it():
    """The field of view is placed on the pelvis, not on the gland: the gland's centre moves by
    about 10 mm (SD) per axis between patients and by a few mm between a patient's weeks."""
    plan = [(case, week) for _, case, week, _ in plan_case_weeks(SIZES["full"], 0)]
    positions = np.array([gland_position(0, case, week) for case, week in plan])
    assert np.all((positions.std(axis=0) > 6) & (positions.std(axis=0) < 13)), positions.std(axis=0)
    by_case = defaultdict(list)
    for (case, _), position in zip(plan, positions):
        by_case[case].append(position)
    within = np.concatenate([np.asarray(p) - np.mean(p, axis=0) for p in by_case.values() if len(p) > 1])
    assert np.all(within.std(axis=0) < 5), within.std(axis=0)


def test_each_femoral_head_sits_in_its_socket():
    """Straight up from a femoral head's centre: the head's marrow, cortex, the joint's cartilage,
    then the bone of the acetabulum's roof."""
    pelvis = Pelvis(0, 3, 0)
    for (x, y, z), radius, _ in pelvis.hip_joints():
        line = Grid(np.array([x]), np.array([y]), z + np.arange(0.0, radius + 20, 0.25))
        tissue = pelvis.render(line).tissue[0, 0]
        names = [TISSUES[t] for t in tissue]
        assert names[0] == "marrow"
        joint = [i for i, name in enumerate(names) if name == "cartilage"]
        assert joint and all(name in ("marrow", "cortex") for name in names[: joint[0]])
        assert radius - 0.5 <= joint[0] * 0.25 <= radius + 0.5 and len(joint) * 0.25 <= HIP_JOINT_MM + 0.5
        assert "cortex" in names[joint[-1] + 1 :] and "marrow" in names[joint[-1] + 1 :]


def test_image_and_mask_are_aligned(tiny_phantom):
    """Urine is the brightest tissue: the core of the bladder mask (its wall and the rater's
    wobble eroded away) sits on it, and the same core moved 6 pixels in any direction of the
    slice covers darker tissue."""
    split = load_split(tiny_phantom, "validate", progress=False)
    images, labels = split.images[..., 0].astype(np.float32), split.labels
    core = np.stack([ndimage.binary_erosion(m == LABELS.index("bladder"), iterations=3) for m in labels])
    assert images[core].mean() > images[labels == LABELS.index("body")].mean() + 0.5
    for shift in ((6, 0), (-6, 0), (0, 6), (0, -6)):
        assert images[core].mean() > images[np.roll(core, shift, axis=(1, 2))].mean() + 0.1, shift


def test_slice_presence_is_close_to_the_real_test_split(tiny_phantom):
    labels = np.concatenate([load_split(tiny_phantom, s, progress=False).labels for s in SPLITS])
    presence = slice_presence(labels)
    assert presence[LABELS.index("body")] == presence[LABELS.index("bone")] == 1.0
    for name, real in REAL_SLICE_PRESENCE.items():
        assert abs(presence[LABELS.index(name)] - real) < 0.15, name


def test_volume_fractions_are_close_to_the_real_volumes():
    fractions = np.mean([volume_label_fractions(0, case, 0, stride=4) for case in (3, 8, 21)], axis=0)
    for label, name in enumerate(LABELS):
        real = REAL_VOXEL_FRACTIONS[name]
        assert real / 1.6 < fractions[label] < real * 1.6, f"{name}: {fractions[label]:.4f} vs real {real:.4f}"


def test_prostate_is_tiny_and_often_absent(tiny_phantom):
    labels = np.concatenate([load_split(tiny_phantom, s, progress=False).labels for s in SPLITS])
    assert 0 < np.mean(labels == PROSTATE) < 0.02
    assert 0.2 < np.any(labels == PROSTATE, axis=(1, 2)).mean() < 0.6  # many slices have none
    for label in range(NUM_CLASSES):
        assert np.any(labels == label)


def test_a_single_threshold_band_cannot_find_the_prostate(tiny_phantom):
    split = load_split(tiny_phantom, "train", progress=False)
    best = best_intensity_band_dice(split.images, split.labels[..., None] == PROSTATE)
    assert best < 0.2, f"prostate is separable by intensity alone (Dice {best:.2f})"
    # The search itself works: a label that is separable by intensity scores high.
    target = split.labels == PROSTATE
    separable = target + np.random.default_rng(0).normal(0, 0.1, target.shape)
    assert best_intensity_band_dice(separable, target) > 0.95
