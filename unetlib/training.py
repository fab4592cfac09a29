"""Training with ``model.fit`` and Keras callbacks: best checkpoint, early stopping, CSV
history, resume after interruption, and a wall-time budget.

A run's folder holds everything it produced::

    OUT/model.keras      best model by validation organ Dice (written atomically)
    OUT/config.json      the config used
    OUT/history.csv      one row per epoch (appended across resumes)
    OUT/curves.png       training curves
    OUT/snapshots/       epoch_001.png, ...: predictions on a few fixed validation slices after each epoch
    OUT/backup/          Keras BackupAndRestore state while training is unfinished
    OUT/complete.json    written when the run finishes, with its summary
"""

from __future__ import annotations

from unetlib.backend import resolve_precision

import csv
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from unetlib.config import Config
from unetlib.data import PROJECT_ROOT, load_split, resolve_data_root
from unetlib.labels import NUM_CLASSES, PROSTATE
from unetlib.losses import get_loss
from unetlib.metrics import PooledDice
from unetlib.model import build_from_config
from unetlib.pipeline import make_dataset, steps_for

MONITOR = "val_foreground_dice"
"""What picks the best model and ends a stalled run: the validation Dice averaged over the five
organs (the prostate among them). Watching the prostate alone can keep a model that a late
unstable step broke elsewhere (seen on the phantom: rectum Dice 0.15 in the kept model)."""
RUNS_DIR = PROJECT_ROOT / "runs"
"""Default home of training runs (git-ignored)."""


def run_dir(config: Config, variant: str | None = None) -> Path:
    """The default folder of a preset's run, ``runs/PRESET``, or of a variant of it (an
    experiment with other settings), ``runs/PRESET-VARIANT``."""
    return RUNS_DIR / (config.preset if variant is None else f"{config.preset}-{variant}")


@dataclass
class TrainResult:
    """Where a run's files are, and its per-epoch history."""

    out: Path
    model_path: Path
    history: dict[str, list[float]]
    reused: bool = False


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, via a temporary file and an atomic rename,
    so a run killed mid-save never leaves a truncated ``model.keras``."""

    def __init__(self, path: Path, monitor: str = MONITOR, best: float = -np.inf):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best = best  # a resumed run passes the best value it already reached

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or value <= self.best:
            return
        self.best = float(value)
        partial = self.path.with_name(f".{self.path.stem}.partial.keras")
        self.model.save(partial)
        os.replace(partial, self.path)


def snapshot_indices(labels: np.ndarray, count: int = 3) -> np.ndarray:
    """``count`` fixed slices to watch during training: among the slices showing prostate, those
    at evenly spaced ranks of prostate area, from the largest gland section to a small one
    (none when no slice shows prostate)."""
    area = (labels == PROSTATE).sum(axis=(1, 2))
    with_prostate = np.flatnonzero(area)
    if len(with_prostate) == 0:
        return with_prostate
    by_area = with_prostate[np.argsort(-area[with_prostate], kind="stable")]
    return by_area[np.linspace(0, 0.8 * (len(by_area) - 1), count).round().astype(int)]


class EpochSnapshots(keras.callbacks.Callback):
    """After each epoch, draw the model's predictions on a few fixed slices (with their ground
    truth) into ``folder/epoch_NNN.png``: the same slices, epoch after epoch, show what the
    numbers in history.csv mean. Each file is written atomically."""

    def __init__(self, folder: Path, images: np.ndarray, labels: np.ndarray, keys: list[str]):
        super().__init__()
        self.folder, self.images, self.labels, self.keys = Path(folder), images, labels, keys

    def on_epoch_end(self, epoch, logs=None):
        import matplotlib.pyplot as plt

        from unetlib.viz import plot_predictions

        predictions = np.asarray(self.model.predict(self.images, verbose=0)).argmax(axis=-1)
        figure = plot_predictions(self.images, self.labels, predictions, self.keys)
        figure.suptitle(f"epoch {epoch + 1}", x=0.01, ha="left", fontsize=10)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_figure(figure, self.folder / f"epoch_{epoch + 1:03d}.png")
        plt.close(figure)


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG via a temporary file and an atomic rename."""
    partial = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(partial, dpi=100, bbox_inches="tight")
    os.replace(partial, path)


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``minutes`` of wall time have passed, even in the middle of an epoch.

    Keras still validates the shortened epoch, so the checkpoint sees the final weights.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60
        self.start = time.monotonic()

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True


@contextmanager
def precision_policy(precision: str):
    """Run the enclosed Keras work under a precision policy (``"auto"``: this machine's
    :func:`~unetlib.backend.default_precision`), then return to float32."""
    keras.mixed_precision.set_global_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def compile_model(config: Config, model: keras.Model | None = None) -> keras.Model:
    """Compile ``model`` (by default the UNet ``config`` describes) with the config's loss,
    Adam and Dice metrics."""
    model = build_from_config(config) if model is None else model
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=get_loss(config.loss, config.class_weights),
        metrics=[PooledDice(range(1, NUM_CLASSES), name="foreground_dice"), PooledDice([PROSTATE], name="prostate_dice")],
    )
    return model


