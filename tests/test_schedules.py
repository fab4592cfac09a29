"""Learning-rate schedules: the rate at the start, middle and end of a time budget and of a step budget."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from unetlib.callbacks import ScheduledLearningRate, TimeBudget
from unetlib.config import make_config
from unetlib.schedules import SCHEDULES, rate_factor
from unetlib.training import learning_rate_at

# schedule -> its multiple of the full rate at progress 0, 0.5 and 1 (no warm-up)
EXPECTED = {
    "constant": (1.0, 1.0, 1.0),
    "linear": (1.0, 0.5, 0.0),
    "cosine": (1.0, 0.5, 0.0),
    "poly": (1.0, 0.5**0.9, 0.0),
    "onecycle": (1 / 25, np.cos(np.pi / 3) * 0.5 + 0.5, 1e-5),  # a third of the way down from the peak at 0.25
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_schedule_starts_peaks_and_ends_where_it_should(schedule):
    start, middle, end = EXPECTED[schedule]
    assert [rate_factor(schedule, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([start, middle, end], abs=1e-4)
    rates = [rate_factor(schedule, p) for p in np.linspace(0, 1, 101)]
    assert max(rates) == pytest.approx(1.0) and min(rates) >= 0
    if schedule != "constant":  # every decaying schedule only falls after its peak
        peak = int(np.argmax(rates))
        assert all(later <= earlier + 1e-12 for earlier, later in zip(rates[peak:], rates[peak + 1 :]))


def test_warm_up_rises_linearly_then_hands_over_and_onecycle_keeps_its_own_rise():
    # Half-way up the warm-up: half the rate the linear decay has reached there.
    assert [rate_factor("linear", p, warmup=0.1) for p in (0.0, 0.05, 0.1)] == pytest.approx([0.0, 0.5 * 0.95, 0.9])
    assert rate_factor("constant", 0.02, warmup=0.04) == pytest.approx(0.5)
    assert rate_factor("onecycle", 0.0, warmup=0.5) == rate_factor("onecycle", 0.0)
    assert rate_factor("linear", 1.7) == 0.0 and rate_factor("linear", -1.0) == 1.0  # progress is clipped
    with pytest.raises(ValueError, match="unknown schedule 'step'; expected one of constant"):
        rate_factor("step", 0.5)


def _rate_set(callback: ScheduledLearningRate, epoch: int = 0, batch: int = 0) -> float:
    """The learning rate the callback gives the optimiser before ``batch`` of ``epoch``."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    callback.set_model(model)
    callback.on_epoch_begin(epoch)
    callback.on_train_batch_begin(batch)
    return float(model.optimizer.learning_rate.numpy())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_rate_follows_the_time_budget_used_when_there_is_one_else_the_planned_steps(schedule):
    config = make_config("smoke", schedule=schedule, warmup=0.0, learning_rate=0.01)
    rate = lambda progress: learning_rate_at(config, progress)  # noqa: E731
    for share, expected in zip((0.0, 0.5, 1.0), EXPECTED[schedule]):
        # A time budget of 2 minutes, of which a resumed run had used `share` before this process.
        budget = TimeBudget(2.0, used_seconds=120 * share)
        by_time = ScheduledLearningRate(rate, epoch_steps=10, epochs=999, budget=budget)
        assert _rate_set(by_time, epoch=0, batch=0) == pytest.approx(0.01 * expected, rel=1e-5)
        # No time budget: 4 epochs of 10 steps, and `share` of the 40 steps done.
        by_steps = ScheduledLearningRate(rate, epoch_steps=10, epochs=4)
        epoch, batch = divmod(round(40 * share), 10)
        assert _rate_set(by_steps, epoch, batch) == pytest.approx(0.01 * expected, rel=1e-5)


def test_a_step_budget_logs_each_epochs_last_rate():
    config = make_config("smoke", schedule="linear", warmup=0.0, learning_rate=0.01)
    callback = ScheduledLearningRate(lambda p: learning_rate_at(config, p), epoch_steps=10, epochs=4)
    _rate_set(callback, epoch=1, batch=9)
    logs = {}
    callback.on_epoch_end(1, logs)
    assert logs["learning_rate"] == pytest.approx(0.01 * (1 - 19 / 40), rel=1e-5)


def test_with_a_time_budget_the_planned_epochs_still_end_the_schedule_if_they_come_first():
    config = make_config("smoke", schedule="linear", warmup=0.0, learning_rate=0.01)
    rate = lambda progress: learning_rate_at(config, progress)  # noqa: E731
    # 10% of the budget used, but 3 of 4 planned epochs done (a fast machine): the epochs lead.
    callback = ScheduledLearningRate(rate, epoch_steps=10, epochs=4, budget=TimeBudget(2.0, used_seconds=12))
    assert _rate_set(callback, epoch=3, batch=0) == pytest.approx(0.01 * 0.25, rel=1e-5)
    # 90% of the budget used after one epoch of four (a slow machine): the clock leads.
    callback = ScheduledLearningRate(rate, epoch_steps=10, epochs=4, budget=TimeBudget(2.0, used_seconds=108))
    assert _rate_set(callback, epoch=1, batch=0) == pytest.approx(0.01 * 0.1, rel=1e-5)
