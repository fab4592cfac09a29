"""Speed and memory of the kit, measured in one run so the ratios compare like with like.

    python benchmarks/bench.py [--size full|small] [--dice-cap-minutes 15] [--out benchmarks/results]

Writes ``results.json`` and ``results.md`` (a Markdown table) to ``--out``. Measures, on a
freshly generated phantom:

* phantom generation; first decode and cached reload of the train split, with peak memory;
* input-pipeline throughput with augmentation, against the model's training throughput;
* ``quick`` training in ``model.fit`` fed by the kit's pipeline and by the same pipeline with
  tf.data's autotuning, in alternation;
* the matrix-product ceiling of this machine in float32 and bfloat16;
* training throughput of the ``seed`` and ``quick`` presets in float32 and mixed_bfloat16,
  as slices/s and as achieved GFLOP/s against that ceiling; ``quick`` with oneDNN off;
* where a ``quick`` training step spends its time, from the TensorFlow profiler, with the
  convolutions' weight gradients apart from their forward pass and input gradients;
* inference throughput;
* one full-size epoch of ``quick`` (``unetlib`` training as a user runs it): wall time and
  peak resident memory of that process;
* time-to-Dice: training wall time until validation prostate Dice first reaches 0.75, for
  ``quick`` and ``seed``, capped at ``--dice-cap-minutes``.

Measurements that depend on process-wide settings (oneDNN on/off, peak memory of a run) run
in a fresh Python process of this same script (the ``--child-*`` options).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DICE_TARGET = 0.75
DICE_CHECKS_MINUTES = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30)
"""When (minutes of training) the time-to-Dice runs check validation Dice: the same for every preset."""
DICE_VALIDATION_STRIDE = 10
"""Time-to-Dice checks every 10th validation slice, so that a check of ``seed`` takes seconds, not minutes."""


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` would
    start a child process at its parent's peak (Linux carries it over through fork and exec),
    so a fresh benchmark process would report the parent's memory as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def in_fresh_process(option: str, *values: str, env: dict | None = None) -> dict:
    """Run this script with ``--child-OPTION VALUES`` and return the JSON it prints last."""
    command = [sys.executable, __file__, f"--child-{option}", *values]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- measurements -------------------------------------------------------------------------


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 8) -> float:
    """Achieved GFLOP/s of a large square matrix product: the practical compute ceiling."""
    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    tf.linalg.matmul(a, b).numpy()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def sample_batch(count: int = 8):
    """A reproducible batch of random slices: speed does not depend on the values."""
    import numpy as np

    from unetlib.labels import NUM_CLASSES, SLICE_SHAPE

    rng = np.random.default_rng(0)
    images = rng.normal(size=(count, *SLICE_SHAPE, 1)).astype(np.float32)
    return images, rng.integers(0, NUM_CLASSES, (count, *SLICE_SHAPE)).astype(np.uint8)


def training_speed(preset: str, precision: str, steps: int) -> float:
    from unetlib.config import make_config
    from unetlib.training import measure_training_speed

    return measure_training_speed(make_config(preset, precision=precision), *sample_batch(), steps=steps)


def in_alternation(runs: dict, rounds: int = 5) -> dict[str, float]:
    """Seconds each of ``runs`` (name: function) took in total, called in turn ``rounds`` times,
    so that a machine that gets busier or quieter meanwhile affects every variant alike."""
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, function in runs.items():
            started = time.perf_counter()
            function()
            seconds[name] += time.perf_counter() - started
    return seconds


def batch_norm_comparison(rounds: int = 5, steps: int = 10) -> tuple[float, float]:
    """Training speed (slices/s) of ``quick`` with the fused batch norm and with Keras' own,
    the two models timed in alternation (``rounds`` × ``steps`` each)."""
    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    import keras

    from unetlib.config import make_config
    from unetlib.model import FusedBatchNormalization, build_from_config
    from unetlib.training import compile_model

    def plain(layer):
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    config = make_config("quick", precision="float32")
    models = {"fused": compile_model(config),
              "keras": compile_model(config, keras.models.clone_model(build_from_config(config), clone_function=plain))}
    images, labels = sample_batch()
    for model in models.values():
        model.train_on_batch(images, labels)  # trace and compile

    def steps_of(model):
        return lambda: [model.train_on_batch(images, labels) for _ in range(steps)]

    seconds = in_alternation({name: steps_of(model) for name, model in models.items()}, rounds)
    slices = rounds * steps * len(images)
    return slices / seconds["fused"], slices / seconds["keras"]


def pipeline_comparison(images, labels, rounds: int = 5, steps: int = 40) -> tuple[float, float]:
    """Training speed (slices/s) of ``quick`` in ``model.fit`` fed by the kit's pipeline (fixed
    parallelism) and by the same pipeline with tf.data's autotuning, in alternation."""
    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)

    from unetlib.config import make_config
    from unetlib.pipeline import make_dataset
    from unetlib.training import compile_model

    config = make_config("quick")
    model = compile_model(config)
    datasets = {name: make_dataset(images, labels, config.batch_size, shuffle=True, augment=True, repeat=True,
                                   autotune=autotune)
                for name, autotune in (("fixed", False), ("autotuned", True))}

    def fit(dataset, count=steps):
        return lambda: model.fit(dataset, steps_per_epoch=count, epochs=1, verbose=0)

    for dataset in datasets.values():
        fit(dataset, 2)()  # start the pipeline; the first call also traces the model
    seconds = in_alternation({name: fit(dataset) for name, dataset in datasets.items()}, rounds)
    slices = rounds * steps * config.batch_size
    return slices / seconds["fixed"], slices / seconds["autotuned"]


