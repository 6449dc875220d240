"""A sweep's spec: a Katib ``Experiment`` (kubeflow.org/v1beta1) read as Katib defines it, with
``spec.trialTemplate.trialSpec`` being the user's sbatch script instead of a Kubernetes Job.

Pure: no I/O, no Django models. Every problem names the field it is about
(``spec.parameters[1].feasibleSpace.min``) so a person can fix it; nothing here raises anything
but ``SpecError``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import yaml

from apps.core.errors import ValidationFailed
from apps.integrations.slurm.environment import parameter_name_problem

MAX_SPEC_BYTES = 512 * 1024
MAX_GRID_POINTS = 100_000

# Algorithms Axle runs, and what Optuna does for each (see search.py).
ALGORITHMS = (
    "random",
    "grid",
    "sobol",
    "tpe",
    "multivariate-tpe",
    "cmaes",
    "bayesianoptimization",
    "hyperband",
)
# Run as one Slurm job array: every trial is known before the first one starts.
NON_ADAPTIVE = frozenset({"random", "grid", "sobol"})
REFUSED_ALGORITHMS = {
    "enas": (
        "enas is Katib's neural architecture search, which trains a controller network inside "
        "Kubernetes; Axle does not run it. Express the architecture choices as categorical or int "
        "parameters (layers, units, activation) and use tpe or multivariate-tpe."
    ),
    "darts": (
        "darts is Katib's differentiable architecture search, which runs inside one training "
        "process on Kubernetes; Axle does not run it. Run DARTS as a plain job, or search the "
        "architecture as categorical/int parameters with tpe or multivariate-tpe."
    ),
    "pbt": (
        "pbt (population based training) needs trials that exchange checkpoints while running; "
        "Axle does not run it. Use hyperband for resource-aware search, or tpe with medianstop "
        "early stopping."
    ),
}
# Algorithm settings as Katib's suggestion services accept them: name -> kind of value.
ALGORITHM_SETTINGS: dict[str, dict[str, str]] = {
    "random": {"random_state": "int"},
    "grid": {"random_state": "int"},
    "sobol": {"random_state": "int"},
    "tpe": {"random_state": "int", "n_startup_trials": "posint", "n_ei_candidates": "posint"},
    "multivariate-tpe": {"random_state": "int", "n_startup_trials": "posint", "n_ei_candidates": "posint"},
    "cmaes": {"random_state": "int", "sigma": "posfloat", "restart_strategy": "restart"},
    "bayesianoptimization": {"random_state": "int", "n_initial_points": "posint", "base_estimator": "gp"},
    "hyperband": {"resource_name": "str", "eta": "posfloat", "r_l": "posfloat", "random_state": "int"},
}
EARLY_STOPPING = {"medianstop": {"min_trials_required": 3, "start_step": 4}}
PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
# Katib's metricStrategies: which of a metric's reported values is the trial's.
METRIC_STRATEGIES = ("min", "max", "latest")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Katib's own metadata references a trial parameter may point to instead of a parameter.
TRIAL_METADATA = {"${trialSpec.Name}": "name"}


class SpecError(ValidationFailed):
    """The spec is not one Axle can run; ``problems`` lists each with its field path."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__(
            "The sweep spec has problems: " + "; ".join(f"{p['path']}: {p['message']}" for p in problems),
            extra={"problems": problems},
        )


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    choices: tuple[str, ...] = ()
    distribution: str = "uniform"

    @property
    def log(self) -> bool:
        return self.distribution in ("logUniform", "logNormal")

    def grid(self) -> list:
        """Every value grid search tries: the list, or min..max by step (max included)."""
        if self.type in ("discrete", "categorical"):
            return list(self.choices)
        step = self.step if self.step is not None else 1
        count = int(math.floor((self.max - self.min) / step + 1e-9)) + 1
        if self.type == "int":
            return [int(self.min + i * step) for i in range(count)]
        return [float(f"{self.min + i * step:.12g}") for i in range(count)]

    def render(self, value) -> str:
        """The text Katib would put in place of ``${trialParameters.x}``."""
        if self.type == "int":
            return str(int(value))
        if self.type == "double":
            return repr(float(value))
        return str(value)


