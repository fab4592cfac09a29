"""Repository-wide pytest set-up (also applies to notebooks run with --nbval)."""

import os
import subprocess
import sys

import pytest

# Notebook training takes seconds under pytest unless the user chose a profile explicitly.
os.environ.setdefault("UNETLIB_PROFILE", "smoke")

_phantom_writer: subprocess.Popen | None = None
"""The background ``unetlib phantom`` that writes the notebooks' default data root, if one was needed."""


def pytest_collection_finish(session):
    """When notebooks are to run and their default data root (``data/phantom``) is not written yet
    (or an older phantom generator wrote it),
    write it in the background with one worker while the unit tests run, instead of in notebook
    01's first cell with the tests waiting: the same command and bytes, off the critical path."""
    global _phantom_writer
    if not any(str(item.fspath).endswith(".ipynb") for item in session.items):
        return
    from unetlib.data import DATA_DIR, is_outdated_phantom, resolve_data_root
    from unetlib.layout import has_layout

    root = resolve_data_root(generate=False)
    if root == DATA_DIR / "phantom" and (not has_layout(root) or is_outdated_phantom(root)):
        # An outdated one is rewritten as resolve_data_root would (the default size and seed).
        command = [sys.executable, "-m", "unetlib", "phantom", str(root), "--workers", "1", "--overwrite"]
        _phantom_writer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def pytest_runtest_setup(item):
    """A notebook waits for the background phantom (see :func:`pytest_collection_finish`)."""
    global _phantom_writer
    if _phantom_writer is not None and str(item.fspath).endswith(".ipynb"):
        writer, _phantom_writer = _phantom_writer, None
        _, errors = writer.communicate()
        if writer.returncode != 0:
            pytest.fail(f"writing the notebooks' phantom failed:\n{errors}", pytrace=False)


def pytest_sessionfinish(session):
    """A background phantom no notebook waited for (a run stopped early) is stopped; the next
    ``unetlib phantom`` removes what it left."""
    if _phantom_writer is not None and _phantom_writer.poll() is None:
        _phantom_writer.kill()
        _phantom_writer.wait()
