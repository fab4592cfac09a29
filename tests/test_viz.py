"""The slice viewer as a Python object: its controls change what is drawn."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from unetlib.labels import LABELS
from unetlib.viz import ERROR_COLOURS, SliceViewer, plot_history, show_probability_maps


@pytest.fixture
def viewer():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 32, 16, 1)).astype(np.float32)
    labels = np.zeros((6, 32, 16), np.uint8)
    labels[:, 8:20, 4:12] = 3
    labels[:, 12:16, 6:10] = 5
    predictions = labels.copy()
    predictions[:, 12:16, 6:10] = 1  # prostate missed
    keys = [f"004_week_{w}_slice_{s}" for w in (0, 1) for s in range(3)]
    return SliceViewer(images, labels, predictions, keys)


def test_volumes_group_slices_by_case_week(viewer):
    assert list(viewer.groups) == ["case 004 week 0", "case 004 week 1"]
    viewer.volume.value = "case 004 week 1"
    viewer.slice.value = 2
    assert viewer.index == 5 and viewer.keys[viewer.index] == "004_week_1_slice_2"


def test_controls_change_the_frame(viewer):
    first = bytes(viewer.image.value)
    assert first.startswith(b"\x89PNG")
    viewer.slice.value = 1
    assert bytes(viewer.image.value) != first
    before = bytes(viewer.image.value)
    viewer.opacity.value = 0.9
    assert bytes(viewer.image.value) != before


def test_class_toggles_and_opacity_shape_the_overlay(viewer):
    overlay = viewer.overlay()  # display orientation: [width, height, rgba]
    assert overlay.shape == (16, 32, 4)
    assert np.all(overlay[8, 14, :3] == pytest.approx((1.0, 0.0, 0.431), abs=0.01))  # prostate colour
    viewer.classes["prostate"].value = False
    overlay = viewer.overlay()
    assert overlay[8, 14, 3] == 0  # prostate pixels no longer drawn
    assert overlay[5, 10, 3] > 0  # bladder pixels still are
    viewer.opacity.value = 0.0
    assert np.all(viewer.overlay()[..., 3] == 0)


def error_colours(viewer) -> set[tuple[float, ...]]:
    """The colours of the error view's marked pixels, after checking only the 4x4 error is marked."""
    overlay = viewer.overlay()
    marked = overlay[..., 3] > 0
    assert marked.sum() == 16
    return {tuple(colour) for colour in overlay[marked][:, :3]}


def test_error_view_tells_missed_added_and_confused_apart(viewer):
    viewer.view.value = "error"  # the fixture's prediction calls the 4x4 prostate body
    assert error_colours(viewer) == {ERROR_COLOURS["wrong organ"]}
    viewer.classes["body"].value = False  # body hidden: the prostate is simply missed
    assert error_colours(viewer) == {ERROR_COLOURS["missed"]}
    viewer.classes["body"].value, viewer.classes["prostate"].value = True, False  # body added where there is none
    assert error_colours(viewer) == {ERROR_COLOURS["wrongly added"]}
    viewer.classes["prostate"].value = True
    viewer.view.value = "prediction"  # the prediction holds no prostate at all
    assert not np.any(np.all(np.isclose(viewer.overlay()[..., :3], (1.0, 0.0, 0.431), atol=0.01), axis=-1))


def test_static_png_representation_for_non_live_renderers(viewer):
    bundle = viewer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == bytes(viewer.image.value)
    assert "SliceViewer(6 slices" in bundle["text/plain"]


def test_viewer_without_predictions_offers_ground_truth_only():
    viewer = SliceViewer(np.zeros((2, 16, 8, 1)), np.zeros((2, 16, 8), np.uint8))
    assert viewer.view.options == ("ground truth",)
    assert list(viewer.groups) == ["all slices"]


def test_history_plot_has_loss_and_dice_panels():
    figure = plot_history(
        {
            "epoch": [0, 1],
            "loss": [1.0, 0.5],
            "val_loss": [1.1, 0.7],
            "prostate_dice": [0.1, 0.4],
            "val_prostate_dice": [0.05, 0.3],
        }
    )
    loss_ax, dice_ax = figure.axes
    assert len(loss_ax.lines) == 2 and len(dice_ax.lines) == 2
    assert dice_ax.get_ylim() == (0, 1)


def test_probability_maps_show_each_class_and_the_label_map_they_give():
    probabilities = np.zeros((32, 16, 6), np.float32)
    probabilities[..., 0] = 1.0
    probabilities[8:20, 4:12] = np.eye(6)[3]
    figure = show_probability_maps(np.zeros((32, 16, 1)), probabilities)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels[:7]] == ["input"] + [f"P({name})" for name in LABELS]
    bladder_map = panels[4].images[0].get_array()  # display orientation: transposed
    np.testing.assert_array_equal(bladder_map, probabilities[..., 3].T)
    label_map = panels[7].images[-1].get_array()  # the overlay: bladder colour where P(bladder) = 1
    assert label_map[6, 10, 3] > 0 and label_map[0, 0, 3] == 0


def test_history_from_fit_with_sparse_validation_is_drawn_at_the_validated_epochs():
    history = {
        "loss": [3.0, 2.0, 1.5, 1.0],
        "val_loss": [2.5, 2.4],
        "foreground_dice": [0.1, 0.3, 0.5, 0.9],
        "val_foreground_dice": [0.2, 0.4],
    }
    loss_ax, dice_ax = plot_history(history, validation_every=2).axes
    train_line, validation_line = dice_ax.lines
    assert list(train_line.get_xdata()) == [1, 2, 3, 4]
    assert list(validation_line.get_xdata()) == [2, 4] and list(validation_line.get_ydata()) == [0.2, 0.4]