@dataclass(frozen=True)
class TrialParameter:
    name: str
    reference: str
    description: str = ""


@dataclass(frozen=True)
class Spec:
    name: str
    objective_type: str
    metric: str
    goal: float | None
    additional_metrics: tuple[str, ...]
    metric_strategies: dict[str, str]
    algorithm: str
    algorithm_settings: dict[str, str]
    early_stopping: str | None
    early_stopping_settings: dict[str, int]
    parallel_trial_count: int
    max_trial_count: int | None
    max_failed_trial_count: int | None
    parameters: tuple[Parameter, ...]
    trial_parameters: tuple[TrialParameter, ...]
    script: str
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def maximize(self) -> bool:
        return self.objective_type == "maximize"

    @property
    def adaptive(self) -> bool:
        return self.algorithm not in NON_ADAPTIVE

    @property
    def seed(self) -> int | None:
        value = self.algorithm_settings.get("random_state")
        return int(value) if value is not None else None

    def parameter(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)

    def grid_size(self) -> int:
        return math.prod(len(p.grid()) for p in self.parameters)

    def trial_count(self) -> int:
        """How many trials the sweep runs when nothing stops it early."""
        if self.algorithm == "grid":
            size = self.grid_size()
            return min(size, self.max_trial_count) if self.max_trial_count else size
        return self.max_trial_count or 0

    def metric_value(self, name: str, points: list[tuple[int, float]]) -> float | None:
        """The value of metric ``name`` a trial reported, by Katib's metricStrategies: the
        least, the greatest, or the latest (the last step's) of its reported (step, value)
        points, given in order of step."""
        if not points:
            return None
        strategy = self.metric_strategies.get(name) or ("max" if self.maximize else "min")
        values = [v for _, v in points]
        if strategy == "latest":
            return values[-1]
        return max(values) if strategy == "max" else min(values)

    def is_better(self, value: float, than: float) -> bool:
        return value > than if self.maximize else value < than

    def goal_reached(self, value: float | None) -> bool:
        if value is None or self.goal is None:
            return False
        return value >= self.goal if self.maximize else value <= self.goal


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})


