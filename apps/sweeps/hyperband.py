"""Katib's hyperband (pkg/suggestion/v1beta1/hyperband/service.py), as waves of job arrays.

Settings as Katib reads them: ``resource_name`` (the parameter that carries the budget, say
epochs), ``eta`` (the halving factor) and ``r_l`` (the largest budget). With
``s_max = int(log(r_l) / log(eta))`` the brackets run ``s = s_max … 0``; bracket ``s`` starts
with ``n = ceil((s_max + 1) * eta**s / (s + 1))`` configurations drawn at random, each given the
budget ``int(r_l * eta**-s)`` (its first rung), then keeps the best ``ceil(n_i / eta)`` of each
rung and runs them again with ``eta`` times the budget, until the rung ``i = s``.

On Slurm each rung is ONE job array (a wave): the hub submits the next rung when every trial
of the current one has ended, and sets the resource parameter of each trial to the rung's
budget. Where Katib refuses to go on while a trial of the rung has not succeeded, Axle
promotes among the trials that did (a failed or early-stopped trial is never promoted); a rung
with none ends its bracket.

The state between rungs (Katib's ``current_s``, ``current_i``, ``n``, ``r`` and the trial
numbers of the rung being evaluated) is a small dict kept on the sweep (``optuna_attrs``).

Pure: no Django, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .spec import Spec

KEY = "hyperband"


@dataclass(frozen=True)
class Settings:
    resource_name: str
    eta: float
    r_l: float

    @property
    def s_max(self) -> int:
        # Katib's int(log(r_l) / log(eta)); the epsilon keeps log(9)/log(3) = 1.999… at 2.
        return int(math.log(self.r_l) / math.log(self.eta) + 1e-9)

    def bracket_size(self, s: int) -> int:
        return int(math.ceil(float(self.s_max + 1) * (float(self.eta**s) / float(s + 1))))

    def bracket_budget(self, s: int) -> float:
        return self.r_l * self.eta ** (-s)


@dataclass(frozen=True)
class Ended:
    """A trial of the rung being evaluated, as the hub recorded it."""

    number: int
    params: dict[str, Any]
    succeeded: bool
    value: float | None


@dataclass(frozen=True)
class Rung:
    bracket: int
    rung: int
    budget: int
    # Each configuration of the rung: its params (resource set) and the trial it continues.
    configurations: list[tuple[dict[str, Any], int | None]]


def settings_of(spec: Spec) -> Settings:
    s = spec.algorithm_settings
    return Settings(resource_name=s["resource_name"], eta=float(s["eta"]), r_l=float(s["r_l"]))


def initial_state(spec: Spec) -> dict[str, Any]:
    hb = settings_of(spec)
    s = hb.s_max
    return {"s": s, "i": 0, "n": hb.bracket_size(s), "r": hb.bracket_budget(s), "rung": [], "done": False}


def first_rung_size(spec: Spec) -> int:
    return initial_state(spec)["n"]


def exhausted(state: dict[str, Any] | None) -> bool:
    return bool(state and state.get("done"))


def _next_bracket(hb: Settings, state: dict[str, Any]) -> None:
    state["s"] -= 1
    state["i"] = 0
    state["rung"] = []
    if state["s"] < 0:
        state["done"] = True
        return
    state["n"] = hb.bracket_size(state["s"])
    state["r"] = hb.bracket_budget(state["s"])


def next_rung(
    spec: Spec, state: dict[str, Any] | None, rung_trials: list[Ended], sample, *, start: int, limit: int
) -> tuple[Rung | None, dict[str, Any]]:
    """The next rung to run (at most ``limit`` trials, numbered from ``start``) and the state
    after it, or None when every bracket ran.

    ``rung_trials`` are the ended trials of the rung being evaluated (``state["rung"]``);
    ``sample(n)`` draws ``n`` random configurations (dicts of params) for a new bracket."""
    hb = settings_of(spec)
    state = dict(state) if state else initial_state(spec)
    while not state["done"]:
        if not state["rung"]:
            # Katib's master bracket: n fresh configurations at the bracket's first budget.
            budget = int(state["r"])
            configurations = [({**p, hb.resource_name: budget}, None) for p in sample(min(state["n"], limit))]
            rung = Rung(bracket=state["s"], rung=state["i"], budget=budget, configurations=configurations)
        else:
            # Katib's child bracket: the best ceil(n_i / eta) of the last rung, eta times the budget.
            n_i = math.ceil(state["n"] * hb.eta ** (-state["i"]))
            top = int(math.ceil(n_i / hb.eta))
            state["i"] += 1
            budget = int(state["r"] * hb.eta ** state["i"])
            ranked = sorted(
                (t for t in rung_trials if t.number in state["rung"] and t.succeeded and t.value is not None),
                key=lambda t: t.value,
                reverse=spec.maximize,
            )
            configurations = [({**t.params, hb.resource_name: budget}, t.number) for t in ranked[: min(top, limit)]]
            rung = Rung(bracket=state["s"], rung=state["i"], budget=budget, configurations=configurations)
            if not configurations:
                # Nothing of the last rung succeeded: the bracket has nothing to promote.
                _next_bracket(hb, state)
                continue
        if state["i"] < state["s"]:
            state["rung"] = list(range(start, start + len(configurations)))
        else:
            _next_bracket(hb, state)
        return rung, state
    return None, state
