"""The sweep spec: Katib's own examples, and every kind of bad spec, each refused with the path
of the field at fault and never a stack trace."""

import copy
from pathlib import Path

import pytest
import yaml

from apps.sweeps import spec as sweep_spec
from apps.sweeps.spec import SpecError

KATIB = Path(__file__).resolve().parent / "katib" / "examples"
EXAMPLES = sorted(KATIB.glob("*.yaml"))
SCRIPT = """#!/bin/bash
#SBATCH --time=00:05:00
python train.py --lr=${trialParameters.learningRate} --momentum=${trialParameters.momentum}
"""


def katib(name: str) -> dict:
    return yaml.safe_load((KATIB / name).read_text())


def with_script(document: dict, script: str = SCRIPT) -> dict:
    document = copy.deepcopy(document)
    document["spec"]["trialTemplate"]["trialSpec"] = script
    return document


def problems_of(document, **kwargs) -> list[dict]:
    with pytest.raises(SpecError) as caught:
        sweep_spec.parse(document, **kwargs)
    return caught.value.problems


def paths(document, **kwargs) -> list[str]:
    return [p["path"] for p in problems_of(document, **kwargs)]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_it_accepts_every_katib_example_with_only_the_trial_spec_replaced(path):
    document = with_script(yaml.safe_load(path.read_text()))
    parsed = sweep_spec.parse(document)
    raw = yaml.safe_load(path.read_text())["spec"]
    assert parsed.name == yaml.safe_load(path.read_text())["metadata"]["name"]
    assert parsed.objective_type == raw["objective"]["type"]
    assert parsed.algorithm == raw["algorithm"]["algorithmName"]
    assert [p.name for p in parsed.parameters] == [p["name"] for p in raw["parameters"]]
    assert parsed.max_trial_count == raw["maxTrialCount"]


def test_the_examples_are_all_there():
    assert len(EXAMPLES) == 7


def test_it_reads_katib_fields_as_katib_defines_them():
    parsed = sweep_spec.parse(with_script(katib("median-stop.yaml")))
    assert (parsed.metric, parsed.goal, parsed.objective_type) == ("loss", 0.001, "minimize")
    assert parsed.early_stopping == "medianstop"
    assert parsed.early_stopping_settings == {"min_trials_required": 1, "start_step": 2}
    assert (parsed.parallel_trial_count, parsed.max_trial_count, parsed.max_failed_trial_count) == (2, 15, 3)
    lr = parsed.parameter("lr")
    assert (lr.type, lr.min, lr.max) == ("double", 0.01, 0.05)
    assert [(t.name, t.reference) for t in parsed.trial_parameters] == [
        ("learningRate", "lr"),
        ("momentum", "momentum"),
    ]


def test_a_trial_spec_given_apart_replaces_the_kubernetes_job():
    parsed = sweep_spec.parse(katib("random.yaml"), script=SCRIPT)
    assert parsed.script == SCRIPT


def test_a_kubernetes_trial_spec_is_refused_with_what_to_do():
    found = problems_of(katib("random.yaml"))
    assert found[0]["path"] == "spec.trialTemplate.trialSpec"
    assert "sbatch script" in found[0]["message"]


@pytest.mark.parametrize("name", ["enas", "darts", "pbt"])
def test_it_refuses_an_algorithm_axle_does_not_run_by_name_with_what_to_use(name):
    document = with_script(katib("random.yaml"))
    document["spec"]["algorithm"] = {"algorithmName": name}
    [problem] = problems_of(document)
    assert problem["path"] == "spec.algorithm.algorithmName"
    assert name in problem["message"] and ("tpe" in problem["message"] or "hyperband" in problem["message"])


def test_an_unknown_algorithm_lists_the_ones_axle_runs():
    document = with_script(katib("random.yaml"))
    document["spec"]["algorithm"] = {"algorithmName": "anneal"}
    [problem] = problems_of(document)
    assert "'anneal' is not an algorithm" in problem["message"] and "sobol" in problem["message"]


def _mutate(change):
    document = with_script(katib("random.yaml"))
    change(document["spec"])
    return document


