"""A synthetic pelvic MRI phantom written in the real HipMRI layout.

Nobody has the real dataset by default, so the kit ships a generator for a stand-in that is
laid out, named and stored exactly like it (``keras_slices_*`` folders, ``case_…``/``seg_…``
NIfTI slices, masks as floats holding 0..5, one 256×144 case-week, some files with a
trailing singleton axis) and that is hard in the way the real data is: tissues overlap in
intensity, the prostate is tiny, absent from most slices and only findable from its shape
and its place between bladder and rectum.

Each case-week is a stack of axial-like slices through a pelvis (inferior → superior):
body outline with a subcutaneous fat layer, muscles, femoral heads and pelvic bones, a
bladder whose filling changes week to week, a rectum with a wall and sometimes gas, and the
prostate in a band of slices below the bladder. The appearance is T2-like with a smooth bias
field, partial-volume blur, Rician noise and a per-case intensity scale. Every case-week is
drawn from its own random stream derived from ``(seed, case, week)``, so the same seed
writes the same bytes whatever the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from unetlib.data import SPLITS, image_dir, mask_dir

ODD_CASE, ODD_WEEK, ODD_HEIGHT = 19, 1, 144
"""The real dataset's one odd-shaped case-week (256×144); the phantom reproduces it."""


@dataclass(frozen=True)
class PhantomSize:
    """How many slices per case-week volume, and how many weeks each case of a split has."""

    slices_per_volume: int
    weeks_per_case: dict[str, tuple[int, ...]]

    def count(self, split: str) -> int:
        return self.slices_per_volume * sum(self.weeks_per_case[split])


SIZES: dict[str, PhantomSize] = {
    # For unit tests and demos that must take seconds: 160 slices.
    "tiny": PhantomSize(16, {"train": (2, 2, 2), "validate": (2,), "test": (2,)}),
    # The default: 2,496 slices, generated in well under a minute on 2 cores.
    "small": PhantomSize(48, {"train": (5,) * 8, "validate": (3, 3), "test": (3, 3)}),
    # The real dataset's split sizes: 11,460 / 660 / 540 slices.
    "full": PhantomSize(60, {"train": (5,) * 35 + (4,) * 4, "validate": (4, 4, 3), "test": (5, 4)}),
}

# T2-like relative intensities. Neighbouring tissues overlap on purpose: prostate sits
# between muscle and marrow/rectal content, so a threshold alone cannot find it.
TISSUE_INTENSITY = {
    "fat": 0.90,
    "muscle": 0.34,
    "obturator": 0.40,
    "marrow": 0.60,
    "cortex": 0.08,
    "urine": 1.00,
    "bladder_wall": 0.30,
    "rectal_wall": 0.30,
    "rectal_content": 0.50,
    "gas": 0.03,
    "prostate_central": 0.40,
    "prostate_peripheral": 0.56,
}


# --------------------------------------------------------------------------- anatomy


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Boolean mask of a (rotated) ellipse with semi-axes ``a`` (along x) and ``b`` (along y)."""
    if a <= 0 or b <= 0:
        return np.zeros(x.shape, dtype=bool)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _profile(t: float, start: float, end: float) -> float:
    """0 outside [start, end], rising smoothly to 1 in the middle: an organ's size along z."""
    if t <= start or t >= end:
        return 0.0
    return float(np.sin(np.pi * (t - start) / (end - start)) ** 0.5)


@dataclass
class _CaseWeek:
    """Anatomy parameters of one case at one week (case-level shape, week-level changes)."""

    cx: float
    cy: float
    body_a: float
    body_b: float
    fat: float
    femur_dx: float
    femur_dy: float
    femur_r: float
    bladder_dx: float
    bladder_dy: float
    bladder_a: float
    bladder_b: float
    bladder_start: float
    rectum_dx: float
    rectum_dy: float
    rectum_r: float
    gas: bool
    prostate_dx: float
    prostate_dy: float
    prostate_a: float
    prostate_b: float
    prostate_start: float
    prostate_end: float
    tissue: dict[str, float]
    scale: float
    spacing: float


