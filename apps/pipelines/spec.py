"""The pipeline file (``axle-pipeline.yaml``), read and checked without I/O.

    name: digits
    parameters:            # defaults; a run may override them
      EPOCHS: 15
    steps:
      prepare:
        script: examples/digits-pipeline/prepare.sbatch   # a path in the repo at the run's commit
        outputs: [data]                                    # folders, given as $OUTPUT_DATA
      train:
        needs: [prepare]
        script: examples/digits-pipeline/train.sbatch
        parameters: {LEARNING_RATE: 0.01}
        inputs: {data: prepare.data}                       # given as $INPUT_DATA
        outputs: [model]
        register_model: digits-classifier
        cache: false

Every problem names its field (``steps.train.inputs.data``) and, where the YAML says, its
line. Nothing here raises anything but ``SpecError``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from apps.core.errors import ValidationFailed
from apps.integrations.slurm.environment import parameter_name_problem

MAX_FILE_BYTES = 256 * 1024
MAX_STEPS = 100
STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
OUTPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
STEP_KEYS = {"needs", "script", "sweep", "parameters", "inputs", "outputs", "register_model", "cache", "description"}
TOP_KEYS = {"name", "description", "parameters", "steps"}
RESERVED_PREFIXES = ("OUTPUT_", "INPUT_")


def output_env(name: str) -> str:
    return f"OUTPUT_{name.upper()}"


def input_env(name: str) -> str:
    return f"INPUT_{name.upper()}"


class SpecError(ValidationFailed):
    """The pipeline file cannot run; ``problems`` lists each with its field path and line."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__("The pipeline file has problems: " + describe(problems), extra={"problems": problems})


def describe(problems: list[dict]) -> str:
    return "; ".join(
        (f"line {p['line']}: " if p.get("line") else "") + f"{p['path']}: {p['message']}" for p in problems
    )


@dataclass
class Step:
    name: str
    needs: list[str] = field(default_factory=list)
    script_path: str = ""  # in the repository, at the run's commit
    script: str = ""  # inline, or read from script_path
    parameters: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (step, output)
    outputs: list[str] = field(default_factory=list)
    register_model: str = ""
    cache: bool = True
    sweep_path: str = ""  # a Katib Experiment in the repository: the step is a sweep
    sweep_text: str = ""
    line: int | None = None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "needs": self.needs,
            "script_path": self.script_path,
            "script": self.script,
            "parameters": self.parameters,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "outputs": self.outputs,
            "register_model": self.register_model,
            "cache": self.cache,
            "sweep_path": self.sweep_path,
            "sweep_text": self.sweep_text,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        return cls(
            name=d["name"],
            needs=list(d.get("needs", [])),
            script_path=d.get("script_path", ""),
            script=d.get("script", ""),
            parameters=dict(d.get("parameters", {})),
            inputs={k: (v[0], v[1]) for k, v in d.get("inputs", {}).items()},
            outputs=list(d.get("outputs", [])),
            register_model=d.get("register_model", ""),
            cache=bool(d.get("cache", True)),
            sweep_path=d.get("sweep_path", ""),
            sweep_text=d.get("sweep_text", ""),
        )


