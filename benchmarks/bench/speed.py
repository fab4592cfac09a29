"""How fast the model computes: the machine's matrix-product ceiling, training throughput per
preset and precision against it, oneDNN off, fused against Keras' batch norm, and inference."""

from __future__ import annotations

import time

from .common import in_alternation, in_fresh_process, sample_batch, timed

STEPS = {"original": 2, "quick": 20}
"""Training steps per measurement: the original recipe (``original``) takes seconds per 8-slice step."""


def measure_precision(table) -> None:
    """The precision ``auto`` picks on this machine."""
    from unetlib.backend import default_precision

    table.add("precision chosen by 'auto' here", default_precision())


def measure(table, pipeline_speed: float) -> tuple[dict[str, float], dict[str, float]]:
    """Matmul ceilings, training speed of ``original`` and ``quick`` in both precisions, oneDNN off,
    the batch norm comparison, and the ratios between them (``pipeline_speed``: the input
    pipeline's slices/s). Returns the ceilings (GFLOP/s by precision) and the training FLOPs per
    slice by preset."""
    from unetlib.config import make_config
    from unetlib.model import build_from_config, forward_flops_per_slice

    peaks = {"float32": matmul_peak_gflops("float32"), "mixed_bfloat16": matmul_peak_gflops("bfloat16", repeats=2)}
    table.add("matmul ceiling float32 (2048x2048)", peaks["float32"], "GFLOP/s")
    table.add("matmul ceiling bfloat16 (2048x2048)", peaks["mixed_bfloat16"], "GFLOP/s")

    speeds, flops = {}, {}
    for preset in ("original", "quick"):
        flops[preset] = 3 * forward_flops_per_slice(build_from_config(make_config(preset)))
        table.add(f"training FLOPs per slice, {preset}", flops[preset] / 1e9, "GFLOP")
        for precision in ("float32", "mixed_bfloat16"):
            speed = speeds[(preset, precision)] = training_speed(preset, precision, STEPS[preset])
            achieved = speed * flops[preset] / 1e9
            table.add(f"training {preset} {precision}", speed, "slices/s")
            table.add(f"training {preset} {precision} achieved", achieved, "GFLOP/s")
            for ceiling in ("float32", "mixed_bfloat16"):
                table.add(
                    f"training {preset} {precision} / {ceiling} matmul ceiling", achieved / peaks[ceiling], "fraction"
                )
    quick = speeds[("quick", "float32")]
    off = in_fresh_process("speed", "quick", "float32", str(STEPS["quick"]), env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    table.add("training quick float32, oneDNN off", off["slices_per_s"], "slices/s")
    table.add("oneDNN on / off, quick float32", quick / off["slices_per_s"], "x")
    fused, plain = batch_norm_comparison()
    table.add("training quick float32, fused batch norm (in alternation)", fused, "slices/s")
    table.add("training quick float32, Keras' own batch norm (in alternation)", plain, "slices/s")
    table.add("fused / Keras batch norm, quick float32", fused / plain, "x")
    table.add("pipeline / quick training speed", pipeline_speed / quick, "x")
    table.add("quick / original training speed (float32)", quick / speeds[("original", "float32")], "x")
    table.add("mixed_bfloat16 / float32, quick", speeds[("quick", "mixed_bfloat16")] / quick, "x")
    table.add(
        "mixed_bfloat16 / float32, original",
        speeds[("original", "mixed_bfloat16")] / speeds[("original", "float32")],
        "x",
    )
    return peaks, flops


def measure_inference(table, images) -> None:
    """Inference throughput of an untrained ``quick`` model on 256 of ``images``."""
    from unetlib.config import make_config
    from unetlib.evaluation import predict_labels
    from unetlib.training import compile_model

    model = compile_model(make_config("quick"))
    predict_labels(model, images[:16], progress=False)
    _, seconds = timed(predict_labels, model, images[:256], progress=False)
    table.add("inference quick", 256 / seconds, "slices/s")


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 8) -> float:
    """Achieved GFLOP/s of a large square matrix product: the practical compute ceiling."""
    import tensorflow as tf

    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    tf.linalg.matmul(a, b).numpy()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def training_speed(preset: str, precision: str, steps: int) -> float:
    from unetlib.config import make_config

    return measure_training_speed(make_config(preset, precision=precision), *sample_batch(), steps=steps)


def measure_training_speed(config, images, labels, steps: int = 2) -> float:
    """Training throughput (slices/s) of ``config``'s model on one batch, after a warm-up step.

    ``images`` are z-scored slices ``(N, 256, 128, 1)`` (the first ``batch_size`` are used),
    ``labels`` their class indices; the first step traces and compiles the graph and is not timed."""
    import numpy as np

    from unetlib.training import compile_model, precision_policy

    with precision_policy(config.precision):
        model = compile_model(config)
        batch = min(config.batch_size, len(images))
        x, y = np.asarray(images[:batch], np.float32), labels[:batch]
        model.train_on_batch(x, y)
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return steps * batch / (time.perf_counter() - started)


def batch_norm_comparison(rounds: int = 5, steps: int = 10) -> tuple[float, float]:
    """Training speed (slices/s) of ``quick`` with the fused batch norm and with Keras' own,
    the two models timed in alternation (``rounds`` × ``steps`` each)."""
    import keras

    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    from unetlib.config import make_config
    from unetlib.model import FusedBatchNormalization, build_from_config
    from unetlib.training import compile_model

    def plain(layer):
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    config = make_config("quick", precision="float32")
    models = {
        "fused": compile_model(config),
        "keras": compile_model(config, keras.models.clone_model(build_from_config(config), clone_function=plain)),
    }
    images, labels = sample_batch()
    for model in models.values():
        model.train_on_batch(images, labels)  # trace and compile

    def steps_of(model):
        return lambda: [model.train_on_batch(images, labels) for _ in range(steps)]

    seconds = in_alternation({name: steps_of(model) for name, model in models.items()}, rounds)
    slices = rounds * steps * len(images)
    return slices / seconds["fused"], slices / seconds["keras"]