def _number(value, path: str, problems: _Problems, *, integer: bool = False):
    """Katib gives numbers as strings ("0.01"); YAML may give them as numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        problems.add(path, f"must be a number, not {_kind(value)}.")
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        problems.add(path, f"must be a number, not {str(value)[:40]!r}.")
        return None
    if not math.isfinite(number):
        problems.add(path, "must be a finite number.")
        return None
    if integer:
        if number != int(number):
            problems.add(path, f"must be a whole number for an int parameter, not {value}.")
            return None
        return int(number)
    return number


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", type(None): "empty", bool: "true/false"}.get(type(value), "text")


def _count(spec: dict, key: str, problems: _Problems, *, minimum: int, default: int | None):
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(f"spec.{key}", f"must be a whole number, not {str(value)[:40]!r}.")
        return default
    if value < minimum:
        problems.add(f"spec.{key}", f"must be at least {minimum}, not {value}.")
        return default
    return value


def _settings(items, path: str, problems: _Problems) -> dict[str, str]:
    if items is None:
        return {}
    if not isinstance(items, list):
        problems.add(path, "must be a list of {name, value} entries.")
        return {}
    settings: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.add(f"{path}[{i}]", "must be a {name, value} entry.")
            continue
        if item["name"] in settings:
            problems.add(f"{path}[{i}].name", f"{item['name']} is given twice.")
        value = item.get("value")
        settings[item["name"]] = "" if value is None else str(value)
    return settings


def _check_setting(kind: str, value: str, path: str, problems: _Problems) -> None:
    if kind == "int":
        if not re.fullmatch(r"-?\d+", value.strip()):
            problems.add(path, f"must be a whole number, not {value!r}.")
    elif kind == "posint":
        if not re.fullmatch(r"\d+", value.strip()) or int(value) < 1:
            problems.add(path, f"must be a whole number of at least 1, not {value!r}.")
    elif kind == "posfloat":
        try:
            ok = float(value) > 0 and math.isfinite(float(value))
        except ValueError:
            ok = False
        if not ok:
            problems.add(path, f"must be a number greater than 0, not {value!r}.")
    elif kind == "restart":
        if value not in ("none", "ipop", "bipop"):
            problems.add(path, f"must be none, ipop or bipop, not {value!r}.")
    elif kind == "gp":
        if value.upper() != "GP":
            problems.add(
                path,
                f"Axle's Bayesian optimization is Optuna's Gaussian process sampler; {value!r} "
                "is not offered (use GP).",
            )
    elif kind == "str" and not value.strip():
        problems.add(path, "must not be empty.")


# libyaml's safe loader where PyYAML was built with it: the same documents, ~10x faster than
# the pure-Python one (a spec is parsed on every POST; 100 trials' spec 2.5 -> 0.3 ms).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str) -> dict:
    """The YAML document, or a SpecError saying why it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError([{"path": "(document)", "message": "The spec is empty; paste a Katib Experiment in YAML."}])
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError([{"path": "(document)", "message": f"The spec is larger than {MAX_SPEC_BYTES // 1024} KiB."}])
    try:
        try:
            documents = [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
        except yaml.YAMLError:
            # libyaml places some errors elsewhere (the end of a stream on the line after):
            # the message says where the pure-Python parser finds it.
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError([{"path": "(document)", "message": f"The spec is not valid YAML{where}: {problem}."}]) from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise SpecError([{"path": "(document)", "message": "The spec must be one YAML mapping: a Katib Experiment."}])
    return documents[0]


def parse(document: dict | str, *, script: str | None = None) -> Spec:
    """Read a Katib Experiment as Axle runs it. ``script`` (the sbatch script) takes the place
    of ``spec.trialTemplate.trialSpec``; without it, trialSpec itself must be the script."""
    if isinstance(document, str):
        document = load(document)
    p = _Problems()
    api = document.get("apiVersion")
    if api is not None and api != "kubeflow.org/v1beta1":
        p.add("apiVersion", f"must be kubeflow.org/v1beta1 (Katib's Experiment), not {str(api)[:60]!r}.")
    kind = document.get("kind")
    if kind is not None and kind != "Experiment":
        p.add("kind", f"must be Experiment, not {str(kind)[:60]!r}.")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name.strip():
        p.add("metadata.name", "is required: the sweep's name.")
        name = ""
    spec = document.get("spec")
    if not isinstance(spec, dict):
        p.add("spec", "is required and must be a mapping.")
        raise SpecError(p.items)

    objective_type, metric, goal, additional, strategies = _objective(spec.get("objective"), p)
    algorithm, settings = _algorithm(spec.get("algorithm"), p)
    early, early_settings = _early_stopping(spec.get("earlyStopping"), p)
    parallel = _count(spec, "parallelTrialCount", p, minimum=1, default=3)
    max_trials = _count(spec, "maxTrialCount", p, minimum=1, default=None)
    max_failed = _count(spec, "maxFailedTrialCount", p, minimum=0, default=None)
    if max_trials is not None and parallel > max_trials:
        p.add("spec.parallelTrialCount", f"is {parallel}, more than maxTrialCount ({max_trials}).")
    parameters = _parameters(spec.get("parameters"), algorithm, p)
    declared = {
        x["name"] for x in spec.get("parameters") or [] if isinstance(x, dict) and isinstance(x.get("name"), str)
    }
    trial_parameters, script = _trial_template(spec.get("trialTemplate"), declared, script, p)
    if algorithm and algorithm != "grid" and max_trials is None:
        p.add("spec.maxTrialCount", f"is required for {algorithm}: Axle runs a bounded number of trials.")
    if algorithm == "hyperband":
        _hyperband(settings, parameters, parallel, p)
    if algorithm == "grid" and parameters and not any(i["path"].startswith("spec.parameters") for i in p.items):
        size = math.prod(len(x.grid()) for x in parameters)
        if size > MAX_GRID_POINTS:
            p.add("spec.parameters", f"span {size} grid points, more than the {MAX_GRID_POINTS} a sweep may have.")
        elif max_trials is not None and max_trials > size:
            p.add("spec.maxTrialCount", f"is {max_trials}, more than the {size} points of the grid.")
    if p.items:
        raise SpecError(p.items)
    return Spec(
        name=name.strip()[:200],
        objective_type=objective_type,
        metric=metric,
        goal=goal,
        additional_metrics=additional,
        metric_strategies=strategies,
        algorithm=algorithm,
        algorithm_settings=settings,
        early_stopping=early,
        early_stopping_settings=early_settings,
        parallel_trial_count=parallel,
        max_trial_count=max_trials,
        max_failed_trial_count=max_failed,
        parameters=tuple(parameters),
        trial_parameters=tuple(trial_parameters),
        script=script,
        raw=document,
    )


def _objective(objective, p: _Problems):
    if not isinstance(objective, dict):
        p.add("spec.objective", "is required: type (minimize or maximize) and objectiveMetricName.")
        return "", "", None, (), {}
    kind = objective.get("type")
    if kind not in ("minimize", "maximize"):
        p.add("spec.objective.type", f"must be minimize or maximize, not {str(kind)[:40]!r}.")
    metric = objective.get("objectiveMetricName")
    if not isinstance(metric, str) or not metric.strip():
        p.add("spec.objective.objectiveMetricName", "is required: the MLflow metric the trials report.")
        metric = ""
    goal = None
    if objective.get("goal") is not None:
        goal = _number(objective["goal"], "spec.objective.goal", p)
    additional = objective.get("additionalMetricNames") or []
    if not isinstance(additional, list) or not all(isinstance(m, str) for m in additional):
        p.add("spec.objective.additionalMetricNames", "must be a list of metric names.")
        additional = []
    if metric and metric in additional:
        p.add("spec.objective.additionalMetricNames", f"must not repeat the objective metric {metric}.")
    strategies = _metric_strategies(objective.get("metricStrategies"), kind, [metric, *additional], p)
    return kind if isinstance(kind, str) else "", metric, goal, tuple(additional), strategies


def _metric_strategies(items, kind, metrics: list[str], p: _Problems) -> dict[str, str]:
    """Katib's metricStrategies, every metric given one: by default the objective's direction
    (the best value reported), as Katib's defaulting webhook sets it."""
    default = "max" if kind == "maximize" else "min"
    strategies = {m: default for m in metrics if m}
    if items is None:
        return strategies
    path = "spec.objective.metricStrategies"
    if not isinstance(items, list):
        p.add(path, "must be a list of {name, value} entries.")
        return strategies
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            p.add(f"{path}[{i}]", "must be a {name, value} entry.")
            continue
        name, value = item.get("name"), item.get("value")
        if name not in strategies:
            p.add(
                f"{path}[{i}].name",
                f"{str(name)[:60]!r} is neither the objective metric nor one of additionalMetricNames "
                f"({', '.join(m for m in metrics if m)}).",
            )
            continue
        if name in seen:
            p.add(f"{path}[{i}].name", f"{name} is given twice.")
            continue
        seen.add(name)
        if value not in METRIC_STRATEGIES:
            p.add(f"{path}[{i}].value", f"must be one of {', '.join(METRIC_STRATEGIES)}, not {str(value)[:40]!r}.")
            continue
        strategies[name] = value
    return strategies


def _algorithm(algorithm, p: _Problems) -> tuple[str, dict[str, str]]:
    if not isinstance(algorithm, dict) or not isinstance(algorithm.get("algorithmName"), str):
        p.add("spec.algorithm.algorithmName", f"is required: one of {', '.join(ALGORITHMS)}.")
        return "", {}
    name = algorithm["algorithmName"]
    settings = _settings(algorithm.get("algorithmSettings"), "spec.algorithm.algorithmSettings", p)
    if name in REFUSED_ALGORITHMS:
        p.add("spec.algorithm.algorithmName", REFUSED_ALGORITHMS[name])
        return "", {}
    if name not in ALGORITHMS:
        p.add(
            "spec.algorithm.algorithmName",
            f"{name[:40]!r} is not an algorithm Axle runs; use one of {', '.join(ALGORITHMS)}.",
        )
        return "", {}
    allowed = ALGORITHM_SETTINGS[name]
    for i, (key, value) in enumerate(settings.items()):
        path = f"spec.algorithm.algorithmSettings[{i}]"
        if key not in allowed:
            p.add(f"{path}.name", f"{key!r} is not a setting of {name}; it takes {', '.join(allowed)}.")
        else:
            _check_setting(allowed[key], value, f"{path}.value", p)
    return name, settings


def _early_stopping(early, p: _Problems) -> tuple[str | None, dict[str, int]]:
    if early is None:
        return None, {}
    if not isinstance(early, dict) or early.get("algorithmName") not in EARLY_STOPPING:
        got = early.get("algorithmName") if isinstance(early, dict) else early
        p.add("spec.earlyStopping.algorithmName", f"must be medianstop, not {str(got)[:40]!r}.")
        return None, {}
    name = early["algorithmName"]
    defaults = EARLY_STOPPING[name]
    values = dict(defaults)
    for i, (key, value) in enumerate(
        _settings(early.get("algorithmSettings"), "spec.earlyStopping.algorithmSettings", p).items()
    ):
        path = f"spec.earlyStopping.algorithmSettings[{i}]"
        if key not in defaults:
            p.add(f"{path}.name", f"{key!r} is not a setting of {name}; it takes {', '.join(defaults)}.")
            continue
        if not re.fullmatch(r"\d+", value.strip()) or int(value) < 1:
            # Katib: min_trials_required > 0, start_step >= 1.
            p.add(f"{path}.value", f"{key} must be a whole number of at least 1, not {value!r}.")
            continue
        values[key] = int(value)
    return name, values


def _parameters(items, algorithm: str, p: _Problems) -> list[Parameter]:
    if not isinstance(items, list) or not items:
        p.add("spec.parameters", "must list at least one parameter to search.")
        return []
    parameters: list[Parameter] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        path = f"spec.parameters[{i}]"
        if not isinstance(item, dict):
            p.add(path, "must be a mapping with name, parameterType and feasibleSpace.")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            p.add(f"{path}.name", "is required.")
            continue
        if name in seen:
            p.add(f"{path}.name", f"{name} is declared twice.")
            continue
        seen.add(name)
        if parameter := _parameter(item, name, path, algorithm, p):
            parameters.append(parameter)
    return parameters


def _parameter(item: dict, name: str, path: str, algorithm: str, p: _Problems) -> Parameter | None:
    kind = item.get("parameterType")
    if kind not in PARAMETER_TYPES:
        p.add(f"{path}.parameterType", f"must be one of {', '.join(PARAMETER_TYPES)}, not {str(kind)[:40]!r}.")
        return None
    space = item.get("feasibleSpace")
    if not isinstance(space, dict):
        p.add(f"{path}.feasibleSpace", "is required.")
        return None
    fs = f"{path}.feasibleSpace"
    distribution = space.get("distribution") or "uniform"
    if distribution not in DISTRIBUTIONS:
        p.add(f"{fs}.distribution", f"must be one of {', '.join(DISTRIBUTIONS)}, not {str(distribution)[:40]!r}.")
        return None
    before = len(p.items)
    if kind in ("discrete", "categorical"):
        values = space.get("list")
        if not isinstance(values, list) or not values:
            p.add(f"{fs}.list", f"must list at least one value for a {kind} parameter.")
            return None
        for key in ("min", "max", "step"):
            if space.get(key) is not None:
                p.add(f"{fs}.{key}", f"does not apply to a {kind} parameter (it takes a list).")
        choices = []
        for j, value in enumerate(values):
            if isinstance(value, (dict, list)) or value is None:
                p.add(f"{fs}.list[{j}]", "must be a plain value.")
            elif kind == "discrete":
                if _number(value, f"{fs}.list[{j}]", p) is not None:
                    choices.append(str(value).strip())
            elif not str(value):
                p.add(f"{fs}.list[{j}]", "is empty; give each choice a value.")
            elif any(ord(c) < 32 or ord(c) == 127 for c in str(value)):
                p.add(f"{fs}.list[{j}]", "holds a control character (line break, tab).")
            else:
                choices.append(str(value))
        if len(set(choices)) != len(choices):
            p.add(f"{fs}.list", "holds a value twice.")
        return (
            None
            if len(p.items) > before
            else Parameter(name=name, type=kind, choices=tuple(choices), distribution=distribution)
        )
    if space.get("list") is not None:
        p.add(f"{fs}.list", f"does not apply to a {kind} parameter (it takes min and max).")
    integer = kind == "int"
    low = _number(space.get("min"), f"{fs}.min", p, integer=integer) if space.get("min") is not None else None
    high = _number(space.get("max"), f"{fs}.max", p, integer=integer) if space.get("max") is not None else None
    if space.get("min") is None:
        p.add(f"{fs}.min", f"is required for a {kind} parameter.")
    if space.get("max") is None:
        p.add(f"{fs}.max", f"is required for a {kind} parameter.")
    step = _number(space.get("step"), f"{fs}.step", p, integer=integer) if space.get("step") is not None else None
    if len(p.items) > before:
        return None
    if low > high:
        p.add(f"{fs}.min", f"{low} is greater than max {high}.")
    if step is not None and step <= 0:
        p.add(f"{fs}.step", f"must be greater than 0, not {step}.")
    if distribution in ("logUniform", "logNormal") and low <= 0:
        p.add(f"{fs}.min", f"must be greater than 0 for a {distribution} distribution, not {low}.")
    if integer and step not in (None, 1) and distribution in ("logUniform", "logNormal"):
        p.add(
            f"{fs}.step",
            f"an int parameter with a {distribution} distribution takes no step (Optuna cannot combine them).",
        )
    if algorithm == "grid" and kind == "double" and step is None:
        p.add(f"{fs}.step", "is required for a double parameter with grid search: the grid needs its spacing.")
    if len(p.items) > before:
        return None
    return Parameter(name=name, type=kind, min=low, max=high, step=step, distribution=distribution)


def _trial_template(template, names: set[str], script: str | None, p: _Problems):
    if not isinstance(template, dict):
        p.add("spec.trialTemplate", "is required: trialParameters and the trial's sbatch script.")
        return [], ""
    if script is None:
        script = template.get("trialSpec")
        if isinstance(script, dict):
            p.add(
                "spec.trialTemplate.trialSpec",
                "is a Kubernetes resource; on Axle the trial is your sbatch script: put the script "
                "there as a block string (trialSpec: |) or give it as the script.",
            )
            script = ""
        elif not isinstance(script, str) or not script.strip():
            p.add("spec.trialTemplate.trialSpec", "is required: the trial's sbatch script.")
            script = ""
    if template.get("configMap") is not None:
        p.add("spec.trialTemplate.configMap", "is a Kubernetes ConfigMap; give the sbatch script as trialSpec instead.")
    declared: list[TrialParameter] = []
    items = template.get("trialParameters") or []
    if not isinstance(items, list):
        p.add("spec.trialTemplate.trialParameters", "must be a list of {name, reference} entries.")
        items = []
    for i, item in enumerate(items):
        path = f"spec.trialTemplate.trialParameters[{i}]"
        if not isinstance(item, dict):
            p.add(path, "must be a {name, reference} entry.")
            continue
        name, reference = item.get("name"), item.get("reference")
        if not isinstance(name, str) or not SHELL_NAME.match(name):
            p.add(
                f"{path}.name",
                "must be a name made of letters, digits and _ (it becomes an environment variable), "
                f"not {str(name)[:40]!r}.",
            )
            continue
        if problem := parameter_name_problem(name):
            p.add(f"{path}.name", f"becomes an environment variable of the trial, and {problem}")
            continue
        if any(d.name == name for d in declared):
            p.add(f"{path}.name", f"{name} is declared twice.")
            continue
        if not isinstance(reference, str) or (reference not in names and reference not in TRIAL_METADATA):
            p.add(
                f"{path}.reference",
                f"{str(reference)[:60]!r} is not a parameter in spec.parameters "
                f"({', '.join(sorted(names)) or 'none'}).",
            )
            continue
        declared.append(TrialParameter(name=name, reference=reference, description=str(item.get("description") or "")))
    known = {d.name for d in declared}
    if script:
        for line_number, line in enumerate(script.splitlines(), start=1):
            for used in TRIAL_PARAMETER.findall(line):
                if used not in known:
                    p.add(
                        "spec.trialTemplate.trialSpec",
                        f"line {line_number}: ${{trialParameters.{used}}} is not declared in "
                        "spec.trialTemplate.trialParameters.",
                    )
                elif line.lstrip().startswith("#SBATCH"):
                    # All trials of a sweep are one job array: one resource request for all.
                    p.add(
                        "spec.trialTemplate.trialSpec",
                        f"line {line_number}: ${{trialParameters.{used}}} in an #SBATCH line; the trials "
                        "share one request (they are one job array), so a parameter cannot change it.",
                    )
    return declared, script or ""


def _hyperband(settings: dict[str, str], parameters: list[Parameter], parallel: int, p: _Problems) -> None:
    path = "spec.algorithm.algorithmSettings"
    for key in ("resource_name", "eta", "r_l"):
        if key not in settings:
            p.add(path, f"hyperband needs {key}.")
    resource = settings.get("resource_name")
    if resource is not None and resource not in {x.name for x in parameters}:
        p.add(path, f"resource_name {resource!r} is not a parameter in spec.parameters.")
    elif resource is not None and next(x for x in parameters if x.name == resource).type not in ("int", "double"):
        p.add(path, f"resource_name {resource!r} must be an int or double parameter.")
    try:
        eta, r_l = float(settings.get("eta", "")), float(settings.get("r_l", ""))
    except ValueError:
        return
    if eta <= 1:
        p.add(path, f"eta must be greater than 1, not {eta:g}.")
        return
    if r_l <= 0:
        return
    # Katib: the first bracket runs n = ceil((s_max + 1) / (s_max + 1) * eta^s_max) trials at once.
    s_max = int(math.log(r_l) / math.log(eta) + 1e-9)
    first = math.ceil(eta**s_max)
    if parallel < first:
        p.add(
            "spec.parallelTrialCount",
            f"is {parallel}; hyperband with eta {eta:g} and r_l {r_l:g} runs {first} trials at once, "
            f"so it must be at least {first}.",
        )


def substitute(script: str, values: dict[str, str]) -> str:
    """``${trialParameters.<name>}`` replaced by its value, exactly as Katib does in a trialSpec."""
    return TRIAL_PARAMETER.sub(lambda m: values.get(m.group(1), m.group(0)), script)


def validate(text: str, *, script: str | None = None) -> list[dict]:
    """The problems of a spec (empty when it is fine), for live validation."""
    try:
        parse(text, script=script)
    except SpecError as exc:
        return exc.problems
    return []
