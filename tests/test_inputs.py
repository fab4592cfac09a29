"""What a user could feed the kit wrongly, and what the kit says back.

A model file that is empty, cut short, missing its config or weights, a folder, a link to
nothing, or another format; a model that reads three channels, segments three classes or
takes slices of another size; a split folder holding notes, thumbnails, ``.DS_Store``, a
sub-folder or a broken link. Each is named with what is wrong, in one line without a
traceback, or is listed by ``unetlib check-data`` as ignored: nothing is taken silently.
Real files in temporary folders, tiny real Keras models, the command line run in-process.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import make_root, write_nifti
from unetlib.check import check_data
from unetlib.cli import main
from unetlib.data import find_pairs, scan_split
from unetlib.errors import DataError
from unetlib.evaluation import check_model, evaluate, load_model
from unetlib.layout import SPLITS
from unetlib.model import build_unet
from unetlib.prediction import predict_files

KIT_CLASSES = "the kit segments 6 (background, body, bone, bladder, rectum, prostate)"

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def saved_unet(tmp_path_factory) -> Path:
    """A small kit UNet saved with ``model.save`` (read-only by convention)."""
    path = tmp_path_factory.mktemp("unet") / "model.keras"
    build_unet((4, 8, 16)).save(path)
    return path


def _one_line(captured) -> str:
    """What a command printed to stderr (``capsys.readouterr()``), checked to be one line without a
    traceback."""
    assert "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err.strip()


def _rezip(source: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    """Copy a ``.keras`` archive, replacing entries (None drops one)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            content = replace.get(name, original.read(name))
            if content is not None:
                copy.writestr(name, content)
    return target