def profile_training_step(steps: int = 6) -> dict[str, float]:
    """Share of operation time per kind of work in ``quick`` training steps (TensorFlow profiler).

    Operation times are summed over TensorFlow's executor threads, so the shares say where
    the work goes; the ``wall`` entry is seconds per step.
    """
    import glob

    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from unetlib.config import make_config
    from unetlib.training import compile_model

    model = compile_model(make_config("quick"))
    images, labels = sample_batch()
    for _ in range(2):
        model.train_on_batch(images, labels)
    logdir = tempfile.mkdtemp(prefix="unetlib-profile-")
    tf.profiler.experimental.start(logdir)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    wall = (time.perf_counter() - started) / steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    shutil.rmtree(logdir, ignore_errors=True)

    kinds: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # "scope/of/the/op:OpType"; "Class::method" events are the executor's own
                    kinds[_kind_of_op(*name.rsplit(":", 1))] += event.duration_ps
    total = sum(kinds.values())
    shares = {kind: value / total for kind, value in kinds.items()}
    shares["wall"] = wall
    return shares


CONV_FORWARD_AND_INPUT = "convolutions: forward and input gradient"
CONV_WEIGHTS = "convolutions: weight gradient"


def _kind_of_op(scope: str, op_type: str) -> str:
    if "Conv2DBackpropFilter" in op_type:
        return CONV_WEIGHTS
    if "Conv2D" in op_type:  # a transposed convolution runs the same two kernels the other way round
        return CONV_FORWARD_AND_INPUT
    if "BatchNorm" in op_type:
        return "batch norm"
    if scope.startswith("compile_loss") or "dice" in scope or op_type.startswith("SparseSoftmax"):
        return "loss and Dice metrics"
    if "adam" in scope.lower() or op_type.startswith(("Assign", "ResourceApply")):
        return "optimiser update"
    return "other: ReLU, pooling, concat, softmax, bookkeeping"


def full_epoch(root: Path, out: Path) -> dict:
    """One epoch of ``quick`` as ``unetlib train`` runs it (run in a fresh process)."""
    from unetlib.config import make_config
    from unetlib.data import find_pairs
    from unetlib.training import train

    slices = len(find_pairs(root, "train"))  # the files, not a decode: this process's memory is measured
    config = make_config("quick", data=str(root), epochs=1, max_minutes=600)
    started = time.perf_counter()
    result = train(config, out, verbose=0)
    return {"seconds": time.perf_counter() - started, "slices": slices, "peak_rss_gib": peak_rss_gib(),
            "val_prostate_dice": result.history["val_prostate_dice"][-1]}


