"""Shared fixtures: a tiny phantom and a finished smoke run, each made once per test session, and helpers
for NIfTI files and training scripts."""

from __future__ import annotations

import contextlib
import io
import shutil
import textwrap
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest

from unetlib.cli import main
from unetlib.config import Config, make_config
from unetlib.phantom import generate_phantom


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decoded-split cache so tests never see each other's caches."""
    monkeypatch.setenv("UNETLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("UNETLIB_DATA", raising=False)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> Path:
    """A 300-slice phantom (read-only by convention: copy it before changing files)."""
    return generate_phantom(tmp_path_factory.mktemp("phantom") / "root", "tiny", seed=0, workers=2, progress=False)


@pytest.fixture
def phantom_copy(tiny_phantom, tmp_path) -> Path:
    """A private copy of the tiny phantom that a test may damage."""
    return Path(shutil.copytree(tiny_phantom, tmp_path / "root"))


class SmokeRun(NamedTuple):
    """A finished training run: its config, its folder and what ``unetlib train`` printed."""

    config: Config
    out: Path
    log: str


@pytest.fixture(scope="session")
def smoke_run(tiny_phantom, tmp_path_factory) -> SmokeRun:
    """A 3-epoch smoke run on the tiny phantom, trained once per session through the command line
    with its output going to a pipe-like stream, as ``make demo > log`` does (read-only by convention:
    tests that change a run take :func:`smoke_run_copy`). Sharing it spares every test that needs a
    trained run the seconds of starting TensorFlow and training one of its own."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    log = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(log):
        patch.setenv("UNETLIB_CACHE", str(tmp_path_factory.mktemp("smoke-cache")))
        status = main(["train", "--preset", "smoke", "--data", str(tiny_phantom), "--epochs", "3", "--out", str(out)])
    assert status == 0, log.getvalue()
    return SmokeRun(make_config("smoke", data=str(tiny_phantom), epochs=3), out, log.getvalue())


@pytest.fixture
def smoke_run_copy(smoke_run, tmp_path) -> Path:
    """A private copy of the finished smoke run's folder that a test may change."""
    return Path(shutil.copytree(smoke_run.out, tmp_path / "run"))


def write_nifti(path: Path, array: np.ndarray) -> Path:
    """Write a real NIfTI file (gzip when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.diag([1.65, 1.65, 2.5, 1.0])), path)
    return path


def make_root(root: Path, slices: dict[str, tuple[np.ndarray, np.ndarray]], split: str = "train") -> Path:
    """Write ``{key: (image, mask)}`` pairs into a HipMRI layout under ``root``."""
    for key, (image, mask) in slices.items():
        write_nifti(root / f"keras_slices_{split}" / f"case_{key}.nii.gz", image)
        write_nifti(root / f"keras_slices_seg_{split}" / f"seg_{key}.nii.gz", mask)
    return root


def train_script(tmp_path: Path, config_code: str, out: Path, pause_at_epoch: int | None = None) -> Path:
    """A script that trains ``config_code`` into ``out`` and prints ``finished chief|worker
    [losses] [learning rates]``; with ``PAUSE=1`` in its environment it sleeps at the start of ``pause_at_epoch``,
    so a test can kill it at a known point."""
    script = tmp_path / "train_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, time
        import keras
        from unetlib.config import make_config
        from unetlib.training import train

        class Pause(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == {pause_at_epoch!r} and os.environ.get("PAUSE") == "1":
                    print("paused", flush=True)
                    time.sleep(120)

        result = train({config_code}, {str(out)!r}, verbose=2, callbacks=[Pause()])
        history = result.history
        print("finished", "chief" if result.chief else "worker", history["loss"], history["learning_rate"], flush=True)
    """)
    )
    return script