def _subset(count: int, limit: int | None) -> np.ndarray:
    """Indices of the slices to use: all, or an even spread of ``limit`` of them."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(int)


def training_indices(labels: np.ndarray, limit: int | None, prostate_oversampling: int) -> np.ndarray:
    """Training slice indices, with slices containing prostate repeated ``prostate_oversampling`` times."""
    chosen = _subset(len(labels), limit)
    # Slice by slice: a whole-split comparison would briefly need a second split-sized array.
    has_prostate = np.array([np.any(labels[index] == PROSTATE) for index in chosen], dtype=bool)
    return np.concatenate([chosen] + [chosen[has_prostate]] * (prostate_oversampling - 1))


def is_complete(out: Path | str, config: Config) -> bool:
    """True when ``out`` holds a finished run of exactly this config (safe to reuse)."""
    out = Path(out)
    try:
        return (out / "model.keras").is_file() and Config.load(out / "config.json") == config and (out / "complete.json").is_file()
    except (OSError, ValueError, TypeError):
        return False


def train(config: Config, out: Path | str, *, reuse: bool = False, verbose: int | str = "auto",
          callbacks: list[keras.callbacks.Callback] | None = None) -> TrainResult:
    """Train the UNet ``config`` describes and write the run's files under ``out``.

    Running the same command again after an interruption resumes from the last finished
    epoch (Keras ``BackupAndRestore``). With ``reuse``, a finished run of the same config in
    ``out`` is returned as it is instead of training again. A finished run of a different
    config in ``out`` is an error rather than being overwritten. ``callbacks`` are extra Keras
    callbacks, run after the kit's own.
    """
    out = Path(out)
    if reuse and is_complete(out, config):
        return TrainResult(out, out / "model.keras", _read_history(out / "history.csv"), reused=True)
    if (out / "config.json").is_file() and Config.load(out / "config.json") != config:
        raise FileExistsError(f"{out}: holds a run of a different config; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "complete.json").unlink(missing_ok=True)
    config.save(out / "config.json")

    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        root = resolve_data_root(config.data)
        train_split = load_split(root, "train")
        validate_split = load_split(root, "validate")
        chosen = training_indices(train_split.labels, config.max_train_slices, config.prostate_oversampling)
        # An epoch is as many slices as the training split has; oversampling changes which
        # slices fill it, not its length (the stream repeats, so none is left out over epochs).
        epoch_steps = steps_for(len(np.unique(chosen)), config.batch_size)
        validate_chosen = _subset(len(validate_split.images), config.max_train_slices)

        train_data = make_dataset(train_split.images, train_split.labels, config.batch_size, indices=chosen, shuffle=True,
                                  augment=config.augment, repeat=True, seed=config.seed)
        validate_data = make_dataset(validate_split.images, validate_split.labels, config.batch_size, indices=validate_chosen)
        model = compile_model(config)
        earlier = _read_history(out / "history.csv")  # non-empty when resuming
        run_callbacks = [
            keras.callbacks.BackupAndRestore(str(out / "backup")),
            AtomicBestCheckpoint(out / "model.keras", best=max(earlier.get(MONITOR, [-np.inf]))),
            keras.callbacks.EarlyStopping(MONITOR, mode="max", patience=config.patience),
            keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
            keras.callbacks.TerminateOnNaN(),
        ]
        watched = _snapshot_slices(validate_split)
        if len(watched[0]):  # a validation split without prostate has nothing to watch
            run_callbacks.append(EpochSnapshots(out / "snapshots", *watched))
        if config.max_minutes:
            run_callbacks.append(TimeBudget(config.max_minutes))
        run_callbacks += list(callbacks or [])
        started = time.monotonic()
        model.fit(train_data, steps_per_epoch=epoch_steps,
                  epochs=config.epochs, validation_data=validate_data, callbacks=run_callbacks, verbose=verbose,
                  shuffle=False)  # the dataset shuffles itself, reproducibly
        seconds = time.monotonic() - started

    history = _read_history(out / "history.csv")
    import matplotlib.pyplot as plt

    from unetlib.viz import plot_history

    figure = plot_history(history)
    save_figure(figure, out / "curves.png")
    plt.close(figure)
    summary = {
        "epochs_run": len(history.get("epoch", [])),
        "best_val_foreground_dice": max(history.get(MONITOR, [float("nan")])),
        "val_prostate_dice_of_best": _at_best(history, "val_prostate_dice"),
        "seconds_this_session": round(seconds, 1),
        "precision": resolve_precision(config.precision),
        "data_root": str(root),
    }
    (out / "complete.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(out, out / "model.keras", history)


def _snapshot_slices(split) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and keys of the validation slices :class:`EpochSnapshots` draws."""
    chosen = snapshot_indices(split.labels)
    return np.asarray(split.images[chosen], np.float32), split.labels[chosen], [split.keys[i] for i in chosen]


def _at_best(history: dict[str, list[float]], key: str) -> float:
    """The value of ``key`` in the epoch with the best :data:`MONITOR` (NaN when there is none)."""
    if not history.get(MONITOR) or key not in history:
        return float("nan")
    return history[key][int(np.argmax(history[MONITOR]))]


def _read_history(path: Path) -> dict[str, list[float]]:
    """Columns of a CSVLogger file as lists of floats (empty dict when there is none)."""
    if not path.is_file():
        return {}
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def measure_training_speed(config: Config, images: np.ndarray, labels: np.ndarray, steps: int = 2) -> float:
    """Training throughput (slices/s) of ``config``'s model on one batch, after a warm-up step."""
    with precision_policy(config.precision):
        model = compile_model(config)
        batch = min(config.batch_size, len(images))
        x, y = np.asarray(images[:batch], np.float32), labels[:batch]
        model.train_on_batch(x, y)  # the first step traces and compiles the graph
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return steps * batch / (time.perf_counter() - started)
