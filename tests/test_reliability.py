"""Fault injection: kills, bad files and bad arguments never lose data or end in a traceback.

Each test does what a careful user might: kill a command with ``kill -9`` and run it again,
point it at the wrong folder, feed it a damaged file. Real files, real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from conftest import train_script as _train_script
from conftest import write_nifti
from unetlib.check import check_data
from unetlib.cli import main
from unetlib.config import make_config
from unetlib.data import load_split, read_image, read_mask
from unetlib.errors import DataError, TrainingError
from unetlib.evaluation import load_model
from unetlib.files import remove_dead_leftovers, staged_folder
from unetlib.layout import CACHE_FOLDER
from unetlib.model import build_unet
from unetlib.phantom import generate_phantom
from unetlib.prediction import predict_files
from unetlib.runs import read_history
from unetlib.training import learning_rate_at, train

# --------------------------------------------------------------------------- helpers


def _history_epochs(run: Path) -> list[int]:
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and all(not line.startswith("epoch") for line in lines[1:])
    return [int(line.split(",")[0]) for line in lines[1:]]


def _run_until_paused(script: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PAUSE": "1"},
    )
    for line in process.stdout:
        if line.strip() == "paused":
            return process
    pytest.fail(f"training never reached its pause (exit {process.wait()})")


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _finish(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "finished" in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------------------- training: kill, rerun, resume


def test_a_busy_run_refuses_a_second_and_after_kill_9_a_rerun_continues_each_epoch_once_as_it_was(
    tiny_phantom, tmp_path
):
    # A frozen network (no normalisation, a learning rate of 1e-12, far below float32's resolution of
    # its weights) never improves after epoch 0, so with
    # patience 2 an uninterrupted run stops after epoch 2. Killed after epoch 1, the rerun must
    # stop there too, not start counting again, and must not train epochs 0 and 1 a second time.
    settings = dict(epochs=8, patience=2, normalisation="none", learning_rate=1e-12, schedule="linear")
    config = f"make_config('smoke', data={str(tiny_phantom)!r}, **{settings!r})"
    out = tmp_path / "run"
    script = _train_script(tmp_path, config, out, pause_at_epoch=2)
    first = _run_until_paused(script)  # epochs 0 and 1 committed, paused at the start of epoch 2
    try:  # while it trains, a second run into its folder is refused and writes nothing
        with pytest.raises(FileExistsError, match=f"another training run \\(pid {first.pid}\\)"):
            train(make_config("smoke", data=str(tiny_phantom)), out, verbose=0)
        assert _history_epochs(out) == [0, 1]
    finally:
        _kill(first)  # its lock goes with it
    assert _history_epochs(out) == [0, 1] and not (out / "complete.json").exists()
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] == 2 and state["wait"] == 1 and state["seconds"] > 0
    _finish(script)
    assert _history_epochs(out) == [0, 1, 2]
    # The schedule went on where it was: each epoch logs the rate of its last step, 4 steps per
    # epoch of a planned 8 epochs, as an uninterrupted run has it.
    expected = [learning_rate_at(make_config("smoke", **settings), (4 * epoch + 3) / 32) for epoch in range(3)]
    assert read_history(out / "history.csv")["learning_rate"] == pytest.approx(expected, rel=1e-6)
    assert load_model(out / "model.keras").output_shape == (None, 256, 128, 6)
    assert not (out / "backup").exists()
    assert json.loads((out / "complete.json").read_text())["seconds"] >= state["seconds"]  # both sessions count


def test_rerunning_a_finished_run_does_not_double_its_history(smoke_run, smoke_run_copy):
    with pytest.raises(FileExistsError, match="finished run"):
        train(smoke_run.config, smoke_run_copy, verbose=0)
    assert _history_epochs(smoke_run_copy) == [0, 1, 2]
    assert train(smoke_run.config, smoke_run_copy, reuse=True, verbose=0).reused


def test_a_history_damaged_by_an_older_version_is_read_with_a_warning(smoke_run, smoke_run_copy, caplog):
    history = smoke_run_copy / "history.csv"
    header, first, second, third = history.read_text().splitlines()
    history.write_text("\n".join([header, first, header, second, third, third[:5]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="unetlib.runs"):
        result = train(smoke_run.config, smoke_run_copy, reuse=True, verbose=0)
    assert result.history["epoch"] == [0.0, 1.0, 2.0] and "skipped 2 unreadable line(s)" in caplog.text


class _PoisonWeights(keras.callbacks.Callback):
    """Turns the weights to NaN during the second epoch, as a diverging run would."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() == 6:  # epoch 0 has 4 steps
            kernel = next(layer for layer in self.model.layers if hasattr(layer, "kernel")).kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def test_a_run_whose_loss_turns_nan_fails_and_keeps_only_finite_models(tiny_phantom, tmp_path):
    config = make_config("smoke", data=str(tiny_phantom), epochs=2, patience=10)
    with pytest.raises(TrainingError, match="NaN or infinite in epoch 2"):
        train(config, tmp_path / "run", verbose=0, callbacks=[_PoisonWeights()])
    assert _history_epochs(tmp_path / "run") == [0]
    kept = load_model(tmp_path / "run" / "model.keras")
    assert all(np.all(np.isfinite(weight)) for weight in kept.get_weights())
    assert not (tmp_path / "run" / "complete.json").exists()


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(tiny_phantom, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--data", str(tmp_path / "wrong"), "--out", str(out)]) == 2
    assert "not a HipMRI data root" in capsys.readouterr().err
    assert not (out / "config.json").exists()


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def small_model():
    return build_unet((4, 8, 16))


def _slices(folder: Path, names: list[str]) -> list[Path]:
    rng = np.random.default_rng(0)
    return [write_nifti(folder / name, rng.normal(size=(256, 128)).astype(np.float32)) for name in names]


def test_predict_refuses_to_replace_existing_files_unless_told(small_model, tmp_path):
    inputs = _slices(tmp_path / "in", ["case_001_week_0_slice_1.nii.gz"])
    target = write_nifti(tmp_path / "out" / "seg_001_week_0_slice_1.nii.gz", np.full((256, 128), 3, np.uint8))
    with pytest.raises(DataError, match="already exist.*--overwrite"):
        predict_files(small_model, inputs, tmp_path / "out")
    assert np.all(np.asanyarray(nib.load(target).dataobj) == 3)
    predict_files(small_model, inputs, tmp_path / "out", overwrite=True)
    assert not np.all(np.asanyarray(nib.load(target).dataobj) == 3)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [target.name]  # no partial file left


def test_predict_refuses_a_target_inside_the_dataset(small_model, phantom_copy):
    masks = phantom_copy / "keras_slices_seg_test"
    before = {path.name: path.stat().st_mtime_ns for path in masks.iterdir()}
    with pytest.raises(DataError, match="inside the dataset folder"):
        predict_files(small_model, [phantom_copy / "keras_slices_test"], masks)
    assert {path.name: path.stat().st_mtime_ns for path in masks.iterdir()} == before


def test_predict_checks_that_output_names_are_unique_before_writing(small_model, tmp_path):
    inputs = _slices(tmp_path / "in", ["dup.nii", "dup.nii.gz"])
    with pytest.raises(DataError, match="would both be written to .*dup_seg.nii.gz"):
        predict_files(small_model, inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_predict_says_what_it_wrote_before_a_bad_input(small_model, tmp_path):
    _slices(tmp_path / "in", [f"case_001_week_0_slice_{i}.nii.gz" for i in range(3)])
    broken = tmp_path / "in" / "case_001_week_0_slice_3.nii.gz"
    broken.write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=r"slice_3.nii.gz: cannot read[\s\S]*2 of 4 label file\(s\) were written"):
        predict_files(small_model, [tmp_path / "in"], tmp_path / "out", batch_size=2)
    assert len(list((tmp_path / "out").iterdir())) == 2


# --------------------------------------------------------------------------- phantom


def test_phantom_overwrite_never_deletes_files_it_did_not_write(tmp_path):
    (tmp_path / "work").mkdir()
    notes = tmp_path / "work" / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(FileExistsError, match="not part of a phantom"):
        generate_phantom(tmp_path / "work", "tiny", overwrite=True, workers=1, progress=False)
    assert notes.read_text() == "mine"


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat: pid (name) state ppid ...)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_phantom_overwrite_killed_midway_keeps_the_old_dataset_and_its_workers_die(tiny_phantom, tmp_path):
    out = Path(shutil.copytree(tiny_phantom, tmp_path / "root"))
    before = sorted(path.relative_to(out) for path in out.rglob("*.nii.gz"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unetlib",
            "phantom",
            str(out),
            "--size",
            "tiny",
            "--seed",
            "1",
            "--workers",
            "2",
            "--overwrite",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = tmp_path / f".root.{process.pid}.partial"  # the killed command's own staging folder
    deadline = time.monotonic() + 60
    while not list(staging.rglob("*.nii.gz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(process.pid)
    assert workers, "the phantom command started no workers"
    _kill(process)
    time.sleep(1.0)
    assert not [pid for pid in workers if _running(pid)]
    assert sorted(path.relative_to(out) for path in out.rglob("*.nii.gz")) == before
    generate_phantom(out, "tiny", seed=1, overwrite=True, workers=1, progress=False)  # the rerun completes
    assert len(before) == len(list(out.rglob("*.nii.gz"))) and not staging.exists()


def _finished_pid() -> int:
    """The process id of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def _digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` (a decode cache aside) by its path in ``root``, with its SHA-256."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and CACHE_FOLDER not in path.relative_to(root).parts
    }


def test_two_phantom_commands_into_one_folder_at_once_both_succeed_with_one_phantom_of_the_seeds_bytes(
    tiny_phantom, tmp_path
):
    out = tmp_path / "root"
    command = [sys.executable, "-m", "unetlib", "phantom", str(out), "--size", "tiny", "--workers", "1"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    errors = [stderr for _, stderr in outputs]
    assert [process.returncode for process in processes] == [0, 0], errors
    # The second to finish found the first one's phantom (same seed, same bytes) in place and kept it.
    assert sum("already written by another process" in error for error in errors) == 1, errors
    assert _digests(out) == _digests(tiny_phantom)  # one worker each, the fixture two: the same bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root"]  # no .root.PID.partial or .old beside it


def test_phantom_removes_the_staging_folders_of_dead_processes_only(tmp_path):
    dead = tmp_path / f".root.{_finished_pid()}.partial"
    live = tmp_path / f".root.{os.getppid()}.partial"  # the process that started the tests is still running
    for staging in (dead, live):
        (staging / "keras_slices_train").mkdir(parents=True)
        (staging / "keras_slices_train" / "case_001_week_0_slice_0.nii.gz").write_bytes(b"half")
    generate_phantom(tmp_path / "root", "tiny", workers=1, progress=False)
    assert not dead.exists()
    assert (live / "keras_slices_train" / "case_001_week_0_slice_0.nii.gz").read_bytes() == b"half"
    assert (tmp_path / "root" / ".unetlib-phantom.json").is_file()


def test_a_phantom_replace_killed_between_its_renames_gets_the_old_dataset_back(tiny_phantom, tmp_path):
    # What `phantom --overwrite` killed after moving the old root aside, before the new one was in, leaves.
    aside = Path(shutil.copytree(tiny_phantom, tmp_path / f".root.{_finished_pid()}.old"))
    before = _digests(aside)
    with pytest.raises(FileExistsError, match="already exists"):
        generate_phantom(tmp_path / "root", "tiny", seed=1, workers=1, progress=False)
    assert _digests(tmp_path / "root") == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root"]


# --------------------------------------------------------------------------- decode cache


def _cache_entry(split: str) -> Path:
    return next(Path(os.environ["UNETLIB_CACHE"]).glob(f"{split}-*"))


def test_a_truncated_cache_is_reported_in_one_line_and_rebuilt(tiny_phantom, caplog):
    first = load_split(tiny_phantom, "test", progress=False)
    images = _cache_entry("test") / "images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="unetlib.data"):
        again = load_split(tiny_phantom, "test", progress=False)
    assert "decode cache" in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.labels, first.labels)
    assert np.load(images).shape == first.images.shape  # rebuilt


def _one_slice_root(root: Path, label: int) -> Path:
    """A test split of one uncompressed slice (fixed file size) with a fixed modification time."""
    image = write_nifti(root / "keras_slices_test" / "case_001_week_0_slice_0.nii", np.ones((256, 128), np.float32))
    mask = write_nifti(
        root / "keras_slices_seg_test" / "seg_001_week_0_slice_0.nii", np.full((256, 128), label, np.uint8)
    )
    for path in (image, mask):
        os.utime(path, ns=(10**18, 10**18))
    return root


def test_the_cache_sees_an_in_place_rewrite_that_keeps_size_and_mtime(tmp_path):
    root = _one_slice_root(tmp_path / "root", label=1)
    assert load_split(root, "test", progress=False).labels.max() == 1
    mask = root / "keras_slices_seg_test" / "seg_001_week_0_slice_0.nii"
    other = write_nifti(tmp_path / "other.nii", np.full((256, 128), 2, np.uint8)).read_bytes()
    with open(mask, "r+b") as handle:  # same inode, same size, then the old modification time
        handle.write(other)
    os.utime(mask, ns=(10**18, 10**18))
    assert load_split(root, "test", progress=False).labels.max() == 2


def test_two_roots_with_the_same_file_names_never_share_a_cache_entry(tmp_path):
    first = _one_slice_root(tmp_path / "a", label=1)
    second = _one_slice_root(tmp_path / "b", label=2)  # same names, sizes and times; other labels
    assert load_split(first, "test", progress=False).labels.max() == 1
    assert load_split(second, "test", progress=False).labels.max() == 2


def test_partial_cache_folders_of_dead_processes_are_cleaned_up(tiny_phantom):
    cache = Path(os.environ["UNETLIB_CACHE"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache / f".test-0123.{int(dead.stdout)}.partial"
    stale.mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"half")
    load_split(tiny_phantom, "test", progress=False)
    assert not stale.exists()


def _names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def _folder_with(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "data.txt").write_text(text)
    return path


def test_staged_folder_swaps_the_finished_folder_into_place(tmp_path):
    target = tmp_path / "entry"
    with staged_folder(target) as staging:
        assert staging == tmp_path / f".entry.{os.getpid()}.partial" and not any(staging.iterdir())
        (staging / "data.txt").write_text("new")
        assert not target.exists()  # nothing in place until the writer is done
    assert (target / "data.txt").read_text() == "new"
    assert _names(tmp_path) == {"entry"}


def test_staged_folder_refuses_a_folder_another_writer_filled_first(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(FileExistsError, match="entry: already exists"):
        with staged_folder(target) as staging:
            (staging / "data.txt").write_text("mine")
            _folder_with(target, "theirs")  # another writer finished first
    assert (target / "data.txt").read_text() == "theirs"
    assert _names(tmp_path) == {"entry"}


def test_staged_folder_replace_keeps_the_old_folder_until_the_new_one_is_in(tmp_path):
    target = _folder_with(tmp_path / "entry", "old")
    with staged_folder(target, replace=True) as staging:
        (staging / "data.txt").write_text("new")
        assert (target / "data.txt").read_text() == "old"
    assert (target / "data.txt").read_text() == "new"
    assert _names(tmp_path) == {"entry"}  # the old folder is gone once the new one is in


def test_a_failing_writer_leaves_the_target_as_it_was_and_no_staging(tmp_path):
    target = _folder_with(tmp_path / "entry", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_folder(target, replace=True) as staging:
            (staging / "data.txt").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "data.txt").read_text() == "old"
    assert _names(tmp_path) == {"entry"}


def test_leftovers_of_dead_writers_are_cleaned_up_and_those_of_running_ones_kept(tmp_path):
    dead, running = _finished_pid(), os.getppid()
    _folder_with(tmp_path / f".a.{dead}.partial", "half")
    _folder_with(tmp_path / f".a.{running}.partial", "being written")
    _folder_with(tmp_path / f".a.{os.getpid()}.partial", "half")  # a killed writer's id, now this process's
    _folder_with(tmp_path / f".b.{dead}.old", "old b")  # killed between its renames: b never arrived
    _folder_with(tmp_path / "c", "new c")
    _folder_with(tmp_path / f".c.{dead}.old", "old c")  # killed after the new c was in
    _folder_with(tmp_path / ".d.partial", "not a writer's")
    remove_dead_leftovers(tmp_path, "a")
    assert _names(tmp_path) == {f".a.{running}.partial", f".b.{dead}.old", "c", f".c.{dead}.old", ".d.partial"}
    remove_dead_leftovers(tmp_path)
    assert _names(tmp_path) == {f".a.{running}.partial", "b", "c", ".d.partial"}
    assert (tmp_path / "b" / "data.txt").read_text() == "old b"
    assert (tmp_path / "c" / "data.txt").read_text() == "new c"


# --------------------------------------------------------------------------- arguments and files


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--features", "4,x"], "--features"),
        (["train", "--learning-rate", "-1"], "--learning-rate"),
        (["train", "--max-minutes", "nan"], "--max-minutes"),
        (["phantom", "out", "--workers", "-1"], "--workers"),
    ],
)
def test_bad_arguments_get_a_usage_error_naming_them(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.startswith("usage:") and f"argument {named}" in error


def test_json_naming_a_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "model.keras", "--json", str(tmp_path)])
    assert exit_.value.code == 2 and "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"garbage" * 100])
def test_an_unreadable_model_file_is_named_with_the_reason(content, tmp_path, capsys):
    model = tmp_path / "model.keras"
    model.write_bytes(content)
    assert main(["evaluate", str(model), "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"cannot read {model}:" in error and "Traceback" not in error


# --------------------------------------------------------------------------- odd files


def test_values_beyond_float32_are_flagged(tmp_path):
    path = write_nifti(tmp_path / "case_001_week_0_slice_0.nii.gz", np.full((256, 128), 1e39, np.float64))
    with pytest.raises(DataError, match="exceed the float32 range"):
        read_image(path)


def test_complex_images_are_refused_rather_than_losing_their_imaginary_part(tmp_path):
    path = write_nifti(tmp_path / "case.nii.gz", np.ones((256, 128), np.complex64) * (1 + 2j))
    with pytest.raises(DataError, match="complex values"):
        read_image(path)


def test_a_nearly_integer_mask_value_is_shown_in_full(tmp_path):
    path = write_nifti(tmp_path / "seg.nii.gz", np.full((256, 128), 1.0000001, np.float64))
    with pytest.raises(DataError, match=r"non-integer values \(e\.g\. 1\.0000001"):
        read_mask(path)


def test_check_data_warns_about_moved_masks_and_tiny_slices(phantom_copy):
    mask = sorted((phantom_copy / "keras_slices_seg_validate").iterdir())[0]
    moved = nib.load(mask)
    affine = moved.affine.copy()
    affine[0, 3] += 5.0  # shifted 5 mm: no longer on its image's grid
    nib.save(nib.Nifti1Image(np.asanyarray(moved.dataobj), affine), mask)
    image = sorted((phantom_copy / "keras_slices_train").iterdir())[0]
    tiny = nib.Nifti1Image(np.ones((1, 1), np.float32), nib.load(image).affine)
    nib.save(tiny, image)
    nib.save(
        nib.Nifti1Image(np.zeros((1, 1), np.float32), nib.load(image).affine),
        phantom_copy / "keras_slices_seg_train" / image.name.replace("case_", "seg_"),
    )
    warnings = "\n".join(check_data(phantom_copy, progress=False).warnings)
    assert f"affine that differs from their image's, e.g. {mask}" in warnings
    assert f"zero-padded to it, e.g. {image}" in warnings
