"""The config refuses values that cannot make a run, and the train command says so as a usage error."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from unetlib.cli import main, weight_list
from unetlib.config import Config, make_config
from unetlib.labels import NUM_CLASSES, SLICE_SHAPE


@pytest.mark.parametrize(
    "argv, flag, problem",
    [
        (["train", "--features", "8"], "--features", "needs at least one encoder level and the bridge"),
        (
            ["train", "--features", "8,16,32,64,128,256,512,1024,2048"],
            "--features",
            "8 down-sampling steps need slice sides divisible by 2**8=256, and 128",
        ),
        (["train", "--features", "4,4,4,4,4,4,4,4,4"], "--features", "expected at most 7 down-sampling steps"),
        (["train", "--features", "8,0,16"], "--features", "must be at least 1"),
        (["train", "--class-weights", "1,2"], "--class-weights", "2 weight(s); expected one per class, 6"),
        (["train", "--class-weights", "1,1,1,1,1,1,1"], "--class-weights", "7 weight(s); expected one per class"),
        (["train", "--class-weights", "1,1,1,1,1,-3"], "--class-weights", "-3 must be a finite number, 0 or more"),
        (["train", "--class-weights", "1,1,1,1,1,nan"], "--class-weights", "nan must be a finite number, 0 or more"),
        (["train", "--class-weights", "0,0,0,0,0,0"], "--class-weights", "every weight is 0"),
        (
            ["train", "--loss", "dice", "--class-weights", "1,1,1,1,1,3"],
            "--class-weights",
            "loss 'dice' has no cross-entropy term to weight",
        ),
        (["train", "--seed", "-1"], "--seed", "expected a whole number from 0 to 2**32 - 1"),
        (["train", "--seed", str(2**32)], "--seed", "expected a whole number from 0 to 2**32 - 1"),
        (["train", "--dropout", "1"], "--dropout", "must be at least 0 and below 1"),
        (["train", "--patience", "0"], "--patience", "must be at least 1"),
        (["train", "--max-train-slices", "0"], "--max-train-slices", "must be at least 1"),
        (["train", "--max-minutes", "inf"], "--max-minutes", "must be a finite number above 0"),
    ],
)
def test_a_flag_the_config_refuses_is_a_usage_error_naming_it(argv, flag, problem, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    error = capsys.readouterr().err
    assert exit_.value.code == 2
    assert error.startswith("usage: unetlib train"), error
    assert f"unetlib train: error: argument {flag}: " in error and problem in error, error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(features=(8,)), "config features=(8,): needs at least one encoder level"),
        (dict(features=(8, 0, 16)), "config features=(8, 0, 16): a level has no filters"),
        (dict(features=(8, 16.5)), "expected whole numbers of at least 1"),
        (
            dict(features=(4,) * 9),
            "8 down-sampling steps need slice sides divisible by 2**8=256, and 128 (of the 256x128 slice) is not; "
            "expected at most 7 down-sampling steps (8 filters per level)",
        ),
        (dict(class_weights=(1.0, 2.0)), "config class_weights=(1.0, 2.0): 2 weight(s); expected one per class, 6"),
        (dict(class_weights=(1, 1, 1, 1, 1, -3)), "a weight is negative or not finite"),
        (dict(class_weights=(1, 1, 1, 1, 1, math.inf)), "a weight is negative or not finite"),
        (dict(class_weights=(0,) * NUM_CLASSES), "every weight is 0"),
        (dict(loss="dice", class_weights=(1,) * NUM_CLASSES), "loss 'dice' has no cross-entropy term"),
        (dict(loss="hinge"), "config loss='hinge': unknown value; expected one of ce, dice, dice_ce"),
        (dict(dropout=1.0), "config dropout=1.0: out of range; expected at least 0 and below 1"),
        (dict(dropout=-0.1), "config dropout=-0.1: out of range"),
        (dict(dropout=math.nan), "config dropout=nan: out of range"),
        (dict(learning_rate=0.0), "config learning_rate=0.0: out of range; expected a finite number above 0"),
        (dict(learning_rate=math.inf), "config learning_rate=inf: out of range"),
        (dict(epochs=0), "config epochs=0: out of range; expected at least 1"),
        (dict(batch_size=0), "config batch_size=0: out of range; expected at least 1"),
        (dict(prostate_oversampling=0), "config prostate_oversampling=0: out of range; expected at least 1"),
        (dict(patience=0), "config patience=0: out of range; expected at least 1"),
        (dict(max_train_slices=0), "config max_train_slices=0: out of range; expected at least 1, or None"),
        (dict(max_minutes=0.0), "config max_minutes=0.0: out of range; expected a finite number above 0, or None"),
        (dict(max_minutes=math.nan), "config max_minutes=nan: out of range"),
        (dict(seed=-1), "config seed=-1: out of range; expected a whole number from 0 to 2**32 - 1"),
        (dict(seed=2**32), "config seed=4294967296: out of range"),
        (dict(schedule="step"), "config schedule='step': unknown value; expected one of constant, linear"),
        (dict(warmup=1.0), "config warmup=1.0: out of range; expected at least 0 and below 1"),
    ],
)
def test_an_invalid_value_is_refused_with_the_field_and_what_is_expected(overrides, message):
    with pytest.raises(ValueError) as error:
        make_config("quick", **overrides)
    assert message in str(error.value)
    named = {field.name for field in dataclasses.fields(Config) if str(error.value).startswith(f"config {field.name}=")}
    assert named & set(overrides), f"{error.value} does not start with config NAME= for a changed field"
    with pytest.raises(ValueError, match="config "):
        Config(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(features=(8, 16, 32, 64, 128, 256, 512, 1024)),  # 7 steps: the 256x128 slice ends as a 2x1 bridge
        dict(features=(1, 1)),
        dict(class_weights=(0, 1, 1, 1, 1, 3)),
        dict(loss="ce", class_weights=(1,) * NUM_CLASSES),
        dict(dropout=0.0, seed=2**32 - 1, max_train_slices=1, max_minutes=None),
    ],
)
def test_values_at_the_limits_are_accepted(overrides):
    config = make_config("quick", **overrides)
    assert all(side % 2**config.depth == 0 for side in SLICE_SHAPE)


def test_every_field_has_help_metadata_and_train_help_shows_it(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    help_output = "".join(capsys.readouterr().out.split())  # argparse wraps lines; compare without whitespace
    assert Config.field_help() == {field.name: field.metadata["help"] for field in dataclasses.fields(Config)}
    for field in dataclasses.fields(Config):
        if field.name == "preset":
            continue  # --preset has its own help: the presets it offers
        text = field.metadata.get("help", "")
        assert text.strip(), f"Config.{field.name} has no help metadata"
        flag = "--" + field.name.replace("_", "-")
        assert flag in help_output and "".join(text.split()) in help_output, f"{flag}: help missing from --help"


def test_class_weights_flag_accepts_a_zero_weight_as_the_config_does():
    """A weight of 0 leaves a class out of the cross-entropy; the flag and the config agree."""
    weights = weight_list("0, 1,1,1,1,3")
    assert weights == (0.0, 1.0, 1.0, 1.0, 1.0, 3.0)
    assert make_config("smoke", class_weights=weights).class_weights == weights


def test_a_config_saved_before_the_schedule_existed_reads_as_the_constant_rate_it_ran_with(tmp_path):
    saved = make_config("quick").to_dict()
    for key in ("schedule", "warmup"):  # an older version's config.json has neither
        del saved[key]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = Config.load(tmp_path / "config.json")
    assert (old.schedule, old.warmup) == ("constant", 0.0)
    assert old != make_config("quick")  # so an old finished run is not reused as today's quick
    assert old.replace(preset="reference") == make_config("reference")
