"""Model, losses, training, resume, evaluation and prediction on a tiny phantom."""

from __future__ import annotations

import json
import time

import keras
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from unetlib.callbacks import snapshot_indices
from unetlib.config import Config, make_config
from unetlib.data import find_pairs, read_mask
from unetlib.evaluation import evaluate, load_model, predict_labels, predict_probabilities
from unetlib.labels import PROSTATE
from unetlib.losses import CrossEntropy, DiceCrossEntropy, SoftDice
from unetlib.metrics import PooledDice
from unetlib.model import build_unet
from unetlib.phantom import SIZES
from unetlib.pipeline import augment_batch, make_dataset
from unetlib.prediction import predict_files
from unetlib.runs import read_history
from unetlib.training import learning_rate_at, lr_find, train


def test_unet_shapes_names_and_softmax():
    model = build_unet((4, 8, 16))
    out = model(np.zeros((2, 256, 128, 1), np.float32))
    assert out.shape == (2, 256, 128, 6)
    np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {"enc1_conv1", "down1", "bridge_conv2", "up1", "dec1_conv2", "probabilities"} <= names
    with pytest.raises(ValueError, match="not divisible"):
        build_unet((4, 8, 16, 32, 64, 128, 256, 512, 1024))


def test_probabilities_sum_to_one_and_their_argmax_is_the_label_map():
    model = build_unet((4, 8, 16))
    images = np.random.default_rng(0).normal(size=(5, 256, 128, 1)).astype(np.float32)
    probabilities = predict_probabilities(model, images, batch_size=2, progress=False)
    assert probabilities.shape == (5, 256, 128, 6) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), predict_labels(model, images, batch_size=3, progress=False))


def test_original_preset_is_the_original_recipe_and_seed_its_former_name():
    config = make_config("original")
    assert make_config("seed") == config and config.preset == "original"
    model = build_unet(config.features, normalisation=config.normalisation)
    assert config.features == (64, 128, 256, 512, 512) and config.loss == "ce" and not config.augment
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.count_params() > 10_000_000


