"""The data side: phantom generation, first decode and cached reload of the train split, and
the input pipeline's throughput, alone and feeding ``model.fit``."""

from __future__ import annotations

from pathlib import Path

from .common import in_alternation, peak_rss_gib, timed


def measure_decode(table, size: str, work: Path):
    """Generate a ``size`` phantom under ``work``, decode its train split, then reload it from
    the cache; returns the phantom's root and the (reloaded) train split."""
    from unetlib.data import load_split
    from unetlib.phantom import SIZES, generate_phantom

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
    return root, split


def measure_pipeline(table, split) -> float:
    """Throughput of the augmenting input pipeline alone, then ``quick`` in ``model.fit`` fed by
    the fixed and the autotuned pipeline; returns the pipeline's slices/s."""
    from unetlib.pipeline import make_dataset

    dataset = make_dataset(split.images, split.labels, 8, shuffle=True, augment=True, repeat=True)
    iterator = iter(dataset)
    next(iterator)
    _, seconds = timed(lambda: [next(iterator) for _ in range(100)])
    pipeline_speed = 800 / seconds
    table.add("input pipeline with augmentation", pipeline_speed, "slices/s")
    dataset = iterator = None  # free the pipeline's buffers before the comparison
    fixed, autotuned = pipeline_comparison(split.images, split.labels)
    table.add("training quick in model.fit, fixed pipeline (in alternation)", fixed, "slices/s")
    table.add("training quick in model.fit, autotuned pipeline (in alternation)", autotuned, "slices/s")
    table.add("fixed / autotuned pipeline, quick training in model.fit", fixed / autotuned, "x")
    return pipeline_speed


def pipeline_comparison(images, labels, rounds: int = 5, steps: int = 40) -> tuple[float, float]:
    """Training speed (slices/s) of ``quick`` in ``model.fit`` fed by the kit's pipeline (fixed
    parallelism) and by the same pipeline with tf.data's autotuning, in alternation."""
    import unetlib.backend  # noqa: F401  (TensorFlow with this kit's settings: oneDNN on)
    from unetlib.config import make_config
    from unetlib.pipeline import make_dataset
    from unetlib.training import compile_model

    config = make_config("quick")
    model = compile_model(config)
    datasets = {
        name: make_dataset(
            images, labels, config.batch_size, shuffle=True, augment=True, repeat=True, autotune=autotune
        )
        for name, autotune in (("fixed", False), ("autotuned", True))
    }

    def fit(dataset, count=steps):
        return lambda: model.fit(dataset, steps_per_epoch=count, epochs=1, verbose=0)

    for dataset in datasets.values():
        fit(dataset, 2)()  # start the pipeline; the first call also traces the model
    seconds = in_alternation({name: fit(dataset) for name, dataset in datasets.items()}, rounds)
    slices = rounds * steps * config.batch_size
    return slices / seconds["fixed"], slices / seconds["autotuned"]
