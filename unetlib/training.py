"""Training with ``model.fit`` and Keras callbacks: best checkpoint, early stopping, CSV
history, resume after interruption, and a wall-time budget.

A run's folder holds everything it produced::

    OUT/model.keras      best model by validation organ Dice
    OUT/config.json      the config used
    OUT/history.csv      one row per finished epoch, epochs numbered from 0 as Keras does
    OUT/curves.png       training curves
    OUT/snapshots/       epoch_001.png, ...: predictions on a few fixed validation slices after each epoch
    OUT/backup/          the state a killed run resumes from (removed when the run finishes)
    OUT/complete.json    written when the run finishes, with its summary

Every file is written to a temporary name and renamed into place, so none is ever seen half
written. :class:`RunState` saves a run's progress at each epoch's end with ``backup/state.json``
as the commit point: after a kill at any moment, running the same command again continues
from the last committed epoch, and every epoch appears exactly once in ``history.csv``.
While a run trains, ``OUT/.lock`` keeps a second run out of the folder.
"""

from __future__ import annotations

from unetlib.backend import resolve_precision

# isort: split

import csv
import dataclasses
import fcntl
import io
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from unetlib.config import Config
from unetlib.data import PROJECT_ROOT, load_split, resolve_data_root
from unetlib.distribute import Placement, make_placement
from unetlib.errors import TrainingError
from unetlib.files import atomic_path, write_atomic
from unetlib.labels import NUM_CLASSES, PROSTATE
from unetlib.losses import get_loss
from unetlib.metrics import PooledDice
from unetlib.model import build_from_config
from unetlib.pipeline import make_dataset, steps_for

__all__ = [
    "MONITOR",
    "RUNS_DIR",
    "run_dir",
    "TrainResult",
    "RunState",
    "snapshot_indices",
    "EpochSnapshots",
    "save_figure",
    "TimeBudget",
    "precision_policy",
    "compile_model",
    "training_indices",
    "is_complete",
    "train",
    "measure_training_speed",
]

logger = logging.getLogger(__name__)

MONITOR = "val_foreground_dice"
"""What picks the best model and ends a stalled run: the validation Dice averaged over the five
organs (the prostate among them). Watching the prostate alone can keep a model that a late
unstable step broke elsewhere (seen on the phantom: rectum Dice 0.15 in the kept model)."""
RUNS_DIR = PROJECT_ROOT / "runs"
"""Default home of training runs (git-ignored)."""


def run_dir(config: Config, variant: str | None = None) -> Path:
    """The default folder of a preset's run, ``runs/PRESET``, or of a variant of it (an
    experiment with other settings), ``runs/PRESET-VARIANT``.

    Args:
        config: the run's config; only its ``preset`` names the folder.
        variant: a short name for the experiment, e.g. ``"bilinear"``; None for the preset's own run.
    """
    return RUNS_DIR / (config.preset if variant is None else f"{config.preset}-{variant}")


@dataclass
class TrainResult:
    """Where a run's files are, and its per-epoch history.

    Attributes:
        out: the run folder.
        model_path: the best model, ``OUT/model.keras``.
        history: one list per ``history.csv`` column (``epoch``, ``loss``, ``val_foreground_dice``, ...),
            one float per finished epoch.
        reused: True when a finished run was returned without training (``reuse=True``).
        replicas: model copies that trained in step (``distribute``); None for a reused run.
        chief: False in a worker process other than the chief, which wrote none of these files.
    """

    out: Path
    model_path: Path
    history: dict[str, list[float]]
    reused: bool = False
    replicas: int | None = None
    chief: bool = True


def _history_csv(rows: list[dict[str, float]]) -> str:
    """Rows as CSV text: ``epoch`` first, then the other columns in alphabetical order."""
    columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "epoch": int(row["epoch"])} for row in rows)
    return text.getvalue()


def _finite_weights(model: keras.Model) -> bool:
    return all(np.all(np.isfinite(np.asarray(weight, dtype=np.float32))) for weight in model.get_weights())


