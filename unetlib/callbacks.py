"""The Keras callbacks a training run uses: commit each epoch, draw snapshots, keep to a time
budget, schedule the learning rate.

``model.fit`` calls them at each epoch's (or step's) end; what they write goes to the run
folder described in :mod:`unetlib.runs`.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import time
from pathlib import Path

import keras
import numpy as np

from unetlib.distribute import Placement
from unetlib.labels import PROSTATE
from unetlib.runs import commit_epoch

__all__ = ["CommitEachEpoch", "snapshot_indices", "EpochSnapshots", "TimeBudget", "ScheduledLearningRate"]


def _finite_weights(model: keras.Model) -> bool:
    return all(np.all(np.isfinite(np.asarray(weight, dtype=np.float32))) for weight in model.get_weights())


class CommitEachEpoch(keras.callbacks.Callback):
    """At every epoch's end, commit the epoch to the run folder (:func:`unetlib.runs.commit_epoch`:
    weights, best model, history, then the state that a killed run resumes from), and stop
    training after ``patience`` epochs without improvement (early stopping, whose count survives
    a kill because it is part of the committed state).

    An epoch whose loss or weights are not finite is not committed and stops training;
    :attr:`nonfinite_epoch` then names it.

    Args:
        out: the run folder.
        patience: epochs without improvement of :data:`~unetlib.runs.MONITOR` before training stops.
        state: the committed state to continue from, as :func:`unetlib.runs.load_state` returns it.
        rows: the history rows committed so far, as :func:`unetlib.runs.load_state` returns them; appended to.
    """

    def __init__(self, out: Path, patience: int, state: dict, rows: list[dict[str, float]]):
        super().__init__()
        self.out, self.patience, self.state, self.rows = Path(out), patience, state, rows
        self.nonfinite_epoch: int | None = None
        self.started = time.monotonic()

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        if not np.isfinite(logs.get("loss", np.nan)) or not _finite_weights(self.model):
            self.nonfinite_epoch = epoch
            self.model.stop_training = True
            return
        now = time.monotonic()
        commit_epoch(self.out, self.state, self.rows, self.model, epoch, logs, seconds=now - self.started)
        self.started = now
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

        from unetlib.viz import plot_predictions, save_figure

        predictions = np.asarray(self.model(self.images, training=False)).argmax(axis=-1)
        figure = plot_predictions(self.images, self.labels, predictions, self.keys)
        figure.suptitle(f"epoch {epoch + 1}", x=0.01, ha="left", fontsize=10)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_figure(figure, self.folder / f"epoch_{epoch + 1:03d}.png")
        plt.close(figure)


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``minutes`` of wall time have passed, even in the middle of an epoch.

    It checks after every training step, so a run ends within one step of its budget (plus the
    validation of that last, shortened epoch, which Keras still runs, so the checkpoint sees the
    final weights). A resumed run passes the seconds it used before, so the budget covers the
    whole run. :attr:`used` (seconds) and :meth:`progress` are what a budget-aware learning-rate
    schedule (:class:`ScheduledLearningRate`) reads.

    Args:
        minutes: the whole run's budget of wall time.
        used_seconds: seconds the run already used before this process started.
        placement: where the run trains; with several workers, all go by the chief's clock, so
            they stop at the same step and agree on the time used.
    """

    def __init__(self, minutes: float, used_seconds: float = 0.0, placement: Placement | None = None):
        super().__init__()
        self.budget, self.before, self.used = minutes * 60, used_seconds, used_seconds
        self.start = time.monotonic()
        self.placement = placement

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        used = self.before + time.monotonic() - self.start
        if self.placement is not None:  # workers' clocks differ: all go by the chief's
            used = self.placement.chief_value(used)
        self.used = used
        if used >= self.budget:
            self.model.stop_training = True

    def progress(self) -> float:
        """Share of the budget used by the end of the last step, 0 to 1."""
        return min(1.0, self.used / self.budget)


class ScheduledLearningRate(keras.callbacks.Callback):
    """Before every training step, set the optimiser's learning rate from the run's progress
    (:mod:`unetlib.schedules`), and log the rate of each epoch's last step as ``learning_rate``.

    The progress is the share of the planned steps done or, when there is a time budget
    (``budget``), of the budget used, whichever is further: the rate reaches zero when the run
    ends, by its clock or by its epochs. Both are part of what a resumed run starts from (the
    committed time used, the committed epochs), so after a kill the rate continues where it was.

    Args:
        rate: the learning rate at a progress from 0 to 1.
        epoch_steps: training steps per epoch.
        epochs: planned epochs (the step budget when there is no time budget).
        budget: the run's :class:`TimeBudget` (or anything else with its ``progress()`` method), or
            None to go by steps.
    """

    def __init__(self, rate, epoch_steps: int, epochs: int, budget: TimeBudget | None = None):
        super().__init__()
        self.rate, self.epoch_steps, self.steps, self.budget = rate, epoch_steps, epoch_steps * epochs, budget
        self.epoch, self.current = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        progress = (self.epoch * self.epoch_steps + batch) / self.steps
        if self.budget is not None:  # whichever ends the run first: the clock or the planned epochs
            progress = max(progress, self.budget.progress())
        rate = float(self.rate(progress))
        if rate != self.current:
            self.model.optimizer.learning_rate.assign(rate)
            self.current = rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.current is not None:
            logs["learning_rate"] = self.current
