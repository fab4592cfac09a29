"""Compare training recipes on one dataset, each trained for the same budget as a user trains it.

    python benchmarks/recipe.py --data ROOT [--out benchmarks/results/recipe] VARIANT [VARIANT ...]

Everything goes to ``OUT/NAME``, NAME being the data root's folder name. Each VARIANT (see
:data:`VARIANTS`, or ``python benchmarks/recipe.py --list``) is ``quick`` with some settings
changed, trained in a fresh process (``unetlib train --preset quick --out OUT/NAME/VARIANT ...``)
and scored on the validation and the test split (``unetlib evaluate``).
Variants whose name ends in ``+tta``, ``+lcc`` or ``+tta+lcc`` score the model of the variant
before the ``+`` again with those inference options (flip test-time augmentation, largest
3D connected component), without training anything. A rerun continues: finished runs and
scores are reused, an interrupted run resumes from its last epoch.

It writes ``results.md`` and ``results.json`` there: the CPU (with its bfloat16 flags) and
the date, one row per variant, and over the ``quick-seedN`` variants the mean and the spread of
the test prostate Dice. Nothing else should run meanwhile: the budget is wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import cpu_name
from calibrate import cpu_flags

CLASSES = ("prostate", "rectum", "bladder", "bone", "body")
REFERENCE = dict(schedule="constant", warmup=0)
"""``quick`` at a constant rate: the ``reference`` preset."""
VARIANTS: dict[str, dict] = {
    "constant": REFERENCE,
    **{f"quick-seed{seed}": dict(seed=seed) for seed in range(3)},
    "cosine": dict(schedule="cosine"),
    "onecycle": dict(schedule="onecycle"),
}
"""Named variants of ``quick``: the settings each changes (CLI flag values)."""
INFERENCE = {"tta": ("--tta",), "lcc": ("--largest-component",)}
"""Inference options a ``NAME+OPTION`` variant adds to ``unetlib evaluate``."""


def unetlib(*arguments: str, data: Path) -> None:
    """Run a ``unetlib`` command in a fresh process on the data root ``data`` (given as
    ``UNETLIB_DATA``, so a run's config is the preset's own); stop on failure."""
    command = [sys.executable, "-m", "unetlib", *arguments]
    print(f"$ UNETLIB_DATA={data}", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "UNETLIB_DATA": str(data)})


def train(name: str, data: Path, out: Path) -> Path:
    """Train variant ``name`` into ``out/name`` (reused when finished); returns the run folder."""
    run = out / name
    if not (run / "complete.json").is_file():
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in VARIANTS[name].items()]
        unetlib("train", "--preset", "quick", "--out", str(run), *flags, data=data)
    return run


def scores(run: Path, split: str, options: tuple[str, ...], data: Path) -> dict[str, float]:
    """Pooled Dice per class of ``run``'s model on ``split`` with inference ``options`` (cached)."""
    path = run / f"{split}_scores{''.join(option.replace('--', '_') for option in options)}.json"
    if not path.is_file():
        unetlib("evaluate", str(run / "model.keras"), "--split", split, "--json", str(path), *options, data=data)
    return {name: values["dice"] for name, values in json.loads(path.read_text())["per_class"].items()}


def measure(name: str, data: Path, out: Path) -> dict:
    base, *inference = name.split("+")
    if base not in VARIANTS or any(option not in INFERENCE for option in inference):
        raise SystemExit(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}, optionally +tta, +lcc")
    run = train(base, data, out)
    options = tuple(flag for option in INFERENCE if option in inference for flag in INFERENCE[option])
    summary = json.loads((run / "complete.json").read_text())
    return {
        "variant": name,
        "settings": VARIANTS[base],
        "inference": inference,
        "epochs": summary["epochs_run"],
        "seconds": summary["seconds"],
        "validate": scores(run, "validate", options, data),
        "test": scores(run, "test", options, data),
    }


def report(rows: list[dict], machine: str, data: Path) -> str:
    lines = [
        f"Machine: {machine}",
        f"Data: {data}; {datetime.date.today()}",
        "",
        "| variant | changes | epochs | validation prostate | " + " | ".join(f"test {c}" for c in CLASSES) + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in CLASSES) + " |",
    ]
    for row in rows:
        changes = ", ".join(f"{k}={v}" for k, v in row["settings"].items()) or "(quick)"
        changes += "".join(f" +{option}" for option in row["inference"])
        lines.append(
            f"| {row['variant']} | {changes} | {row['epochs']} | {row['validate']['prostate']:.3f} | "
            + " | ".join(f"{row['test'][c]:.3f}" for c in CLASSES)
            + " |"
        )
    seeds = [row for row in rows if row["variant"].startswith("quick-seed") and not row["inference"]]
    if len(seeds) > 1:
        prostate = [row["test"]["prostate"] for row in seeds]
        lines += [
            "",
            f"`quick` over {len(seeds)} seeds: test prostate mean {sum(prostate) / len(prostate):.3f}, "
            f"spread (max − min) {max(prostate) - min(prostate):.3f}",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="variants to train and score, in order")
    parser.add_argument("--data", type=Path, help="data root (e.g. a full-size phantom)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipe")
    parser.add_argument("--list", action="store_true", help="list the variants and what each changes")
    args = parser.parse_args()
    if args.list:
        for name, settings in VARIANTS.items():
            print(f"{name:<16} {settings}")
        return 0
    if args.data is None or not args.variants:
        parser.error("give --data and at least one VARIANT")
    out = args.out / args.data.resolve().name  # runs on other data are never reused for this one
    out.mkdir(parents=True, exist_ok=True)
    rows = [measure(name, args.data, out) for name in args.variants]
    machine = f"{cpu_name()} ({cpu_flags()}), {os.cpu_count()} cores"
    table = report(rows, machine, args.data)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