class RunState(keras.callbacks.Callback):
    """Checkpointing, history, early stopping and resuming, kept consistent with each other.

    At the end of every epoch, in this order: the weights (model and optimiser) go to
    ``backup/epoch_NNN.weights.h5``; an improved model to ``backup/best_epoch_NNN.keras``;
    ``history.csv`` is rewritten with every epoch so far; then ``backup/state.json`` records
    the epoch, the weights file, the best score, early stopping's count and the time used.
    That write is the commit: a run killed before it redoes the epoch and rewrites its row; a
    run killed after it finds everything it needs. Only then does the improved model replace
    ``model.keras`` (a resumed run finishes that step too).

    An epoch whose loss or weights are not finite is not committed, its model never kept.

    Args:
        out: the run folder.
        patience: epochs without improvement of :data:`MONITOR` before training stops.
        state: the committed state to continue from, as :meth:`load` returns it.
        rows: the history rows committed so far, as :meth:`load` returns them; appended to.
    """

    def __init__(self, out: Path, patience: int, state: dict, rows: list[dict[str, float]]):
        super().__init__()
        self.out, self.backup, self.patience = Path(out), Path(out) / "backup", patience
        self.state, self.rows = state, rows
        self.nonfinite_epoch: int | None = None
        self.started = time.monotonic()

    @staticmethod
    def load(out: Path) -> tuple[dict, list[dict[str, float]]]:
        """The committed state of an unfinished run in ``out`` and its history rows (a fresh
        state and no rows when nothing was committed); finishes an interrupted promotion.

        Args:
            out: the run folder.

        Returns:
            ``(state, rows)``: ``state`` has keys ``epoch`` (epochs committed), ``weights`` (file
            name in ``backup/`` or None), ``best``, ``best_epoch``, ``wait`` and ``seconds``;
            ``rows`` holds one dict of floats per committed epoch.
        """
        fresh = {"epoch": 0, "weights": None, "best": None, "best_epoch": None, "wait": 0, "seconds": 0.0}
        try:
            state = {**fresh, **json.loads((out / "backup" / "state.json").read_text())}
        except (OSError, ValueError):
            return fresh, []
        rows = [row for row in _read_rows(out / "history.csv") if row["epoch"] < state["epoch"]]
        pending = (
            out / "backup" / f"best_epoch_{state['best_epoch']:03d}.keras" if state["best_epoch"] is not None else None
        )
        if pending is not None and pending.is_file():
            os.replace(pending, out / "model.keras")
        return state, rows

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        if not np.isfinite(logs.get("loss", np.nan)) or not _finite_weights(self.model):
            self.nonfinite_epoch = epoch
            self.model.stop_training = True
            return
        self.backup.mkdir(parents=True, exist_ok=True)
        weights = self.backup / f"epoch_{epoch:03d}.weights.h5"
        with atomic_path(weights) as partial:
            self.model.save_weights(partial)
        value = logs.get(MONITOR, np.nan)
        improved = np.isfinite(value) and (self.state["best"] is None or value > self.state["best"])
        best_file = self.backup / f"best_epoch_{epoch:03d}.keras"
        if improved:
            with atomic_path(best_file) as partial:
                self.model.save(partial)
        self.rows.append({"epoch": epoch, **logs})
        write_atomic(self.out / "history.csv", _history_csv(self.rows))
        self.state.update(
            epoch=epoch + 1,
            weights=weights.name,
            best=value if improved else self.state["best"],
            best_epoch=epoch if improved else self.state["best_epoch"],
            wait=0 if improved else self.state["wait"] + 1,
            seconds=self.state["seconds"] + time.monotonic() - self.started,
        )
        self.started = time.monotonic()
        write_atomic(self.backup / "state.json", json.dumps(self.state, indent=1))  # the commit
        if improved:
            os.replace(best_file, self.out / "model.keras")
        for stale in self.backup.glob("*epoch_*"):
            if stale.name != weights.name:
                stale.unlink(missing_ok=True)
        if self.state["wait"] >= self.patience:
            self.model.stop_training = True


def snapshot_indices(labels: np.ndarray, count: int = 3) -> np.ndarray:
    """``count`` fixed slices to watch during training: among the slices showing prostate, those
    at evenly spaced ranks of prostate area, from the largest gland section to a small one
    (none when no slice shows prostate).

    Args:
        labels: class indices ``(N, H, W)`` of a split.
        count: number of slices to pick.

    Returns:
        Up to ``count`` int indices into ``labels``, largest prostate section first (empty when no
        slice shows prostate; repeated when fewer slices than ``count`` do).
    """
    area = (labels == PROSTATE).sum(axis=(1, 2))
    with_prostate = np.flatnonzero(area)
    if len(with_prostate) == 0:
        return with_prostate
    by_area = with_prostate[np.argsort(-area[with_prostate], kind="stable")]
    return by_area[np.linspace(0, 0.8 * (len(by_area) - 1), count).round().astype(int)]


