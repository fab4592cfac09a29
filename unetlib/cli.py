"""The ``unetlib`` command line: one sub-command per job, each with its own ``--help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from unetlib.data import DataError

DESCRIPTION = """\
2D UNet segmentation of pelvic MRI slices (HipMRI prostate study: background, body, bone,
bladder, rectum, prostate).

Data is looked for in this order: --data ROOT, the UNETLIB_DATA environment variable, real
data under the repository's data/ folder, then data/phantom/ (a synthetic phantom in the
real layout, generated on first use)."""


def _phantom(args: argparse.Namespace) -> int:
    from unetlib.phantom import SIZES, generate_phantom

    out = generate_phantom(args.out, args.size, args.seed, workers=args.workers, overwrite=args.overwrite)
    counts = ", ".join(f"{split} {SIZES[args.size].count(split)}" for split in SIZES[args.size].weeks_per_case)
    print(f"Wrote phantom ({args.size}, seed {args.seed}) to {out}: {counts} slices")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from unetlib.check import check_data
    from unetlib.data import resolve_data_root

    root = resolve_data_root(args.root)
    report = check_data(root)
    print(report.format())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetlib", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show informational log messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = commands.add_parser(
        "phantom",
        help="write a synthetic pelvic MRI dataset in the real HipMRI layout",
        description="Write a synthetic pelvic MRI phantom to OUT, laid out and named exactly like the "
        "real HipMRI keras_slices data (including its quirks: one 256x144 case-week and some files "
        "with a trailing singleton axis). The same seed writes the same bytes.",
    )
    phantom.add_argument("out", type=Path, metavar="OUT", help="folder to create (must not exist or be empty)")
    phantom.add_argument("--size", choices=["tiny", "small", "full"], default="small",
                         help="tiny: 160 slices (tests); small: 2,496 slices (default); "
                         "full: 11,460/660/540 slices like the real dataset")
    phantom.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    phantom.add_argument("--workers", type=int, default=None, help="processes to use (default: all cores)")
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
    check.add_argument("root", type=Path, nargs="?", metavar="ROOT",
                       help="data root holding keras_slices_* folders (default: as described in unetlib --help)")
    check.set_defaults(run=_check_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except (DataError, FileExistsError, FileNotFoundError) as exc:
        print(f"unetlib {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