def time_to_dice(preset: str, root: Path, cap_minutes: float) -> dict:
    """Training wall time (the Dice checks themselves excluded) until validation prostate Dice
    first reaches :data:`DICE_TARGET`, checked at :data:`DICE_CHECKS_MINUTES`."""
    import keras

    from unetlib.config import make_config
    from unetlib.data import load_split
    from unetlib.evaluation import predict_labels
    from unetlib.labels import PROSTATE
    from unetlib.metrics import dice_per_class
    from unetlib.pipeline import make_dataset
    from unetlib.training import compile_model, precision_policy, training_indices

    config = make_config(preset)
    train_split = load_split(root, "train", progress=False)
    validate = load_split(root, "validate", progress=False)
    check_images = validate.images[::DICE_VALIDATION_STRIDE]
    check_labels = validate.labels[::DICE_VALIDATION_STRIDE]
    checks = [60 * minutes for minutes in DICE_CHECKS_MINUTES if minutes <= cap_minutes]

    class DiceClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started, self.paused, self.curve, self.reached = time.perf_counter(), 0.0, [], None

        def on_train_batch_end(self, batch, logs=None):
            trained = time.perf_counter() - self.started - self.paused
            if len(self.curve) == len(checks) or trained < checks[len(self.curve)]:
                return
            pause = time.perf_counter()
            predicted = predict_labels(self.model, check_images, progress=False)
            dice = float(dice_per_class(check_labels, predicted)[PROSTATE])
            self.paused += time.perf_counter() - pause
            self.curve.append((round(trained, 1), round(dice, 3)))
            if dice >= DICE_TARGET and self.reached is None:
                self.reached = trained
            if self.reached is not None or len(self.curve) == len(checks):
                self.model.stop_training = True

    # The same data, model and seed as train(), without its validation: train() validates the
    # whole split when a stopped epoch ends, which would add minutes to every `seed` run.
    keras.utils.set_random_seed(config.seed)
    clock = DiceClock()
    with precision_policy(config.precision):
        stream = training_indices(train_split.labels, None, config.prostate_oversampling)
        data = make_dataset(train_split.images, train_split.labels, config.batch_size, indices=stream, shuffle=True,
                            augment=config.augment, repeat=True, seed=config.seed)
        model = compile_model(config)
        model.fit(data, steps_per_epoch=10**9, epochs=1, callbacks=[clock], verbose=0)
    return {"seconds": clock.reached, "curve": clock.curve, "cap_seconds": checks[-1]}


# --- the run -------------------------------------------------------------------------------


def _shown(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


class Table:
    """Rows of (measurement, value, unit), written as JSON and as a Markdown table."""

    def __init__(self):
        self.rows: list[tuple[str, float | str, str]] = []
        self.extra: dict = {}

    def add(self, name: str, value, unit: str = "") -> None:
        self.rows.append((name, value, unit))
        print(f"{name}: {_shown(value)} {unit}", flush=True)

    def write(self, out: Path, machine: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"machine": machine, "rows": self.rows, **self.extra}, indent=2) + "\n")
        lines = [f"Machine: {machine}", "", "| measurement | value | unit |", "| --- | ---: | --- |"]
        lines += [f"| {name} | {_shown(value)} | {unit} |" for name, value, unit in self.rows]
        (out / "results.md").write_text("\n".join(lines) + "\n")