class EpochSnapshots(keras.callbacks.Callback):
    """After each epoch, draw the model's predictions on a few fixed slices (with their ground
    truth) into ``folder/epoch_NNN.png``: the same slices, epoch after epoch, show what the
    numbers in history.csv mean. Each file is written atomically.

    Args:
        folder: where the PNG files go; created when the first is written.
        images: the watched slices ``(K, 256, 128, 1)``, float32, z-scored.
        labels: their true class indices ``(K, 256, 128)``.
        keys: their slice keys, used as titles.
    """

    def __init__(self, folder: Path, images: np.ndarray, labels: np.ndarray, keys: list[str]):
        super().__init__()
        self.folder, self.images, self.labels, self.keys = Path(folder), images, labels, keys

    def on_epoch_end(self, epoch, logs=None):
        import matplotlib.pyplot as plt

        from unetlib.viz import plot_predictions

        predictions = np.asarray(self.model(self.images, training=False)).argmax(axis=-1)
        figure = plot_predictions(self.images, self.labels, predictions, self.keys)
        figure.suptitle(f"epoch {epoch + 1}", x=0.01, ha="left", fontsize=10)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_figure(figure, self.folder / f"epoch_{epoch + 1:03d}.png")
        plt.close(figure)


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically.

    Args:
        figure: a matplotlib figure; it is not closed.
        path: the ``.png`` file to write, at 100 dpi; its folder must exist.
    """
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=100, bbox_inches="tight")


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``minutes`` of wall time have passed, even in the middle of an epoch.

    Keras still validates the shortened epoch, so the checkpoint sees the final weights. A
    resumed run passes the seconds it used before, so the budget covers the whole run.

    Args:
        minutes: the whole run's budget of wall time.
        used_seconds: seconds the run already used before this process started.
        placement: where the run trains; with several workers, all stop at the same step, as
            soon as the first of them is over the budget.
    """

    def __init__(self, minutes: float, used_seconds: float = 0.0, placement: Placement | None = None):
        super().__init__()
        self.seconds = minutes * 60 - used_seconds  # a resumed run has used some already
        self.start = time.monotonic()
        self.placement = placement

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        over = time.monotonic() - self.start >= self.seconds
        if self.placement is not None:  # workers' clocks differ: all stop when the first is over
            over = self.placement.any_worker(over)
        if over:
            self.model.stop_training = True


@contextmanager
def precision_policy(precision: str):
    """Run the enclosed Keras work under a precision policy (``"auto"``: this machine's
    :func:`~unetlib.backend.default_precision`), then return to float32.

    Args:
        precision: ``"auto"``, ``"float32"`` or ``"mixed_bfloat16"``.
    """
    keras.mixed_precision.set_global_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def compile_model(config: Config, model: keras.Model | None = None) -> keras.Model:
    """Compile ``model`` (by default the UNet ``config`` describes) with the config's loss,
    Adam and Dice metrics.

    Args:
        config: gives the loss, class weights and learning rate (and the UNet when ``model`` is None).
        model: the Keras model to compile; None builds :func:`~unetlib.model.build_from_config`'s.

    Returns:
        The compiled model, with metrics ``foreground_dice`` (classes 1..5) and ``prostate_dice``.

    Raises:
        ValueError: the config names an unknown loss.
    """
    model = build_from_config(config) if model is None else model
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=get_loss(config.loss, config.class_weights),
        metrics=[
            PooledDice(range(1, NUM_CLASSES), name="foreground_dice"),
            PooledDice([PROSTATE], name="prostate_dice"),
        ],
    )
    return model


