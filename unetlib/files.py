"""Writing files so that no reader ever sees one half written.

Everything a later command reads (models, configs, histories, caches, phantoms) is written
under a temporary name in the same folder and renamed into place: a rename within a folder
is atomic, so a kill at any moment leaves the old file or the new one, never a part.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["partial_path", "write_atomic"]


def partial_path(path: Path | str) -> Path:
    """The temporary sibling ``.NAME.partial`` a file is written to before its rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def write_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` via :func:`partial_path` and a rename."""
    path = Path(path)
    partial = partial_path(path)
    partial.write_text(text)
    os.replace(partial, path)
