"""Training: ``train(config, out)`` fits the UNet a config describes with ``model.fit``.

The steps: load the data and build the input pipelines (:mod:`unetlib.pipeline`), claim the
run folder and resume from its last committed epoch (:mod:`unetlib.runs`), compile the model
(:mod:`unetlib.model`, :mod:`unetlib.losses`, :mod:`unetlib.metrics`), fit it with the kit's
callbacks (:mod:`unetlib.callbacks`: commit each epoch, snapshots, time budget), and finish the
run (curves, summary). Where it runs, one device or several, is :mod:`unetlib.distribute`'s job.
"""

from __future__ import annotations

from unetlib.backend import resolve_precision

# isort: split

import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from unetlib import runs
from unetlib.callbacks import CommitEachEpoch, EpochSnapshots, ScheduledLearningRate, TimeBudget, snapshot_indices
from unetlib.config import Config
from unetlib.data import load_split, resolve_data_root
from unetlib.distribute import Placement, make_placement
from unetlib.errors import TrainingError
from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE
from unetlib.losses import get_loss
from unetlib.metrics import PooledDice
from unetlib.model import build_from_config
from unetlib.pipeline import make_dataset, steps_for
from unetlib.runs import is_complete, run_dir
from unetlib.schedules import rate_factor

__all__ = [
    "TrainResult",
    "precision_policy",
    "compile_model",
    "learning_rate_at",
    "RateSearch",
    "lr_find",
    "training_indices",
    "train",
    "run_dir",
    "is_complete",
]