def _subset(count: int, limit: int | None) -> np.ndarray:
    """Indices of the slices to use: all, or an even spread of ``limit`` of them."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(int)


def training_indices(labels: np.ndarray, limit: int | None, prostate_oversampling: int) -> np.ndarray:
    """Training slice indices, with slices containing prostate repeated ``prostate_oversampling`` times.

    Args:
        labels: class indices ``(N, H, W)`` of the training split.
        limit: use only this many slices, evenly spread over the split; None uses all.
        prostate_oversampling: how many times each slice with prostate appears (1: once).

    Returns:
        int indices into ``labels``: the chosen slices, then the prostate slices' extra copies.
    """
    chosen = _subset(len(labels), limit)
    # Slice by slice: a whole-split comparison would briefly need a second split-sized array.
    has_prostate = np.array([np.any(labels[index] == PROSTATE) for index in chosen], dtype=bool)
    return np.concatenate([chosen] + [chosen[has_prostate]] * (prostate_oversampling - 1))


def is_complete(out: Path | str, config: Config) -> bool:
    """True when ``out`` holds a finished run of exactly this config (safe to reuse).

    Args:
        out: the run folder.
        config: the config the run must have used (compared with ``OUT/config.json``).
    """
    out = Path(out)
    try:
        return (
            (out / "model.keras").is_file()
            and Config.load(out / "config.json") == config
            and (out / "complete.json").is_file()
        )
    except (OSError, ValueError, TypeError):
        return False


def train(
    config: Config,
    out: Path | str,
    *,
    reuse: bool = False,
    verbose: int | str = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train the UNet ``config`` describes and write the run's files under ``out``.

    Running the same command again after an interruption (even ``kill -9``) continues from the
    last finished epoch, with early stopping and the time budget where they were. With
    ``reuse``, a finished run of the same config in ``out`` is returned as it is; without it,
    a finished run is an error rather than being trained again. A run of a different config in
    ``out`` is an error rather than being overwritten, and so is a folder another run is
    training in. A loss or weights that become NaN or infinite raise :class:`TrainingError`.
    ``callbacks`` are extra Keras callbacks, run after the kit's own.

    With ``config.distribute`` set, the run trains on several devices or workers
    (:mod:`unetlib.distribute`). Only the chief (worker 0) writes ``out``; every other worker
    keeps the same state in a temporary folder, removed when it is done, and starts from a copy
    of the chief's last commit in ``out``, which must therefore be on a filesystem every worker
    sees. A worker returns the chief's paths and its own copy of the history.

    Args:
        config: what to train (model, loss, data root, epochs, budget, seed, ...).
        out: the run folder, created if missing (e.g. :func:`run_dir`'s).
        reuse: return a finished run of the same config in ``out`` instead of refusing.
        verbose: Keras' ``fit`` verbosity: ``"auto"``, 0 (silent), 1 (progress bar) or 2 (a line per epoch).
        callbacks: extra Keras callbacks, or None.

    Raises:
        FileExistsError: ``out`` holds a finished run of this config and ``reuse`` is False, a run
            of a different config, or a run that is training now.
        DataError: the data root or a split cannot be used.
        DistributeError: the ``distribute`` setting cannot be set up here (see :mod:`unetlib.distribute`).
        TrainingError: the loss or weights became NaN or infinite, or no epoch reached a finite
            validation score.
    """
    out = Path(out)
    if is_complete(out, config):
        if reuse:
            return TrainResult(out, out / "model.keras", _read_history(out / "history.csv"), reused=True)
        raise FileExistsError(f"{out}: holds a finished run of this config; reuse it (--reuse) or choose another --out")
    placement = make_placement(config.distribute)  # first: devices and clusters are set up before TensorFlow runs
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        datasets = _datasets(config, placement.replicas)  # bad data fails here, before anything is written
        # Only the chief writes the run's files; every other worker keeps its copy of the same
        # state in a temporary folder, removed when it is done.
        folder = out if placement.is_chief else _worker_folder(out, placement.worker_index)
        try:
            with _claim(folder), placement.strategy.scope():
                result = _fit(config, folder, datasets, placement, verbose, callbacks)
        finally:
            if not placement.is_chief:
                shutil.rmtree(folder, ignore_errors=True)
        return dataclasses.replace(
            result, out=out, model_path=out / "model.keras", replicas=placement.replicas, chief=placement.is_chief
        )


