"""Inference options: flip test-time augmentation and the largest 3D connected component."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from unetlib.cli import main
from unetlib.data import find_pairs, fit_to_shape, load_split, normalise, read_image, read_mask
from unetlib.evaluation import evaluate, load_model, predict_batch, predict_labels
from unetlib.labels import BLADDER, BODY, PROSTATE
from unetlib.layout import slice_number, volume_key
from unetlib.pipeline import FLIP_AXIS
from unetlib.postprocess import keep_largest_component
from unetlib.prediction import output_name

RECTUM = 4


def _volume(depth: int = 8) -> np.ndarray:
    return np.full((depth, 16, 16), BODY, np.uint8)


def test_only_the_largest_piece_of_a_one_piece_organ_is_kept_in_each_volume():
    labels = _volume()
    labels[2:5, 4:10, 4:10] = PROSTATE  # the gland: 3 slices
    labels[6, 12:14, 12:14] = PROSTATE  # a false positive two slices below it
    labels[5, 10, 10] = PROSTATE  # touches the gland through a corner only: still part of it
    labels[1:3, 0:2, 0:2] = RECTUM  # rectum may come in pieces: left alone
    labels[6, 0:2, 14:16] = RECTUM
    labels[0, 0:3, 0:3] = BLADDER  # one small bladder piece and a larger one
    labels[4:6, 12:16, 0:4] = BLADDER
    keys = [f"004_week_0_slice_{n}" for n in range(8)]
    cleaned = keep_largest_component(labels, keys)
    expected = labels.copy()
    expected[6, 12:14, 12:14] = BODY
    expected[0, 0:3, 0:3] = BODY
    np.testing.assert_array_equal(cleaned, expected)
    assert labels[6, 12, 12] == PROSTATE  # the input is not changed


def test_volumes_are_grouped_by_case_week_and_stacked_by_slice_number_with_gaps_kept_apart():
    labels = np.full((5, 8, 8), BODY, np.uint8)
    labels[:, 2:6, 2:6] = PROSTATE  # every slice holds the same square
    labels[4, 2:6, 2:6] = BODY
    labels[4, 0:2, 0:2] = PROSTATE
    # Slices 1, 2 and 4 of one week (3 is missing), in shuffled order, slice 1 of another week, and
    # a name with no case-week: a volume of its own.
    keys = ["007_week_1_slice_4", "007_week_1_slice_1", "007_week_2_slice_1", "007_week_1_slice_2", "slice_2"]
    cleaned = keep_largest_component(labels, keys)
    assert (cleaned[0] == PROSTATE).sum() == 0  # slice 4, apart from slices 1-2 by the gap at 3: the smaller piece
    assert all((cleaned[i] == PROSTATE).sum() == 16 for i in (1, 3))  # slices 1-2 of week 1: the largest piece
    assert (cleaned[2] == PROSTATE).sum() == 16  # week 2 is a volume of its own
    np.testing.assert_array_equal(cleaned[4], labels[4])  # and so is "slice_2": one piece, kept
    with pytest.raises(ValueError, match="volume 007_week_1: two slices share a slice number"):
        keep_largest_component(labels, ["007_week_1_slice_4", "007_week_1_slice_04", *keys[2:]])
    assert slice_number("slice_2") == 2 and slice_number("case_004_week_0") is None
    with pytest.raises(ValueError, match="5 label maps but 2 keys"):
        keep_largest_component(labels, keys[:2])


def _pointwise_model() -> keras.Model:
    """A 1×1 convolution: its output at a pixel depends on that pixel alone, so it commutes with flips."""
    inputs = keras.Input((256, 128, 1))
    return keras.Model(inputs, keras.layers.Conv2D(6, 1, activation="softmax")(inputs))


def test_flip_tta_averages_the_mirror_images_prediction_flipped_back():
    images = np.random.default_rng(0).normal(size=(3, 256, 128, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)
    pointwise = _pointwise_model()
    plain, averaged = predict_batch(pointwise, images), predict_batch(pointwise, images, tta=True)
    assert averaged.shape == plain.shape == (3, 256, 128, 6) and averaged.dtype == np.float32
    np.testing.assert_allclose(averaged, plain, atol=1e-6)  # flipped back exactly onto the right pixels
    # A model that sees its neighbours is not flip-symmetric: TTA is the mean of the two passes.
    inputs = keras.Input((256, 128, 1))
    spatial = keras.Model(inputs, keras.layers.Conv2D(6, 5, padding="same", activation="softmax")(inputs))
    mirrored = np.flip(np.asarray(spatial.predict_on_batch(np.flip(images, axis=FLIP_AXIS))), axis=FLIP_AXIS)
    expected = (np.asarray(spatial.predict_on_batch(images)) + mirrored) / 2
    np.testing.assert_allclose(predict_batch(spatial, images, tta=True), expected, atol=1e-6)
    assert not np.allclose(expected, spatial.predict_on_batch(images), atol=1e-4)


def test_evaluate_and_predict_apply_the_inference_options_alike(smoke_run, tiny_phantom, tmp_path, capsys):
    model = load_model(smoke_run.out / "model.keras")
    test = load_split(tiny_phantom, "test", progress=False)
    expected = keep_largest_component(predict_labels(model, test.images, progress=False, tta=True), test.keys)
    _, predictions = evaluate(model, tiny_phantom, "test", progress=False, tta=True, largest_component=True)
    np.testing.assert_array_equal(predictions, expected)
    # unetlib predict does the same to the split's image files (read in float32, where the decoded
    # split holds float16), with the volumes found from the file names.
    # Files named as a scanner might name them (no case_ prefix) still form their volume (the first).
    inputs, first_volume = [], volume_key(test.keys[0])
    for pair in [pair for pair in find_pairs(tiny_phantom, "test") if pair.key.startswith(first_volume)]:
        inputs.append(tmp_path / "in" / pair.image_path.name.replace("case_", "scan_", 1))
        inputs[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(pair.image_path, inputs[-1])
    images = np.stack([normalise(read_image(path)) for path in inputs])[..., None]
    keys = [key for key in test.keys if key.startswith(first_volume)]
    expected = keep_largest_component(predict_labels(model, images, progress=False, tta=True), keys)
    argv = ["predict", str(smoke_run.out / "model.keras"), *(str(path) for path in inputs)]
    assert main([*argv, "--out", str(tmp_path / "out"), "--tta", "--largest-component"]) == 0
    for index, path in enumerate(inputs):
        written = fit_to_shape(read_mask(tmp_path / "out" / output_name(path)))
        np.testing.assert_array_equal(written, expected[index])
    assert main(["evaluate", str(smoke_run.out / "model.keras"), "--data", str(tiny_phantom), "--tta"]) == 0
    assert "course criterion" in capsys.readouterr().out
