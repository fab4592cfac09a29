"""Speed and memory of the kit, measured in one run so the ratios compare like with like.

    python benchmarks/bench.py [--size full|small] [--out benchmarks/results]

Writes ``results.json`` and ``results.md`` (a Markdown table) to ``--out``. Measures:
phantom generation time; first decode and cached reload of the train split (with peak
resident memory); input-pipeline throughput with augmentation; training throughput of
the ``seed`` and ``quick`` presets in float32 and mixed_bfloat16; inference throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 8) -> float:
    """Achieved GFLOP/s of a large square matrix product: the practical compute ceiling."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    tf.linalg.matmul(a, b).numpy()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["small", "full"], default="full", help="phantom size to measure on")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    import numpy as np

    from unetlib.data import load_split
    from unetlib.phantom import SIZES, generate_phantom

    work = Path(tempfile.mkdtemp(prefix="unetlib-bench-"))
    os.environ["UNETLIB_CACHE"] = str(work / "cache")
    rows: list[tuple[str, float, str]] = []
    try:
        root, seconds = timed(generate_phantom, work / "phantom", args.size, progress=False)
        total = sum(SIZES[args.size].count(s) for s in ("train", "validate", "test"))
        rows.append((f"phantom generation ({args.size}, {total} slices)", seconds, "s"))
        rows.append(("phantom generation rate", total / seconds, "slices/s"))

        split, seconds = timed(load_split, root, "train", progress=False)
        count = len(split.images)
        rows.append((f"first decode of train ({count} slices)", seconds, "s"))
        rows.append(("peak resident memory after decode", peak_rss_gb(), "GiB"))
        rows.append(("size of the decoded arrays", (split.images.nbytes + split.labels.nbytes) / 1024**3, "GiB"))
        del split
        split, seconds = timed(load_split, root, "train", progress=False)
        rows.append(("cached reload of train", seconds, "s"))

        import unetlib.backend  # noqa: F401
        from unetlib.config import make_config
        from unetlib.evaluation import predict_labels
        from unetlib.model import build_from_config, forward_flops_per_slice
        from unetlib.pipeline import make_dataset
        from unetlib.training import compile_model, measure_training_speed

        dataset = make_dataset(split.images, split.labels, 8, shuffle=True, augment=True, repeat=True)
        iterator = iter(dataset)
        next(iterator)
        _, seconds = timed(lambda: [next(iterator) for _ in range(100)])
        pipeline_speed = 800 / seconds
        rows.append(("input pipeline with augmentation", pipeline_speed, "slices/s"))

        # One 8-slice batch per measurement: the original recipe under emulated bfloat16 can
        # take over a minute per step on a CPU without native bfloat16 support.
        sample_images, sample_labels = split.images[:8], split.labels[:8]
        peaks = {"float32": matmul_peak_gflops("float32"), "mixed_bfloat16": matmul_peak_gflops("bfloat16", repeats=2)}
        rows.append(("matmul ceiling float32 (2048x2048)", peaks["float32"], "GFLOP/s"))
        rows.append(("matmul ceiling bfloat16 (2048x2048)", peaks["mixed_bfloat16"], "GFLOP/s"))
        speeds = {}
        for preset in ("seed", "quick"):
            training_flops = 3 * forward_flops_per_slice(build_from_config(make_config(preset)))
            rows.append((f"training FLOPs per slice, {preset}", training_flops / 1e9, "GFLOP"))
            for precision in ("float32", "mixed_bfloat16"):
                config = make_config(preset, precision=precision)
                speed = measure_training_speed(config, sample_images, sample_labels, steps=1)
                speeds[(preset, precision)] = speed
                achieved = speed * training_flops / 1e9
                rows.append((f"training {preset} {precision}", speed, "slices/s"))
                rows.append((f"training {preset} {precision} achieved", achieved, "GFLOP/s"))
                rows.append((f"training {preset} {precision} / matmul ceiling", achieved / peaks[precision], "fraction"))
        quick = speeds[("quick", "float32")]
        rows.append(("pipeline / quick training speed", pipeline_speed / quick, "x"))
        rows.append(("quick / seed training speed (float32)", quick / speeds[("seed", "float32")], "x"))

        model = compile_model(make_config("quick"))
        predict_labels(model, split.images[:16], progress=False)
        _, seconds = timed(predict_labels, model, split.images[:256], progress=False)
        rows.append(("inference quick float32", 256 / seconds, "slices/s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    lines = [f"Machine: {machine}", "", "| measurement | value | unit |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {value:.2f} | {unit} |" for name, value, unit in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
