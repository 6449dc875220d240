"""Katib's median stopping rule (pkg/earlystopping/v1beta1/medianstop/service.py), pure.

Once at least ``min_trials_required`` trials have succeeded, the median is taken over the
succeeded trials' averages of their first ``start_step`` reported objective values; a running
trial that has reported at least ``start_step`` values and whose latest value is worse than
that median (lower when maximizing, greater when minimizing) is stopped."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    stop: bool
    value: float | None = None  # the trial's latest value
    median: float | None = None
    step: int | None = None  # the step of that latest value
    trials_in_median: int = 0

    def as_reason(self) -> dict:
        return {
            "rule": "medianstop",
            "value": self.value,
            "median": self.median,
            "step": self.step,
            "trials_in_median": self.trials_in_median,
        }


def median(succeeded: list[list[tuple[int, float]]], *, min_trials_required: int, start_step: int) -> float | None:
    """The median over the succeeded trials of the mean of their first ``start_step`` values,
    or None while fewer than ``min_trials_required`` trials have succeeded."""
    if len(succeeded) < min_trials_required:
        return None
    means = [statistics.fmean(v for _, v in points[:start_step]) for points in succeeded if points]
    if len(means) < min_trials_required:
        return None
    return statistics.median(means)


def decide(
    running: list[tuple[int, float]],
    succeeded: list[list[tuple[int, float]]],
    *,
    maximize: bool,
    min_trials_required: int,
    start_step: int,
) -> Decision:
    """Whether to stop a running trial, given its reported (step, value) points in order and
    those of the succeeded trials."""
    if len(running) < start_step:
        return Decision(stop=False)
    the_median = median(succeeded, min_trials_required=min_trials_required, start_step=start_step)
    if the_median is None:
        return Decision(stop=False)
    step, value = running[-1]
    worse = value < the_median if maximize else value > the_median
    return Decision(stop=worse, value=value, median=the_median, step=step, trials_in_median=len(succeeded))
