"""Cut each case-week's 3D pelvis into the real dataset's 2D slices and write them to disk.

The geometry copies the real HipMRI data. Each 3D volume is 256 × 256 × S voxels with axis
directions L, P, S (S = 128; 144 for case 019 week 1), in-plane spacing 1.41–1.88 mm
(mostly 1.68) and 1.56 mm along S. A 2D slice keeps the left-right and superior-inferior
axes: it is a **coronal** slice (see ``data/README.md`` for why), 256 × S, and each
case-week gives 60 consecutive slices stepping from anterior (``slice_0``) to posterior
(``slice_59``) through the bladder, prostate and rectum. Every file's affine places it in
the volume: voxel axes L and S, the third (implicit) axis P.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from unetlib.files import staged_folder
from unetlib.layout import (
    CACHE_FOLDER,
    PHANTOM_MARKER,
    PHANTOM_VERSION,
    SPLITS,
    image_dir,
    is_nifti,
    mask_dir,
    phantom_marker,
)
from unetlib.phantom.anatomy import Pelvis
from unetlib.phantom.appearance import t2_image, zonal_ratio

logger = logging.getLogger(__name__)

ODD_CASE, ODD_WEEK, ODD_HEIGHT = 19, 1, 144
"""The real dataset's one odd-shaped case-week (a 256 × 256 × 144 volume, so 256×144 slices)."""
VOLUME_SIDE, VOLUME_HEIGHT = 256, 128
SLICES_PER_VOLUME = 60
SUPERIOR_SPACING = 1.56
"""mm between voxels along S (the real volumes' third axis)."""
USUAL_SPACING, SPACING_RANGE = 1.68, (1.41, 1.88)
"""In-plane spacing (mm): most real volumes have 1.68 mm, the rest lie in this range."""
TABLE_TO_FIELD_CENTRE, HEADS_TO_FIELD_CENTRE = 137.0, 1.0
"""Height (mm) of the field of view's centre above the skin of the back, and its level above the
femoral heads' centres: where the radiographer puts it."""
PLACEMENT_SD, WEEKLY_PLACEMENT_SD = (8.0, 7.0, 7.0), (2.0, 2.0, 3.0)
"""Spread (mm, L, P, S) of the patient's position on the table and of the landmark the
radiographer sets, between cases and between the weeks of a case (``data/README.md``)."""


@dataclass(frozen=True)
class PhantomSize:
    """How many weeks each case of a split has (every case-week gives 60 slices).

    Attributes:
        weeks_per_case: for each split (``"train"``, ``"validate"``, ``"test"``), one number of
            weeks per case, e.g. ``{"train": (2, 1), ...}``: two cases, with 2 and 1 weeks.
    """

    weeks_per_case: dict[str, tuple[int, ...]]

    def count(self, split: str) -> int:
        """Number of slices the split gets: 60 per case-week.

        Args:
            split: ``"train"``, ``"validate"`` or ``"test"``.
        """
        return SLICES_PER_VOLUME * sum(self.weeks_per_case[split])


SIZES: dict[str, PhantomSize] = {
    # For unit tests: 5 case-weeks, 300 slices, seconds to write.
    "tiny": PhantomSize({"train": (2, 1), "validate": (1,), "test": (1,)}),
    # The default: 9 / 3 / 3 patients, 2,160 / 360 / 480 slices, under a minute on 2 cores.
    "small": PhantomSize({"train": (4,) * 9, "validate": (2, 2, 2), "test": (3, 3, 2)}),
    # The real dataset: 31 / 4 / 3 patients with 1-8 weeks, 11,460 / 660 / 540 slices.
    "full": PhantomSize(
        {
            "train": (8,) * 7 + (7,) * 8 + (6,) * 8 + (5,) * 4 + (4, 4, 2, 1),
            "validate": (3, 3, 3, 2),
            "test": (7, 1, 1),
        }
    ),
}


# --------------------------------------------------------------------------- one case-week


