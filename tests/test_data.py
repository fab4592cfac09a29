"""The data layer: pairing, reading, validation, normalisation, caching and root resolution."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import unetlib.data as data
from conftest import make_root, write_nifti
from unetlib.data import DataError, find_pairs, load_split, normalise, read_image, read_mask, resolve_data_root
from unetlib.layout import PHANTOM_MARKER, PHANTOM_VERSION
from unetlib.phantom import SIZES, PhantomSize


def _slice(value: float, shape=(256, 128)) -> np.ndarray:
    rng = np.random.default_rng(int(value))
    return (rng.random(shape) * 100 + value).astype(np.float32)


def _mask(label: int, shape=(256, 128)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.float64)
    mask[100:140, 50:70] = label
    return mask


def test_pairs_by_key_not_sort_order(tmp_path):
    # "slice_10" sorts before "slice_2" as text; the mask of each slice encodes its number.
    keys = {f"004_week_0_slice_{s}": s for s in (2, 10, 1)}
    make_root(tmp_path, {k: (_slice(s), _mask(s % 6)) for k, s in keys.items()})
    pairs = find_pairs(tmp_path, "train")
    assert [p.slice for p in pairs] == [1, 2, 10]  # numeric order, not text order
    for pair in pairs:
        assert pair.case == 4 and pair.week == 0
        assert pair.image_path.name == f"case_{pair.key}.nii.gz"
        assert pair.mask_path.name == f"seg_{pair.key}.nii.gz"
        assert read_mask(pair.mask_path).max() == pair.slice % 6


@pytest.mark.parametrize(
    "orphan, problem",
    [
        ("keras_slices_train/case_004_week_0_slice_1.nii.gz", "no mask"),
        ("keras_slices_seg_train/seg_005_week_1_slice_3.nii.gz", "no image"),
    ],
)
def test_an_image_or_mask_without_its_partner_is_an_error_naming_the_file(tmp_path, orphan, problem):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0), _mask(1))})
    write_nifti(tmp_path / orphan, _slice(1))
    with pytest.raises(DataError, match=rf"{Path(orphan).name.replace('.', '[.]')}: {problem}"):
        find_pairs(tmp_path, "train")


def test_non_nifti_files_are_ignored(tmp_path):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0), _mask(1))})
    (tmp_path / "keras_slices_train" / "README.txt").write_text("notes")
    (tmp_path / "keras_slices_seg_train" / ".DS_Store").write_bytes(b"\0")
    assert len(find_pairs(tmp_path, "train")) == 1


def test_badly_named_nifti_is_an_error(tmp_path):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0), _mask(1))})
    write_nifti(tmp_path / "keras_slices_train" / "scan.nii.gz", _slice(3))
    with pytest.raises(DataError, match=r"scan\.nii\.gz: name does not follow"):
        find_pairs(tmp_path, "train")


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="keras_slices_validate: folder not found"):
        find_pairs(tmp_path, "validate")


def test_trailing_singleton_axis_is_dropped(tmp_path):
    image = _slice(7)
    path = write_nifti(tmp_path / "a.nii.gz", image[..., None])
    read = read_image(path)
    assert read.shape == (256, 128) and read.dtype == np.float32
    np.testing.assert_array_equal(read, image)


def test_taller_slice_is_centre_cropped_without_interpolation(tmp_path):
    mask = np.zeros((256, 144))
    mask[:, 8:136] = 3  # the central 128 columns
    mask[:, :8] = 1
    mask[:, 136:] = 2
    read = read_mask(write_nifti(tmp_path / "m.nii.gz", mask))
    assert read.shape == (256, 128) and read.dtype == np.uint8
    assert np.all(read == 3)  # exactly the centre kept; no label blended by interpolation


def test_smaller_slice_is_centre_padded(tmp_path):
    image = np.full((250, 120), 5.0, dtype=np.float32)
    read = read_image(write_nifti(tmp_path / "i.nii.gz", image))
    assert read.shape == (256, 128)
    assert np.all(read[3:253, 4:124] == 5.0) and read.sum() == image.sum()


def test_load_split_counts_adjusted_slices(tmp_path, caplog):
    make_root(
        tmp_path,
        {
            "019_week_1_slice_0": (_slice(1, (256, 144)), _mask(2, (256, 144))),
            "019_week_0_slice_0": (_slice(2), _mask(2)),
        },
    )
    with caplog.at_level("INFO", logger="unetlib.data"):
        split = load_split(tmp_path, "train", progress=False)
    assert split.images.shape == (2, 256, 128, 1)
    assert "1 slices centre-cropped/padded" in caplog.text


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.full((256, 128), 2.5), r"seg_004_week_0_slice_0\.nii\.gz: mask holds non-integer values"),
        (np.full((256, 128), 7.0), r"seg_004_week_0_slice_0\.nii\.gz: label 7 outside 0\.\.5"),
        (np.full((256, 128), -1.0), r"label -1 outside 0\.\.5"),
        (
            np.zeros((256, 128, 20)),
            r"seg_004_week_0_slice_0\.nii\.gz: expected a 2D slice, got an array of shape \(256, 128, 20\)",
        ),
    ],
)
def test_bad_masks_raise_naming_file_and_problem(tmp_path, mask, message):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0), mask)})
    with pytest.raises(DataError, match=message):
        load_split(tmp_path, "train", progress=False)


def test_non_finite_image_is_an_error(tmp_path):
    image = _slice(0)
    image[3, 4] = np.nan
    image[5, 6] = np.inf
    make_root(tmp_path, {"004_week_0_slice_0": (image, _mask(1))})
    with pytest.raises(DataError, match=r"case_004_week_0_slice_0\.nii\.gz: 2 non-finite intensity values"):
        load_split(tmp_path, "train", progress=False)


@pytest.mark.parametrize("content", [b"not a nifti file at all", gzip.compress(b"\x00" * 40)[:30]])
def test_corrupt_file_is_an_error_naming_it(tmp_path, content):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0), _mask(1))})
    (tmp_path / "keras_slices_train" / "case_004_week_0_slice_0.nii.gz").write_bytes(content)
    with pytest.raises(DataError, match=r"case_004_week_0_slice_0\.nii\.gz: cannot read as NIfTI"):
        load_split(tmp_path, "train", progress=False)


def test_image_and_mask_of_different_shapes_is_an_error(tmp_path):
    make_root(tmp_path, {"004_week_0_slice_0": (_slice(0, (256, 144)), _mask(1))})
    with pytest.raises(DataError, match=r"seg_004_week_0_slice_0\.nii\.gz: shape \(256, 128\) differs from its image"):
        load_split(tmp_path, "train", progress=False)


def test_normalise_is_zscore_and_finite_on_constant_slice():
    image = np.random.default_rng(0).normal(300, 40, (256, 128))
    z = normalise(image)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    flat = normalise(np.full((256, 128), 42.0))
    assert np.all(np.isfinite(flat)) and np.all(flat == 0)


def test_load_split_types_shapes_and_order(tiny_phantom):
    split = load_split(tiny_phantom, "test", progress=False)
    count = SIZES["tiny"].count("test")
    assert split.images.shape == (count, 256, 128, 1) and split.images.dtype == np.float16
    assert split.labels.shape == (count, 256, 128) and split.labels.dtype == np.uint8
    assert split.keys == [p.key for p in find_pairs(tiny_phantom, "test")]
    assert split.labels.max() == 5
    # Each slice is z-scored on its own.
    assert np.allclose(split.images.mean(axis=(1, 2, 3)), 0, atol=1e-3)


def test_split_images_in_float16_stay_within_float16_rounding_of_the_float32_z_scores(tiny_phantom):
    split = load_split(tiny_phantom, "test", progress=False)
    raw = load_split(tiny_phantom, "test", normalised=False, progress=False)
    assert raw.images.dtype == np.float32  # raw scanner values keep full precision
    for index, pair in enumerate(find_pairs(tiny_phantom, "test")):
        exact = normalise(read_image(pair.image_path))
        np.testing.assert_allclose(split.images[index, ..., 0].astype(np.float32), exact, rtol=2**-10, atol=1e-4)


def test_cache_is_reused_without_reading_files(tiny_phantom, monkeypatch):
    first = load_split(tiny_phantom, "validate", progress=False)

    def fail(pair):
        raise AssertionError(f"{pair.key} was decoded again instead of read from the cache")

    monkeypatch.setattr(data, "read_pair", fail)
    second = load_split(tiny_phantom, "validate", progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.keys == second.keys


def test_cache_is_invalidated_when_a_file_changes(phantom_copy):
    first = load_split(phantom_copy, "validate", progress=False)
    pair = find_pairs(phantom_copy, "validate")[0]
    write_nifti(pair.mask_path, np.full((256, 128), 4.0))
    second = load_split(phantom_copy, "validate", progress=False)
    assert np.all(second.labels[0] == 4)
    assert not np.array_equal(first.labels[0], second.labels[0])
    np.testing.assert_array_equal(first.labels[1:], second.labels[1:])


def test_resolve_data_root_order(tmp_path, monkeypatch, tiny_phantom):
    project_data = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", project_data)
    # Nothing present and generation off: the phantom location is the answer.
    assert resolve_data_root(generate=False) == project_data / "phantom"
    # A hidden folder with the layout (what a killed phantom writer leaves) is not data.
    make_root(project_data / ".phantom.123.partial", {"004_week_0_slice_0": (_slice(0), _mask(1))})
    assert resolve_data_root(generate=False) == project_data / "phantom"
    # Real data one folder below data/ is found, and preferred to the phantom.
    real = make_root(project_data / "HipMRI_study_keras_slices_data", {"004_week_0_slice_0": (_slice(0), _mask(1))})
    assert resolve_data_root() == real
    # UNETLIB_DATA beats data/, and an explicit argument beats both.
    monkeypatch.setenv("UNETLIB_DATA", str(tiny_phantom))
    assert resolve_data_root() == tiny_phantom
    assert resolve_data_root(real) == real


def test_resolve_data_root_rejects_a_folder_without_the_layout(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not a HipMRI data root"):
        resolve_data_root(tmp_path)
    monkeypatch.setenv("UNETLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"from UNETLIB_DATA\): not a HipMRI data root"):
        resolve_data_root()


def test_phantom_is_generated_on_first_use_and_rewritten_when_outdated(tmp_path, monkeypatch, caplog):
    # A phantom of one case-week per split keeps this test's two generations short.
    monkeypatch.setitem(SIZES, "micro", PhantomSize({"train": (1,), "validate": (1,), "test": (1,)}))
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(data, "DEFAULT_PHANTOM_SIZE", "micro")
    root = resolve_data_root()
    assert root == tmp_path / "data" / "phantom"
    assert len(find_pairs(root, "train")) == SIZES["micro"].count("train")
    assert not data.is_outdated_phantom(root)
    # A phantom an older generator wrote (its marker has no version) is rewritten, same size and seed.
    marker = root / PHANTOM_MARKER
    marker.write_text(json.dumps({"size": "micro", "seed": 0}))
    first_image = find_pairs(root, "train")[0].image_path
    os.utime(first_image, (0, 0))
    assert data.is_outdated_phantom(root)
    with caplog.at_level(logging.WARNING, logger="unetlib.data"):
        assert resolve_data_root() == root
    assert "written by phantom version 1 or 2; rewriting it" in caplog.text
    assert json.loads(marker.read_text())["version"] == PHANTOM_VERSION
    assert first_image.stat().st_mtime > 0 and len(find_pairs(root, "train")) == SIZES["micro"].count("train")
    assert not data.is_outdated_phantom(root) and not data.is_outdated_phantom(tmp_path)  # no marker: not a phantom


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make ``folder`` read-only for this process: a read-only bind mount for root (whom permission
    bits do not stop), the permission bits for anyone else."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, and this machine does not allow a read-only bind mount")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_data_root_caches_under_the_user_cache_folder(phantom_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("UNETLIB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with _read_only(phantom_copy):
        assert not os.access(phantom_copy, os.W_OK)
        first = load_split(phantom_copy, "validate", progress=False)
        cache = data.cache_dir(phantom_copy)
        assert cache.parent == tmp_path / "home" / ".cache" / "unetlib"
        assert len(list(cache.glob("validate-*"))) == 1
        assert not (phantom_copy / data.CACHE_FOLDER).exists()
        again = load_split(phantom_copy, "validate", progress=False)  # from the user cache
        np.testing.assert_array_equal(again.images, first.images)