def _fit(config: Config, out: Path, datasets: _Datasets, placement, verbose, callbacks) -> TrainResult:
    """Build the model (from the last committed epoch, if any), train it and finish the run."""
    state, rows = _prepare_run_folder(out, config)
    model = compile_model(config)
    run_state = RunState(out, config.patience, state, rows)
    if state["weights"]:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(out / "backup" / state["weights"])
    run_callbacks = [run_state, keras.callbacks.TerminateOnNaN()]
    if len(datasets.watched[0]):  # a validation split without prostate has nothing to watch
        run_callbacks.append(EpochSnapshots(out / "snapshots", *datasets.watched))
    if config.max_minutes:
        run_callbacks.append(TimeBudget(config.max_minutes, used_seconds=state["seconds"], placement=placement))
    run_callbacks += list(callbacks or [])
    time_left = not config.max_minutes or state["seconds"] < config.max_minutes * 60
    if state["epoch"] < config.epochs and state["wait"] < config.patience and time_left:  # else: killed while finishing
        # A resumed run picks the stream up where the last committed epoch left it.
        train_data = datasets.train_from(state["epoch"] * datasets.epoch_steps)
        model.fit(
            train_data,
            steps_per_epoch=datasets.epoch_steps,
            initial_epoch=state["epoch"],
            epochs=config.epochs,
            validation_data=datasets.validate,
            callbacks=run_callbacks,
            verbose=verbose,
            shuffle=False,
        )  # the dataset shuffles itself, reproducibly
    if run_state.nonfinite_epoch is not None:
        kept = (
            f"{out / 'model.keras'} is from the last good epoch"
            if (out / "model.keras").is_file()
            else "no model was saved"
        )
        raise TrainingError(
            f"{out}: the loss or the weights became NaN or infinite in epoch {run_state.nonfinite_epoch + 1}; "
            f"that epoch was not kept ({kept}). Check the data (unetlib check-data) or lower the learning rate."
        )
    return _finish(out, config, datasets.root, run_state)


def _worker_folder(out: Path, index: int) -> Path:
    """A temporary run folder for worker ``index`` (not the chief), holding a copy of the
    chief's last commit in ``out`` so that every worker resumes from the same epoch. ``out``
    must be on a filesystem every worker sees (as a cluster's shared home or scratch is)."""
    folder = Path(tempfile.mkdtemp(prefix=f"unetlib-worker{index}-"))
    try:
        state = json.loads((out / "backup" / "state.json").read_text())
        (folder / "backup").mkdir()
        for name in ("config.json", "history.csv", f"backup/{state['weights']}", "backup/state.json"):
            shutil.copyfile(out / name, folder / name)
    except FileNotFoundError:  # nothing committed yet: the worker starts from scratch, as the chief does
        shutil.rmtree(folder / "backup", ignore_errors=True)
        (folder / "history.csv").unlink(missing_ok=True)
    return folder


@dataclass
class _Datasets:
    root: Path
    train_from: object  # batch number -> the training stream from that batch on
    validate: object
    epoch_steps: int
    watched: tuple


def _datasets(config: Config, replicas: int = 1) -> _Datasets:
    """The training and validation pipelines, batched for all ``replicas`` together (the
    global batch), and the slices the snapshots watch."""
    root = resolve_data_root(config.data)
    train_split = load_split(root, "train")
    validate_split = load_split(root, "validate")
    chosen = training_indices(train_split.labels, config.max_train_slices, config.prostate_oversampling)
    # An epoch is as many slices as the training split has; oversampling changes which
    # slices fill it, not its length (the stream repeats, so none is left out over epochs).
    batch = config.batch_size * replicas
    epoch_steps = steps_for(len(np.unique(chosen)), batch)
    validate_chosen = _whole_replica_batches(
        _subset(len(validate_split.images), config.max_train_slices), batch, replicas
    )

    def train_from(start_batch: int):
        return _shard_by_data(
            make_dataset(
                train_split.images,
                train_split.labels,
                batch,
                indices=chosen,
                shuffle=True,
                augment=config.augment,
                repeat=True,
                seed=config.seed,
                start_batch=start_batch,
            )
        )

    validate_data = make_dataset(validate_split.images, validate_split.labels, batch, indices=validate_chosen)
    return _Datasets(root, train_from, _shard_by_data(validate_data), epoch_steps, _snapshot_slices(validate_split))


def _whole_replica_batches(chosen: np.ndarray, batch: int, replicas: int) -> np.ndarray:
    """Validation slices such that the last global batch gives every replica at least one slice.

    tf.distribute splits a short last batch between the replicas, and one left with no slice
    at all stops TensorFlow's convolutions with an error. Where that would happen, the first
    slices are validated a second time to fill the batch, and a warning says how many."""
    short = len(chosen) % batch
    if replicas == 1 or short == 0 or short >= replicas:
        return chosen
    extra = replicas - short
    logger.warning(
        "validation: %d slices in global batches of %d would leave a replica without a slice in the last "
        "batch; the first %d slice(s) are validated twice",
        len(chosen),
        batch,
        extra,
    )
    return np.concatenate([chosen, chosen[:extra]])