def run(size: str, cap_minutes: float, out: Path) -> None:
    from unetlib.data import load_split
    from unetlib.phantom import SIZES, generate_phantom

    table = Table()
    work = Path(tempfile.mkdtemp(prefix="unetlib-bench-"))
    os.environ["UNETLIB_CACHE"] = str(work / "cache")  # children inherit it: they reuse the decode
    try:
        root, seconds = timed(generate_phantom, work / "phantom", size, progress=False)
        total = sum(SIZES[size].count(s) for s in ("train", "validate", "test"))
        table.add(f"phantom generation ({size}, {total} slices)", seconds, "s")

        split, seconds = timed(load_split, root, "train", progress=False)
        table.add(f"first decode of train ({len(split.images)} slices)", seconds, "s")
        table.add("peak resident memory after decode", peak_rss_gib(), "GiB")
        table.add("size of the decoded arrays", (split.images.nbytes + split.labels.nbytes) / 1024**3, "GiB")
        del split
        split, seconds = timed(load_split, root, "train", progress=False)
        table.add("cached reload of train", seconds, "s")

        from unetlib.backend import default_precision
        from unetlib.config import make_config
        from unetlib.evaluation import predict_labels
        from unetlib.model import build_from_config, forward_flops_per_slice
        from unetlib.pipeline import make_dataset
        from unetlib.training import compile_model

        table.add("precision chosen by 'auto' here", default_precision())
        dataset = make_dataset(split.images, split.labels, 8, shuffle=True, augment=True, repeat=True)
        iterator = iter(dataset)
        next(iterator)
        _, seconds = timed(lambda: [next(iterator) for _ in range(100)])
        pipeline_speed = 800 / seconds
        table.add("input pipeline with augmentation", pipeline_speed, "slices/s")
        del dataset, iterator
        fixed, autotuned = pipeline_comparison(split.images, split.labels)
        table.add("training quick in model.fit, fixed pipeline (in alternation)", fixed, "slices/s")
        table.add("training quick in model.fit, autotuned pipeline (in alternation)", autotuned, "slices/s")
        table.add("fixed / autotuned pipeline, quick training in model.fit", fixed / autotuned, "x")

        peaks = {"float32": matmul_peak_gflops("float32"), "mixed_bfloat16": matmul_peak_gflops("bfloat16", repeats=2)}
        table.add("matmul ceiling float32 (2048x2048)", peaks["float32"], "GFLOP/s")
        table.add("matmul ceiling bfloat16 (2048x2048)", peaks["mixed_bfloat16"], "GFLOP/s")

        # Steps per measurement: the original recipe takes seconds per 8-slice step.
        steps = {"seed": 2, "quick": 20}
        speeds, flops = {}, {}
        for preset in ("seed", "quick"):
            flops[preset] = 3 * forward_flops_per_slice(build_from_config(make_config(preset)))
            table.add(f"training FLOPs per slice, {preset}", flops[preset] / 1e9, "GFLOP")
            for precision in ("float32", "mixed_bfloat16"):
                speed = speeds[(preset, precision)] = training_speed(preset, precision, steps[preset])
                achieved = speed * flops[preset] / 1e9
                table.add(f"training {preset} {precision}", speed, "slices/s")
                table.add(f"training {preset} {precision} achieved", achieved, "GFLOP/s")
                for ceiling in ("float32", "mixed_bfloat16"):
                    table.add(f"training {preset} {precision} / {ceiling} matmul ceiling", achieved / peaks[ceiling], "fraction")
        quick = speeds[("quick", "float32")]
        off = in_fresh_process("speed", "quick", "float32", str(steps["quick"]), env={"TF_ENABLE_ONEDNN_OPTS": "0"})
        table.add("training quick float32, oneDNN off", off["slices_per_s"], "slices/s")
        table.add("oneDNN on / off, quick float32", quick / off["slices_per_s"], "x")
        fused, plain = batch_norm_comparison()
        table.add("training quick float32, fused batch norm (in alternation)", fused, "slices/s")
        table.add("training quick float32, Keras' own batch norm (in alternation)", plain, "slices/s")
        table.add("fused / Keras batch norm, quick float32", fused / plain, "x")
        table.add("pipeline / quick training speed", pipeline_speed / quick, "x")
        table.add("quick / seed training speed (float32)", quick / speeds[("seed", "float32")], "x")
        table.add("mixed_bfloat16 / float32, quick", speeds[("quick", "mixed_bfloat16")] / quick, "x")
        table.add("mixed_bfloat16 / float32, seed", speeds[("seed", "mixed_bfloat16")] / speeds[("seed", "float32")], "x")

        shares = profile_training_step()
        wall = shares.pop("wall")
        table.add("quick training step (profiled, 8 slices)", wall * 1000, "ms")
        for kind, share in sorted(shares.items(), key=lambda item: -item[1]):
            table.add(f"quick step: {kind}", share, "share of op time")
        # Training FLOPs are 3 × forward: one forward's worth each for the forward pass, the
        # input gradient and the weight gradient.
        conv_parts = {CONV_FORWARD_AND_INPUT: 2 / 3, CONV_WEIGHTS: 1 / 3}
        conv_share = sum(shares.get(kind, 0.0) for kind in conv_parts)
        if conv_share:
            conv_rate = 8 * flops["quick"] / (conv_share * wall) / 1e9
            table.add("quick convolutions alone (their share of the step)", conv_rate, "GFLOP/s")
            table.add("quick convolutions alone / float32 matmul ceiling", conv_rate / peaks["float32"], "fraction")
            for kind, part in conv_parts.items():
                rate = 8 * flops["quick"] * part / (shares[kind] * wall) / 1e9
                table.add(f"quick {kind} / float32 matmul ceiling", rate / peaks["float32"], "fraction")

        model = compile_model(make_config("quick"))
        predict_labels(model, split.images[:16], progress=False)
        _, seconds = timed(predict_labels, model, split.images[:256], progress=False)
        table.add("inference quick", 256 / seconds, "slices/s")
        del model, split

        epoch = in_fresh_process("epoch", str(root), str(work / "epoch"))
        table.add(f"full epoch of quick ({epoch['slices']} slices, incl. validation)", epoch["seconds"] / 60, "min")
        table.add("peak resident memory of that training process", epoch["peak_rss_gib"], "GiB")
        table.add("validation prostate Dice after that epoch", epoch["val_prostate_dice"], "")

        table.extra["time_to_dice"] = {}
        for preset in ("quick", "seed"):
            result = in_fresh_process("dice", preset, str(root), str(cap_minutes))
            table.extra["time_to_dice"][preset] = result
            reached = result["seconds"]
            shown = round(reached / 60, 2) if reached is not None else f"not reached in {result['cap_seconds'] / 60:g}"
            table.add(f"time to validation prostate Dice {DICE_TARGET}, {preset}", shown, "min")
            best = max((dice for _, dice in result["curve"]), default=float("nan"))
            table.add(f"best validation prostate Dice checked, {preset}", best, "")
        quick_s, seed = table.extra["time_to_dice"]["quick"]["seconds"], table.extra["time_to_dice"]["seed"]
        if quick_s is not None:
            if seed["seconds"] is not None:
                table.add("time-to-Dice quick / seed", quick_s / seed["seconds"], "x")
            else:
                table.add("time-to-Dice quick / seed (seed not reached: an upper bound)",
                          f"< {quick_s / seed['cap_seconds']:.2f}", "x")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table.write(out, machine)
    print(f"wrote {out / 'results.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["small", "full"], default="full", help="phantom size to measure on")
    parser.add_argument("--dice-cap-minutes", type=float, default=15.0,
                        help="training time after which time-to-Dice reports 'not reached' (default 15)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    children = parser.add_mutually_exclusive_group()
    children.add_argument("--child-speed", nargs=3, metavar=("PRESET", "PRECISION", "STEPS"), help=argparse.SUPPRESS)
    children.add_argument("--child-epoch", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    children.add_argument("--child-dice", nargs=3, metavar=("PRESET", "ROOT", "CAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_speed:
        preset, precision, steps = args.child_speed
        print(json.dumps({"slices_per_s": training_speed(preset, precision, int(steps))}))
    elif args.child_epoch:
        print(json.dumps(full_epoch(Path(args.child_epoch[0]), Path(args.child_epoch[1]))))
    elif args.child_dice:
        preset, root, cap = args.child_dice
        print(json.dumps(time_to_dice(preset, Path(root), float(cap))))
    else:
        run(args.size, args.dice_cap_minutes, args.out)


if __name__ == "__main__":
    main()
