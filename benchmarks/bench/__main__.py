"""Speed and memory of the kit, measured in one run so the ratios compare like with like.

    python -m benchmarks.bench [--size full|small] [--dice-cap-minutes 15] [--out benchmarks/results]

(from the repository root). Writes ``results.json`` and ``results.md`` (a Markdown table) to
``--out``. Measures, on a freshly generated phantom:

* phantom generation; first decode and cached reload of the train split, with peak memory;
* input-pipeline throughput with augmentation, against the model's training throughput;
* ``quick`` training in ``model.fit`` fed by the kit's pipeline and by the same pipeline with
  tf.data's autotuning, in alternation;
* the matrix-product ceiling of this machine in float32 and bfloat16;
* training throughput of the ``original`` and ``quick`` presets in float32 and mixed_bfloat16,
  as slices/s and as achieved GFLOP/s against that ceiling; ``quick`` with oneDNN off;
* where a ``quick`` training step spends its time, from the TensorFlow profiler, with the
  convolutions' weight gradients apart from their forward pass and input gradients;
* inference throughput;
* one full-size epoch of ``quick`` (``unetlib`` training as a user runs it): wall time and
  peak resident memory of that process;
* time-to-Dice: training wall time until validation prostate Dice first reaches 0.75, for
  ``quick``, ``reference`` (``quick`` at a constant rate) and ``original``, capped at
  ``--dice-cap-minutes``;
* ``quick`` training in ``model.fit`` on 1 and on 2 logical CPU devices (``--distribute
  mirrored``), the same global batch, each in fresh processes.

``--only distribute`` runs that last family alone (a few minutes; it needs no phantom) and
writes ``results-distribute.json`` and ``.md``; ``--only time-to-dice [--data ROOT]`` runs
time-to-Dice of ``quick`` alone, on an existing phantom when given, into
``results-time-to-dice.json`` and ``.md``.

Measurements that depend on process-wide settings (oneDNN on/off, peak memory of a run,
logical devices) run
in a fresh Python process of this same runner (the ``--child-*`` options).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from . import convergence, data, distribute, profile, speed
from .common import Table, cpu_name


def run(size: str, cap_minutes: float, out: Path, only: str | None = None, root: Path | None = None) -> None:
    """Every family of measurements in turn, on one phantom, into one table (or only the
    family ``only``; time-to-Dice on the phantom at ``root`` when given)."""
    table = Table()
    if only == "distribute":
        distribute.measure(table)
        _write(table, out, "results-distribute")  # beside, not over, a full run's results
        return
    if only == "time-to-dice":
        work = Path(tempfile.mkdtemp(prefix="unetlib-bench-"))
        try:
            if root is None:
                root, _ = data.measure_decode(table, size, work)
            convergence.measure_time_to_dice(table, root, cap_minutes, ("quick",))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _write(table, out, "results-time-to-dice")
        return
    work = Path(tempfile.mkdtemp(prefix="unetlib-bench-"))
    os.environ["UNETLIB_CACHE"] = str(work / "cache")  # children inherit it: they reuse the decode
    try:
        root, split = data.measure_decode(table, size, work)
        speed.measure_precision(table)
        pipeline_speed = data.measure_pipeline(table, split)
        ceilings, flops = speed.measure(table, pipeline_speed)
        profile.measure(table, flops["quick"], ceilings["float32"])
        speed.measure_inference(table, split.images)
        del split  # free the train split before the fresh processes load their own
        convergence.measure(table, root, work, cap_minutes)
        distribute.measure(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write(table, out)


def _write(table: Table, out: Path, name: str = "results") -> None:
    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table.write(out, machine, name)
    print(f"wrote {out / (name + '.md')}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["small", "full"], default="full", help="phantom size to measure on")
    parser.add_argument(
        "--dice-cap-minutes",
        type=float,
        default=15.0,
        help="training time after which time-to-Dice reports 'not reached' (default 15)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "results")
    parser.add_argument(
        "--only",
        choices=["distribute", "time-to-dice"],
        help="run one family of measurements alone: the 1 vs 2 device comparison, or time-to-Dice of quick",
    )
    parser.add_argument(
        "--data", type=Path, metavar="ROOT", help="with --only time-to-dice: an existing phantom to train on"
    )
    children = parser.add_mutually_exclusive_group()
    children.add_argument("--child-speed", nargs=3, metavar=("PRESET", "PRECISION", "STEPS"), help=argparse.SUPPRESS)
    children.add_argument("--child-epoch", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    children.add_argument("--child-dice", nargs=3, metavar=("PRESET", "ROOT", "CAP"), help=argparse.SUPPRESS)
    children.add_argument("--child-replicas", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_speed:
        preset, precision, steps = args.child_speed
        print(json.dumps({"slices_per_s": speed.training_speed(preset, precision, int(steps))}))
    elif args.child_epoch:
        print(json.dumps(convergence.full_epoch(Path(args.child_epoch[0]), Path(args.child_epoch[1]))))
    elif args.child_dice:
        preset, root, cap = args.child_dice
        print(json.dumps(convergence.time_to_dice(preset, Path(root), float(cap))))
    elif args.child_replicas:
        print(json.dumps({"slices_per_s": distribute.replica_speed(args.child_replicas)}))
    else:
        if args.data and args.only != "time-to-dice":
            parser.error("--data goes with --only time-to-dice")
        run(args.size, args.dice_cap_minutes, args.out, args.only, args.data)


if __name__ == "__main__":
    main()
