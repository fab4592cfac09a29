"""Where a ``quick`` training step spends its time, from the TensorFlow profiler, with the
convolutions' weight gradients apart from their forward pass and input gradients."""

from __future__ import annotations

import collections
import shutil
import tempfile
import time
from pathlib import Path

from .common import sample_batch

PROFILED_SLICES = 8
"""Slices per profiled step (:func:`.common.sample_batch`'s batch)."""
CONV_FORWARD_AND_INPUT = "convolutions: forward and input gradient"
CONV_WEIGHTS = "convolutions: weight gradient"


def measure(table, quick_flops: float, float32_ceiling: float) -> None:
    """Profiled step time and each kind of work's share of op time; the convolutions' rate
    against ``float32_ceiling`` (GFLOP/s), from ``quick_flops`` training FLOPs per slice."""
    shares = profile_training_step()
    wall = shares.pop("wall")
    table.add(f"quick training step (profiled, {PROFILED_SLICES} slices)", wall * 1000, "ms")
    for kind, share in sorted(shares.items(), key=lambda item: -item[1]):
        table.add(f"quick step: {kind}", share, "share of op time")
    # Training FLOPs are 3 × forward: one forward's worth each for the forward pass, the
    # input gradient and the weight gradient.
    conv_parts = {CONV_FORWARD_AND_INPUT: 2 / 3, CONV_WEIGHTS: 1 / 3}
    conv_share = sum(shares.get(kind, 0.0) for kind in conv_parts)
    if conv_share:
        conv_rate = PROFILED_SLICES * quick_flops / (conv_share * wall) / 1e9
        table.add("quick convolutions alone (their share of the step)", conv_rate, "GFLOP/s")
        table.add("quick convolutions alone / float32 matmul ceiling", conv_rate / float32_ceiling, "fraction")
        for kind, part in conv_parts.items():
            rate = PROFILED_SLICES * quick_flops * part / (shares[kind] * wall) / 1e9
            table.add(f"quick {kind} / float32 matmul ceiling", rate / float32_ceiling, "fraction")


def profile_training_step(steps: int = 6) -> dict[str, float]:
    """Share of operation time per kind of work in ``quick`` training steps (TensorFlow profiler).

    Operation times are summed over TensorFlow's executor threads, so the shares say where
    the work goes; the ``wall`` entry is seconds per step.
    """
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    from unetlib.config import make_config
    from unetlib.training import compile_model

    model = compile_model(make_config("quick"))
    images, labels = sample_batch(PROFILED_SLICES)
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
                if (
                    ":" in name and "::" not in name
                ):  # "scope/of/the/op:OpType"; "Class::method" events are the executor's own
                    kinds[_kind_of_op(*name.rsplit(":", 1))] += event.duration_ps
    total = sum(kinds.values())
    shares = {kind: value / total for kind, value in kinds.items()}
    shares["wall"] = wall
    return shares


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
