"""What to run, kept apart from how it runs: one dataclass per training run, and named presets.

A preset is data (a dict of field values), not a code path: the CLI, the notebooks and the
tests build the same :class:`Config` from a preset name plus overrides.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from unetlib.files import write_atomic

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
    "precision": PRECISIONS,
    "distribute": DISTRIBUTIONS,
}
"""The allowed values of each config field that names a choice: the one list the config, the
model, the losses and the CLI all use."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run.

    Attributes:
        preset: the preset this config started from (for the record).
        data: data root, or None to resolve it (``--data`` → ``UNETLIB_DATA`` → ``data/``).
        features: filters per encoder level; the last entry is the bridge (bottleneck).
        normalisation: ``"batch"`` (BatchNorm after each conv) or ``"none"``.
        dropout: dropout rate after each conv block (0 disables it).
        upsampling: ``"transpose"`` (learned 2×2 transposed conv) or ``"bilinear"``.
        loss: ``"ce"`` (cross-entropy), ``"dice"`` (soft Dice) or ``"dice_ce"`` (their sum).
        class_weights: optional per-class weights for the cross-entropy term.
        learning_rate: Adam step size.
        epochs: maximum number of passes over the training slices.
        batch_size: slices per step on each replica; with several replicas (``distribute``) a
            step trains on batch_size × replicas slices and an epoch has that many times fewer
            steps. The learning rate is not scaled with it: for a much larger global batch,
            scale it yourself (the linear scaling rule: × replicas, best with a warm-up).
        augment: random flips, small rotations/scaling and intensity jitter in training.
        prostate_oversampling: training slices containing prostate are drawn this many times
            as often as the others (1: no oversampling), so the rare class gets more gradient
            signal. An epoch stays as many slices as the training split has.
        precision: ``"auto"`` (mixed_bfloat16 where the hardware computes bfloat16 natively,
            float32 elsewhere: :func:`unetlib.backend.default_precision`), ``"float32"`` or
            ``"mixed_bfloat16"`` (the output layer stays float32).
        seed: one seed for data order, augmentation and initialisation.
        max_train_slices: use only this many training slices (None: all) — for smoke runs.
        max_minutes: stop training after this much wall time (None: no limit).
        patience: early stopping after this many epochs without validation improvement.
        distribute: ``"none"`` (one device), ``"mirrored"`` (every GPU of this machine, or
            ``UNETLIB_CPU_REPLICAS`` logical CPU devices where there is none) or
            ``"multiworker"`` (several processes or machines, from ``TF_CONFIG`` or Slurm's
            environment): see :mod:`unetlib.distribute`.
    """

    preset: str = "quick"
    data: str | None = None
    features: tuple[int, ...] = (8, 16, 32, 64, 128)
    normalisation: str = "batch"
    dropout: float = 0.0
    upsampling: str = "transpose"
    loss: str = "dice_ce"
    class_weights: tuple[float, ...] | None = None
    learning_rate: float = 3e-3
    epochs: int = 40
    batch_size: int = 8
    augment: bool = True
    prostate_oversampling: int = 3
    precision: str = "auto"
    seed: int = 0
    max_train_slices: int | None = None
    max_minutes: float | None = None
    patience: int = 10
    distribute: str = "none"

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if len(self.features) < 2:
            raise ValueError("config features needs at least one encoder level and the bridge")
        if self.epochs < 1 or self.batch_size < 1 or self.prostate_oversampling < 1:
            raise ValueError("config epochs, batch_size and prostate_oversampling must be at least 1")

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
            ValueError: a changed value makes the config invalid (an unknown choice, fewer than two
                ``features``, or ``epochs``, ``batch_size`` or ``prostate_oversampling`` below 1).
            TypeError: a name is not a field.
        """
        if "features" in changes:
            changes["features"] = tuple(changes["features"])
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's description from the class docstring (its ``Attributes:`` section), for
        ``--help`` texts."""
        help_text: dict[str, str] = {}
        name = None
        for line in (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines():
            field_name, _, text = line.strip().partition(": ")
            if line.startswith(" " * 8) and not line.startswith(" " * 9) and field_name.isidentifier() and text:
                name = field_name
                help_text[name] = text
            elif name and line.strip():
                help_text[name] += " " + line.strip()

        def plain(text: str) -> str:  # no reST markup
            return re.sub(r":\w+:`~?(?:[\w]+\.)*(\w+)`", r"\1", text).replace("``", "")

        return {name: plain(text) for name, text in help_text.items()}

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
        """Read a config written by :meth:`save`.

        Args:
            path: a JSON file holding one value per field.

        Raises:
            ValueError: the file is not JSON, or a value is invalid.
            TypeError: the file names a field the config does not have.
        """
        values = json.loads(Path(path).read_text())
        for key in ("features", "class_weights"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, dict] = {
    # The original course recipe: a 20.5M-parameter UNet with plain 3×3 conv + ReLU blocks,
    # no normalisation, transposed-conv upsampling, Adam and categorical cross-entropy.
    "original": dict(
        features=(64, 128, 256, 512, 512),
        normalisation="none",
        upsampling="transpose",
        loss="ce",
        learning_rate=1e-3,
        batch_size=32,
        augment=False,
        prostate_oversampling=1,
        epochs=40,
    ),
    # Our default for a laptop CPU: small, batch-normalised, Dice + cross-entropy, augmented.
    "quick": dict(max_minutes=10.0),
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
        preset: one of :data:`PRESETS` (``"original"``, ``"quick"``, ``"smoke"``, ``"full"``) or
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
