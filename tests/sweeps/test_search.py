"""Optuna as the search engine: Katib's spaces as Optuna distributions, seeded, and a study
rebuilt from what the hub recorded."""

import copy
from pathlib import Path

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from apps.sweeps import search
from apps.sweeps import spec as sweep_spec

KATIB = Path(__file__).resolve().parent / "katib" / "examples"


def ask(spec, past, count):
    return search.ask(spec, past, count)[0]


def parsed(name: str, **changes):
    document = yaml.safe_load((KATIB / name).read_text())
    document["spec"]["trialTemplate"]["trialSpec"] = "#!/bin/bash\necho ${trialParameters.learningRate}\n"
    for key, value in changes.items():
        document["spec"][key] = value
    return sweep_spec.parse(copy.deepcopy(document))


def test_katib_spaces_become_optuna_distributions_with_their_steps():
    dists = search.distributions(parsed("optuna-distribution.yaml"))
    assert dists["lr"] == FloatDistribution(1, 5, step=0.1)
    assert dists["momentum"] == FloatDistribution(0.001, 3, log=True)
    assert dists["epochs"] == IntDistribution(1, 3)
    assert dists["batch_size"] == IntDistribution(32, 64, log=True)


def test_categorical_and_discrete_become_choices():
    spec = parsed(
        "random.yaml",
        parameters=[
            {"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": ["sgd", "adam"]}},
            {"name": "lr", "parameterType": "discrete", "feasibleSpace": {"list": ["0.1", "0.01"]}},
            {"name": "momentum", "parameterType": "double", "feasibleSpace": {"min": "0.5", "max": "0.9"}},
        ],
    )
    assert search.distributions(spec)["opt"] == CategoricalDistribution(["sgd", "adam"])
    suggestions = ask(spec, [], 20)
    assert {s.params["opt"] for s in suggestions} == {"sgd", "adam"}
    assert {s.params["lr"] for s in suggestions} <= {"0.1", "0.01"}


@pytest.mark.parametrize(
    "example", ["random.yaml", "grid.yaml", "tpe.yaml", "optuna-distribution.yaml", "hyperband.yaml"]
)
def test_a_seeded_sweep_asks_the_same_trials_every_time(example):
    spec = parsed(
        example,
        algorithm={
            **yaml.safe_load((KATIB / example).read_text())["spec"]["algorithm"],
            "algorithmSettings": [{"name": "random_state", "value": "7"}]
            if example != "hyperband.yaml"
            else yaml.safe_load((KATIB / example).read_text())["spec"]["algorithm"]["algorithmSettings"]
            + [{"name": "random_state", "value": "7"}],
        },
    )
    first = [s.params for s in ask(spec, [], 4)]
    assert first == [s.params for s in ask(spec, [], 4)]
    assert len({tuple(sorted(p.items())) for p in first}) == 4  # four different trials


def test_every_suggestion_lies_in_the_feasible_space_and_on_its_step():
    spec = parsed("optuna-distribution.yaml")
    for s in ask(spec, [], 12):
        assert 1 <= s.params["lr"] <= 5 and abs(round(s.params["lr"] * 10) - s.params["lr"] * 10) < 1e-6
        assert 0.001 <= s.params["momentum"] <= 3
        assert s.params["epochs"] in (1, 2, 3) and 32 <= s.params["batch_size"] <= 64


def test_grid_never_repeats_a_point_even_across_a_rebuild():
    spec = parsed("grid.yaml", maxTrialCount=45)
    first = ask(spec, [], 30)
    past = [search.Past(params=s.params, state="succeeded", value=1.0, system_attrs=s.system_attrs) for s in first]
    rest = ask(spec, past, 15)
    points = {tuple(sorted(s.params.items())) for s in [*first, *rest]}
    assert len(points) == 45
    assert "search_space" not in first[0].system_attrs  # the grid is not stored once per trial