@pytest.mark.parametrize("loss", [CrossEntropy(), CrossEntropy([0.5, 1, 1, 1, 1, 4]), SoftDice(), DiceCrossEntropy()])
def test_losses_finite_with_finite_gradients(loss):
    rng = np.random.default_rng(0)
    labels = tf.constant(rng.integers(0, 6, (2, 16, 8)), tf.uint8)
    logits = tf.Variable(rng.normal(size=(2, 16, 8, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(labels, tf.nn.softmax(logits))
    gradient = tape.gradient(value, logits)
    assert np.isfinite(float(value)) and float(value) > 0
    assert np.all(np.isfinite(gradient.numpy())) and np.any(gradient.numpy() != 0)


def test_cross_entropy_on_integer_labels_matches_one_hot_form():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, (2, 4, 4))
    probs = tf.nn.softmax(rng.normal(size=(2, 4, 4, 6)).astype(np.float32))
    one_hot = keras.losses.CategoricalCrossentropy()(np.eye(6)[labels], probs)
    assert float(CrossEntropy()(labels, probs)) == pytest.approx(float(one_hot), rel=1e-5)


def test_soft_dice_is_zero_for_a_perfect_prediction():
    labels = np.random.default_rng(2).integers(0, 6, (2, 8, 8))
    assert float(SoftDice()(labels, np.eye(6, dtype=np.float32)[labels])) == pytest.approx(0.0, abs=1e-6)


def test_pooled_dice_metric_matches_numpy_definition():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 6, (2, 8, 8))
    probs = rng.random((2, 8, 8, 6)).astype(np.float32)
    metric = PooledDice([5], name="prostate_dice")
    metric.update_state(truth, probs)
    pred = probs.argmax(-1)
    expected = 2 * np.sum((truth == 5) & (pred == 5)) / (np.sum(truth == 5) + np.sum(pred == 5))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_augmentation_moves_image_and_mask_together():
    image = np.zeros((1, 256, 128, 1), np.float32)
    labels = np.zeros((1, 256, 128), np.uint8)
    image[0, 40:80, 30:60, 0] = 1.0
    labels[0, 40:80, 30:60] = 5
    for step in range(5):
        out_image, out_labels = augment_batch(tf.constant(image), tf.constant(labels), tf.constant([0, step], tf.int64))
        out_image, out_labels = out_image.numpy(), out_labels.numpy()
        assert set(np.unique(out_labels)) <= {0, 5}  # nearest neighbour: no blended labels
        bright = out_image[0, ..., 0] > out_image[0, ..., 0].mean() + 0.3
        overlap = np.sum(bright & (out_labels[0] == 5)) / np.sum(out_labels[0] == 5)
        assert overlap > 0.9
    again = augment_batch(tf.constant(image), tf.constant(labels), tf.constant([0, 4], tf.int64))[1].numpy()
    np.testing.assert_array_equal(again, out_labels)  # same seed, same augmentation
    # A decoded split stores float16 images: they augment the same, and come out float32.
    half_image, half_labels = augment_batch(
        tf.constant(image.astype(np.float16)), tf.constant(labels), tf.constant([0, 4], tf.int64)
    )
    assert half_image.dtype == tf.float32
    np.testing.assert_array_equal(half_labels.numpy(), out_labels)


def test_rotation_fills_with_the_image_background_not_zero():
    # A z-scored slice: air is the minimum (-1 here), 0 is a tissue grey.
    image = np.full((4, 256, 128, 1), -1.0, np.float32)
    image[:, 100:150, 40:90] = 2.0
    labels = np.zeros((4, 256, 128), np.uint8)
    out = augment_batch(tf.constant(image), tf.constant(labels), tf.constant([1, 2], tf.int64))[0].numpy()
    for sample in out[..., 0]:
        corners = sample[[0, 0, -1, -1], [0, -1, 0, -1]]  # rotated in from outside the slice
        np.testing.assert_allclose(corners, sample.min(), atol=1e-5)


def test_dataset_batches_every_slice_once_per_epoch():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((10, 256, 128, 1), np.float32)
    labels = np.zeros((10, 256, 128), np.uint8)
    seen = [float(x) for batch, _ in make_dataset(images, labels, 4, shuffle=True, seed=1) for x in batch[:, 0, 0, 0]]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_a_stream_started_later_continues_with_the_same_order_and_augmentation():
    # What a resumed run relies on: starting at batch 5 (an epoch and a bit of 12 slices in
    # batches of 4) gives the batches the whole stream has there, not those of its start.
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 256, 128, 1)).astype(np.float32)
    labels = rng.integers(0, 6, (12, 256, 128)).astype(np.uint8)
    stream = dict(shuffle=True, augment=True, repeat=True, seed=3)
    whole = [x.numpy() for x, _ in make_dataset(images, labels, 4, **stream).take(8)]
    later = [x.numpy() for x, _ in make_dataset(images, labels, 4, start_batch=5, **stream).take(3)]
    for expected, got in zip(whole[5:], later):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(later[0], whole[0])


def test_pipeline_parallelism_does_not_change_the_batches():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 256, 128, 1)).astype(np.float16)
    labels = rng.integers(0, 6, (12, 256, 128)).astype(np.uint8)

    def first_batches(parallel_calls=None, autotune=False):
        dataset = make_dataset(
            images,
            labels,
            4,
            shuffle=True,
            augment=True,
            repeat=True,
            seed=3,
            parallel_calls=parallel_calls,
            autotune=autotune,
        )
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(5)]

    default, two, tuned = first_batches(), first_batches(2), first_batches(autotune=True)
    for (x, y), (x2, y2), (x3, y3) in zip(default, two, tuned):
        assert x.dtype == np.float32 and x.shape == (4, 256, 128, 1)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(x, x3)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(y, y3)
    assert not np.array_equal(default[0][0], default[3][0])  # the stream moves on (12 slices = 3 batches)


def test_smoke_training_lowers_the_loss_and_writes_run_files(smoke_run):
    history = read_history(smoke_run.out / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0] and history["loss"][-1] < history["loss"][0]
    for name in ("model.keras", "config.json", "history.csv", "curves.png", "complete.json"):
        assert (smoke_run.out / name).is_file()
    history = read_history(smoke_run.out / "history.csv")
    organs = ("body", "bone", "bladder", "rectum", "prostate")
    assert {f"{prefix}{organ}_dice" for organ in organs for prefix in ("", "val_")} | {"learning_rate"} <= set(history)
    for side in ("train", "validation"):  # TensorBoard's per-epoch logs
        assert list((smoke_run.out / "tensorboard" / side).glob("events.out.tfevents.*"))
    assert not (smoke_run.out / "backup").exists()
    assert Config.load(smoke_run.out / "config.json") == smoke_run.config
    assert load_model(smoke_run.out / "model.keras").output_shape == (None, 256, 128, 6)
    snapshots = sorted(path.name for path in (smoke_run.out / "snapshots").iterdir())
    assert snapshots == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]  # one per epoch, no partial files left
    summary = json.loads((smoke_run.out / "complete.json").read_text())
    assert summary["epochs_run"] == 3 and summary["precision"] in ("float32", "mixed_bfloat16")