def _anatomy(seed: int, case: int, week: int, height: int) -> _CaseWeek:
    case_rng = np.random.default_rng([seed, case])
    week_rng = np.random.default_rng([seed, case, week, 1])
    u = case_rng.uniform
    jitter = lambda sd: float(week_rng.normal(0.0, sd))  # noqa: E731  week-to-week deformation
    fill = week_rng.uniform(0.55, 1.1)  # bladder filling changes week to week
    prostate_start = u(0.14, 0.22)
    prostate_end = u(0.44, 0.52)
    return _CaseWeek(
        cx=128 + u(-4, 4) + jitter(1.0),
        cy=height / 2 + u(-3, 3) + jitter(1.0),
        body_a=u(92, 108),
        body_b=u(44, 52),
        fat=u(4, 9),
        femur_dx=u(60, 70),
        femur_dy=u(-2, 6),
        femur_r=u(13, 17),
        bladder_dx=u(-4, 4) + jitter(1.5),
        bladder_dy=-u(8, 14) + jitter(1.5),
        bladder_a=u(26, 38) * fill,
        bladder_b=u(16, 24) * fill,
        bladder_start=prostate_end - u(0.08, 0.14),
        rectum_dx=u(-3, 3) + jitter(1.0),
        rectum_dy=u(20, 26) + jitter(1.0),
        rectum_r=u(8, 12) * week_rng.uniform(0.9, 1.15),
        gas=bool(week_rng.random() < 0.4),
        prostate_dx=u(-1.5, 1.5) + jitter(0.8),
        prostate_dy=u(3, 7) + jitter(0.8),
        prostate_a=u(12, 17),
        prostate_b=u(8, 11),
        prostate_start=prostate_start,
        prostate_end=prostate_end,
        tissue={name: value * u(0.92, 1.08) for name, value in TISSUE_INTENSITY.items()},
        scale=u(200, 1200),
        spacing=u(1.6, 1.7),
    )


