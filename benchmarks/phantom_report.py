"""How long the phantom takes to write, and how its labels compare with the real data's.

    python benchmarks/phantom_report.py [--seed 0] [--out benchmarks/results/phantom] [--figure docs/phantom.png]

Writes the ``small`` and ``full`` phantoms (timed, all cores), then reports for ``full``:
per-class slice presence in the test split and in all splits, and voxel fractions of the
whole 3D volumes (every 4th voxel along each axis of every case-week), beside the real
figures. With ``--figure`` it also draws one test case-week's slices at several positions
(in front of, through, beside and behind the prostate) next to their masks.
Results go to ``OUT/results.md``; the phantoms are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench.common import cpu_name


def case_week_figure(root: Path, out: Path) -> None:
    """Slices of the test split's first case-week at several positions, above their masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unetlib.data import find_pairs, read_image, read_mask
    from unetlib.labels import PROSTATE
    from unetlib.viz import legend_handles, show_slice

    pairs = find_pairs(root, "test")
    first = (pairs[0].case, pairs[0].week)
    pairs = [p for p in pairs if (p.case, p.week) == first]
    masks = [read_mask(p.mask_path) for p in pairs]
    prostate = [i for i, m in enumerate(masks) if np.any(m == PROSTATE)]
    middle = prostate[len(prostate) // 2]
    chosen = [
        ("in front of the prostate", max(prostate[0] - 8, 0)),
        ("front edge of the prostate", prostate[0] + 1),
        ("through the prostate", middle),
        ("back edge of the prostate", prostate[-1] - 1),
        ("behind the prostate", min(prostate[-1] + 8, len(pairs) - 1)),
    ]
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.4 * len(chosen), 5.0))
    for column, (title, index) in enumerate(chosen):
        image = read_image(pairs[index].image_path)
        show_slice(image, ax=axes[0, column], title=f"slice {pairs[index].slice}: {title}")
        show_slice(image, masks[index], ax=axes[1, column], title="its mask")
        for row in (0, 1):
            axes[row, column].title.set_fontsize(8)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        f"Phantom case {first[0]:03d} week {first[1]}: coronal slices from front to back "
        "(patient's right on the left, superior up)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phantom")
    parser.add_argument("--figure", type=Path, help="also draw the slices-and-masks figure to this PNG")
    args = parser.parse_args()

    from unetlib.data import SPLITS, load_split
    from unetlib.labels import LABELS
    from unetlib.phantom import SIZES, generate_phantom
    from unetlib.phantom.dataset import plan_case_weeks
    from unetlib.phantom.statistics import comparison_table, slice_presence, volume_label_fractions

    work = Path(tempfile.mkdtemp(prefix="unetlib-phantom-"))
    os.environ["UNETLIB_CACHE"] = str(work / "cache")
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores", ""]
    try:
        for size in ("small", "full"):
            started = time.perf_counter()
            root = generate_phantom(work / size, size, args.seed)
            total = sum(SIZES[size].count(s) for s in SPLITS)
            lines.append(f"- generating `{size}` ({total:,} slices): {time.perf_counter() - started:.0f} s")
        test = load_split(root, "test", progress=False).labels
        every = [load_split(root, s, progress=False).labels for s in SPLITS]
        every_presence = sum(slice_presence(labels) * len(labels) for labels in every) / sum(len(x) for x in every)
        fractions = np.mean(
            [
                volume_label_fractions(args.seed, case, week, stride=4)
                for _, case, week, _ in plan_case_weeks(SIZES["full"], args.seed)
            ],
            axis=0,
        )
        lines += [
            "",
            f"Phantom `full`, seed {args.seed}: test split ({len(test)} slices) and 3D volumes "
            f"({len(plan_case_weeks(SIZES['full'], args.seed))} case-weeks)",
            "",
            comparison_table(slice_presence(test), fractions),
            "",
            "Slices containing each class over all splits: "
            + ", ".join(f"{name} {share:.0%}" for name, share in zip(LABELS, every_presence)),
        ]
        if args.figure:
            case_week_figure(root, args.figure)
            lines.append(f"\nFigure: {args.figure}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