def test_snapshot_slices_show_prostate_from_large_to_small():
    labels = np.zeros((6, 8, 8), np.uint8)
    for index, area in zip(range(6), (0, 9, 1, 16, 0, 4)):  # slices 0 and 4 show no prostate
        labels[index].flat[:area] = PROSTATE
    assert list(snapshot_indices(labels, count=3)) == [3, 1, 5]  # areas 16, 9, 4: largest first, short of the tiniest
    assert len(snapshot_indices(np.zeros((3, 8, 8), np.uint8))) == 0  # no prostate anywhere: nothing to watch


def test_an_explicit_none_override_lifts_a_preset_value():
    assert make_config("quick").max_minutes == 10.0
    assert make_config("quick", max_minutes=None).max_minutes is None  # no time budget


def test_finished_run_is_reused_and_different_config_refused(smoke_run, smoke_run_copy):
    again = train(smoke_run.config, smoke_run_copy, reuse=True, verbose=0)
    assert again.reused and again.history == read_history(smoke_run.out / "history.csv")
    with pytest.raises(FileExistsError, match="different config"):
        train(smoke_run.config.replace(seed=99), smoke_run_copy, verbose=0)


def test_evaluate_reports_every_class_and_the_criterion(smoke_run, tiny_phantom):
    report, predictions = evaluate(smoke_run.out / "model.keras", tiny_phantom, "test", progress=False)
    assert predictions.shape == (SIZES["tiny"].count("test"), 256, 128) and predictions.dtype == np.uint8
    data = report.to_dict()
    assert set(data["per_class"]) == {"background", "body", "bone", "bladder", "rectum", "prostate"}
    assert data["criterion"] == {"label": "prostate", "min_dice": 0.75, "passed": bool(report.pooled_dice[5] >= 0.75)}
    assert "course criterion (prostate Dice >= 0.75)" in report.format_table()
    json.dumps(data)  # JSON-safe (NaN/inf converted)


def test_predict_preserves_shape_affine_and_header(smoke_run, tiny_phantom, tmp_path):
    model = load_model(smoke_run.out / "model.keras")
    odd = [p for p in find_pairs(tiny_phantom, "train") if nib.load(p.image_path).shape != (256, 128)]
    inputs = [odd[0].image_path, [p for p in odd if nib.load(p.image_path).shape == (256, 144)][0].image_path]
    written = predict_files(model, inputs, tmp_path / "out", probabilities=True)
    for source_path, target in zip(inputs, written):
        source, output = nib.load(source_path), nib.load(target)
        assert target.name.startswith("seg_")
        assert output.shape == source.shape
        np.testing.assert_allclose(output.affine, source.affine)
        assert output.get_data_dtype() == np.uint8
        assert set(np.unique(read_mask(target))) <= set(range(6))
        probs = nib.load(target.with_name(target.name.replace(".nii.gz", "_prob.nii.gz")))
        assert probs.shape == (*source.shape[:2], 6)


def test_every_config_field_is_a_train_flag_and_unset_flags_keep_the_preset(monkeypatch, capsys):
    from unetlib.cli import build_parser, config_from_args, main

    monkeypatch.delenv("UNETLIB_PROFILE", raising=False)
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--preset",
            "quick",
            "--dropout",
            "0.1",
            "--patience",
            "3",
            "--no-augment",
            "--class-weights",
            "1,1,1,1,1,2",
            "--max-minutes",
            "none",
            "--loss",
            "ce",
        ]
    )
    assert config_from_args(args) == make_config(
        "quick",
        dropout=0.1,
        patience=3,
        augment=False,
        loss="ce",
        class_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 2.0),
        max_minutes=None,
    )
    assert config_from_args(parser.parse_args(["train"])) == make_config("quick")
    monkeypatch.setenv("UNETLIB_PROFILE", "smoke")  # the notebooks' rule, here too
    assert config_from_args(parser.parse_args(["train"])) == make_config("smoke")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for field in Config.__dataclass_fields__:
        if field != "preset":
            assert f"--{field.replace('_', '-')}" in help_text