def _shard_by_data(dataset):
    """Several workers split each global batch between them (tf.data's ``DATA`` auto-sharding):
    every worker runs the same pipeline, with the same shuffle and augmentation seeds, and keeps
    its own part of each batch. So no two workers ever train on the same augmented slice, and N
    workers see the same slices, augmented the same way, as one device with the same global batch
    (batch norm and the batch-pooled Dice are computed per replica)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextmanager
def _claim(out: Path):
    """Hold ``out/.lock`` while training, so a second run into the same folder is refused
    (the lock goes with the process, even after ``kill -9``)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise FileExistsError(
                f"{out}: another training run (pid {owner}) is using this folder; "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _prepare_run_folder(out: Path, config: Config) -> tuple[dict, list[dict[str, float]]]:
    """Check that ``out`` may hold this run, write its config, and return the committed state
    to resume from (a fresh one for a new run)."""
    state, rows = RunState.load(out)
    if (out / "config.json").is_file():
        try:
            same = Config.load(out / "config.json") == config
        except (ValueError, TypeError):
            same = False
        progress = state["epoch"] > 0 or (out / "model.keras").exists() or (out / "complete.json").exists()
        if not same and progress:
            raise FileExistsError(f"{out}: holds a run of a different config; choose another --out or delete it")
    (out / "complete.json").unlink(missing_ok=True)
    config.save(out / "config.json")
    if state["epoch"] == 0:  # nothing committed: start clean
        (out / "history.csv").unlink(missing_ok=True)
    return state, rows


def _finish(out: Path, config: Config, root: Path, run_state: RunState) -> TrainResult:
    """Draw the curves, write ``complete.json`` and remove the backup."""
    import matplotlib.pyplot as plt

    from unetlib.viz import plot_history

    history = _read_history(out / "history.csv")
    figure = plot_history(history)
    save_figure(figure, out / "curves.png")
    plt.close(figure)
    summary = {
        "epochs_run": len(history.get("epoch", [])),
        "best_val_foreground_dice": max(history.get(MONITOR, [float("nan")])),
        "val_prostate_dice_of_best": _at_best(history, "val_prostate_dice"),
        "seconds": round(run_state.state["seconds"], 1),
        "precision": resolve_precision(config.precision),
        "data_root": str(root),
    }
    if not (out / "model.keras").is_file():
        raise TrainingError(f"{out}: no epoch reached a finite validation score, so no model was saved")
    write_atomic(out / "complete.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out / "backup", ignore_errors=True)
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


def _read_rows(path: Path) -> list[dict[str, float]]:
    """The epochs of a history file as rows of floats, one per epoch (empty when there is none).

    Files written by older versions may hold a repeated header, a cut-off last line or an
    epoch twice; such lines are left out (the later row of an epoch wins) with a warning."""
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, float]] = {}
    skipped = 0
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                values = {key: float(value) for key, value in row.items() if key is not None}
                by_epoch[int(values["epoch"])] = values
            except (KeyError, TypeError, ValueError):
                skipped += 1
    if skipped:
        logger.warning("%s: skipped %d unreadable line(s)", path, skipped)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _read_history(path: Path) -> dict[str, list[float]]:
    """Columns of a history file as lists of floats (empty dict when there is none)."""
    rows = _read_rows(path)
    return {key: [row.get(key, float("nan")) for row in rows] for key in (rows[0] if rows else {})}


def measure_training_speed(config: Config, images: np.ndarray, labels: np.ndarray, steps: int = 2) -> float:
    """Training throughput (slices/s) of ``config``'s model on one batch, after a warm-up step.

    Args:
        config: gives the model, loss, batch size and precision.
        images: z-scored slices ``(N, 256, 128, 1)``; the first ``batch_size`` are used.
        labels: their class indices ``(N, 256, 128)``.
        steps: timed training steps after the warm-up.
    """
    with precision_policy(config.precision):
        model = compile_model(config)
        batch = min(config.batch_size, len(images))
        x, y = np.asarray(images[:batch], np.float32), labels[:batch]
        model.train_on_batch(x, y)  # the first step traces and compiles the graph
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return steps * batch / (time.perf_counter() - started)
