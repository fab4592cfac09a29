"""Writing files so that no reader ever sees one half written.

Everything a later command reads (models, configs, histories, figures, predictions) is
written under a temporary name in the same folder and renamed into place: a rename within a
folder is atomic, so a kill at any moment leaves the old file or the new one, never a part.
(Whole folders, the decode cache and the phantom, are staged the same way by their writers.)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextmanager
def atomic_path(path: Path | str):
    """Give a writer a temporary sibling of ``path`` to write, then rename it onto ``path``.

    The temporary name, ``.partial-NAME``, keeps the file's ending, so writers that choose a
    format by it (Keras, nibabel, matplotlib) work unchanged. If the writer fails, the partial
    file is removed and ``path`` is left as it was::

        with atomic_path(out / "model.keras") as partial:
            model.save(partial)

    Args:
        path: the file to write; its folder must exist.

    Yields:
        The temporary path ``.partial-NAME`` beside ``path``, for the writer to create.
    """
    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)  # only still there if the writer failed


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to write; its folder must exist.
        text: the file's whole content.
    """
    with atomic_path(path) as partial:
        partial.write_text(text)