@dataclass(frozen=True)
class Acquisition:
    """Where the scanner's field of view and the 60 exported slices sit on the patient."""

    spacing: float  # in-plane mm (L and P)
    height: int  # voxels along S
    prostate_at: tuple[float, float, float]  # prostate centre, mm from the field of view's centre (L, P, S)
    first_slice: int  # index along P of slice_0

    @classmethod
    def draw(cls, seed: int, case: int, week: int, pelvis: Pelvis) -> Acquisition:
        """Place the field of view on ``pelvis`` as a radiographer does, on the patient rather
        than on the gland: centred left-right on the patient as they lie, front-to-back at a
        fixed height above the table (so the gland's height follows the thickness of the
        patient's back), and superior-inferior on the femoral heads. Where the patient lies
        and where the landmark is put vary between cases, a little between weeks; the 60
        exported slices are chosen around the organs."""
        case_rng = np.random.default_rng([seed, case, 0xC9])
        week_rng = np.random.default_rng([seed, case, week, 0xCA])
        spacing = USUAL_SPACING if case_rng.random() < 0.7 else round(case_rng.uniform(*SPACING_RANGE), 2)
        height = ODD_HEIGHT if (case, week) == (ODD_CASE, ODD_WEEK) else VOLUME_HEIGHT
        landmarks = pelvis.landmarks()
        placement = case_rng.normal(0, PLACEMENT_SD) + week_rng.normal(0, WEEKLY_PLACEMENT_SD)
        field_centre = np.array(
            [
                placement[0],
                landmarks["back_y"] - TABLE_TO_FIELD_CENTRE + placement[1],
                landmarks["femoral_heads_z"] + HEADS_TO_FIELD_CENTRE + placement[2],
            ]
        )
        centre = -field_centre  # the prostate (the pelvis frame's origin) seen from the field's centre
        slab_centre = 4.0 + case_rng.normal(0, 4) + week_rng.normal(0, 1.5)  # mm behind the prostate centre
        first = int(round((slab_centre + centre[1]) / spacing + (VOLUME_SIDE - 1) / 2 - (SLICES_PER_VOLUME - 1) / 2))
        first = int(np.clip(first, 0, VOLUME_SIDE - SLICES_PER_VOLUME))
        return cls(spacing, height, tuple(float(c) for c in centre), first)

    def axes(self, slices: range | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pelvis-frame coordinates (mm) of the volume's voxels along L, P and S; along P only
        those of ``slices`` (default: the 60 exported ones)."""
        slices = slices if slices is not None else range(self.first_slice, self.first_slice + SLICES_PER_VOLUME)
        side = np.arange(VOLUME_SIDE)
        x = (side - (VOLUME_SIDE - 1) / 2) * self.spacing - self.prostate_at[0]
        y = (np.asarray(slices) - (VOLUME_SIDE - 1) / 2) * self.spacing - self.prostate_at[1]
        z = (np.arange(self.height) - (self.height - 1) / 2) * SUPERIOR_SPACING - self.prostate_at[2]
        return x, y, z

    def volume_affine(self) -> np.ndarray:
        """Voxel → scanner (RAS) mm of the 3D volume: axes towards L, P and S, centred field of view."""
        s, h = self.spacing, SUPERIOR_SPACING
        return np.array(
            [
                [-s, 0, 0, (VOLUME_SIDE - 1) / 2 * s],
                [0, -s, 0, (VOLUME_SIDE - 1) / 2 * s],
                [0, 0, h, -(self.height - 1) / 2 * h],
                [0, 0, 0, 1.0],
            ]
        )

    def slice_affine(self, index: int) -> np.ndarray:
        """Affine of exported slice ``index`` (0..59): its axes are the volume's L and S, and
        the implicit third axis its P, so the file knows where it was cut."""
        to_volume = np.array([[1, 0, 0, 0], [0, 0, 1, self.first_slice + index], [0, 1, 0, 0], [0, 0, 0, 1.0]])
        return self.volume_affine() @ to_volume


@dataclass
class CaseWeekSlices:
    """The 60 exported slices of one case-week, each ``[256, S]`` (slice axis first)."""

    images: np.ndarray  # float32 scanner units
    masks: np.ndarray  # uint8 labels as the rater drew them (what the dataset stores)
    truth: np.ndarray  # uint8 labels of the true shapes (never written; for checks)
    tissue: np.ndarray  # uint8 index into anatomy.TISSUES of what is there (never written; for checks)
    acquisition: Acquisition


def render_case_week(seed: int, case: int, week: int) -> CaseWeekSlices:
    """Build one case-week's pelvis and cut it into its 60 coronal slices.

    Args:
        seed: the phantom's seed; with ``case`` and ``week`` it fixes every random choice.
        case: the case (patient) number, e.g. 19.
        week: the week of that case, from 0.

    Returns:
        The slices as arrays ``(60, 256, S)`` (S = 128, or 144 for case 19 week 1): float32 image
        intensities, the rater's uint8 masks, the true uint8 labels and the tissue map, and the
        acquisition geometry.
    """
    pelvis = Pelvis(seed, case, week)
    acquisition = Acquisition.draw(seed, case, week, pelvis)
    axes = acquisition.axes()
    scene = pelvis.render(pelvis.grid(*axes))
    zones = zonal_ratio(np.random.default_rng([seed, case, 0xD2]))  # the patient's, every week
    image = t2_image(scene.tissue, np.random.default_rng([seed, case, week, 0xD1]), axes, zones)
    # Block axes are (L, P, S); slices step along P.
    image, mask, truth, tissue = (np.moveaxis(block, 1, 0) for block in (image, scene.mask, scene.truth, scene.tissue))
    return CaseWeekSlices(image, mask, truth, tissue, acquisition)


# --------------------------------------------------------------------------- writing


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _write_case_week(root: str, split: str, case: int, week: int, seed: int, trailing_axis: bool) -> int:
    """Render and write every slice of one case-week; returns the number of slices written."""
    slices = render_case_week(seed, case, week)
    images, masks = image_dir(root, split), mask_dir(root, split)
    for index in range(SLICES_PER_VOLUME):
        image = slices.images[index]
        mask = slices.masks[index].astype(np.float32)  # the real masks are stored as floats holding 0..5
        if trailing_axis:
            image, mask = image[..., None], mask[..., None]
        affine = slices.acquisition.slice_affine(index)
        name = f"{case:03d}_week_{week}_slice_{index}.nii.gz"
        _save(image, affine, images / f"case_{name}")
        _save(mask, affine, masks / f"seg_{name}")
    return SLICES_PER_VOLUME


def plan_case_weeks(size: PhantomSize, seed: int) -> list[tuple[str, int, int, bool]]:
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


def _foreign_entry(root: Path) -> Path | None:
    """The first entry of ``root`` that a phantom write did not put there (None if all did):
    a phantom root holds its marker, the decode cache and the six keras_slices folders of
    case_/seg_ NIfTI files."""
    layout = {folder(root, split).name: folder for split in SPLITS for folder in (image_dir, mask_dir)}
    for entry in root.iterdir():
        if entry.name in (PHANTOM_MARKER, CACHE_FOLDER):
            continue
        if entry.name not in layout or not entry.is_dir():
            return entry
        prefix = "seg_" if "_seg_" in entry.name else "case_"
        for file in entry.iterdir():
            if not (file.is_file() and file.name.startswith(prefix) and is_nifti(file)):
                return file
    return None


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: end this worker when the process that started it ends, even by
    ``kill -9`` (Linux; elsewhere workers notice at their next task)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _holds_phantom(root: Path, size: str, seed: int) -> bool:
    """Whether ``root`` holds a complete phantom of this size and seed (its marker, written last
    into the staging folder, says so)."""
    return phantom_marker(root) == {"size": size, "seed": seed, "version": PHANTOM_VERSION}


def _write_phantom(staging: Path, size: str, seed: int, workers: int | None, progress: bool) -> None:
    """Render every case-week of the phantom into the empty folder ``staging``; its marker last."""
    spec = SIZES[size]
    for split in SPLITS:
        image_dir(staging, split).mkdir(parents=True)
        mask_dir(staging, split).mkdir(parents=True)
    plan = plan_case_weeks(spec, seed)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=sum(spec.count(s) for s in SPLITS), desc=f"phantom ({size})", unit="slice", disable=not progress)
    jobs = [(str(staging), split, case, week, seed, trailing) for split, case, week, trailing in plan]
    if workers == 1:
        for job in jobs:
            bar.update(_write_case_week(*job))
    else:
        # Forking a process that already runs TensorFlow's thread pools can deadlock; start
        # clean interpreters then (slower to start, and scripts need a __main__ guard).
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            futures = [pool.submit(_write_case_week, *job) for job in jobs]
            for future in as_completed(futures):
                bar.update(future.result())
        finally:  # on an error or Ctrl-C, drop the queued case-weeks instead of finishing them
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    marker = {"size": size, "seed": seed, "version": PHANTOM_VERSION}
    (staging / PHANTOM_MARKER).write_text(json.dumps(marker) + "\n")


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
    a staging folder of this process's own beside ``out`` and swapped into place when complete
    (:func:`unetlib.files.staged_folder`), so an interrupted run never leaves a half dataset
    that looks whole, and with ``overwrite`` the old one stays until the new one is ready. An
    existing non-empty ``out`` is an error unless ``overwrite`` is set, and even then if it
    holds anything a phantom write did not put there. Worker processes end with the process
    that started them. Two processes writing the same ``out`` at once do not disturb each
    other: the one that finishes second finds the first one's phantom in place and, when it has
    the same size and seed (so the same bytes), keeps it and says so in a warning.

    Args:
        out: the data root to create.
        size: ``"tiny"`` (300 slices), ``"small"`` (3,000) or ``"full"`` (12,660, the real dataset's counts).
        seed: the random seed; the same seed writes the same bytes, whatever ``workers`` is.
        workers: processes rendering case-weeks in parallel; None: one per core; 1: all in this process.
        overwrite: replace an existing phantom in ``out``.
        progress: show a progress bar.

    Raises:
        ValueError: ``size`` is not one of :data:`SIZES`.
        FileExistsError: ``out`` is a file, or a non-empty folder without ``overwrite``, or holds
            something a phantom write did not put there, or another process wrote something other
            than this phantom there while this one was being written.
    """
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; expected one of {', '.join(SIZES)}")
    out = Path(out)
    target = out.resolve()
    written = False
    try:
        # Each process writes into its own staging folder beside OUT (what killed runs left there
        # is cleaned up first); the finished phantom is renamed into place in one step.
        with staged_folder(target, replace=overwrite) as staging:
            if target.exists() and not target.is_dir():
                raise FileExistsError(f"{out}: exists and is not a folder")
            if target.is_dir() and any(target.iterdir()):
                if not overwrite:
                    raise FileExistsError(f"{out}: already exists and is not empty (use overwrite to replace it)")
                foreign = _foreign_entry(target)
                if foreign is not None:
                    raise FileExistsError(
                        f"{out}: holds {foreign}, which is not part of a phantom; refusing to replace "
                        "the folder (choose another OUT, or move its files away first)"
                    )
            _write_phantom(staging, size, seed, workers, progress)
            written = True
    except FileExistsError as exc:
        if not written:
            raise  # refused before writing
        if not _holds_phantom(target, size, seed):  # another process put something else there meanwhile
            raise FileExistsError(f"{out}: already exists and is not empty (use overwrite to replace it)") from exc
        logger.warning(
            "%s: the phantom (%s, seed %d) was already written by another process; the same seed writes "
            "the same bytes, so it is kept",
            out,
            size,
            seed,
        )
    return out
