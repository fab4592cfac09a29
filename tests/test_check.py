"""The dataset checker, through the command line a user runs."""

from __future__ import annotations

import numpy as np

from conftest import write_nifti
from unetlib.cli import main
from unetlib.data import find_pairs
from unetlib.phantom import SIZES, SLICES_PER_VOLUME


def test_clean_data_exits_zero_and_reports_each_split(tiny_phantom, capsys):
    assert main(["check-data", str(tiny_phantom)]) == 0
    out = capsys.readouterr().out
    tiny, volume = SIZES["tiny"], SLICES_PER_VOLUME  # one case-week is 256x144, one per split 256x128x1
    for split in (
        f"[train] {tiny.count('train')} image/mask pairs",
        f"[validate] {tiny.count('validate')}",
        f"[test] {tiny.count('test')}",
    ):
        assert split in out
    assert f"256x144: {volume}" in out and f"256x128x1: {volume}" in out
    assert f"slices centre-cropped/padded to 256x128: {volume}" in out
    assert "slices without prostate:" in out and "prostate" in out
    assert "No problems found" in out


def test_all_problems_are_listed_and_exit_is_nonzero(phantom_copy, capsys):
    pairs = find_pairs(phantom_copy, "train")
    pairs[0].mask_path.unlink()
    write_nifti(pairs[1].mask_path, np.full((256, 128), 9.0))
    pairs[2].image_path.write_bytes(b"garbage")
    test_pair = find_pairs(phantom_copy, "test")[3]
    write_nifti(test_pair.image_path, np.full((256, 128), np.nan, dtype=np.float32))
    assert main(["check-data", str(phantom_copy)]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s) found" in out
    assert f"{pairs[0].image_path}: no mask" in out
    assert f"{pairs[1].mask_path}: label 9 outside 0..5" in out
    assert f"{pairs[2].image_path}: cannot read as NIfTI" in out
    assert f"{test_pair.image_path}: 32768 non-finite intensity values" in out


def test_a_folder_that_is_not_a_data_root_exits_two(tmp_path, capsys):
    assert main(["check-data", str(tmp_path)]) == 2
    assert "not a HipMRI data root" in capsys.readouterr().err