@dataclass
class Spec:
    name: str
    parameters: dict[str, str]
    steps: dict[str, Step]  # in topological order
    lines: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "steps": [s.as_dict() for s in self.steps.values()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Spec:
        steps = [Step.from_dict(s) for s in d.get("steps", [])]
        return cls(name=d.get("name", ""), parameters=dict(d.get("parameters", {})), steps={s.name: s for s in steps})

    def script_paths(self) -> list[str]:
        paths = {s.script_path for s in self.steps.values() if s.script_path}
        return sorted(paths | {s.sweep_path for s in self.steps.values() if s.sweep_path})

    def dependents(self, names: set[str]) -> set[str]:
        """``names`` and every step that needs one of them, directly or not."""
        found = set(names)
        for step in self.steps.values():  # topological order: needs come first
            if found.intersection(step.needs):
                found.add(step.name)
        return found


def _line_map(text: str) -> dict[str, int]:
    """Field path -> 1-based line, from the YAML's own node marks."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node, path: str) -> None:
        lines.setdefault(path or "(file)", node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = f"{path}[{i}]"
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return lines


def _plain(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


class _Problems:
    def __init__(self, lines: dict[str, int]):
        self.items: list[dict] = []
        self.lines = lines

    def add(self, path: str, message: str) -> None:
        # The field's own line, or its nearest parent's when the field is missing.
        probe, line = path, self.lines.get(path)
        while line is None and "." in probe:
            probe = probe.rsplit(".", 1)[0]
            line = self.lines.get(probe)
        self.items.append({"path": path, "line": line, "message": message})


def _parameters(raw, path: str, problems: _Problems) -> dict[str, str]:
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        problems.add(path, "must be a mapping of NAME: value.")
        return {}
    clean = {}
    for name, value in raw.items():
        sub = f"{path}.{name}"
        if problem := parameter_name_problem(name):
            problems.add(sub, problem)
            continue
        if str(name).upper().startswith(RESERVED_PREFIXES):
            problems.add(sub, f"{name} uses a prefix kept for outputs and inputs (OUTPUT_, INPUT_).")
            continue
        if isinstance(value, (dict, list)):
            problems.add(sub, "must be a plain value (text or number), not a list or mapping.")
            continue
        clean[str(name)] = _plain(value)
    return clean


def parse(text: str) -> Spec:
    """Read and check a pipeline file. Raises SpecError listing every problem."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_FILE_BYTES:
        raise SpecError([{"path": "(file)", "line": None, "message": f"larger than {MAX_FILE_BYTES // 1024} KiB."}])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(
            [
                {
                    "path": "(file)",
                    "line": mark.line + 1 if mark else None,
                    "message": f"is not valid YAML: {getattr(exc, 'problem', None) or exc}",
                }
            ]
        ) from None
    lines = _line_map(text)
    problems = _Problems(lines)
    if not isinstance(data, dict):
        raise SpecError([{"path": "(file)", "line": None, "message": "must be a mapping with name and steps."}])
    for key in data:
        if key not in TOP_KEYS:
            problems.add(str(key), f"unknown field; a pipeline has {', '.join(sorted(TOP_KEYS))}.")
    name = _plain(data.get("name")).strip()
    if not name:
        problems.add("name", "the pipeline needs a name.")
    parameters = _parameters(data.get("parameters"), "parameters", problems)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        problems.add("steps", "must be a mapping of step name to step, with at least one step.")
        raise SpecError(problems.items)
    if len(raw_steps) > MAX_STEPS:
        problems.add("steps", f"has {len(raw_steps)} steps; a pipeline may have up to {MAX_STEPS}.")
    steps: dict[str, Step] = {}
    for raw_name, raw in raw_steps.items():
        step_name = str(raw_name)
        path = f"steps.{step_name}"
        if not STEP_NAME.match(step_name):
            problems.add(path, "a step name is lower-case letters, digits, - and _, starting with a letter.")
        if not isinstance(raw, dict):
            problems.add(path, "must be a mapping (script, needs, outputs, ...).")
            continue
        for key in raw:
            if key not in STEP_KEYS:
                problems.add(f"{path}.{key}", f"unknown field; a step has {', '.join(sorted(STEP_KEYS))}.")
        step = Step(name=step_name, line=lines.get(path))
        sweep = raw.get("sweep")
        if sweep is not None:
            if not isinstance(sweep, str) or not sweep.strip() or "\n" in sweep.strip():
                problems.add(f"{path}.sweep", "the path of a Katib Experiment (YAML) in the repository.")
            elif ".." in sweep.strip().split("/") or sweep.strip().startswith("/"):
                problems.add(f"{path}.sweep", "a path relative to the repository's root, without '..'.")
            else:
                step.sweep_path = sweep.strip().removeprefix("./")
            if raw.get("register_model"):
                problems.add(
                    f"{path}.register_model", "a sweep step hands its best trial on; register in a later step."
                )
        script = raw.get("script")
        if sweep is not None and script is None:
            pass  # the trial script is the Experiment's trialSpec
        elif not isinstance(script, str) or not script.strip():
            problems.add(f"{path}.script", "every step needs a script: a path in the repository, or the script inline.")
        elif "\n" in script.strip() or script.startswith("#!"):
            step.script = script
        else:
            raw_path = script.strip()
            step.script_path = raw_path[2:] if raw_path.startswith("./") else raw_path
            if ".." in raw_path.split("/") or raw_path.startswith("/"):
                problems.add(f"{path}.script", "a script path is relative to the repository's root, without '..'.")
        needs = raw.get("needs") or []
        if isinstance(needs, str):
            needs = [needs]
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            problems.add(f"{path}.needs", "must be a list of step names.")
            needs = []
        step.needs = list(dict.fromkeys(needs))
        step.parameters = _parameters(raw.get("parameters"), f"{path}.parameters", problems)
        outputs = raw.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            problems.add(f"{path}.outputs", "must be a list of output names.")
            outputs = []
        for out in outputs:
            if not OUTPUT_NAME.match(out):
                problems.add(f"{path}.outputs", f"{out!r}: an output name is lower-case letters, digits and _.")
        step.outputs = list(dict.fromkeys(outputs))
        inputs = raw.get("inputs") or {}
        if not isinstance(inputs, dict):
            problems.add(f"{path}.inputs", "must be a mapping of input name to step.output.")
            inputs = {}
        for in_name, ref in inputs.items():
            sub = f"{path}.inputs.{in_name}"
            if not OUTPUT_NAME.match(str(in_name)):
                problems.add(sub, "an input name is lower-case letters, digits and _.")
                continue
            if not isinstance(ref, str) or ref.count(".") != 1:
                problems.add(sub, "must name another step's output as step.output (prepare.data).")
                continue
            src, out = ref.split(".")
            step.inputs[str(in_name)] = (src, out)
        model = raw.get("register_model")
        if model not in (None, "") and not isinstance(model, str):
            problems.add(f"{path}.register_model", "must be the name of a registered model.")
        step.register_model = (model or "").strip() if isinstance(model, str) else ""
        cache = raw.get("cache", True)
        if not isinstance(cache, bool):
            problems.add(f"{path}.cache", "must be true or false.")
        step.cache = cache is not False and not step.sweep_path
        steps[step_name] = step
    # References between steps.
    for step in steps.values():
        path = f"steps.{step.name}"
        for need in step.needs:
            if need not in steps:
                problems.add(f"{path}.needs", f"needs {need!r}, which is not a step of this pipeline.")
            elif need == step.name:
                problems.add(f"{path}.needs", "a step cannot need itself.")
        for in_name, (src, out) in step.inputs.items():
            sub = f"{path}.inputs.{in_name}"
            if src not in steps:
                problems.add(sub, f"{src}.{out}: there is no step {src!r}.")
            elif out not in steps[src].outputs:
                known = ", ".join(steps[src].outputs) or "none"
                problems.add(sub, f"{src}.{out}: step {src} has no output {out!r} (its outputs: {known}).")
            elif src == step.name:
                problems.add(sub, "a step cannot read its own output.")
            elif src not in step.needs:
                # An input is a dependency: the producing step must have ended first.
                step.needs.append(src)
    order = _topological(steps, problems)
    if problems.items:
        raise SpecError(problems.items)
    return Spec(name=name, parameters=parameters, steps={n: steps[n] for n in order}, lines=lines)


def _topological(steps: dict[str, Step], problems: _Problems) -> list[str]:
    """Kahn's order, keeping the file's order among ready steps; a cycle is named in full."""
    remaining = {n: [d for d in s.needs if d in steps and d != n] for n, s in steps.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, deps in remaining.items() if all(d in order for d in deps)]
        if not ready:
            cycle = _find_cycle(remaining)
            problems.add(
                f"steps.{cycle[0]}.needs", "the steps' needs form a cycle: " + " -> ".join([*cycle, cycle[0]]) + "."
            )
            break
        for n in ready:
            order.append(n)
            del remaining[n]
    return order


def _find_cycle(remaining: dict[str, list[str]]) -> list[str]:
    start = next(iter(remaining))
    path, seen = [start], {start}
    node = start
    while True:
        node = next(d for d in remaining[node] if d in remaining)
        if node in seen:
            return path[path.index(node) :]
        path.append(node)
        seen.add(node)
