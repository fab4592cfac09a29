"""What to run, kept apart from how it runs: one dataclass per training run, and named presets.

A preset is data (a dict of field values), not a code path: the CLI, the notebooks and the
tests build the same :class:`Config` from a preset name plus overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from unetlib.files import write_atomic
from unetlib.labels import LABELS, NUM_CLASSES, SLICE_SHAPE
from unetlib.schedules import SCHEDULES

__all__ = [
    "LOSSES",
    "NORMALISATIONS",
    "UPSAMPLINGS",
    "PRECISIONS",
    "DISTRIBUTIONS",
    "CHOICES",
    "Config",
    "PRESETS",
    "PRESET_ALIASES",
    "make_config",
    "default_preset",
]


LOSSES = ("ce", "dice", "dice_ce")
NORMALISATIONS = ("batch", "none")
UPSAMPLINGS = ("transpose", "bilinear")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
DISTRIBUTIONS = ("none", "mirrored", "multiworker")
CHOICES: dict[str, tuple[str, ...]] = {
    "normalisation": NORMALISATIONS,
    "upsampling": UPSAMPLINGS,
    "loss": LOSSES,
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
    "distribute": DISTRIBUTIONS,
}
"""The allowed values of each config field that names a choice: the one list the config, the
model, the losses and the CLI all use."""

_LARGEST_DEPTH = 0
while all(side % 2 ** (_LARGEST_DEPTH + 1) == 0 for side in SLICE_SHAPE):
    _LARGEST_DEPTH += 1  # each encoder level halves the slice: both sides must divide by 2**depth (7 for 256x128)

_MAX_SEED = 2**32 - 1  # the largest seed NumPy accepts (keras.utils.set_random_seed seeds NumPy too)


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run.

    Each field's full description is its ``help`` metadata (:meth:`field_help`), which
    ``unetlib train --help`` prints; the list below only names them. Invalid values are refused
    when the config is built, with a ``ValueError`` naming the field.

    Attributes:
        preset: the preset this config started from.
        data: the data root, or None to resolve it.
        features: filters per encoder level, the bridge last.
        normalisation: one of :data:`NORMALISATIONS`.
        dropout: dropout rate after each conv block.
        upsampling: one of :data:`UPSAMPLINGS`.
        loss: one of :data:`LOSSES`.
        class_weights: per-class cross-entropy weights, or None.
        learning_rate: Adam's full step size.
        schedule: one of :data:`~unetlib.schedules.SCHEDULES`.
        warmup: share of the run spent warming the learning rate up.
        epochs: maximum number of epochs.
        batch_size: slices per step on each replica.
        augment: whether training slices are augmented.
        prostate_oversampling: how much more often slices with prostate are drawn.
        precision: one of :data:`PRECISIONS`.
        seed: the one random seed.
        max_train_slices: a cap on training slices, or None.
        max_minutes: a wall-time budget, or None.
        patience: epochs without improvement before early stopping.
        distribute: one of :data:`DISTRIBUTIONS`.
    """

    preset: str = field(default="quick", metadata={"help": "the preset this config started from (for the record)."})
    data: str | None = field(
        default=None,
        metadata={"help": "data root, or None to resolve it (--data → UNETLIB_DATA → data/)."},
    )
    features: tuple[int, ...] = field(
        default=(8, 16, 32, 64, 128),
        metadata={
            "help": "filters per encoder level; the last entry is the bridge (bottleneck). Each level before "
            f"the bridge halves the slice, so both sides of the {SLICE_SHAPE[0]}x{SLICE_SHAPE[1]} slice must "
            f"divide by 2**(entries - 1): at most {_LARGEST_DEPTH + 1} entries."
        },
    )
    normalisation: str = field(default="batch", metadata={"help": '"batch" (BatchNorm after each conv) or "none".'})
    dropout: float = field(
        default=0.0, metadata={"help": "dropout rate after each conv block, at least 0 and below 1 (0 disables it)."}
    )
    upsampling: str = field(
        default="transpose", metadata={"help": '"transpose" (learned 2×2 transposed conv) or "bilinear".'}
    )
    loss: str = field(
        default="dice_ce",
        metadata={"help": '"ce" (cross-entropy), "dice" (soft Dice) or "dice_ce" (their sum).'},
    )
    class_weights: tuple[float, ...] | None = field(
        default=None,
        metadata={
            "help": f"optional per-class weights for the cross-entropy term, one per class ({NUM_CLASSES}), "
            '0 or more (0 leaves a class out; not all 0); not with loss "dice", which has no cross-entropy term.'
        },
    )
    learning_rate: float = field(
        default=3e-3, metadata={"help": "Adam's full step size: the peak of the schedule (--schedule)."}
    )
    schedule: str = field(
        default="linear",
        metadata={
            "help": "how the learning rate changes over the run (unetlib.schedules): "
            '"constant", "linear" (down to 0 at the end), "cosine", "poly" (nnU-Net\'s) or "onecycle" '
            "(fastai's). The run's progress is the share of the planned --epochs done or of --max-minutes used, "
            "whichever is further, so the rate reaches 0 as the run ends, by the clock on any machine or by "
            "its epochs."
        },
    )
    warmup: float = field(
        default=0.03,
        metadata={
            "help": "share of the run (0 to below 1) over which the learning rate rises linearly from 0 to its "
            'full value before the schedule takes over (0: none; "onecycle" has its own rise).'
        },
    )
    epochs: int = field(default=40, metadata={"help": "maximum number of passes over the training slices."})
    batch_size: int = field(
        default=8,
        metadata={
            "help": "slices per step on each replica; with several replicas (distribute) a step trains on "
            "batch_size × replicas slices and an epoch has that many times fewer steps. The learning rate is "
            "not scaled with it: for a much larger global batch, scale it yourself (the linear scaling rule: "
            "× replicas, best with a warm-up)."
        },
    )
    augment: bool = field(
        default=True,
        metadata={"help": "random flips, small rotations/scaling and intensity jitter in training."},
    )
    prostate_oversampling: int = field(
        default=3,
        metadata={
            "help": "training slices containing prostate are drawn this many times as often as the others "
            "(1: no oversampling), so the rare class gets more gradient signal. An epoch stays as many "
            "slices as the training split has."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": '"auto" (mixed_bfloat16 where the hardware computes bfloat16 natively, float32 elsewhere: '
            'unetlib.backend.default_precision()), "float32" or "mixed_bfloat16" (the output layer stays '
            "float32)."
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "one seed for data order, augmentation and initialisation (0 to 2**32 - 1)."},
    )
    max_train_slices: int | None = field(
        default=None,
        metadata={"help": "use only this many training slices (None: all) — for smoke runs."},
    )
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "stop training after this much wall time (None: no limit)."},
    )
    patience: int = field(
        default=10,
        metadata={"help": "early stopping after this many epochs without validation improvement."},
    )
    distribute: str = field(
        default="none",
        metadata={
            "help": '"none" (one device), "mirrored" (every GPU of this machine, or UNETLIB_CPU_REPLICAS '
            'logical CPU devices where there is none) or "multiworker" (several processes or machines, '
            "from TF_CONFIG or Slurm's environment): see unetlib.distribute."
        },
    )

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"config {name}={getattr(self, name)!r}: unknown value; expected one of {', '.join(allowed)}"
                )
        self._check_features()
        self._check_class_weights()
        ranges = {
            "dropout": (0 <= self.dropout < 1, "at least 0 and below 1"),
            "learning_rate": (math.isfinite(self.learning_rate) and self.learning_rate > 0, "a finite number above 0"),
            "warmup": (0 <= self.warmup < 1, "at least 0 and below 1"),
            "epochs": (self.epochs >= 1, "at least 1"),
            "batch_size": (self.batch_size >= 1, "at least 1"),
            "prostate_oversampling": (self.prostate_oversampling >= 1, "at least 1 (1: no oversampling)"),
            "seed": (0 <= self.seed <= _MAX_SEED, "a whole number from 0 to 2**32 - 1"),
            "max_train_slices": (
                self.max_train_slices is None or self.max_train_slices >= 1,
                "at least 1, or None for all",
            ),
            "max_minutes": (
                self.max_minutes is None or (math.isfinite(self.max_minutes) and self.max_minutes > 0),
                "a finite number above 0, or None for no limit",
            ),
            "patience": (self.patience >= 1, "at least 1"),
        }
        for name, (valid, expected) in ranges.items():
            if not valid:
                raise ValueError(f"config {name}={getattr(self, name)!r}: out of range; expected {expected}")

    def _check_features(self) -> None:
        """Refuse filters per level that cannot build a UNet on :data:`~unetlib.labels.SLICE_SHAPE` slices."""
        if len(self.features) < 2:
            raise ValueError(
                f"config features={self.features!r}: needs at least one encoder level and the bridge; "
                "expected two or more filters per level, e.g. (16, 32, 64)"
            )
        if not all(isinstance(filters, numbers.Integral) and filters >= 1 for filters in self.features):
            raise ValueError(
                f"config features={self.features!r}: a level has no filters or a fraction of one; "
                "expected whole numbers of at least 1"
            )
        if self.depth > _LARGEST_DEPTH:
            indivisible = next(side for side in SLICE_SHAPE if side % 2**self.depth)
            raise ValueError(
                f"config features={self.features!r}: {self.depth} down-sampling steps need slice sides divisible "
                f"by 2**{self.depth}={2**self.depth}, and {indivisible} (of the {SLICE_SHAPE[0]}x{SLICE_SHAPE[1]} "
                f"slice) is not; expected at most {_LARGEST_DEPTH} down-sampling steps "
                f"({_LARGEST_DEPTH + 1} filters per level)"
            )

    def _check_class_weights(self) -> None:
        """Refuse class weights that do not give each class one finite, non-negative weight."""
        weights = self.class_weights
        if weights is None:
            return
        if len(weights) != NUM_CLASSES:
            raise ValueError(
                f"config class_weights={weights!r}: {len(weights)} weight(s); expected one per class, "
                f"{NUM_CLASSES} ({', '.join(LABELS)})"
            )
        if not all(math.isfinite(weight) and weight >= 0 for weight in weights):
            raise ValueError(
                f"config class_weights={weights!r}: a weight is negative or not finite; "
                "expected finite weights of at least 0"
            )
        if not any(weights):
            raise ValueError(
                f"config class_weights={weights!r}: every weight is 0, so the cross-entropy term vanishes; "
                "expected at least one weight above 0"
            )
        if self.loss == "dice":
            raise ValueError(
                f"config class_weights={weights!r}: loss 'dice' has no cross-entropy term to weight; "
                "expected None, or loss 'ce' or 'dice_ce'"
            )

    @property
    def depth(self) -> int:
        """Number of down-sampling steps (encoder levels below the bridge)."""
        return len(self.features) - 1

    def replace(self, **changes) -> Config:
        """A copy with some fields changed. ``None`` is a value like any other (``max_minutes=None``
        lifts the time budget); callers with optional overrides leave unset ones out.

        Args:
            **changes: new values by field name; ``features`` may be any sequence (stored as a tuple).

        Raises:
            ValueError: a changed value makes the config invalid; the message names the field. Refused:
                an unknown choice; ``features`` with fewer than two entries, an entry below 1, or more
                down-sampling steps than the slice shape allows (both sides must divide by 2**depth);
                ``class_weights`` that are not one finite, non-negative weight per class, are all 0, or
                come with ``loss="dice"``; ``dropout`` or ``warmup`` outside [0, 1); a ``learning_rate`` or
                ``max_minutes`` that is not a finite number above 0; ``epochs``, ``batch_size``,
                ``prostate_oversampling``, ``patience`` or ``max_train_slices`` below 1; a ``seed``
                outside 0..2**32 - 1.
            TypeError: a name is not a field.
        """
        if "features" in changes:
            changes["features"] = tuple(changes["features"])
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's description (its ``help`` metadata) by field name: the ``--help`` text of its flag."""
        return {entry.name: entry.metadata["help"] for entry in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path | str) -> None:
        """Write the config as JSON, atomically.

        Args:
            path: the file to write, e.g. ``OUT/config.json``; its folder must exist.
        """
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Config:
        """Read a config written by :meth:`save` (fields it lacks, from before they existed, take the
        values runs had then: a constant learning rate without warm-up).

        Args:
            path: a JSON file holding one value per field.

        Raises:
            ValueError: the file is not JSON, or a value is invalid.
            TypeError: the file names a field the config does not have.
        """
        values = {**_BEFORE_THEIR_FIELD, **json.loads(Path(path).read_text())}
        for key in ("features", "class_weights"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


_BEFORE_THEIR_FIELD = {"schedule": "constant", "warmup": 0.0}
"""What runs saved before these fields existed used: a config file without them means these
values, not today's defaults (an old constant-rate run is not the scheduled one)."""


PRESETS: dict[str, dict] = {
    # The original course recipe: a 20.5M-parameter UNet with plain 3×3 conv + ReLU blocks,
    # no normalisation, transposed-conv upsampling, Adam at a constant rate and categorical
    # cross-entropy.
    "original": dict(
        features=(64, 128, 256, 512, 512),
        normalisation="none",
        upsampling="transpose",
        loss="ce",
        learning_rate=1e-3,
        schedule="constant",
        warmup=0.0,
        batch_size=32,
        augment=False,
        prostate_oversampling=1,
        epochs=40,
    ),
    # Our default for a laptop CPU: small, batch-normalised, Dice + cross-entropy, augmented, and
    # the learning rate decayed to zero across its 10-minute budget.
    "quick": dict(max_minutes=10.0),
    # The yardstick the phantom's difficulty is measured with (benchmarks/calibrate.py): quick without
    # its schedule, at a constant rate. Kept fixed, so that a better recipe does not make
    # the phantom look easier.
    "reference": dict(max_minutes=10.0, schedule="constant", warmup=0.0),
    # For tests: a tiny network on a few slices, a couple of epochs — seconds.
    "smoke": dict(features=(4, 8, 16), epochs=2, batch_size=4, max_train_slices=16, augment=True, patience=2),
    # A long run for a machine with time to spare.
    "full": dict(features=(32, 64, 128, 256, 512), epochs=200, patience=30, learning_rate=1e-3),
}


PRESET_ALIASES: dict[str, str] = {"seed": "original"}
"""Other names accepted for a preset: ``seed`` for ``original`` (the name ``original`` does not
read like the ``seed`` field, the random seed)."""


def make_config(preset: str = "quick", **overrides) -> Config:
    """Build the config of a named preset, with ``overrides`` applied (see :meth:`Config.replace`).
    Another name in :data:`PRESET_ALIASES` gives the preset it stands for.

    Args:
        preset: one of :data:`PRESETS` (``"original"``, ``"quick"``, ``"reference"``, ``"smoke"``, ``"full"``) or
            another name for one of them in :data:`PRESET_ALIASES`.
        **overrides: field values that replace the preset's, e.g. ``epochs=5``.

    Raises:
        ValueError: an unknown preset, or an override that makes the config invalid.
    """
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return Config(preset=preset, **PRESETS[preset]).replace(**overrides)


def default_preset() -> str:
    """``UNETLIB_PROFILE`` when set (e.g. ``smoke`` in tests), else ``quick``."""
    return os.environ.get("UNETLIB_PROFILE", "quick")
