"""How soon training gets somewhere, each run in a fresh process: one full epoch of ``quick``
as ``unetlib train`` runs it (wall time, peak memory), and time-to-Dice for ``quick``,
``reference`` (``quick`` at a constant learning rate) and ``original``."""

from __future__ import annotations

import time
from pathlib import Path

from .common import in_fresh_process, peak_rss_gib

DICE_TARGET = 0.75
DICE_CHECKS_MINUTES = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30)
"""When (minutes of training) the time-to-Dice runs check validation Dice: the same for every preset."""
DICE_VALIDATION_STRIDE = 10
"""Time-to-Dice checks every 10th validation slice, so that a check of ``original`` takes seconds, not minutes."""


def measure(table, root: Path, work: Path, cap_minutes: float) -> None:
    """The full epoch (its files under ``work``) and time-to-Dice on the phantom at ``root``,
    capped at ``cap_minutes``; each run's result goes to ``table.extra["time_to_dice"]``."""
    epoch = in_fresh_process("epoch", str(root), str(work / "epoch"))
    table.add(f"full epoch of quick ({epoch['slices']} slices, incl. validation)", epoch["seconds"] / 60, "min")
    table.add("peak resident memory of that training process", epoch["peak_rss_gib"], "GiB")
    table.add("validation prostate Dice after that epoch", epoch["val_prostate_dice"], "")

    measure_time_to_dice(table, root, cap_minutes, ("quick", "reference", "original"))


def measure_time_to_dice(table, root: Path, cap_minutes: float, presets: tuple[str, ...]) -> None:
    """Time-to-Dice of each preset on the phantom at ``root`` (fresh processes), capped at
    ``cap_minutes``, into ``table.extra["time_to_dice"]``; ``quick`` against ``original`` when both ran."""
    table.extra["time_to_dice"] = {}
    for preset in presets:
        result = in_fresh_process("dice", preset, str(root), str(cap_minutes))
        table.extra["time_to_dice"][preset] = result
        reached = result["seconds"]
        shown = round(reached / 60, 2) if reached is not None else f"not reached in {result['cap_seconds'] / 60:g}"
        table.add(f"time to validation prostate Dice {DICE_TARGET}, {preset}", shown, "min")
        best = max((dice for _, dice in result["curve"]), default=float("nan"))
        table.add(f"best validation prostate Dice checked, {preset}", best, "")
    if not {"quick", "original"} <= set(presets):
        return
    quick_s, original = table.extra["time_to_dice"]["quick"]["seconds"], table.extra["time_to_dice"]["original"]
    if quick_s is not None:
        if original["seconds"] is not None:
            table.add("time-to-Dice quick / original", quick_s / original["seconds"], "x")
        else:
            table.add(
                "time-to-Dice quick / original (original not reached: an upper bound)",
                f"< {quick_s / original['cap_seconds']:.2f}",
                "x",
            )


def full_epoch(root: Path, out: Path) -> dict:
    """One epoch of ``quick`` as ``unetlib train`` runs it (run in a fresh process)."""
    from unetlib.config import make_config
    from unetlib.data import find_pairs
    from unetlib.training import train

    slices = len(find_pairs(root, "train"))  # the files, not a decode: this process's memory is measured
    # One planned epoch and no time budget: the schedule decays across that epoch, as it would
    # across a run that ends there.
    config = make_config("quick", data=str(root), epochs=1, max_minutes=None)
    started = time.perf_counter()
    result = train(config, out, verbose=0)
    return {
        "seconds": time.perf_counter() - started,
        "slices": slices,
        "peak_rss_gib": peak_rss_gib(),
        "val_prostate_dice": result.history["val_prostate_dice"][-1],
    }


def time_to_dice(preset: str, root: Path, cap_minutes: float) -> dict:
    """Training wall time (the Dice checks themselves excluded) until validation prostate Dice
    first reaches :data:`DICE_TARGET`, checked at :data:`DICE_CHECKS_MINUTES`."""
    import keras

    from unetlib.callbacks import ScheduledLearningRate
    from unetlib.config import make_config
    from unetlib.data import load_split
    from unetlib.evaluation import predict_labels
    from unetlib.labels import PROSTATE
    from unetlib.metrics import dice_per_class
    from unetlib.pipeline import make_dataset
    from unetlib.training import compile_model, learning_rate_at, precision_policy, training_indices

    config = make_config(preset)
    train_split = load_split(root, "train", progress=False)
    validate = load_split(root, "validate", progress=False)
    check_images = validate.images[::DICE_VALIDATION_STRIDE]
    check_labels = validate.labels[::DICE_VALIDATION_STRIDE]
    # A preset with a time budget has a rate of 0 once it is spent: no checks beyond it.
    last = min(cap_minutes, config.max_minutes or cap_minutes)
    checks = [60 * minutes for minutes in DICE_CHECKS_MINUTES if minutes <= last]

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

        def progress(self) -> float:
            """Share of the preset's time budget trained so far: what its schedule follows."""
            trained = time.perf_counter() - self.started - self.paused
            return min(1.0, trained / (60 * config.max_minutes))

    # The same data, model, seed and learning-rate schedule as train() (over the preset's time
    # budget, the Dice checks excluded), without its validation: train() validates the whole split
    # when a stopped epoch ends, which would add minutes to every `original` run.
    keras.utils.set_random_seed(config.seed)
    clock = DiceClock()
    schedule = ScheduledLearningRate(
        lambda progress: learning_rate_at(config, progress),
        epoch_steps=10**9,
        epochs=1,
        budget=clock if config.max_minutes else None,
    )
    with precision_policy(config.precision):
        stream = training_indices(train_split.labels, None, config.prostate_oversampling)
        data = make_dataset(
            train_split.images,
            train_split.labels,
            config.batch_size,
            indices=stream,
            shuffle=True,
            augment=config.augment,
            repeat=True,
            seed=config.seed,
        )
        model = compile_model(config)
        model.fit(data, steps_per_epoch=10**9, epochs=1, callbacks=[clock, schedule], verbose=0)
    return {"seconds": clock.reached, "curve": clock.curve, "cap_seconds": checks[-1]}