@pytest.mark.parametrize("seed", [None, 1, 7])
@pytest.mark.parametrize(
    "space",
    [
        [("x", "int", {"min": "1", "max": "1000"})],
        [("lr", "double", {"min": "0.01", "max": "0.05", "step": "0.01"}), ("opt", "categorical", ["sgd", "adam"])],
        [("a", "int", {"min": "0", "max": "9"}), ("b", "int", {"min": "0", "max": "9"})],
    ],
)
def test_a_fresh_grid_is_asked_as_optuna_would_without_a_study(space, seed):
    document = yaml.safe_load((KATIB / "grid.yaml").read_text())
    parameters = []
    for name, kind, feasible in space:
        fs = {"list": feasible} if kind == "categorical" else feasible
        parameters.append({"name": name, "parameterType": kind, "feasibleSpace": fs})
    spec_doc = document["spec"]
    spec_doc["parameters"] = parameters
    spec_doc["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}] if seed else []
    spec_doc["trialTemplate"]["trialParameters"] = [{"name": n, "reference": n} for n, _, _ in space]
    spec_doc["trialTemplate"]["trialSpec"] = "#!/bin/bash\necho ${trialParameters." + space[0][0] + "}\n"
    spec_doc["maxTrialCount"] = spec_doc["parallelTrialCount"] = 1
    count = min(sweep_spec.parse(copy.deepcopy(document)).grid_size(), 300)
    spec_doc["maxTrialCount"] = count
    spec = sweep_spec.parse(copy.deepcopy(document))
    direct, attrs = search.ask(spec, [], count)
    optuna_answer, optuna_attrs = search.ask_optuna(spec, [], count)
    assert [(s.params, s.system_attrs) for s in direct] == [(s.params, s.system_attrs) for s in optuna_answer]
    assert attrs == optuna_attrs
    # And the same once the grid is rebuilt from them: the next asks skip every point taken.
    past = [search.Past(params=s.params, state="succeeded", value=1.0, system_attrs=s.system_attrs) for s in direct]
    more = search.ask(spec, past, min(5, spec.grid_size() - count))[0]
    assert not {tuple(sorted(s.params.items())) for s in more} & {tuple(sorted(s.params.items())) for s in direct}


def test_sobol_continues_its_sequence_after_a_rebuild():
    spec = parsed(
        "random.yaml",
        algorithm={"algorithmName": "sobol", "algorithmSettings": [{"name": "random_state", "value": "3"}]},
    )
    once = [s.params for s in ask(spec, [], 8)]
    first, attrs = search.ask(spec, [], 4)
    past = [search.Past(params=s.params, state="succeeded", value=1.0, system_attrs=s.system_attrs) for s in first]
    rest, _ = search.ask(spec, past, 4, study_attrs=attrs)
    assert [s.params for s in first] + [s.params for s in rest] == once


def test_tpe_learns_from_the_rebuilt_study():
    spec = parsed(
        "tpe.yaml",
        maxTrialCount=40,
        algorithm={
            "algorithmName": "tpe",
            "algorithmSettings": [{"name": "random_state", "value": "1"}, {"name": "n_startup_trials", "value": "10"}],
        },
    )
    past = []
    for _ in range(6):
        for s in ask(spec, past, 5):
            # Best at lr = 0.05: TPE, rebuilt from the rows each wave, should head there.
            past.append(
                search.Past(
                    params=s.params, state="succeeded", value=abs(s.params["lr"] - 0.05), system_attrs=s.system_attrs
                )
            )
    early = sum(p.params["lr"] for p in past[:10]) / 10
    late = sum(p.params["lr"] for p in past[-10:]) / 10
    assert late > early


def test_cmaes_keeps_its_generation_through_the_rebuild():
    spec = parsed(
        "random.yaml",
        maxTrialCount=30,
        algorithm={"algorithmName": "cmaes", "algorithmSettings": [{"name": "random_state", "value": "2"}]},
    )
    past = []
    for _ in range(4):
        for s in ask(spec, past, 5):
            past.append(
                search.Past(
                    params=s.params, state="succeeded", value=(s.params["lr"] - 0.03) ** 2, system_attrs=s.system_attrs
                )
            )
    assert any(k.startswith("cma") for k in past[-1].system_attrs)
    generations = {v for p in past for k, v in p.system_attrs.items() if k.endswith(":generation")}
    assert len(generations) > 1  # CMA-ES moved on across rebuilds, it did not restart each wave


def test_bayesian_optimization_is_optunas_gp_sampler_learning_from_the_rebuilt_study():
    pytest.importorskip("torch", reason="torch is pinned in requirements.txt: Optuna's GPSampler needs it")
    spec = parsed(
        "bayesian-optimization.yaml",
        maxTrialCount=14,
        algorithm={
            "algorithmName": "bayesianoptimization",
            "algorithmSettings": [{"name": "random_state", "value": "10"}, {"name": "n_initial_points", "value": "6"}],
        },
    )
    assert search.sampler(spec).__class__.__name__ == "GPSampler"
    past = []
    for _ in range(7):
        for s in ask(spec, past, 2):
            # Best at lr = 0.045, momentum 0.55: the GP, rebuilt each wave, heads there.
            value = ((s.params["lr"] - 0.045) / 0.04) ** 2 + ((s.params["momentum"] - 0.55) / 0.4) ** 2
            past.append(search.Past(params=s.params, state="succeeded", value=value, system_attrs=s.system_attrs))
    startup = sum(p.value for p in past[:6]) / 6
    fitted = sum(p.value for p in past[-4:]) / 4
    assert fitted < startup / 2
    # Seeded: the same results give the same next trials.
    assert [s.params for s in ask(spec, past, 2)] == [s.params for s in ask(spec, past, 2)]


def test_trial_parameters_are_rendered_as_katib_would_write_them():
    spec = parsed("hyperband.yaml")
    values = search.rendered(spec, {"lr": 0.025, "momentum": 0.5, "num-epochs": 3})
    assert values == {"learningRate": "0.025", "momentum": "0.5", "numberEpochs": "3"}


def test_importances_find_the_parameter_that_matters():
    spec = parsed("random.yaml", maxTrialCount=30)
    past = [
        search.Past(params=s.params, state="succeeded", value=(s.params["lr"] - 0.01) * 100) for s in ask(spec, [], 30)
    ]
    found = search.importances(spec, past)
    assert set(found) == {"lr", "momentum"} and found["lr"] > found["momentum"]
    assert search.importances(spec, past[:1]) == {}  # too few trials to say