logger = logging.getLogger(__name__)


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

    Adam starts at the config's full learning rate; in :func:`train` the schedule
    (:func:`learning_rate_at`) then sets the rate before every step.

    Args:
        config: gives the loss, class weights and learning rate (and the UNet when ``model`` is None).
        model: the Keras model to compile; None builds :func:`~unetlib.model.build_from_config`'s.

    Returns:
        The compiled model, with metrics ``foreground_dice`` (classes 1..5 together) and one
        ``CLASS_dice`` per organ (``body_dice`` ... ``prostate_dice``), all pooled over the epoch.

    Raises:
        ValueError: the config names an unknown loss.
    """
    model = build_from_config(config) if model is None else model
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=get_loss(config.loss, config.class_weights),
        metrics=[PooledDice(range(1, NUM_CLASSES), name="foreground_dice")]
        + [PooledDice([organ], name=f"{LABELS[organ]}_dice") for organ in range(1, NUM_CLASSES)],
    )
    return model


def learning_rate_at(config: Config, progress: float) -> float:
    """The learning rate ``config``'s schedule sets when the run is ``progress`` (0 to 1) of the way
    through its budget (:mod:`unetlib.schedules`).

    Args:
        config: gives the full rate, the schedule and the warm-up.
        progress: how far the run has come, 0 to 1 (:class:`~unetlib.callbacks.ScheduledLearningRate`
            measures it).
    """
    return config.learning_rate * rate_factor(config.schedule, progress, config.warmup)


@dataclass
class RateSearch:
    """What :func:`lr_find`'s range test measured.

    Attributes:
        rates: the learning rate of each step, rising exponentially.
        losses: the training loss of each step, smoothed (an exponential moving average with bias
            correction, as fastai's finder does).
        suggestion: a learning rate to train with: a tenth of the rate where the smoothed loss was lowest.
    """

    rates: np.ndarray
    losses: np.ndarray
    suggestion: float


def lr_find(
    config: Config,
    *,
    start: float = 1e-6,
    stop: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.9,
    progress: bool = True,
) -> RateSearch:
    """Leslie Smith's learning-rate range test: train a fresh model for up to ``steps`` steps
    while the learning rate rises exponentially from ``start`` to ``stop``, and record the loss.

    The loss falls slowly where the rate is too small, fastest where it is about right, and
    shoots up once it is too large; the test stops there (smoothed loss above 4 × its lowest).
    The suggestion, a tenth of the rate at the lowest loss, is a safe peak rate for a schedule
    (fastai's ``lr_min``). Nothing is written; the model is thrown away.

    Args:
        config: the model, loss, data and batch size to test (its own learning rate is not used).
        start: the first step's rate.
        stop: the last step's rate.
        steps: training steps at most.
        smoothing: weight of the past in the loss's moving average (0: no smoothing).
        progress: show a progress bar.

    Returns:
        The rates, the smoothed losses and the suggested rate.

    Raises:
        ValueError: ``start`` is not below ``stop``, ``steps`` is below 2, or ``smoothing`` is
            outside [0, 1).
        DataError: the data root or a split cannot be used.
        TrainingError: the loss was not finite at the first rate.
    """
    from tqdm import tqdm

    if not 0 < start < stop or steps < 2 or not 0 <= smoothing < 1:
        raise ValueError(
            "lr_find: need 0 < start < stop, steps >= 2 and 0 <= smoothing < 1; "
            f"got start={start}, stop={stop}, steps={steps}, smoothing={smoothing}"
        )
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        stream = _datasets(config).train_from(0)
        model = compile_model(config)
        rates, losses, average = [], [], 0.0
        for step, (images, labels) in enumerate(
            tqdm(stream.take(steps), total=steps, desc="lr_find", disable=not progress)
        ):
            rate = start * (stop / start) ** (step / (steps - 1))
            model.optimizer.learning_rate.assign(rate)
            loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
            average = smoothing * average + (1 - smoothing) * loss
            smoothed = average / (1 - smoothing ** (step + 1))
            if not np.isfinite(smoothed) or (losses and smoothed > 4 * min(losses)):
                break
            rates.append(rate)
            losses.append(smoothed)
    if not rates:
        raise TrainingError(f"lr_find: the loss was not finite at the first rate, {start:g}; try a smaller start")
    rates, losses = np.array(rates), np.array(losses)
    return RateSearch(rates, losses, float(rates[int(np.argmin(losses))] / 10))


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
            return TrainResult(out, out / "model.keras", runs.read_history(out / "history.csv"), reused=True)
        raise FileExistsError(f"{out}: holds a finished run of this config; reuse it (--reuse) or choose another --out")
    placement = make_placement(config.distribute)  # first: devices and clusters are set up before TensorFlow runs
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        datasets = _datasets(config, placement.replicas)  # bad data fails here, before anything is written
        # Only the chief writes the run's files; every other worker keeps its copy of the same
        # state in a temporary folder, removed when it is done.
        folder = out if placement.is_chief else runs.worker_copy(out, placement.worker_index)
        try:
            with runs.claim(folder), placement.strategy.scope():
                history = _fit(config, folder, datasets, placement, verbose, callbacks)
        finally:
            if not placement.is_chief:
                shutil.rmtree(folder, ignore_errors=True)
    return TrainResult(out, out / "model.keras", history, replicas=placement.replicas, chief=placement.is_chief)


def _fit(config: Config, out: Path, datasets: _Datasets, placement: Placement, verbose, callbacks) -> dict:
    """Resume or start the run in ``out``, train, and finish it; returns its history."""
    state, rows = runs.prepare(out, config)
    model = compile_model(config)
    if state["weights"]:  # continue from the last committed epoch
        model.optimizer.build(model.trainable_variables)
        model.load_weights(out / "backup" / state["weights"])
    budget = TimeBudget(config.max_minutes, state["seconds"], placement) if config.max_minutes else None
    schedule = ScheduledLearningRate(
        lambda progress: learning_rate_at(config, progress), datasets.epoch_steps, config.epochs, budget
    )
    commit = CommitEachEpoch(out, config.patience, state, rows)
    # The schedule first (it adds the epoch's rate to the logs that the commit writes), and the
    # TensorBoard log after the commit, so it shows each committed epoch once.
    fit_callbacks = [schedule, commit, keras.callbacks.TerminateOnNaN(), _tensorboard(out)]
    if len(datasets.watched[0]):  # a validation split without prostate has nothing to watch
        fit_callbacks.append(EpochSnapshots(out / "snapshots", *datasets.watched))
    if budget is not None:
        fit_callbacks.append(budget)
    fit_callbacks += list(callbacks or [])

    time_left = not config.max_minutes or state["seconds"] < config.max_minutes * 60
    if state["epoch"] < config.epochs and state["wait"] < config.patience and time_left:  # else: killed while finishing
        # A resumed run picks the stream up where the last committed epoch left it.
        model.fit(
            datasets.train_from(state["epoch"] * datasets.epoch_steps),
            steps_per_epoch=datasets.epoch_steps,
            initial_epoch=state["epoch"],
            epochs=config.epochs,
            validation_data=datasets.validate,
            callbacks=fit_callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset shuffles itself, reproducibly
        )
    if commit.nonfinite_epoch is not None:
        kept = (
            f"{out / 'model.keras'} is from the last good epoch"
            if (out / "model.keras").is_file()
            else "no model was saved"
        )
        raise TrainingError(
            f"{out}: the loss or the weights became NaN or infinite in epoch {commit.nonfinite_epoch + 1}; "
            f"that epoch was not kept ({kept}). Check the data (unetlib check-data) or lower the learning rate."
        )
    summary = {
        "seconds": round(state["seconds"], 1),
        "precision": resolve_precision(config.precision),
        "data_root": str(datasets.root),
    }
    return runs.finish(out, summary)


def _tensorboard(out: Path) -> keras.callbacks.TensorBoard:
    """Per-epoch scalars (losses, Dice per class, learning rate) for ``tensorboard --logdir runs/``."""
    return keras.callbacks.TensorBoard(
        out / "tensorboard", write_graph=False, write_steps_per_second=False, update_freq="epoch", profile_batch=0
    )


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


def _snapshot_slices(split) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and keys of the validation slices :class:`EpochSnapshots` draws."""
    chosen = snapshot_indices(split.labels)
    return np.asarray(split.images[chosen], np.float32), split.labels[chosen], [split.keys[i] for i in chosen]