def _slices(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    return [
        write_nifti(folder / f"case_001_week_0_slice_{index}.nii.gz", rng.normal(size=(256, 128)).astype(np.float32))
        for index in range(count)
    ]


def _pair(value: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((256, 128))
    mask[100:140, 50:70] = 1 + value % 5
    return np.random.default_rng(value).random((256, 128)).astype(np.float32) * 100, mask


def _small_root(root: Path) -> Path:
    """A clean data root holding one image/mask pair per split."""
    for number, split in enumerate(SPLITS):
        make_root(root, {f"00{number}_week_0_slice_0": _pair(number)}, split)
    return root


# --------------------------------------------------------------------------- damaged model files


def _damaged(kind: str, saved: Path, folder: Path) -> Path:
    """A model file damaged in one way a user may meet, made from a real saved model."""
    target = folder / "model.keras"
    content = saved.read_bytes()
    if kind == "empty file":
        target.write_bytes(b"")
    elif kind == "text file":
        target.write_text("model trained on 12 March\n")
    elif kind == "first half of a real model":
        target.write_bytes(content[: len(content) // 2])
    elif kind == "no config.json":
        _rezip(saved, target, {"config.json": None})
    elif kind == "no weights":
        _rezip(saved, target, {"model.weights.h5": None})
    elif kind == "garbage config":
        _rezip(saved, target, {"config.json": b"{not json"})
    elif kind == "config of another class":
        _rezip(saved, target, {"config.json": b'{"class_name": "NoSuchModel", "config": {}}'})
    elif kind == "a flipped byte in the weights":
        with zipfile.ZipFile(saved) as archive:
            info = archive.getinfo("model.weights.h5")
        damaged = bytearray(content)
        damaged[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2] ^= 0xFF
        target.write_bytes(bytes(damaged))
    elif kind == "a folder":
        target.mkdir()
    elif kind == "a SavedModel folder":
        target = folder / "exported"
        target.mkdir()
        (target / "saved_model.pb").write_bytes(b"\x08\x01")
    elif kind == "numpy array":
        target = folder / "model.npy"
        np.save(target, np.zeros(3))
    elif kind == "cut-short .h5":
        target = folder / "model.h5"
        build_unet((4, 8, 16)).save(target)
        target.write_bytes(target.read_bytes()[:5000])
    elif kind == "weights-only .h5":
        target = folder / "model.weights.h5"
        build_unet((4, 8, 16)).save_weights(target)
    return target


DAMAGES = [
    "empty file",
    "text file",
    "first half of a real model",
    "no config.json",
    "no weights",
    "garbage config",
    "config of another class",
    "a flipped byte in the weights",
    "a folder",
    "a SavedModel folder",
    "numpy array",
    "cut-short .h5",
    "weights-only .h5",
]


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_model_file_is_reported_as_damaged_not_missing(kind, saved_unet, tmp_path, capsys):
    model = _damaged(kind, saved_unet, tmp_path)
    assert main(["evaluate", str(model), "--data", str(tmp_path)]) == 2
    error = _one_line(capsys.readouterr())
    assert f"cannot read {model}: damaged or not a Keras model (" in error
    assert "not found" not in error
    with pytest.raises(DataError, match="damaged or not a Keras model"):
        load_model(model)


def test_predict_reports_a_damaged_model_before_writing(saved_unet, tmp_path, capsys):
    model = _damaged("first half of a real model", saved_unet, tmp_path)
    inputs = _slices(tmp_path / "in", 1)
    assert main(["predict", str(model), *map(str, inputs), "--out", str(tmp_path / "out")]) == 2
    assert f"cannot read {model}: damaged or not a Keras model (a zip archive cut short" in _one_line(
        capsys.readouterr()
    )
    assert not (tmp_path / "out").exists()


def test_only_an_absent_model_is_not_found(tmp_path, capsys):
    absent = tmp_path / "nope.keras"
    assert main(["evaluate", str(absent), "--data", str(tmp_path)]) == 2
    assert f"{absent}: model file not found" in _one_line(capsys.readouterr())
    link = tmp_path / "model.keras"
    link.symlink_to(tmp_path / "moved-away.keras")
    assert main(["evaluate", str(link), "--data", str(tmp_path)]) == 2
    assert f"{link}: model file not found (a link to {tmp_path / 'moved-away.keras'}" in _one_line(capsys.readouterr())
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(absent)


def test_a_model_file_without_read_permission_says_so(saved_unet, tmp_path, monkeypatch, capsys):
    real_access = os.access

    def access(path, mode, **kwargs):  # as root every file is readable: deny this one as a user would meet it
        return False if Path(path) == saved_unet else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    assert main(["evaluate", str(saved_unet), "--data", str(tmp_path)]) == 2
    assert _one_line(capsys.readouterr()).endswith(f"cannot read {saved_unet}: no permission to read it")


def test_a_sound_model_loads_as_keras_and_as_legacy_h5(saved_unet, tmp_path):
    assert load_model(saved_unet).output_shape == (None, 256, 128, 6)
    legacy = tmp_path / "model.h5"
    build_unet((4, 8, 16)).save(legacy)
    assert load_model(legacy).output_shape == (None, 256, 128, 6)


# --------------------------------------------------------------------------- models that do not fit the kit


def _conv(input_shape, classes: int) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(classes, 1, activation="softmax")])


def _two_inputs() -> keras.Model:
    first, second = keras.Input((256, 128, 1)), keras.Input((256, 128, 1))
    return keras.Model([first, second], keras.layers.Conv2D(6, 1)(keras.layers.Add()([first, second])))


def _two_outputs() -> keras.Model:
    image = keras.Input((256, 128, 1))
    return keras.Model(image, [keras.layers.Conv2D(6, 1)(image), keras.layers.Conv2D(6, 1)(image)])


MISFITS = {
    "three classes": (lambda: _conv((256, 128, 1), 3), f"outputs 3 classes per pixel; {KIT_CLASSES}"),
    "one class": (lambda: _conv((None, None, 1), 1), f"outputs 1 class per pixel; {KIT_CLASSES}"),
    "three channels": (
        lambda: _conv((256, 128, 3), 6),
        "takes 3 channels per pixel (input (None, 256, 128, 3)); the kit's slices have 1",
    ),
    "fixed 128x128": (
        lambda: _conv((128, 128, 1), 6),
        "takes slices of 128x128 (input (None, 128, 128, 1)); the kit's slices are 256x128",
    ),
    "no channel axis": (
        lambda: keras.Sequential([keras.Input((256, 128)), keras.layers.Dense(6)]),
        "takes input of shape (None, 256, 128); the kit feeds batches of slices (None, 256, 128, 1)",
    ),
    "a class per slice": (
        lambda: keras.Sequential([keras.Input((256, 128, 1)), keras.layers.Flatten(), keras.layers.Dense(6)]),
        "outputs shape (None, 6) for 256x128 slices; the kit needs one probability per class and pixel",
    ),
    "half-size maps": (
        lambda: keras.Sequential([keras.Input((256, 128, 1)), keras.layers.Conv2D(6, 2, strides=2)]),
        "outputs shape (None, 128, 64, 6) for 256x128 slices",
    ),
    "two inputs": (_two_inputs, "takes 2 inputs; the kit feeds one"),
    "two outputs": (_two_outputs, "gives 2 outputs; the kit expects one"),
}


@pytest.mark.parametrize("kind", list(MISFITS))
def test_check_model_says_what_the_model_has_and_what_the_kit_expects(kind):
    build, message = MISFITS[kind]
    model = build()
    with pytest.raises(DataError, match=f"^model '{model.name}': ") as refused:
        check_model(model)
    assert message in str(refused.value)
    with pytest.raises(DataError, match="^model.keras: "):
        check_model(model, "model.keras")


@pytest.mark.parametrize("kind", ["three classes", "three channels", "fixed 128x128"])
def test_evaluate_refuses_a_model_that_does_not_fit(kind, tmp_path, capsys):
    build, message = MISFITS[kind]
    root = _small_root(tmp_path / "root")
    path = tmp_path / "model.keras"
    build().save(path)
    assert main(["evaluate", str(path), "--data", str(root)]) == 2
    captured = capsys.readouterr()
    assert _one_line(captured).startswith(f"unetlib evaluate: error: {path}: {message}")
    assert "Split:" not in captured.out  # nothing was scored
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        evaluate(path, root, "test", progress=False)
    model = build()
    with pytest.raises(DataError, match=re.escape(f"model '{model.name}': {message}")):
        evaluate(model, root, "test", progress=False)  # an in-memory model is checked too


def test_a_three_class_model_is_told_which_six_classes_the_kit_segments(tmp_path, capsys):
    path = tmp_path / "model.keras"
    _conv((256, 128, 1), 3).save(path)
    assert main(["evaluate", str(path), "--data", str(_small_root(tmp_path / "root"))]) == 2
    assert _one_line(capsys.readouterr()) == (
        f"unetlib evaluate: error: {path}: outputs 3 classes per pixel; {KIT_CLASSES}"
    )


def test_predict_refuses_a_model_that_does_not_fit_before_writing(tmp_path, capsys):
    path = tmp_path / "model.keras"
    _conv((256, 128, 3), 6).save(path)
    inputs = _slices(tmp_path / "in", 2)
    assert main(["predict", str(path), *map(str, inputs), "--out", str(tmp_path / "out")]) == 2
    assert f"{path}: takes 3 channels per pixel" in _one_line(capsys.readouterr())
    with pytest.raises(DataError, match="outputs 3 classes per pixel"):
        predict_files(_conv((256, 128, 1), 3), inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_models_that_fit_are_used_and_a_folder_says_what_it_does_not_predict(saved_unet, tmp_path, caplog):
    check_model(build_unet((4, 8, 16)))
    check_model(load_model(saved_unet), saved_unet)
    open_size = _conv((None, None, 1), 6)  # height and width left open: 256x128 fits
    _slices(tmp_path / "in", 2)
    (tmp_path / "in" / "notes.txt").write_text("scanned in 2019")
    (tmp_path / "in" / "thumbs").mkdir()
    with caplog.at_level(logging.WARNING, logger="unetlib.prediction"):
        written = predict_files(open_size, [tmp_path / "in"], tmp_path / "out")
    assert [path.name for path in written] == ["seg_001_week_0_slice_0.nii.gz", "seg_001_week_0_slice_1.nii.gz"]
    assert f"{tmp_path / 'in'}: not predicting 2 entries that are not NIfTI files: notes.txt, thumbs/" in caplog.text


# --------------------------------------------------------------------------- split folders


def test_harmless_extras_are_ignored_for_training_and_each_is_reported(tmp_path):
    root = _small_root(tmp_path / "root")
    images, masks = root / "keras_slices_train", root / "keras_slices_seg_train"
    (images / "notes.txt").write_text("scanned in 2019")
    (images / "thumbs").mkdir()
    (images / ".DS_Store").write_bytes(b"\0")
    (masks / ".DS_Store").write_bytes(b"\0")
    (masks / "._seg_000_week_0_slice_0.png").write_bytes(b"\0")
    (images / "old.txt").symlink_to(tmp_path / "gone.txt")
    assert len(find_pairs(root, "train")) == 1  # training is not stopped by any of them

    ignored: list[str] = []
    pairs, problems = scan_split(root, "train", ignored=ignored)
    assert len(pairs) == 1 and problems == []
    assert ignored == [
        f"{images / 'notes.txt'}: not a NIfTI file; ignored",
        f"{images / 'old.txt'}: a broken link (to {tmp_path / 'gone.txt'}, which does not exist); ignored",
        f"{images / 'thumbs'}: a folder; ignored",
        f"{images}: 1 hidden item (.DS_Store); ignored",
        f"{masks}: 2 hidden items (.DS_Store, ._seg_000_week_0_slice_0.png); ignored",
    ]
    assert scan_split(root, "train") == (pairs, problems)  # the two-value form callers already use


def test_check_data_lists_every_ignored_entry_as_a_warning(tmp_path, capsys):
    root = _small_root(tmp_path / "root")
    (root / "keras_slices_train" / "notes.txt").write_text("scanned in 2019")
    (root / "keras_slices_seg_test" / "previews").mkdir()
    (root / "keras_slices_validate" / ".DS_Store").write_bytes(b"\0")
    assert main(["check-data", str(root)]) == 0  # usable: extras are warned about, not problems
    out = capsys.readouterr().out
    assert f"warning: {root / 'keras_slices_train' / 'notes.txt'}: not a NIfTI file; ignored" in out
    assert f"warning: {root / 'keras_slices_seg_test' / 'previews'}: a folder; ignored" in out
    assert f"warning: {root / 'keras_slices_validate'}: 1 hidden item (.DS_Store); ignored" in out
    assert "No problems found" in out
    report = check_data(root, progress=False)
    assert [len(split.ignored) for split in report.splits] == [1, 1, 1]


def test_a_nifti_named_entry_that_cannot_be_read_is_a_problem(tmp_path, capsys):
    root = _small_root(tmp_path / "root")
    folder = root / "keras_slices_train" / "case_005_week_0_slice_0.nii.gz"
    folder.mkdir()
    link = root / "keras_slices_seg_train" / "seg_006_week_0_slice_0.nii.gz"
    link.symlink_to(tmp_path / "elsewhere" / "seg_006_week_0_slice_0.nii.gz")
    assert main(["check-data", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"  - {folder}: a folder, not a NIfTI file" in out
    assert f"  - {link}: a broken link (to {tmp_path / 'elsewhere'}" in out
    with pytest.raises(DataError, match="a folder, not a NIfTI file"):
        find_pairs(root, "train")  # training refuses instead of quietly training on fewer slices


def test_entries_without_read_permission_are_reported(tmp_path, monkeypatch):
    root = _small_root(tmp_path / "root")
    locked_slice = root / "keras_slices_train" / "case_000_week_0_slice_0.nii.gz"
    locked_notes = root / "keras_slices_train" / "notes.txt"
    locked_notes.write_text("private")
    unlisted = root / "keras_slices_seg_validate"
    real_access, real_iterdir = os.access, Path.iterdir

    def access(path, mode, **kwargs):  # as root every file is readable: deny these two as a user would meet them
        return False if Path(path) in (locked_slice, locked_notes) else real_access(path, mode, **kwargs)

    def iterdir(self):
        if self == unlisted:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "iterdir", iterdir)
    report = check_data(root, progress=False)
    assert f"{locked_slice}: no permission to read it" in report.problems
    assert f"{unlisted}: cannot list the folder (Permission denied)" in report.problems
    assert f"{locked_notes}: no permission to read it; ignored" in report.warnings
    with pytest.raises(DataError, match="no permission to read it"):
        find_pairs(root, "train")
