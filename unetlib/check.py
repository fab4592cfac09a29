"""Check a HipMRI data root: count, shape, label statistics and every problem, per split.

``unetlib check-data ROOT`` prints this report and exits non-zero when any problem is
found, so a dataset can be validated before a long training run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from unetlib.data import SPLITS, read_pair, scan_split
from unetlib.errors import DataError
from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE, SLICE_SHAPE

__all__ = ["SplitReport", "DataReport", "check_data"]


@dataclass
class SplitReport:
    """What the checker saw in one split.

    Attributes:
        split: ``"train"``, ``"validate"`` or ``"test"``.
        pairs: image/mask pairs read without error.
        shapes: number of slices per image shape as stored on disk, e.g. ``(256, 128)`` or
            ``(256, 128, 1)``.
        label_counts: int64 array of shape ``(6,)``: voxels per class over the split's masks,
            after they are cropped/padded to 256×128.
        without_prostate: slices whose mask holds no prostate voxel.
        adjusted: slices centre-cropped or zero-padded to 256×128.
        cases: the case numbers seen (``case_004_…`` → 4).
        tiny: image files with a side under half of 256×128's shorter side (under 64 pixels).
        affine_mismatch: mask files whose NIfTI affine differs from their image's (beyond 1e-4).
        ignored: one message per entry of the split's folders that is not part of the dataset (not
            a NIfTI file, a folder, hidden items), naming it and why; see :func:`~unetlib.data.scan_split`.
    """

    split: str
    pairs: int = 0
    shapes: Counter = field(default_factory=Counter)
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, dtype=np.int64))
    without_prostate: int = 0
    adjusted: int = 0
    cases: set[int] = field(default_factory=set)
    tiny: list[Path] = field(default_factory=list)  # slices with a side under half the target's
    affine_mismatch: list[Path] = field(default_factory=list)  # masks whose affine differs from the image's
    ignored: list[str] = field(default_factory=list)  # entries not part of the dataset, each with its reason


@dataclass
class DataReport:
    """The whole check: one report per split and every problem found, each naming its file.

    Attributes:
        root: the data root that was checked.
        splits: one :class:`SplitReport` per split, in the order train, validate, test.
        problems: one message per unusable file or folder (bad name, missing partner, unreadable
            or invalid data); any problem makes :attr:`ok` false.
        warnings: messages about usable but suspicious data: entries of the split folders that are
            ignored (each named, with the reason), tiny slices, mask affines that differ from their
            image's, cases shared between splits.
    """

    root: Path
    splits: list[SplitReport]
    problems: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"Data root: {self.root}"]
        for report in self.splits:
            total = max(int(report.label_counts.sum()), 1)
            lines.append(f"\n[{report.split}] {report.pairs} image/mask pairs from {len(report.cases)} cases")
            shapes = ", ".join(f"{'x'.join(map(str, s))}: {n}" for s, n in sorted(report.shapes.items()))
            lines.append(f"  shapes on disk: {shapes or 'none'}")
            lines.append(f"  slices centre-cropped/padded to 256x128: {report.adjusted}")
            lines.append(f"  slices without prostate: {report.without_prostate}")
            lines.append("  label histogram (voxels):")
            for name, count in zip(LABELS, report.label_counts):
                lines.append(f"    {name:<10} {int(count):>12,d}  {100 * count / total:6.2f}%")
        if self.warnings:
            lines.append("")
            lines.extend(f"warning: {warning}" for warning in self.warnings)
        if self.problems:
            lines.append(f"\n{len(self.problems)} problem(s) found:")
            lines.extend(f"  - {problem}" for problem in self.problems)
        else:
            lines.append("\nNo problems found: the data is usable.")
        return "\n".join(lines)


def check_data(root: Path | str, *, progress: bool = True) -> DataReport:
    """Read and validate every slice under ``root``; collect all problems instead of stopping.

    Args:
        root: the data root, holding ``keras_slices_SPLIT`` and ``keras_slices_seg_SPLIT`` folders.
        progress: show a progress bar per split.

    Returns:
        The report; a missing folder or a bad file is listed in its ``problems``, not raised. Every
        entry of the split folders is either read, a problem, or listed in its ``warnings`` as
        ignored (a README, a sub-folder, ``.DS_Store``), with the reason.
    """
    root = Path(root)
    reports, problems, warnings = [], [], []
    for split in SPLITS:
        report = SplitReport(split)
        reports.append(report)
        pairs, split_problems = scan_split(root, split, ignored=report.ignored)
        problems.extend(split_problems)
        warnings.extend(report.ignored)
        for pair in tqdm(pairs, desc=f"check {split}", unit="slice", disable=not progress):
            try:
                _, labels, adjusted = read_pair(pair)
            except DataError as exc:
                problems.append(str(exc))
                continue
            report.pairs += 1
            report.cases.add(pair.case)
            image_header, mask_header = nib.load(pair.image_path), nib.load(pair.mask_path)  # headers only: cheap
            report.shapes[tuple(image_header.shape)] += 1
            if min(image_header.shape[:2]) < min(SLICE_SHAPE) // 2:
                report.tiny.append(pair.image_path)
            if not np.allclose(image_header.affine, mask_header.affine, atol=1e-4):
                report.affine_mismatch.append(pair.mask_path)
            report.adjusted += adjusted
            report.label_counts += np.bincount(labels.ravel(), minlength=NUM_CLASSES)
            report.without_prostate += not np.any(labels == PROSTATE)
    for report in reports:
        if report.tiny:
            warnings.append(
                f"{report.split}: {len(report.tiny)} slice(s) are far smaller than 256x128 and are "
                f"zero-padded to it, e.g. {report.tiny[0]}"
            )
        if report.affine_mismatch:
            warnings.append(
                f"{report.split}: {len(report.affine_mismatch)} mask(s) have an affine that differs from "
                f"their image's, e.g. {report.affine_mismatch[0]}; masks are paired with images pixel by "
                "pixel, so check they really lie on the image's grid"
            )
    for i, first in enumerate(reports):
        for second in reports[i + 1 :]:
            shared = first.cases & second.cases
            if shared:
                warnings.append(
                    f"cases {sorted(shared)} appear in both {first.split} and {second.split}: "
                    "scores on the second may be optimistic"
                )
    return DataReport(root, reports, problems, warnings)
