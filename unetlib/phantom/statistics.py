"""How the phantom's labels compare with the real HipMRI data's published statistics.

Two views, as the real data was described: per-class *slice presence* (how many 2D slices
contain a class at all: what a learner sees when browsing) and *voxel fractions of the 3D
volumes* (how much of a whole 256 × 256 × 128 volume each class covers).
"""

from __future__ import annotations

import numpy as np

from unetlib.labels import LABELS, NUM_CLASSES
from unetlib.phantom.anatomy import TISSUES, Pelvis
from unetlib.phantom.dataset import VOLUME_SIDE, Acquisition, CaseWeekSlices

REAL_SLICE_PRESENCE: dict[str, float] = {"bladder": 401 / 540, "rectum": 220 / 540, "prostate": 195 / 540}
"""Share of the real test split's 540 slices that contain each organ."""

REAL_VOXEL_FRACTIONS: dict[str, float] = {
    "background": 0.604,
    "body": 0.355,
    "bone": 0.034,
    "bladder": 0.0057,
    "rectum": 0.0014,
    "prostate": 0.0010,
}
"""Share of all voxels of the real 3D volumes that each class covers."""


def slice_presence(labels: np.ndarray) -> np.ndarray:
    """Per class, the share of slices ``labels[N, H, W]`` that contain it."""
    present = np.zeros(NUM_CLASSES)
    for label_map in labels:  # slice by slice: no split-sized temporary
        present[np.unique(label_map)] += 1
    return present / len(labels)


def voxel_fractions(labels: np.ndarray) -> np.ndarray:
    """Per class, the share of all voxels of ``labels`` it covers."""
    return np.bincount(labels.ravel(), minlength=NUM_CLASSES) / labels.size


def volume_label_fractions(seed: int, case: int, week: int, stride: int = 2) -> np.ndarray:
    """Voxel fractions of a whole phantom 3D volume (every ``stride``-th voxel along each
    axis), as its rater contoured it: comparable with :data:`REAL_VOXEL_FRACTIONS`."""
    pelvis = Pelvis(seed, case, week)
    acquisition = Acquisition.draw(seed, case, week, pelvis)
    x, y, z = acquisition.axes(range(0, VOLUME_SIDE))
    scene = pelvis.render(pelvis.grid(x[::stride], y[::stride], z[::stride]))
    return voxel_fractions(scene.mask)


def tissue_brightness(slices: CaseWeekSlices) -> dict[str, float]:
    """Median image intensity of every tissue present in one case-week's slices, relative to
    the median of its urine: the scale on which T2-weighted contrast is described."""
    medians = {}
    for index, name in enumerate(TISSUES):
        voxels = slices.images[slices.tissue == index]
        if voxels.size:
            medians[name] = float(np.median(voxels))
    return {name: median / medians["urine"] for name, median in medians.items()}


def gland_position(seed: int, case: int, week: int) -> np.ndarray:
    """Where the prostate's centre sits in the scanner's field of view (mm from its centre, along
    L, P, S) in one case-week."""
    pelvis = Pelvis(seed, case, week)
    return np.asarray(Acquisition.draw(seed, case, week, pelvis).prostate_at) + pelvis.prostate_shift


def best_intensity_band_dice(images: np.ndarray, target: np.ndarray, bins: int = 400) -> float:
    """Dice of the best rule 'lo <= intensity < hi' for finding ``target`` (a boolean map of
    the same shape as ``images``), searched over every pair of ``bins`` intensity levels.

    A class a threshold could find would not need a network; the prostate must score low.
    """
    images, target = np.asarray(images, dtype=np.float32).ravel(), np.asarray(target, dtype=bool).ravel()
    edges = np.linspace(images.min(), images.max(), bins + 1)
    index = np.clip(np.searchsorted(edges, images, side="right") - 1, 0, bins - 1)
    total = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=bins))])
    hits = np.concatenate([[0], np.cumsum(np.bincount(index[target], minlength=bins))])
    lo, hi = np.triu_indices(bins + 1, 1)
    dice = 2 * (hits[hi] - hits[lo]) / ((total[hi] - total[lo]) + target.sum())
    return float(dice.max())


def comparison_table(presence: np.ndarray, fractions: np.ndarray) -> str:
    """A Markdown table of the phantom's figures beside the real data's."""
    rows = [
        "| class | slices containing it: phantom | real test split | voxels of the 3D volumes: phantom | real |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, name in enumerate(LABELS):
        real_presence = REAL_SLICE_PRESENCE.get(name)
        rows.append(
            f"| {name} | {presence[label]:.0%} | {'' if real_presence is None else f'{real_presence:.0%}'} "
            f"| {fractions[label]:.2%} | {REAL_VOXEL_FRACTIONS[name]:.2%} |"
        )
    return "\n".join(rows)