@pytest.mark.parametrize(
    "change,path,words",
    [
        (lambda s: s["parameters"][0].update(parameterType="float"), "spec.parameters[0].parameterType", "double, int"),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(min="0.9"),
            "spec.parameters[0].feasibleSpace.min",
            "greater than max",
        ),
        (
            lambda s: s["parameters"][1].update(parameterType="categorical", feasibleSpace={"list": []}),
            "spec.parameters[1].feasibleSpace.list",
            "at least one",
        ),
        (
            lambda s: s["trialTemplate"]["trialParameters"][0].update(reference="learning_rate"),
            "spec.trialTemplate.trialParameters[0].reference",
            "'learning_rate' is not a parameter",
        ),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(min="abc"),
            "spec.parameters[0].feasibleSpace.min",
            "must be a number",
        ),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(step="-1"),
            "spec.parameters[0].feasibleSpace.step",
            "greater than 0",
        ),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(distribution="logUniform", min="0"),
            "spec.parameters[0].feasibleSpace.min",
            "greater than 0",
        ),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(distribution="gamma"),
            "spec.parameters[0].feasibleSpace.distribution",
            "uniform",
        ),
        (lambda s: s["parameters"].append(dict(s["parameters"][0])), "spec.parameters[2].name", "declared twice"),
        (lambda s: s["objective"].update(type="best"), "spec.objective.type", "minimize or maximize"),
        (lambda s: s["objective"].pop("objectiveMetricName"), "spec.objective.objectiveMetricName", "required"),
        (lambda s: s.update(parallelTrialCount=20), "spec.parallelTrialCount", "more than maxTrialCount"),
        (lambda s: s.update(maxTrialCount="many"), "spec.maxTrialCount", "whole number"),
        (lambda s: s.update(maxFailedTrialCount=-1), "spec.maxFailedTrialCount", "at least 0"),
        (
            lambda s: s.update(
                earlyStopping={
                    "algorithmName": "medianstop",
                    "algorithmSettings": [{"name": "start_step", "value": "0"}],
                }
            ),
            "spec.earlyStopping.algorithmSettings[0].value",
            "at least 1",
        ),
        (
            lambda s: s.update(earlyStopping={"algorithmName": "truncation"}),
            "spec.earlyStopping.algorithmName",
            "medianstop",
        ),
        (
            lambda s: s["algorithm"].update(algorithmSettings=[{"name": "n_startup_trials", "value": "5"}]),
            "spec.algorithm.algorithmSettings[0].name",
            "not a setting of random",
        ),
        (
            lambda s: s["parameters"][0]["feasibleSpace"].update(list=["1", "2"]),
            "spec.parameters[0].feasibleSpace.list",
            "takes min and max",
        ),
        (lambda s: s.update(parameters=[]), "spec.parameters", "at least one"),
        (
            lambda s: s["trialTemplate"]["trialParameters"][0].update(name="learning-rate"),
            "spec.trialTemplate.trialParameters[0].name",
            "environment variable",
        ),
    ],
)
def test_a_bad_spec_names_the_field_at_fault(change, path, words):
    found = problems_of(_mutate(change))
    assert path in [p["path"] for p in found], found
    assert any(words in p["message"] for p in found if p["path"] == path), found


def test_a_script_using_an_undeclared_trial_parameter_is_refused_with_its_line():
    script = "#!/bin/bash\necho ${trialParameters.learningRate}\necho ${trialParameters.batchSize}\n"
    [problem] = problems_of(with_script(katib("random.yaml"), script))
    assert problem["path"] == "spec.trialTemplate.trialSpec"
    assert "line 3" in problem["message"] and "batchSize" in problem["message"]


def test_a_trial_parameter_in_an_sbatch_line_is_refused_since_the_trials_share_one_request():
    script = "#!/bin/bash\n#SBATCH --job-name=lr${trialParameters.learningRate}\necho hi\n"
    [problem] = problems_of(with_script(katib("random.yaml"), script))
    assert "line 2" in problem["message"] and "one job array" in problem["message"]


def test_grid_needs_a_step_for_doubles_and_fits_max_trials_in_the_grid():
    document = with_script(katib("grid.yaml"))
    del document["spec"]["parameters"][0]["feasibleSpace"]["step"]
    assert paths(document) == ["spec.parameters[0].feasibleSpace.step"]
    document = with_script(katib("grid.yaml"))
    document["spec"]["maxTrialCount"] = 46
    [problem] = problems_of(document)
    assert problem["path"] == "spec.maxTrialCount" and "45 points" in problem["message"]