def render_slice(anatomy: _CaseWeek, t: float, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one axial-like slice at relative height ``t`` (0 inferior … 1 superior).

    Returns ``(image float32 [256, height], labels uint8 [256, height])``.
    """
    x, y = np.meshgrid(np.arange(256, dtype=np.float32), np.arange(height, dtype=np.float32), indexing="ij")
    a, tissue = anatomy, anatomy.tissue
    labels = np.zeros(x.shape, dtype=np.uint8)
    intensity = np.zeros(x.shape, dtype=np.float32)

    def paint(mask: np.ndarray, label: int | None, value: float) -> None:
        if label is not None:
            labels[mask] = label
        intensity[mask] = value

    # Body: fat layer under the skin, muscle inside; the pelvis widens going up.
    widen = 1.0 + 0.08 * t
    body = _ellipse(x, y, a.cx, a.cy, a.body_a * widen, a.body_b)
    paint(body, 1, tissue["fat"])
    paint(_ellipse(x, y, a.cx, a.cy, a.body_a * widen - a.fat, a.body_b - a.fat), 1, tissue["muscle"])
    # Fat pads and muscles around the prostate region give it neighbours of similar brightness.
    for side in (-1, 1):
        paint(_ellipse(x, y, a.cx + side * 30, a.cy + 4, 9, 20, side * 0.3), 1, tissue["fat"] * 0.85)
        paint(_ellipse(x, y, a.cx + side * (a.prostate_a + 18), a.cy + 2, 7, 16, -side * 0.4), 1, tissue["obturator"])

    # Bones: femoral heads low, pubic bones anteriorly, sacrum posteriorly higher up.
    femur = _profile(t, 0.05, 0.65)
    for side in (-1, 1):
        centre = (a.cx + side * a.femur_dx, a.cy + a.femur_dy)
        paint(_ellipse(x, y, *centre, a.femur_r * femur, a.femur_r * femur), 2, tissue["cortex"])
        paint(_ellipse(x, y, *centre, (a.femur_r - 2.5) * femur, (a.femur_r - 2.5) * femur), 2, tissue["marrow"])
        pubis = _profile(t, 0.0, 0.45)
        centre = (a.cx + side * 16, a.cy - a.body_b * 0.68)
        paint(_ellipse(x, y, *centre, 12 * pubis, 6 * pubis, side * 0.35), 2, tissue["cortex"])
        paint(_ellipse(x, y, *centre, 9 * pubis, 3.5 * pubis, side * 0.35), 2, tissue["marrow"])
        ilium = _profile(t, 0.6, 1.4)
        centre = (a.cx + side * 62, a.cy + 10)
        paint(_ellipse(x, y, *centre, 26 * ilium, 6 * ilium, side * 0.9), 2, tissue["cortex"])
        paint(_ellipse(x, y, *centre, 22 * ilium, 3.5 * ilium, side * 0.9), 2, tissue["marrow"])
    sacrum = _profile(t, 0.45, 1.5)
    centre = (a.cx, a.cy + a.body_b * 0.78)
    paint(_ellipse(x, y, *centre, 18 * sacrum, 7 * sacrum), 2, tissue["cortex"])
    paint(_ellipse(x, y, *centre, 15 * sacrum, 4.5 * sacrum), 2, tissue["marrow"])

    # Rectum: wall, content, sometimes a gas pocket; present below ~85% height.
    rectum = _profile(t, -0.2, 0.88)
    rx, ry, rr = a.cx + a.rectum_dx, a.cy + a.rectum_dy, a.rectum_r * rectum
    paint(_ellipse(x, y, rx, ry, rr * 1.15, rr), 4, tissue["rectal_wall"])
    paint(_ellipse(x, y, rx, ry, rr * 0.6, rr * 0.5), 4, tissue["rectal_content"])
    if a.gas:
        paint(_ellipse(x, y, rx, ry - rr * 0.15, rr * 0.45, rr * 0.3), 4, tissue["gas"])

    # Bladder: above the prostate, size set by this week's filling.
    bladder = _profile(t, a.bladder_start, 1.15)
    bx, by = a.cx + a.bladder_dx, a.cy + a.bladder_dy
    paint(_ellipse(x, y, bx, by, a.bladder_a * bladder, a.bladder_b * bladder), 3, tissue["bladder_wall"])
    paint(_ellipse(x, y, bx, by, a.bladder_a * bladder - 2, a.bladder_b * bladder - 2), 3, tissue["urine"])

    # Prostate: small, between bladder and rectum, only in a band of slices; a darker
    # central gland and a brighter peripheral zone towards the rectum.
    prostate = _profile(t, a.prostate_start, a.prostate_end)
    px, py = a.cx + a.prostate_dx, ry - rr - a.prostate_b * prostate - 2 + a.prostate_dy * 0.2
    pa, pb = a.prostate_a * prostate, a.prostate_b * prostate
    gland = _ellipse(x, y, px, py, pa, pb)
    paint(gland, 5, tissue["prostate_peripheral"])
    paint(_ellipse(x, y, px, py - pb * 0.3, pa * 0.65, pb * 0.6), 5, tissue["prostate_central"])

    # Appearance: tissue texture, partial-volume blur, bias field, scale, Rician noise.
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, x.shape).astype(np.float32), 2.0)
    intensity += body * texture * 0.35 * texture.std() ** -1 * 0.12
    intensity = ndimage.gaussian_filter(intensity, 0.8)
    xn, yn = (x - 128) / 128, (y - height / 2) / (height / 2)
    bias = 1.0 + 0.15 * (anatomy.cx - 128) / 4 * xn + 0.12 * np.sin(1.3 * yn + t) + 0.08 * xn * yn
    intensity = intensity * bias * anatomy.scale
    noise_sd = 0.025 * anatomy.scale
    real = intensity + rng.normal(0.0, noise_sd, x.shape)
    imaginary = rng.normal(0.0, noise_sd, x.shape)
    image = np.sqrt(real**2 + imaginary**2).astype(np.float32)
    return image, labels


# --------------------------------------------------------------------------- writing


def _affine(spacing: float, slice_index: int) -> np.ndarray:
    """A plausible scanner affine: ~1.6–1.7 mm pixels, 2.5 mm slices, centred field of view."""
    affine = np.diag([-spacing, -spacing, 2.5, 1.0])
    affine[:3, 3] = (128 * spacing, 64 * spacing, -75.0 + 2.5 * slice_index)
    return affine


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _write_case_week(root: str, split: str, case: int, week: int, slices: int, seed: int, trailing_axis: bool) -> int:
    """Render and write every slice of one case-week; returns the number of slices written."""
    height = ODD_HEIGHT if (case, week) == (ODD_CASE, ODD_WEEK) else 128
    anatomy = _anatomy(seed, case, week, height)
    rng = np.random.default_rng([seed, case, week, 2])
    images, masks = image_dir(root, split), mask_dir(root, split)
    for index in range(slices):
        image, labels = render_slice(anatomy, index / (slices - 1), height, rng)
        mask = labels.astype(np.float32)  # the real masks are stored as floats holding 0..5
        if trailing_axis:
            image, mask = image[..., None], mask[..., None]
        affine = _affine(anatomy.spacing, index)
        name = f"{case:03d}_week_{week}_slice_{index}.nii.gz"
        _save(image, affine, images / f"case_{name}")
        _save(mask, affine, masks / f"seg_{name}")
    return slices


def _plan(size: PhantomSize, seed: int) -> list[tuple[str, int, int, bool]]:
    """(split, case, week, trailing_axis) for every case-week; cases never cross splits."""
    rng = np.random.default_rng([seed, 0xCA5E])
    total = sum(len(size.weeks_per_case[s]) for s in SPLITS)
    cases = [int(c) for c in rng.choice(np.setdiff1d(np.arange(1, 120), [ODD_CASE]), total - 1, replace=False)]
    cases.insert(0, ODD_CASE)  # the odd case is the first train case, which has ≥ 2 weeks
    plan, start = [], 0
    for split in SPLITS:
        weeks = size.weeks_per_case[split]
        split_cases = cases[start : start + len(weeks)]
        start += len(weeks)
        for number, (case, n_weeks) in enumerate(zip(split_cases, weeks)):
            for week in range(n_weeks):
                # One case-week per split stores its files with a trailing singleton axis.
                trailing = number == len(weeks) - 1 and week == 0
                plan.append((split, case, week, trailing))
    return plan


def generate_phantom(
    out: Path | str,
    size: str = "small",
    seed: int = 0,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the HipMRI layout under ``out`` and return ``out``.

    ``size`` is one of :data:`SIZES` (``tiny``, ``small``, ``full``). The output is written to
    a temporary sibling folder and renamed into place when complete, so an interrupted run
    never leaves a half dataset that looks whole. An existing non-empty ``out`` is an error
    unless ``overwrite`` is set.
    """
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; expected one of {', '.join(SIZES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: already exists and is not empty (use overwrite to replace it)")
        shutil.rmtree(out)
    spec = SIZES[size]
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for split in SPLITS:
        image_dir(staging, split).mkdir(parents=True)
        mask_dir(staging, split).mkdir(parents=True)
    plan = _plan(spec, seed)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=sum(spec.count(s) for s in SPLITS), desc=f"phantom ({size})", unit="slice", disable=not progress)
    jobs = [(str(staging), split, case, week, spec.slices_per_volume, seed, trailing) for split, case, week, trailing in plan]
    if workers == 1:
        for job in jobs:
            bar.update(_write_case_week(*job))
    else:
        # Forking a process that already runs TensorFlow's thread pools can deadlock; start
        # clean interpreters then (slower to start, and scripts need a __main__ guard).
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            futures = [pool.submit(_write_case_week, *job) for job in jobs]
            for future in as_completed(futures):
                bar.update(future.result())
    bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out
