"""Optuna as the search engine, ask-and-tell, with the hub's tables as the truth.

Why the study is rebuilt from the hub's rows rather than kept in Optuna's own storage: the
sweep and its trials are already rows the hub audits, reconciles and shows; a second store
(Optuna's RDB schema) would be a second truth that can disagree after a crash between a
``tell`` and the hub's commit, and would need its own migrations and backups. A study is
cheap to rebuild (an in-memory study, one ``add_trial`` per finished trial), and what a sampler
keeps about itself (CMA-ES's generation, QMC's sample index) lives in each trial's
``system_attrs``, which the hub stores with the trial and gives back on rebuild.

Seeds: a sampler is built afresh for every ask, so its seed is derived from the sweep's seed
(Katib's ``random_state``) and the number of trials already asked: the same spec and the same
results give the same trials, and two asks never repeat the same random stream.

Pure: no Django, no I/O."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from .spec import Parameter, Spec, SpecError

optuna.logging.set_verbosity(optuna.logging.WARNING)

STATES = {
    "succeeded": TrialState.COMPLETE,
    "failed": TrialState.FAIL,
    "early_stopped": TrialState.PRUNED,
    "running": TrialState.RUNNING,
    "pending": TrialState.RUNNING,
}


@dataclass
class Past:
    """A trial as the hub recorded it, for rebuilding the study."""

    params: dict[str, Any]
    state: str
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suggestion:
    params: dict[str, Any]
    system_attrs: dict[str, Any]


def distribution(parameter: Parameter) -> BaseDistribution:
    """Katib's feasible space as an Optuna distribution. Optuna has no normal distributions:
    ``normal`` searches [min, max] uniformly and ``logNormal`` log-uniformly, as Katib's own
    Optuna suggestion service does."""
    if parameter.type == "double":
        if parameter.log:
            return FloatDistribution(parameter.min, parameter.max, log=True)
        return FloatDistribution(parameter.min, parameter.max, step=parameter.step)
    if parameter.type == "int":
        if parameter.log:
            return IntDistribution(int(parameter.min), int(parameter.max), log=True)
        return IntDistribution(int(parameter.min), int(parameter.max), step=int(parameter.step or 1))
    return CategoricalDistribution(list(parameter.choices))


def distributions(spec: Spec) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in spec.parameters}


def derived_seed(seed: int | None, asked: int) -> int | None:
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{asked}".encode()).digest()[:4], "big")


def sampler(spec: Spec, *, asked: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for Katib's algorithm, with Katib's settings."""
    seed = derived_seed(spec.seed, asked)
    settings = spec.algorithm_settings
    name = spec.algorithm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name in ("random", "hyperband"):
            # Katib's hyperband draws each bracket's configurations at random.
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            # The sweep's own seed, never the per-ask one: a trial's grid_id indexes the
            # sampler's seeded shuffle of the grid, which must be the same shuffle when the
            # study is rebuilt to extend the sweep (with a per-ask seed, points repeated).
            space = {p.name: p.grid() for p in spec.parameters}
            return optuna.samplers.GridSampler(space, seed=spec.seed)
        if name == "sobol":
            # The Sobol sequence's own seed is the sweep's, never the per-ask one: the
            # sequence continues from the index QMC keeps in the trials' system_attrs.
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=spec.seed is not None, seed=spec.seed)
        if name in ("tpe", "multivariate-tpe"):
            kwargs = {}
            if "n_startup_trials" in settings:
                kwargs["n_startup_trials"] = int(settings["n_startup_trials"])
            if "n_ei_candidates" in settings:
                kwargs["n_ei_candidates"] = int(settings["n_ei_candidates"])
            # Trials still running are counted as if they had the worst value so a wave of
            # P asks does not propose P copies of the same point.
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=name == "multivariate-tpe", constant_liar=True, **kwargs
            )
        if name == "cmaes":
            kwargs = {}
            if "sigma" in settings:
                kwargs["sigma0"] = float(settings["sigma"])
            if settings.get("restart_strategy", "none") != "none":
                kwargs["restart_strategy"] = settings["restart_strategy"]
            return optuna.samplers.CmaEsSampler(seed=seed, **kwargs)
        if name == "bayesianoptimization":
            try:
                import torch  # noqa: F401  Optuna's GP sampler is written on PyTorch
            except ImportError:
                raise SpecError(
                    [
                        {
                            "path": "spec.algorithm.algorithmName",
                            "message": "bayesianoptimization is Optuna's Gaussian-process sampler, which needs "
                            "PyTorch; this hub is installed without it. Use tpe, or ask the administrator "
                            "to install torch.",
                        }
                    ]
                ) from None
            kwargs = {}
            if "n_initial_points" in settings:
                kwargs["n_startup_trials"] = int(settings["n_initial_points"])
            return optuna.samplers.GPSampler(seed=seed, **kwargs)
    raise ValueError(f"no sampler for {name}")  # parse() lets no other name through


