"""The ``unetlib`` command line: one sub-command per job, each with its own ``--help``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import sys
from pathlib import Path

from unetlib.errors import DataError, DistributeError, TrainingError
from unetlib.layout import SPLITS
from unetlib.phantom import SIZES

__all__ = [
    "DESCRIPTION",
    "positive_int",
    "positive_float",
    "feature_list",
    "fraction",
    "whole_number",
    "weight_list",
    "or_none",
    "CONFIG_FLAG_TYPES",
    "output_file",
    "config_from_args",
    "build_parser",
    "main",
]

DESCRIPTION = """\
2D UNet segmentation of pelvic MRI slices (HipMRI prostate study: background, body, bone,
bladder, rectum, prostate).

Data is looked for in this order: --data ROOT, the UNETLIB_DATA environment variable, real
data under the repository's data/ folder, then data/phantom/ (a synthetic phantom in the
real layout, generated on first use)."""


def _number(kind: type, allowed, rule: str):
    """An argparse type: ``kind`` (int or float) parsed from the text, then checked by ``allowed``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"{text} must be {rule}")
        return value

    parse.__doc__ = (
        f"An argparse type: a {'whole number' if kind is int else 'number'}, {rule}.\n\n"
        "Args:\n    text: the flag's value as typed.\n\n"
        "Raises:\n    argparse.ArgumentTypeError: ``text`` is not such a number; argparse prints why.\n"
    )
    return parse


positive_int = _number(int, lambda value: value >= 1, "at least 1")
positive_float = _number(float, lambda value: math.isfinite(value) and value > 0, "a finite number above 0")
non_negative_float = _number(float, lambda value: math.isfinite(value) and value >= 0, "a finite number, 0 or more")
fraction = _number(float, lambda value: 0 <= value < 1, "at least 0 and below 1")  # dropout, warmup
whole_number = _number(int, lambda value: True, "a whole number")  # a seed


