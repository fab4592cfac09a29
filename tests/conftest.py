"""Shared fixtures: a tiny phantom written once per test session, and helpers for NIfTI files."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

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
    [losses]``; with ``PAUSE=1`` in its environment it sleeps at the start of ``pause_at_epoch``,
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
        print("finished", "chief" if result.chief else "worker", result.history["loss"], flush=True)
    """)
    )
    return script
