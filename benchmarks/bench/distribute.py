"""What ``--distribute mirrored`` costs and gives: ``quick`` training throughput in ``model.fit``
on 1 and on 2 logical CPU devices with the same global batch. On a CPU the two logical devices
share the same cores, so this shows the mechanism's overhead, not a speed-up; on a machine with
GPUs the same code splits each batch between them."""

from __future__ import annotations

import time

from .common import in_fresh_process, sample_batch

GLOBAL_BATCH = 8
STEPS = 20
ROUNDS = 2


def replica_speed(replicas: int, steps: int = STEPS) -> float:
    """Slices/s of ``quick`` (float32) in ``model.fit`` on ``replicas`` logical CPU devices, with
    a global batch of :data:`GLOBAL_BATCH`, after a warm-up. Run it in a fresh process with
    ``UNETLIB_CPU_REPLICAS`` set: logical devices are fixed when TensorFlow starts."""
    from unetlib.config import make_config
    from unetlib.distribute import make_placement
    from unetlib.pipeline import make_dataset
    from unetlib.training import compile_model

    placement = make_placement("mirrored" if replicas > 1 else "none")
    assert placement.replicas == replicas, f"asked for {replicas} replicas, got {placement.replicas}"
    config = make_config("quick", precision="float32", batch_size=GLOBAL_BATCH // replicas, distribute=placement.name)
    images, labels = sample_batch(4 * GLOBAL_BATCH)
    dataset = make_dataset(images, labels, GLOBAL_BATCH, shuffle=True, repeat=True)
    with placement.strategy.scope():
        model = compile_model(config)
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # the first steps trace and compile
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * GLOBAL_BATCH / (time.perf_counter() - started)


def measure(table) -> None:
    """1 vs 2 logical CPU devices, each in fresh processes, alternated :data:`ROUNDS` times so
    that a machine getting busier or quieter affects both alike."""
    seconds = {1: 0.0, 2: 0.0}
    for _ in range(ROUNDS):
        for replicas in seconds:
            speed = in_fresh_process("replicas", str(replicas), env={"UNETLIB_CPU_REPLICAS": str(replicas)})
            seconds[replicas] += STEPS * GLOBAL_BATCH / speed["slices_per_s"]
    speeds = {replicas: ROUNDS * STEPS * GLOBAL_BATCH / total for replicas, total in seconds.items()}
    table.add(f"training quick, 1 logical CPU device (model.fit, batch {GLOBAL_BATCH})", speeds[1], "slices/s")
    table.add(
        f"training quick, 2 logical CPU devices, mirrored (batch {GLOBAL_BATCH // 2} each)", speeds[2], "slices/s"
    )
    table.add("2 / 1 logical CPU devices, quick training", speeds[2] / speeds[1], "x")
