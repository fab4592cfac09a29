"""The kit's own errors. Each message names the file, folder or argument and says what is wrong;
the CLI prints it in one line instead of a traceback."""

from __future__ import annotations

__all__ = ["DataError", "DistributeError", "TrainingError"]


class DataError(ValueError):
    """A dataset file or folder cannot be used; the message names it and says why."""


class DistributeError(ValueError):
    """The devices or the cluster asked for cannot be set up (a bad ``UNETLIB_CPU_REPLICAS``, no
    ``TF_CONFIG``, TensorFlow already started); the message says what to set."""


class TrainingError(RuntimeError):
    """Training could not produce a usable model (for example, the loss became NaN)."""