def study(
    spec: Spec, past: list[Past], *, study_attrs: dict[str, Any] | None = None, asked: int | None = None
) -> optuna.Study:
    """An in-memory study holding every trial the hub has recorded, in order."""
    result = optuna.create_study(
        direction="maximize" if spec.maximize else "minimize",
        sampler=sampler(spec, asked=len(past) if asked is None else asked),
    )
    for key, value in (study_attrs or {}).items():
        result._storage.set_study_system_attr(result._study_id, key, value)
    dists = distributions(spec)
    grid_space = {p.name: p.grid() for p in spec.parameters} if spec.algorithm == "grid" else None
    for trial in past:
        state = STATES.get(trial.state, TrialState.FAIL)
        value = trial.value if state == TrialState.COMPLETE else None
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        if state == TrialState.PRUNED and trial.intermediate:
            # Optuna gives a pruned trial its last reported value; Katib keeps it too.
            value = trial.intermediate[max(trial.intermediate)]
        # A value outside its distribution (hyperband sets its resource parameter to each
        # rung's budget, whatever the feasible space says) is left out of the study.
        params = {k: v for k, v in trial.params.items() if k in dists and _contains(dists[k], v)}
        result.add_trial(
            create_trial(
                state=state,
                value=value,
                params=params,
                distributions={k: v for k, v in dists.items() if k in params},
                intermediate_values=dict(trial.intermediate),
                system_attrs={**trial.system_attrs, **({"search_space": grid_space} if grid_space else {})},
            )
        )
    return result


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def ask(
    spec: Spec,
    past: list[Past],
    count: int,
    *,
    study_attrs: dict[str, Any] | None = None,
    asked: int | None = None,
) -> tuple[list[Suggestion], dict[str, Any]]:
    """The next ``count`` trials to run, and what the sampler keeps on the study afterwards
    (QMC's sample index), to be stored with the sweep. Each asked trial stays RUNNING in the
    study, so the asks of one wave see each other. ``asked`` (default: the past's length)
    picks the seed's stream."""
    if spec.algorithm == "grid" and not past and not study_attrs:
        fresh = _ask_fresh_grid(spec, count, asked=asked or 0)
        if fresh is not None:
            return fresh, {}
    return ask_optuna(spec, past, count, study_attrs=study_attrs, asked=asked)


def ask_optuna(
    spec: Spec,
    past: list[Past],
    count: int,
    *,
    study_attrs: dict[str, Any] | None = None,
    asked: int | None = None,
) -> tuple[list[Suggestion], dict[str, Any]]:
    """`ask`, always through an Optuna study rebuilt from ``past``."""
    current = study(spec, past, study_attrs=study_attrs, asked=asked)
    dists = distributions(spec)
    suggestions: list[Suggestion] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(count):
            trial = current.ask(dists)
            params = {name: trial.params[name] for name in dists}
            attrs = current._storage.get_trial_system_attrs(trial._trial_id)
            suggestions.append(Suggestion(params=params, system_attrs=_jsonable(attrs)))
    return suggestions, _jsonable(current._storage.get_study_system_attrs(current._study_id))


def _ask_fresh_grid(spec: Spec, count: int, *, asked: int) -> list[Suggestion] | None:
    """What Optuna's GridSampler answers ``count`` asks of a study with no trials, without the
    study: each ask through a study scans every trial of it (quadratic: a second for a 1,000-point
    grid, on the way from a sweep's POST to Slurm). The sampler gives trial number ``i`` the
    ``i``-th point of its seeded shuffle of the grid while there are points left, so the first
    ``count`` points of that shuffle are the same trials (tests/sweeps/test_search.py holds it to
    Optuna's own answers). None when the grid is smaller than ``count``: Optuna decides those."""
    grid = sampler(spec, asked=asked)
    assert isinstance(grid, optuna.samplers.GridSampler)
    points, names = grid._all_grids, grid._param_names
    if count > len(points):
        return None
    dists = distributions(spec)
    suggestions = []
    for grid_id in range(count):
        params = {}
        for name, dist in dists.items():
            params[name] = dist.to_external_repr(dist.to_internal_repr(points[grid_id][names.index(name)]))
        suggestions.append(Suggestion(params=params, system_attrs={"grid_id": grid_id}))
    return suggestions


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == "search_space":
            continue  # the grid's whole space, the same for every trial: rebuilt from the spec
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            clean[key] = value
    return clean


def rendered(spec: Spec, params: dict[str, Any]) -> dict[str, str]:
    """Each trial parameter (by its trialParameters name) as the text put in the script."""
    values: dict[str, str] = {}
    for tp in spec.trial_parameters:
        if tp.reference in params:
            values[tp.name] = spec.parameter(tp.reference).render(params[tp.reference])
    return values


def importances(spec: Spec, past: list[Past]) -> dict[str, float]:
    """Optuna's parameter importances over the succeeded trials ({} until there are enough)."""
    finished = [t for t in past if t.state == "succeeded" and t.value is not None]
    if len(finished) < 2 or len(spec.parameters) < 2:
        return {}
    current = study(spec, finished)
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(current).items()}
    except (RuntimeError, ValueError):
        return {}
