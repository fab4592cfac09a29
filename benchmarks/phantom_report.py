"""How long the phantom takes to write, how its labels compare with the real data's, and how
its T2 contrast and geometry compare with the MR literature.

    python benchmarks/phantom_report.py [--seed 0] [--out benchmarks/results/phantom]
        [--figure docs/phantom.png] [--anatomy-figure docs/phantom_prostate.png]

Writes the ``small`` and ``full`` phantoms (timed, all cores), finds the best single intensity
band for the prostate on ``small``'s train split, then reports for ``full``:

* per-class slice presence in the test split and in all splits, and voxel fractions of the
  whole 3D volumes (every 4th voxel along each axis of every case-week), beside the real
  figures;
* every tissue's median brightness relative to urine, median and range over all case-weeks
  (each rendered again in memory, where its tissue map is known), and the distribution of the
  peripheral/transition zone ratio;
* the rater's prostate masks against the true glands (pooled Dice);
* where the gland's centre sits in the field of view: its spread per axis between case-weeks
  and between the weeks of one case.

With ``--figure`` it also draws one test case-week's slices at several positions (in front
of, through, beside and behind the prostate) next to their masks; with ``--anatomy-figure``
the mid-gland coronal slice of four patients, whole and zoomed on the prostate.
Results go to ``OUT/results.md``; the phantoms are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench.common import cpu_name

TISSUE_ROWS = (
    # tissue, what T2-weighted MRI shows (sources: data/README.md)
    ("urine", "brightest (reference)"),
    ("fat", "bright (fast spin echo)"),
    ("marrow", "fatty marrow: intermediate to bright"),
    ("venous_plexus", "periprostatic plexus: bright"),
    ("peripheral_zone", "high, uniform"),
    ("transition_zone", "lower than PZ, heterogeneous"),
    ("central_zone", "low (base)"),
    ("capsule", "thin low-signal line"),
    ("stroma", "anterior fibromuscular stroma: low"),
    ("lesion", "cancer: focal low in the PZ"),
    ("muscle", "low (levator ani, obturator internus)"),
    ("rectal_wall", "low"),
    ("bladder_wall", "low"),
    ("cartilage", "hip joint: intermediate to low"),
    ("cortex", "void"),
    ("gas", "void"),
)


def _case_week_measures(seed: int, case: int, week: int) -> tuple[dict[str, float], tuple[int, int, int]]:
    """Tissue brightness of one case-week, and its prostate voxels in the rater's mask, in the
    true gland and in both (worker process)."""
    from unetlib.labels import PROSTATE
    from unetlib.phantom import render_case_week
    from unetlib.phantom.statistics import tissue_brightness

    slices = render_case_week(seed, case, week)
    mask, truth = slices.masks == PROSTATE, slices.truth == PROSTATE
    counts = (int(mask.sum()), int(truth.sum()), int((mask & truth).sum()))
    return tissue_brightness(slices), counts


def contrast_and_position(seed: int) -> list[str]:
    """Markdown: the tissue brightness table, the zonal ratio's distribution and the gland's
    position spread over every case-week of the ``full`` phantom."""
    from unetlib.phantom import SIZES
    from unetlib.phantom.dataset import plan_case_weeks
    from unetlib.phantom.statistics import gland_position

    plan = [(case, week) for _, case, week, _ in plan_case_weeks(SIZES["full"], seed)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        results = list(pool.map(_case_week_measures, *zip(*[(seed, c, w) for c, w in plan]), chunksize=4))
    measures = [brightness for brightness, _ in results]
    mask, truth, both = np.array([counts for _, counts in results]).sum(axis=0)
    lines = [
        f"T2 brightness relative to urine (median of each tissue's voxels, then median and range over "
        f"the {len(plan)} case-weeks where it appears):",
        "",
        "| tissue | phantom: median | range | literature |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, literature in TISSUE_ROWS:
        values = np.array([m[name] for m in measures if name in m])
        spread = f"{values.min():.2f}–{values.max():.2f}"
        lines.append(f"| {name.replace('_', ' ')} | {np.median(values):.2f} | {spread} | {literature} |")
    ratio = np.array([m["peripheral_zone"] / m["transition_zone"] for m in measures])
    quantiles = np.percentile(ratio, [5, 25, 50, 75, 95])
    lines += [
        "",
        "Peripheral/transition zone ratio over the case-weeks: "
        + ", ".join(f"{q}th percentile {v:.2f}" for q, v in zip((5, 25, 50, 75, 95), quantiles))
        + f"; {np.mean((ratio >= 1.3) & (ratio <= 2.5)):.0%} within 1.3–2.5, {np.mean(ratio < 1.3):.0%} below 1.3, "
        f"{np.mean(ratio > 2.5):.0%} above 2.5.",
    ]
    lines += [
        "",
        f"The rater's prostate masks against the true glands (all {len(plan)} case-weeks, pooled): "
        f"Dice {2 * both / (mask + truth):.3f}.",
    ]
    positions = np.array([gland_position(seed, case, week) for case, week in plan])
    cases = sorted({case for case, _ in plan})
    within = np.concatenate(
        [
            positions[[i for i, (c, _) in enumerate(plan) if c == case]]
            - positions[[i for i, (c, _) in enumerate(plan) if c == case]].mean(axis=0)
            for case in cases
            if sum(c == case for c, _ in plan) > 1
        ]
    )
    lines += [
        "",
        "Gland centre in the field of view (mm from its centre; L, P, S): SD over all case-weeks "
        + " / ".join(f"{v:.1f}" for v in positions.std(axis=0))
        + ", between the weeks of one case "
        + " / ".join(f"{v:.1f}" for v in within.std(axis=0))
        + "; mean "
        + " / ".join(f"{v:.1f}" for v in positions.mean(axis=0))
        + ".",
    ]
    return lines


def anatomy_figure(seed: int, out: Path) -> None:
    """The mid-gland coronal slice of four patients of the full phantom, whole (top) and zoomed
    to 100 mm around the prostate (bottom), at the display orientation of the kit's viewers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unetlib.labels import PROSTATE
    from unetlib.phantom import SIZES, render_case_week
    from unetlib.phantom.dataset import SUPERIOR_SPACING, plan_case_weeks

    chosen = [(case, week) for split, case, week, _ in plan_case_weeks(SIZES["full"], seed) if week == 0][:4]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4), gridspec_kw={"height_ratios": [1, 1.6]})
    for column, (case, week) in enumerate(chosen):
        slices = render_case_week(seed, case, week)
        area = np.count_nonzero(slices.masks == PROSTATE, axis=(1, 2))
        index = int(np.flatnonzero(area)[len(np.flatnonzero(area)) // 2])
        image, spacing = slices.images[index], slices.acquisition.spacing
        low, high = np.percentile(image, [0.5, 99.5])
        # Display as a radiologist reads a coronal image: patient's right on the left, superior up.
        shown = image.T[::-1]
        extent = (0, image.shape[0] * spacing, 0, image.shape[1] * SUPERIOR_SPACING)
        style = {"cmap": "gray", "vmin": low, "vmax": high, "extent": extent, "interpolation": "nearest"}
        axes[0, column].imshow(shown, **style)
        axes[0, column].set_title(f"case {case:03d} week {week}, slice {index}", fontsize=9)
        rows, columns = np.nonzero(slices.masks[index] == PROSTATE)
        x, z = rows.mean() * spacing, columns.mean() * SUPERIOR_SPACING
        axes[1, column].imshow(shown, **style)
        axes[1, column].set_xlim(x - 50, x + 50)
        axes[1, column].set_ylim(z - 50, z + 50)
        axes[0, column].add_patch(plt.Rectangle((x - 50, z - 50), 100, 100, fill=False, color="gold", lw=1))
        axes[1, column].set_title("100 mm around the prostate", fontsize=9)
        for row in (0, 1):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    fig.suptitle(
        "Phantom mid-gland coronal slices (patient's right on the left, superior up): bright peripheral zone "
        "at the sides, darker nodular transition zone, dark capsule in bright fat; femoral heads in their sockets",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


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
    parser.add_argument("--anatomy-figure", type=Path, help="also draw four patients' mid-gland slices to this PNG")
    args = parser.parse_args()

    from unetlib.data import SPLITS, load_split
    from unetlib.labels import LABELS, PROSTATE
    from unetlib.phantom import SIZES, generate_phantom
    from unetlib.phantom.dataset import plan_case_weeks
    from unetlib.phantom.statistics import (
        best_intensity_band_dice,
        comparison_table,
        slice_presence,
        volume_label_fractions,
    )

    work = Path(tempfile.mkdtemp(prefix="unetlib-phantom-"))
    os.environ["UNETLIB_CACHE"] = str(work / "cache")
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores", ""]
    try:
        for size in ("small", "full"):
            started = time.perf_counter()
            root = generate_phantom(work / size, size, args.seed)
            total = sum(SIZES[size].count(s) for s in SPLITS)
            lines.append(f"- generating `{size}` ({total:,} slices): {time.perf_counter() - started:.0f} s")
            if size == "small":  # the default data: can one intensity band find the prostate?
                train = load_split(root, "train", progress=False)
                band = best_intensity_band_dice(train.images, train.labels[..., None] == PROSTATE)
                lines.append(f"  - best single intensity band for the prostate on its train split: Dice {band:.3f}")
                del train
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
        lines += ["", *contrast_and_position(args.seed)]
        if args.figure:
            case_week_figure(root, args.figure)
            lines.append(f"\nFigure: {args.figure}")
        if args.anatomy_figure:
            anatomy_figure(args.seed, args.anatomy_figure)
            lines.append(f"\nFigure: {args.anatomy_figure}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
