"""The pipeline file read without a cluster: order, implied needs, and problems that name
their field and line."""

import pytest

from apps.pipelines.spec import SpecError, parse

S = "#!/bin/bash\necho hi\n"


def _problems(text: str) -> list[dict]:
    with pytest.raises(SpecError) as exc:
        parse(text)
    return exc.value.problems


def test_it_orders_steps_topologically_and_adds_the_needs_inputs_imply():
    spec = parse(
        """
name: p
parameters: {EPOCHS: 3, FAST: true}
steps:
  train:
    script: train.sbatch
    inputs: {data: prepare.data}
    outputs: [model]
  prepare:
    script: prep.sbatch
    outputs: [data]
"""
    )
    assert list(spec.steps) == ["prepare", "train"]
    assert spec.steps["train"].needs == ["prepare"]
    assert spec.steps["train"].inputs == {"data": ("prepare", "data")}
    assert spec.parameters == {"EPOCHS": "3", "FAST": "true"}
    assert spec.script_paths() == ["prep.sbatch", "train.sbatch"]


def test_an_inline_script_is_kept_as_written():
    spec = parse("name: p\nsteps:\n  a:\n    script: |\n      #!/bin/bash\n      echo hi\n")
    assert spec.steps["a"].script == S and spec.steps["a"].script_path == ""


def test_a_cycle_is_named_in_full_with_its_line():
    problems = _problems(
        "name: p\nsteps:\n  a:\n    script: a.sh\n    needs: [c]\n  b:\n    script: b.sh\n    needs: [a]\n"
        "  c:\n    script: c.sh\n    needs: [b]\n"
    )
    assert len(problems) == 1
    assert problems[0]["path"] == "steps.a.needs" and problems[0]["line"] == 5
    assert "a -> c -> b -> a" in problems[0]["message"]


def test_unknown_steps_and_outputs_name_the_step_and_field():
    problems = _problems(
        """name: p
steps:
  prepare:
    script: p.sh
    outputs: [data]
  train:
    script: t.sh
    needs: [preprocess]
    inputs:
      data: prepare.dataset
      other: nowhere.x
"""
    )
    by_path = {p["path"]: p for p in problems}
    assert "'preprocess', which is not a step" in by_path["steps.train.needs"]["message"]
    assert by_path["steps.train.needs"]["line"] == 8
    assert "step prepare has no output 'dataset' (its outputs: data)" in by_path["steps.train.inputs.data"]["message"]
    assert by_path["steps.train.inputs.data"]["line"] == 10
    assert "there is no step 'nowhere'" in by_path["steps.train.inputs.other"]["message"]


def test_it_refuses_reserved_parameter_names_and_bad_fields():
    problems = _problems(
        """name: p
parameters: {AXLE_X: 1, OUTPUT_DATA: 2}
steps:
  a:
    script: a.sh
    cache: sometimes
    retries: 3
"""
    )
    paths = {p["path"] for p in problems}
    assert {"parameters.AXLE_X", "parameters.OUTPUT_DATA", "steps.a.cache", "steps.a.retries"} <= paths


def test_bad_yaml_says_the_line():
    problems = _problems("name: p\nsteps:\n  a: [\n")
    assert problems[0]["path"] == "(file)" and problems[0]["line"] is not None


def test_a_script_path_may_not_leave_the_repository():
    problems = _problems("name: p\nsteps:\n  a:\n    script: ../../etc/passwd\n")
    assert problems[0]["path"] == "steps.a.script"


def test_dependents_are_transitive():
    spec = parse(
        "name: p\nsteps:\n  a: {script: a.sh}\n  b: {script: b.sh, needs: [a]}\n  c: {script: c.sh, needs: [b]}\n"
        "  d: {script: d.sh}\n"
    )
    assert spec.dependents({"b"}) == {"b", "c"}
    assert spec.dependents({"a"}) == {"a", "b", "c"}