def test_cli_training_logs_one_line_per_epoch_when_not_on_a_terminal(smoke_run):
    assert "\r" not in smoke_run.log and "\b" not in smoke_run.log  # no progress-bar redraws in a log file
    assert [line.split(" - ")[0] for line in smoke_run.log.splitlines() if " - loss: " in line] == ["4/4"] * 3
    assert f"Model: {smoke_run.out / 'model.keras'}" in smoke_run.log


def test_cli_errors_are_clear(tmp_path, capsys):
    from unetlib.cli import main

    assert main(["evaluate", str(tmp_path / "nope.keras"), "--data", str(tmp_path)]) == 2
    assert "nope.keras: model file not found" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "not a HipMRI data root" in capsys.readouterr().err


def test_forward_flops_count_convolutions():
    from unetlib.model import forward_flops_per_slice

    inputs = keras.Input((8, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)  # 2*3*3*2*3 per position, 32 positions
    x = keras.layers.Conv2DTranspose(5, 2, strides=2)(x)  # 2*2*2*3*5 per input position, 32 positions
    model = keras.Model(inputs, x)
    assert forward_flops_per_slice(model) == 2 * 9 * 2 * 3 * 32 + 2 * 4 * 3 * 5 * 32
    quick = forward_flops_per_slice(build_unet((8, 16, 32, 64, 128)))
    seed = forward_flops_per_slice(build_unet((64, 128, 256, 512, 512), normalisation="none"))
    assert 10 < seed / quick < 100  # the original recipe is far more compute per slice


def test_fused_batch_norm_matches_keras_batch_norm_and_survives_saving(tmp_path):
    from unetlib.model import FusedBatchNormalization

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4, 16, 8, 5)) * 3 + 2).astype(np.float32)
    fused, plain = FusedBatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    fused.build(x.shape), plain.build(x.shape)
    for layer in (fused, plain):
        layer.gamma.assign(rng.uniform(0.5, 2, 5).astype(np.float32))
        layer.beta.assign(np.arange(5, dtype=np.float32))
    plain.gamma.assign(fused.gamma), plain.beta.assign(fused.beta)
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-4)
    # Moving statistics move the same way (the fused kernel's variance is unbiased: n/(n-1)).
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-2)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-2)

    model = build_unet((4, 8, 16))
    assert any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    model.save(tmp_path / "model.keras")
    images = rng.normal(size=(2, 256, 128, 1)).astype(np.float32)
    np.testing.assert_allclose(load_model(tmp_path / "model.keras")(images), model(images), atol=1e-6)


def test_precision_is_bfloat16_only_where_the_cpu_computes_it_natively(tmp_path):
    from unetlib.backend import cpu_flags, default_precision, resolve_precision

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n")
    sapphire = tmp_path / "sapphire"
    sapphire.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert {"avx2", "fma"} <= cpu_flags(avx2) and cpu_flags(tmp_path / "missing") == set()
    if not tf.config.list_physical_devices("GPU"):  # a bfloat16-capable GPU decides by itself
        assert default_precision(avx2) == "float32"
    assert default_precision(sapphire) == "mixed_bfloat16"
    assert resolve_precision("float32") == "float32" and resolve_precision("auto") in ("float32", "mixed_bfloat16")
    with pytest.raises(ValueError, match="precision"):
        make_config("quick", precision="float16")


def test_oversampling_changes_which_slices_fill_an_epoch_not_its_length(tiny_phantom, smoke_run):
    from unetlib.data import load_split
    from unetlib.labels import PROSTATE
    from unetlib.training import training_indices

    labels = load_split(tiny_phantom, "train", progress=False).labels
    stream = training_indices(labels, None, 3)
    has_prostate = np.any(labels == PROSTATE, axis=(1, 2))
    assert 0 < has_prostate.sum() < len(labels)
    assert len(stream) == len(labels) + 2 * has_prostate.sum() and set(stream) == set(range(len(labels)))
    # The smoke run trains on 16 slices in batches of 4 with prostate slices drawn 3 times as often:
    # its epochs stay 16 // 4 steps long (the log's "4/4"), however many copies the stream holds.
    config = smoke_run.config
    assert config.prostate_oversampling == 3 and (config.max_train_slices, config.batch_size) == (16, 4)
    assert len(training_indices(labels, 16, config.prostate_oversampling)) > 16  # oversampling is active
    assert [line.split(" - ")[0] for line in smoke_run.log.splitlines() if " - loss: " in line] == ["4/4"] * 3


