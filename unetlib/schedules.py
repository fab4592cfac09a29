"""Learning-rate schedules: the rate as a function of how far the run has come.

A schedule maps the run's **progress** (0 at the start, 1 at the end) to a multiple of the
config's ``learning_rate``. The progress is the share of the planned steps (``epochs`` of
them) done or, with a time budget (``max_minutes``), of the budget used, whichever is further,
so the rate reaches zero when the run ends: when the clock stops, on a fast machine or a slow
one, or when the last epoch does. Decaying the rate
to zero across the budget is what "Budgeted Training" (Li, Yumer and Ramanan, ICLR 2020)
found best for a fixed budget: the last steps are small ones, so where the clock stops no
longer decides the score.

The schedules (:func:`rate_factor`), each after a linear warm-up over the first ``warmup``
share of the run (a fresh Adam's first steps are the largest, from barely estimated moments):

- ``constant``: the full rate throughout.
- ``linear``: down in a straight line to zero at the end.
- ``cosine``: half a cosine wave down to zero (Loshchilov and Hutter's SGDR without restarts).
- ``poly``: ``(1 - progress) ** 0.9``, nnU-Net's schedule.
- ``onecycle``: fastai's one cycle, which ignores ``warmup``: up along a half cosine from 1/25 of
  the rate over the first quarter, then down along a half cosine to 1/100,000 of it.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "POLY_EXPONENT", "ONECYCLE_RISE", "rate_factor"]

SCHEDULES = ("constant", "linear", "cosine", "poly", "onecycle")
POLY_EXPONENT = 0.9
ONECYCLE_RISE = 0.25
"""Share of the run in which ``onecycle`` rises to the full rate."""
_ONECYCLE_START, _ONECYCLE_END = 1 / 25, 1e-5


def rate_factor(schedule: str, progress: float, warmup: float = 0.0) -> float:
    """The learning rate at ``progress``, as a multiple of the full rate.

    Args:
        schedule: one of :data:`SCHEDULES`.
        progress: how far the run has come, 0 to 1 (clipped to that range).
        warmup: share of the run (0 to 1) over which the rate rises linearly from 0; ignored by
            ``onecycle``, which has its own rise.

    Returns:
        A multiple of the config's learning rate, from 0 to 1.

    Raises:
        ValueError: an unknown schedule.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if schedule == "onecycle":
        if progress < ONECYCLE_RISE:
            return _cosine_between(_ONECYCLE_START, 1.0, progress / ONECYCLE_RISE)
        return _cosine_between(1.0, _ONECYCLE_END, (progress - ONECYCLE_RISE) / (1 - ONECYCLE_RISE))
    decay = {
        "constant": lambda: 1.0,
        "linear": lambda: 1.0 - progress,
        "cosine": lambda: _cosine_between(1.0, 0.0, progress),
        "poly": lambda: (1.0 - progress) ** POLY_EXPONENT,
    }
    if schedule not in decay:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    rise = min(1.0, progress / warmup) if warmup > 0 else 1.0
    return rise * decay[schedule]()


def _cosine_between(start: float, end: float, share: float) -> float:
    """From ``start`` (share 0) to ``end`` (share 1) along half a cosine wave."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * share))