def test_grid_points_include_max_and_count_the_trials():
    parsed = sweep_spec.parse(with_script(katib("grid.yaml")))
    assert parsed.parameter("lr").grid() == [0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05]
    assert parsed.parameter("momentum").grid() == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert (parsed.grid_size(), parsed.trial_count()) == (45, 12)


def test_hyperband_checks_katibs_settings():
    document = with_script(katib("hyperband.yaml"))
    document["spec"]["algorithm"]["algorithmSettings"][0]["value"] = "epochs"
    assert any("resource_name 'epochs'" in p["message"] for p in problems_of(document))
    document = with_script(katib("hyperband.yaml"))
    document["spec"]["parallelTrialCount"] = 1
    document["spec"]["maxTrialCount"] = 2
    assert any("must be at least 2" in p["message"] for p in problems_of(document))


@pytest.mark.parametrize(
    "text,words",
    [
        ("", "empty"),
        ("spec: [unclosed", "not valid YAML (line 1"),
        ("- a\n- b\n", "one YAML mapping"),
        ("apiVersion: v1\nkind: Pod\n", "kubeflow.org/v1beta1"),
        ("a: 1\n---\nb: 2\n", "one YAML mapping"),
    ],
)
def test_a_document_that_is_no_experiment_gets_a_message_not_a_traceback(text, words):
    found = problems_of(text)
    assert any(words in p["message"] or words in p["path"] for p in found), found


def test_every_problem_is_reported_at_once():
    document = with_script(katib("random.yaml"))
    document["spec"]["objective"]["type"] = "best"
    document["spec"]["parameters"][0]["feasibleSpace"]["min"] = "1"
    assert paths(document) == ["spec.objective.type", "spec.parameters[0].feasibleSpace.min"]


def test_substitution_replaces_every_reference_as_katib_does():
    text = "--lr=${trialParameters.lr} --lr2='${trialParameters.lr}' ${trialParameters.other}"
    assert sweep_spec.substitute(text, {"lr": "0.1"}) == "--lr=0.1 --lr2='0.1' ${trialParameters.other}"


def test_validate_returns_problems_for_live_validation():
    assert sweep_spec.validate(yaml.safe_dump(with_script(katib("tpe.yaml")))) == []
    assert sweep_spec.validate("kind: Experiment\n")[0]["path"] == "metadata.name"


def test_a_trial_parameter_may_not_take_a_name_the_runtime_or_hub_sets():
    document = with_script(katib("random.yaml"), "#!/bin/bash\necho ${trialParameters.PATH}\n")
    document["spec"]["trialTemplate"]["trialParameters"][0]["name"] = "PATH"
    found = problems_of(document)
    assert found[0]["path"] == "spec.trialTemplate.trialParameters[0].name" and "PATH" in found[0]["message"]


def test_metric_strategies_default_to_the_objectives_direction_and_are_checked():
    document = with_script(katib("random.yaml"))
    document["spec"]["objective"]["additionalMetricNames"] = ["Train-accuracy"]
    spec = sweep_spec.parse(document)
    assert spec.metric_strategies == {"loss": "min", "Train-accuracy": "min"}
    document["spec"]["objective"]["metricStrategies"] = [{"name": "Train-accuracy", "value": "latest"}]
    spec = sweep_spec.parse(document)
    assert spec.metric_strategies == {"loss": "min", "Train-accuracy": "latest"}
    assert spec.metric_value("Train-accuracy", [(0, 0.9), (1, 0.7)]) == 0.7
    assert spec.metric_value("loss", [(0, 0.9), (1, 0.7), (2, 0.8)]) == 0.7
    document["spec"]["objective"]["metricStrategies"] = [
        {"name": "accuracy", "value": "min"},
        {"name": "Train-accuracy", "value": "median"},
    ]
    found = {p["path"]: p["message"] for p in problems_of(document)}
    assert "'accuracy' is neither the objective metric" in found["spec.objective.metricStrategies[0].name"]
    assert "min, max, latest" in found["spec.objective.metricStrategies[1].value"]
