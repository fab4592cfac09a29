"""A training run's folder: what it holds, how its progress is committed, its lock and its history.

A run's folder holds everything the run produced::

    OUT/model.keras      best model by validation organ Dice (:data:`MONITOR`)
    OUT/config.json      the config used
    OUT/history.csv      one row per finished epoch, epochs numbered from 0 as Keras does, with
                         its losses, Dice scores and learning rate
    OUT/tensorboard/     the same per epoch, for ``tensorboard --logdir runs/``
    OUT/curves.png       training curves
    OUT/snapshots/       epoch_001.png, ...: predictions on a few fixed validation slices after each epoch
    OUT/backup/          the state a killed run resumes from (removed when the run finishes)
    OUT/complete.json    written when the run finishes, with its summary
    OUT/.lock            held by the process training in the folder

Every file is written to a temporary name and renamed into place (:mod:`unetlib.files`), so
none is ever seen half written. :func:`commit_epoch` saves a run's progress at each epoch's end
with ``backup/state.json`` as the commit point: after a kill at any moment, running the same
command again continues from the last committed epoch (:func:`load_state`), and every epoch
appears exactly once in ``history.csv``.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from unetlib.config import Config
from unetlib.data import PROJECT_ROOT
from unetlib.errors import TrainingError
from unetlib.files import atomic_path, write_atomic

__all__ = [
    "MONITOR",
    "RUNS_DIR",
    "run_dir",
    "is_complete",
    "claim",
    "load_state",
    "prepare",
    "commit_epoch",
    "finish",
    "worker_copy",
    "read_history",
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


@contextmanager
def claim(out: Path | str):
    """Hold ``out/.lock`` while training, so a second run into the same folder is refused (the
    lock goes with the process, even after ``kill -9``).

    Args:
        out: the run folder, created if missing.

    Raises:
        FileExistsError: another process holds the folder; the message names its pid.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise FileExistsError(
                f"{out}: another training run (pid {owner}) is using this folder; wait for it to finish or choose "
                "another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _fresh_state() -> dict:
    return {"epoch": 0, "weights": None, "best": None, "best_epoch": None, "wait": 0, "seconds": 0.0}


def load_state(out: Path | str) -> tuple[dict, list[dict[str, float]]]:
    """The committed state of an unfinished run in ``out`` and its history rows (a fresh state
    and no rows when nothing was committed); finishes an interrupted promotion of the best model.

    Args:
        out: the run folder.

    Returns:
        ``(state, rows)``: ``state`` has keys ``epoch`` (epochs committed), ``weights`` (file name
        in ``backup/`` or None), ``best`` (best :data:`MONITOR` value), ``best_epoch``, ``wait``
        (epochs since it improved) and ``seconds`` (training time used); ``rows`` holds one dict of
        floats per committed epoch.
    """
    out = Path(out)
    try:
        state = {**_fresh_state(), **json.loads((out / "backup" / "state.json").read_text())}
    except (OSError, ValueError):
        return _fresh_state(), []
    rows = [row for row in _read_rows(out / "history.csv") if row["epoch"] < state["epoch"]]
    if state["best_epoch"] is not None:
        pending = out / "backup" / f"best_epoch_{state['best_epoch']:03d}.keras"
        if pending.is_file():
            os.replace(pending, out / "model.keras")
    return state, rows


def prepare(out: Path | str, config: Config) -> tuple[dict, list[dict[str, float]]]:
    """Check that ``out`` may hold a run of ``config``, write its ``config.json``, and return the
    committed state to resume from (:func:`load_state`; a fresh one for a new run).

    Args:
        out: the run folder; it must exist (:func:`claim` creates it).
        config: the run's config.

    Raises:
        FileExistsError: ``out`` holds progress of a run of a different config.
    """
    out = Path(out)
    state, rows = load_state(out)
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
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    return state, rows


def commit_epoch(
    out: Path | str,
    state: dict,
    rows: list[dict[str, float]],
    model,
    epoch: int,
    logs: dict[str, float],
    seconds: float,
) -> bool:
    """Commit a finished epoch, in an order that a kill at any moment leaves consistent.

    In order: the weights (model and optimiser) go to ``backup/epoch_NNN.weights.h5``; an improved
    model to ``backup/best_epoch_NNN.keras``; ``history.csv`` is rewritten with every epoch so far;
    then ``backup/state.json`` records the epoch, the weights file, the best score, early
    stopping's count and the time used. That write is the commit: a run killed before it redoes
    the epoch and rewrites its row; a run killed after it finds everything it needs. Only then
    does the improved model replace ``model.keras`` (:func:`load_state` finishes that step after
    a kill), and older backups are removed.

    Args:
        out: the run folder.
        state: the committed state (:func:`load_state`); updated in place.
        rows: the committed history rows; this epoch's row is appended.
        model: the Keras model after the epoch (``save_weights`` and ``save`` are called on it).
        epoch: the epoch's number, from 0.
        logs: the epoch's metrics as Keras reports them (``loss``, :data:`MONITOR`, ...).
        seconds: training time this epoch added to the run.

    Returns:
        True when :data:`MONITOR` improved, so ``model.keras`` now holds this epoch's model.
    """
    out = Path(out)
    backup = out / "backup"
    backup.mkdir(parents=True, exist_ok=True)
    weights = backup / f"epoch_{epoch:03d}.weights.h5"
    with atomic_path(weights) as partial:
        model.save_weights(partial)
    value = logs.get(MONITOR, np.nan)
    improved = bool(np.isfinite(value) and (state["best"] is None or value > state["best"]))
    best_file = backup / f"best_epoch_{epoch:03d}.keras"
    if improved:
        with atomic_path(best_file) as partial:
            model.save(partial)
    rows.append({"epoch": epoch, **logs})
    write_atomic(out / "history.csv", _history_csv(rows))
    state.update(
        epoch=epoch + 1,
        weights=weights.name,
        best=value if improved else state["best"],
        best_epoch=epoch if improved else state["best_epoch"],
        wait=0 if improved else state["wait"] + 1,
        seconds=state["seconds"] + seconds,
    )
    write_atomic(backup / "state.json", json.dumps(state, indent=1))  # the commit
    if improved:
        os.replace(best_file, out / "model.keras")
    for stale in backup.glob("*epoch_*"):
        if stale.name != weights.name:
            stale.unlink(missing_ok=True)
    return improved


def finish(out: Path | str, summary: dict) -> dict[str, list[float]]:
    """Finish a run: draw ``curves.png``, write ``complete.json`` and remove the backup.

    Args:
        out: the run folder, holding a committed history and ``model.keras``.
        summary: what the run records beside its history in ``complete.json`` (its time used,
            precision, data root, ...); the epochs run and the best scores are added here.

    Returns:
        The history, one list per ``history.csv`` column.

    Raises:
        TrainingError: no epoch reached a finite validation score, so there is no ``model.keras``.
    """
    import matplotlib.pyplot as plt

    from unetlib.viz import plot_history, save_figure

    out = Path(out)
    history = read_history(out / "history.csv")
    figure = plot_history(history)
    save_figure(figure, out / "curves.png")
    plt.close(figure)
    if not (out / "model.keras").is_file():
        raise TrainingError(f"{out}: no epoch reached a finite validation score, so no model was saved")
    summary = {
        "epochs_run": len(history.get("epoch", [])),
        "best_val_foreground_dice": max(history.get(MONITOR, [float("nan")])),
        "val_prostate_dice_of_best": _at_best(history, "val_prostate_dice"),
        **summary,
    }
    write_atomic(out / "complete.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out / "backup", ignore_errors=True)
    return history


def worker_copy(out: Path | str, index: int) -> Path:
    """A temporary run folder for worker ``index`` (not the chief) of a multi-worker run, holding a
    copy of the chief's last commit in ``out``, so that every worker resumes from the same epoch.

    Args:
        out: the chief's run folder, on a filesystem every worker sees (as a cluster's shared home
            or scratch is).
        index: the worker's index; it names the temporary folder.

    Returns:
        The new folder (under the system's temporary folder); the caller removes it when done.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"unetlib-worker{index}-"))
    out = Path(out)
    try:
        state = json.loads((out / "backup" / "state.json").read_text())
        (folder / "backup").mkdir()
        for name in ("config.json", "history.csv", f"backup/{state['weights']}", "backup/state.json"):
            shutil.copyfile(out / name, folder / name)
    except FileNotFoundError:  # nothing committed yet: the worker starts from scratch, as the chief does
        shutil.rmtree(folder / "backup", ignore_errors=True)
        (folder / "history.csv").unlink(missing_ok=True)
    return folder


def _history_csv(rows: list[dict[str, float]]) -> str:
    """Rows as CSV text: ``epoch`` first, then the other columns in alphabetical order."""
    columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "epoch": int(row["epoch"])} for row in rows)
    return text.getvalue()


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


def read_history(path: Path | str) -> dict[str, list[float]]:
    """The columns of a ``history.csv`` as lists of floats, one per epoch (empty when there is none).

    Args:
        path: the history file; lines an older version left damaged are skipped with a warning.
    """
    rows = _read_rows(Path(path))
    return {key: [row.get(key, float("nan")) for row in rows] for key in (rows[0] if rows else {})}


def _at_best(history: dict[str, list[float]], key: str) -> float:
    """The value of ``key`` in the epoch with the best :data:`MONITOR` (NaN when there is none)."""
    if not history.get(MONITOR) or key not in history:
        return float("nan")
    return history[key][int(np.argmax(history[MONITOR]))]
