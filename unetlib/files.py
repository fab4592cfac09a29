"""Writing files so that no reader ever sees one half written.

Everything a later command reads (models, configs, histories, figures, predictions) is
written under a temporary name in the same folder and renamed into place: a rename within a
folder is atomic, so a kill at any moment leaves the old file or the new one, never a part.

Whole folders (a decode cache entry, a phantom) go through :func:`staged_folder`: the writer
fills a fresh staging folder ``.NAME.PID.partial`` beside the target, named by its process id so
that two processes writing the same target never touch each other's work, and the finished folder
is renamed into place. A rename onto a folder that is not empty fails, so of two writers racing
for one target exactly one wins and the other is told, never half merged. Leftovers of killed
writers are recognised by their dead process ids and cleaned up by the next writer.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "staged_folder", "remove_dead_leftovers"]


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


# --------------------------------------------------------------------------- whole folders

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<kind>partial|old)$")
"""``.NAME.PID.partial`` (a staging folder) or ``.NAME.PID.old`` (a target moved aside)."""

_writing: set[Path] = set()
"""The staging folders this process is filling now (see :func:`staged_folder`)."""
_writing_lock = threading.Lock()


def _alive(pid: int) -> bool:
    """Whether a process with this id is running (where that cannot be told safely, assume it is)."""
    if os.name == "nt":  # os.kill there would end the process instead of probing it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _abandoned(folder: Path, name: str, pid: int) -> bool:
    """Whether the writer of target ``name`` that had process id ``pid`` is gone: another process
    that ended, or this one, when it is not writing that target now (a killed writer's id reused)."""
    if pid == os.getpid():
        with _writing_lock:
            return folder / f".{name}.{pid}.partial" not in _writing
    return not _alive(pid)


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or link, if it is there."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove_dead_leftovers(folder: Path | str, name: str | None = None) -> None:
    """Clean up what writers of :func:`staged_folder` that were killed left in ``folder``.

    A staging folder ``.NAME.PID.partial`` whose process has ended is removed. A ``.NAME.PID.old``
    (a target moved aside by a replacing writer killed before its new folder was in) is put back as
    ``NAME`` when ``NAME`` is missing, and removed when ``NAME`` is there. Leftovers of running
    processes are left alone: they are still being written. Nothing else in ``folder`` is touched.

    Args:
        folder: the folder holding the targets; a missing folder holds no leftovers.
        name: clean only the leftovers of this target (a name in ``folder``); None: of every target.
    """
    folder = Path(os.path.abspath(folder))
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        if entry.is_symlink() or not entry.is_dir() or not _abandoned(folder, match["name"], int(match["pid"])):
            continue
        if match["kind"] == "old" and not os.path.lexists(folder / match["name"]):
            try:
                os.rename(entry, folder / match["name"])  # the swap never finished: the old target is still the target
                continue
            except OSError:
                pass  # another process put it back, or wrote a new target, first
        _remove(entry)


def _swap_in(staging: Path, target: Path, replace: bool) -> None:
    """Rename the finished ``staging`` onto ``target``; with ``replace`` move the old target aside first
    and remove it only once the new one is in."""
    aside = staging.with_name(staging.name.removesuffix(".partial") + ".old")
    moved_aside = False
    if replace:
        if os.path.lexists(target) and not target.is_dir():
            raise FileExistsError(f"{target}: exists and is not a folder; not replacing it")
        try:
            os.rename(target, aside)
            moved_aside = True
        except FileNotFoundError:
            pass  # nothing to replace
    try:
        os.rename(staging, target)  # fails, atomically, when the target is a folder that is not empty
    except OSError as exc:
        if moved_aside:
            try:
                os.rename(aside, target)
            except OSError:  # another writer's folder took its place: it was being replaced anyway
                _remove(aside)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(f"{target}: already exists and is not an empty folder") from exc
        raise
    if moved_aside:
        _remove(aside)


@contextmanager
def staged_folder(target: Path | str, *, replace: bool = False):
    """Give a writer a fresh folder to fill, then rename it onto ``target`` in one step.

    The staging folder, ``.NAME.PID.partial`` beside ``target``, belongs to this process alone, so
    two processes writing one target never delete or mix each other's work. On success it is
    renamed onto ``target``; if the writer fails (or is interrupted) it is removed and ``target`` is
    left as it was. Before starting, the leftovers of killed writers of the same target are cleaned
    up (:func:`remove_dead_leftovers`). A kill at any moment leaves the old target or the new one::

        with staged_folder(out / "entry") as staging:
            np.save(staging / "images.npy", images)

    Without ``replace`` the rename onto a folder that is not empty fails (checked by the rename
    itself, so a writer that finished first in the meantime is never overwritten). With
    ``replace`` the old target is moved aside to ``.NAME.PID.old``, the new one renamed in, and only
    then the old one removed.

    Args:
        target: the folder to create or replace; its parent folder is created if needed.
        replace: replace an existing ``target`` (a folder) instead of refusing it.

    Yields:
        The empty staging folder, for the writer to fill.

    Raises:
        FileExistsError: ``target`` is a folder that is not empty (without ``replace``; e.g. another
            process finished writing it first) or a file, or this process is already writing it.
    """
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with _writing_lock:
        if staging in _writing:
            raise FileExistsError(f"{target}: already being written by this process")
        _writing.add(staging)
    try:
        remove_dead_leftovers(target.parent, target.name)
        staging.mkdir()
        try:
            yield staging
            _swap_in(staging, target, replace)
        finally:
            _remove(staging)  # still there only if the writer or the swap failed
    finally:
        with _writing_lock:
            _writing.discard(staging)