class _Interrupted(Exception):
    """Stands for a kill: raised at the start of an epoch, after the epochs before it were committed."""


class _TimedSteps(keras.callbacks.Callback):
    """Makes every training step last at least ``seconds`` and records when each one ended
    (seconds since training began), and interrupts training at the start of ``interrupt_at_epoch``."""

    def __init__(self, seconds: float, interrupt_at_epoch: int | None = None):
        super().__init__()
        self.seconds, self.interrupt_at_epoch, self.ends, self.rates = seconds, interrupt_at_epoch, [], []
        self.start = time.monotonic()

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.interrupt_at_epoch:
            raise _Interrupted

    def on_train_batch_begin(self, batch, logs=None):  # called after the schedule has set this step's rate
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))
        time.sleep(self.seconds)

    def on_train_batch_end(self, batch, logs=None):  # called right after the budget's own check
        self.ends.append(time.monotonic() - self.start)


def test_the_time_budget_stops_within_a_step_and_a_resumed_run_keeps_what_is_left(tiny_phantom, tmp_path):
    budget = 12  # seconds: the first epoch (which traces the graph) fits, and several more after it
    config = make_config("smoke", data=str(tiny_phantom), epochs=100, patience=100, max_minutes=budget / 60)
    out = tmp_path / "run"
    with pytest.raises(_Interrupted):
        train(config, out, verbose=0, callbacks=[_TimedSteps(0.1, interrupt_at_epoch=1)])
    used = json.loads((out / "backup" / "state.json").read_text())["seconds"]
    assert 0 < used < budget  # one epoch committed, inside the budget

    resumed = _TimedSteps(0.1)
    result = train(config, out, verbose=0, callbacks=[resumed])
    left = budget - used
    # The schedule resumes from the time used: the first step's rate is the one at that share of
    # the budget, and the rate falls to about 0 as the budget runs out.
    assert resumed.rates[0] == pytest.approx(learning_rate_at(config, used / budget), rel=1e-5)
    assert resumed.rates[-1] < 0.1 * config.learning_rate
    # The resumed run stops at the first step that ends past what is left of the budget, not of a
    # fresh one: every step before its last ended within the time left.
    assert resumed.ends[-1] >= left - 0.01 and all(end < left for end in resumed.ends[:-1])
    epochs = result.history["epoch"]
    assert epochs == [float(epoch) for epoch in range(len(epochs))] and 1 < len(epochs) < 100  # none trained twice
    assert json.loads((out / "complete.json").read_text())["seconds"] >= budget  # both sessions count


def test_a_mixed_bfloat16_run_trains_and_saves_a_model_that_loads_in_float32(tiny_phantom, tmp_path):
    config = make_config("smoke", data=str(tiny_phantom), epochs=1, precision="mixed_bfloat16")
    result = train(config, tmp_path / "run", verbose=0)
    assert json.loads((result.out / "complete.json").read_text())["precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # training put the policy back
    model = load_model(result.model_path)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} >= {"mixed_bfloat16"}  # bfloat16 inside
    images = np.random.default_rng(0).normal(size=(2, 256, 128, 1)).astype(np.float32)
    probabilities = predict_probabilities(model, images, progress=False)
    assert probabilities.dtype == np.float32 and np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-3)


def test_lr_find_raises_the_rate_exponentially_and_suggests_a_tenth_of_the_best(tiny_phantom):
    search = lr_find(make_config("smoke", data=str(tiny_phantom)), start=1e-5, stop=1.0, steps=6, progress=False)
    assert 2 <= len(search.rates) <= 6 and len(search.losses) == len(search.rates)
    np.testing.assert_allclose(search.rates[1:] / search.rates[:-1], 10 ** (5 / 5), rtol=1e-6)
    assert np.all(np.isfinite(search.losses))
    assert search.suggestion == pytest.approx(search.rates[np.argmin(search.losses)] / 10)
    with pytest.raises(ValueError, match="need 0 < start < stop"):
        lr_find(make_config("smoke", data=str(tiny_phantom)), start=1.0, stop=0.1)