def feature_list(text: str) -> tuple[int, ...]:
    """An argparse type: filters per level as comma-separated whole numbers, e.g. 16,32,64.

    Args:
        text: the flag's value as typed; spaces around the commas are allowed.

    Returns:
        The filters per level as a tuple of ints, each at least 1.

    Raises:
        argparse.ArgumentTypeError: a part is not a whole number of at least 1.
    """
    try:
        return tuple(positive_int(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected filters per level like 16,32,64 ({exc})") from None


def weight_list(text: str) -> tuple[float, ...]:
    """An argparse type: one weight per class, comma-separated; 0 leaves a class out of the
    cross-entropy, as the config allows.

    Args:
        text: the flag's value as typed, e.g. ``1,1,1,1,1,3``. The number of weights, and that
            not all are 0, is checked by the config, not here.

    Returns:
        The weights as a tuple of floats, each finite and 0 or more.

    Raises:
        argparse.ArgumentTypeError: a part is not a finite number of 0 or more.
    """
    try:
        return tuple(non_negative_float(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one weight per class like 1,1,1,1,1,3 ({exc})") from None


def or_none(kind):
    """An argparse type that also accepts ``none`` (no limit, no weights).

    Args:
        kind: the argparse type for every other value, e.g. :data:`positive_int`.

    Returns:
        An argparse type giving None for ``none`` (any letter case), else ``kind(text)``.
    """

    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


CONFIG_FLAG_TYPES = {
    "data": dict(type=Path, metavar="ROOT"),
    "features": dict(type=feature_list, metavar="F1,F2,..."),
    "normalisation": {},
    "upsampling": {},
    "loss": {},
    "precision": {},
    "distribute": {},  # choices: unetlib.config.CHOICES
    "dropout": dict(type=fraction),
    "class_weights": dict(type=or_none(weight_list), metavar="W0,...,W5|none"),
    "learning_rate": dict(type=positive_float),
    "schedule": {},
    "warmup": dict(type=fraction),
    "epochs": dict(type=positive_int),
    "batch_size": dict(type=positive_int),
    "augment": dict(action=argparse.BooleanOptionalAction),
    "prostate_oversampling": dict(type=positive_int),
    "seed": dict(type=whole_number),
    "max_train_slices": dict(type=or_none(positive_int), metavar="N|none"),
    "max_minutes": dict(type=or_none(positive_float), metavar="MINUTES|none"),
    "patience": dict(type=positive_int),
}
"""How each Config field is parsed on the command line; its help is the field's ``help`` metadata
(:meth:`unetlib.config.Config.field_help`)."""


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field (``--batch-size`` for ``batch_size``), help from its ``help`` metadata;
    a flag not given is left out of the namespace, so the preset's value stands."""
    from unetlib.config import CHOICES, Config

    help_text = Config.field_help()
    fields = [field.name for field in dataclasses.fields(Config) if field.name != "preset"]
    assert set(fields) == set(CONFIG_FLAG_TYPES), "every Config field needs a CLI type"
    for name in fields:
        options = dict(CONFIG_FLAG_TYPES[name])
        if name in CHOICES:
            options["choices"] = CHOICES[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            help=help_text[name].replace("%", "%%"),
            **options,
        )


def output_file(text: str) -> Path:
    """An argparse type: a file to write, whose folder exists and which is not itself a folder.

    Args:
        text: the flag's value as typed.

    Raises:
        argparse.ArgumentTypeError: ``text`` is a folder, or its folder does not exist.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {path.parent} does not exist")
    return path


def _phantom(args: argparse.Namespace) -> int:
    from unetlib.phantom import generate_phantom

    out = generate_phantom(args.out, args.size, args.seed, workers=args.workers, overwrite=args.overwrite)
    counts = ", ".join(f"{split} {SIZES[args.size].count(split)}" for split in SIZES[args.size].weeks_per_case)
    print(f"Wrote phantom ({args.size}, seed {args.seed}) to {out}: {counts} slices")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from unetlib.check import check_data
    from unetlib.data import resolve_data_root

    root = resolve_data_root(args.root)  # without ROOT this may generate the phantom, and says so
    if args.root is None:
        print(f"No ROOT given: checking the default data root {root} (unetlib --help says how it is chosen)")
    report = check_data(root)
    print(report.format())
    return 0 if report.ok else 1


def config_from_args(args: argparse.Namespace):
    """The run's Config: the preset (``--preset``, else ``UNETLIB_PROFILE``, else ``quick``) with
    every config flag the user gave; flags not given keep the preset's values.

    Args:
        args: the parsed ``train`` command line: ``preset`` (None for the default) and the
            config flags given; flags not given are absent from it.

    Returns:
        A :class:`~unetlib.config.Config`.

    Raises:
        ValueError: the combination of values is not a valid config (see :class:`~unetlib.config.Config`).
    """
    from unetlib.config import Config, default_preset, make_config

    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Config)
        if field.name != "preset" and hasattr(args, field.name)
    }
    if "data" in given:
        given["data"] = str(given["data"])
    return make_config(args.preset or default_preset(), **given)


def _as_flag_error(error: ValueError) -> str:
    """A config's refusal (``config NAME=VALUE: ...``) worded like argparse's own: ``argument --NAME: ...``."""
    named = re.match(r"config (\w+)=", str(error))
    return f"argument --{named.group(1).replace('_', '-')}: {error}" if named else str(error)


def _train(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:  # values each flag's type accepts but the config refuses (too deep, 2 weights)
        args.usage_error(_as_flag_error(exc))  # prints the usage and exits with status 2
    from unetlib.training import run_dir, train

    out = args.out or run_dir(config)
    # A terminal gets Keras' live progress bar; a log file or pipe (make demo > log, CI) one line per epoch.
    result = train(config, out, reuse=args.reuse, verbose="auto" if sys.stdout.isatty() else 2)
    if result.reused:
        print(f"Reusing the finished run of this config in {out}")
    if result.replicas and result.replicas > 1:
        print(
            f"Trained on {result.replicas} replicas ({config.distribute}): "
            f"{config.batch_size * result.replicas} slices per step"
        )
    if not result.chief:
        print(f"This worker's part is done; the chief writes the run to {out}")
        return 0
    print(f"Model: {result.model_path}")
    print(f"History: {out / 'history.csv'}  Curves: {out / 'curves.png'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from unetlib.evaluation import evaluate, write_json

    report, _ = evaluate(args.model, args.data, args.split, tta=args.tta, largest_component=args.largest_component)
    print(report.format_table())
    if args.json:
        write_json(report, args.json)
        print(f"Wrote {args.json}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from unetlib.evaluation import load_model
    from unetlib.prediction import predict_files

    written = predict_files(
        load_model(args.model),
        args.inputs,
        args.out,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
        tta=args.tta,
        largest_component=args.largest_component,
    )
    print(f"Wrote {len(written)} label file(s) to {args.out}")
    return 0


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    """--tta and --largest-component (unetlib.postprocess), for evaluate and predict alike."""
    parser.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation: average the predictions of each slice and of its left-right mirror "
        "image (flipped back); twice the prediction time",
    )
    parser.add_argument(
        "--largest-component",
        action="store_true",
        help="keep only the largest 3D piece of bladder and of prostate in each volume, the slices grouped by "
        "the CASE_week_W_slice_N in their names (a name without it is cleaned alone); other pieces become body. "
        "predict then writes the label files once every input is predicted",
    )


def _add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, metavar="ROOT", help="data root (default: see unetlib --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``unetlib`` argument parser: one sub-command per job, each with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="unetlib", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show informational log messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = commands.add_parser(
        "phantom",
        help="write a synthetic pelvic MRI dataset in the real HipMRI layout",
        description="Write a synthetic pelvic MRI phantom to OUT, laid out and named exactly like the "
        "real HipMRI keras_slices data (including its quirks: one 256x144 case-week and some files "
        "with a trailing singleton axis). Each case-week is a 3D pelvis cut into 60 coronal slices "
        "in the real geometry (1.41-1.88 mm in-plane, 1.56 mm along S); its masks are drawn like a "
        "human's. The same seed writes the same bytes.",
    )
    phantom.add_argument("out", type=Path, metavar="OUT", help="folder to create (must not exist or be empty)")
    phantom.add_argument(
        "--size",
        choices=list(SIZES),
        default="small",
        help="; ".join(
            f"{name}: {' / '.join(f'{size.count(s):,}' for s in SPLITS)} slices" for name, size in SIZES.items()
        )
        + " (train / validate / test; default small; full matches the real dataset)",
    )
    phantom.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    phantom.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: all cores)")
    phantom.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds files")
    phantom.set_defaults(run=_phantom)

    check = commands.add_parser(
        "check-data",
        help="validate a data root and print per-split statistics",
        description="Read every slice under ROOT and print, per split: pair count, shapes on disk, "
        "slices adjusted to 256x128, slices without prostate and the label histogram; then every "
        "problem found, each naming its file. Exit status 0 when the data is usable, 1 when any "
        "problem was found, 2 when ROOT is not a data root at all.",
    )
    check.add_argument(
        "root",
        type=Path,
        nargs="?",
        metavar="ROOT",
        help="data root holding keras_slices_* folders (default: as described in unetlib --help)",
    )
    check.set_defaults(run=_check_data)

    from unetlib.config import PRESET_ALIASES, PRESETS

    train = commands.add_parser(
        "train",
        help="train a UNet and save the best model",
        description="Train a UNet on the train split, validating on the validate split. OUT receives "
        "model.keras (best validation Dice averaged over the five organs), config.json, history.csv (losses, "
        "Dice per organ and learning rate per epoch), curves.png and tensorboard/ (see them with "
        "tensorboard --logdir runs/). "
        "Running the same command again after an interruption (even kill -9) resumes from the last finished "
        "epoch; a finished run is not trained again (--reuse returns it). "
        "Flags override the preset's values.",
    )
    train.add_argument(
        "--preset",
        choices=list(PRESETS) + list(PRESET_ALIASES),
        default=None,
        metavar="{" + ",".join(PRESETS) + "}",
        help="original (or seed): the course's original recipe; "
        "quick: our laptop default (10 min budget, learning rate decayed to 0 across it); reference: quick at "
        "a constant rate, the phantom calibration's yardstick; smoke: seconds, for tests; full: a long run "
        "(default: UNETLIB_PROFILE when set, else quick)",
    )
    train.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: runs/PRESET)")
    train.add_argument("--reuse", action="store_true", help="if OUT holds a finished run of the same config, use it")
    _add_config_flags(train.add_argument_group("config (each flag overrides the preset's value)"))
    train.set_defaults(run=_train, usage_error=train.error)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a model on a split: per-class Dice, IoU, HD95, course criterion",
        description="Predict every slice of a split and print, per class: Dice pooled over the split, "
        "mean ± sd of per-volume Dice (each case-week's slices stacked) and of per-slice Dice over "
        "the volumes and slices containing the class, IoU and 95th-percentile "
        "Hausdorff distance in mm; the mean foreground Dice; and the course criterion "
        "(prostate Dice >= 0.75) as PASS/FAIL.",
    )
    evaluate.add_argument("model", type=Path, metavar="MODEL", help="a .keras model file from unetlib train")
    _add_data_option(evaluate)
    evaluate.add_argument(
        "--split", choices=["train", "validate", "test"], default="test", help="split to score (default: test)"
    )
    evaluate.add_argument("--json", type=output_file, metavar="FILE", help="also write the scores as JSON")
    _add_inference_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser(
        "predict",
        help="segment NIfTI slices and write label files",
        description="Segment NIfTI slices (files or folders of them). Each output is a uint8 label map "
        "(0 background .. 5 prostate) with the input's shape, affine and header; case_* inputs are "
        "written as seg_*. Every output name is checked before anything is written: two inputs with one "
        "output name, an --out inside a dataset's keras_slices_* folders, or existing files (without "
        "--overwrite) stop the command with nothing written.",
    )
    predict.add_argument("model", type=Path, metavar="MODEL", help="a .keras model file from unetlib train")
    predict.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="NIfTI slice(s), or folder(s) whose NIfTI files are all predicted (a warning names any other entry)",
    )
    predict.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the label files")
    predict.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist (default: refuse)"
    )
    _add_inference_options(predict)
    predict.set_defaults(run=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv``, default ``sys.argv[1:]``) and return its exit status: 0 done,
    1 the job failed (bad data found, training diverged), 2 a usage or input error, printed in one line.

    Args:
        argv: the arguments after the program name, e.g. ``["check-data", "data/phantom"]``; None
            reads ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except (DataError, DistributeError, FileExistsError, FileNotFoundError) as exc:
        print(f"unetlib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:  # the run itself failed: not a usage problem
        print(f"unetlib {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
