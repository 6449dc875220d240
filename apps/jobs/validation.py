"""Checking a script against a grant before anything reaches Slurm (pure, no I/O)."""

from dataclasses import dataclass, field

from apps.clusters.models import ClusterGrant
from apps.integrations.slurm import environment, sbatch

MAX_SCRIPT_BYTES = 256 * 1024


@dataclass
class Validation:
    effective_request: dict = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str, line: int | None = None) -> None:
        self.problems.append({"line": line, "message": message})


def log_paths(workdir: str, is_array: bool) -> tuple[str, str]:
    # Slurm fills %j (job id), %A (array's job id) and %a (task index) itself.
    stem = "slurm-%A_%a" if is_array else "slurm-%j"
    return f"{workdir}/{stem}.out", f"{workdir}/{stem}.err"


def hub_args(*, stdout_path: str, stderr_path: str) -> list[str]:
    """The hub's own sbatch options; on the command line they override the script."""
    return [f"--output={stdout_path}", f"--error={stderr_path}"]


def grant_limits(grant: ClusterGrant, workdir: str) -> sbatch.Limits:
    state = grant.cluster.state or {}
    default_partition = next((p["name"] for p in state.get("partitions", []) if p.get("is_default")), None)
    return sbatch.Limits(
        allowed_partitions=frozenset(grant.allowed_partitions or []),
        allowed_accounts=frozenset(grant.allowed_accounts or []),
        allowed_qos=frozenset(grant.allowed_qos or []),
        default_partition=default_partition,
        max_nodes=grant.max_nodes,
        max_cpus=grant.max_cpus,
        max_gpus=grant.max_gpus,
        max_mem_mb=grant.max_mem_mb,
        max_time_minutes=grant.max_time_minutes,
        max_array_size=grant.max_array_size,
        job_root=grant.job_root,
        workdir=workdir,
    )


def validate_parameters(parameters, result: Validation) -> dict[str, str]:
    if parameters in (None, ""):
        return {}
    if not isinstance(parameters, dict):
        result.add("Parameters must be an object of NAME: value pairs.")
        return {}
    clean: dict[str, str] = {}
    for name, value in parameters.items():
        if problem := environment.parameter_name_problem(name):
            result.add(f"Parameter {problem}")
            continue
        if isinstance(value, (dict, list)):
            result.add(f"Parameter {name} must be a plain value (text or number), not a list or object.")
            continue
        clean[name] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if problem := environment.value_problem(name, clean[name]):
            result.add(problem)
    return clean


def validate(*, script: str, grant: ClusterGrant | None, workdir: str, parameters=None) -> tuple[Validation, dict]:
    """Resolve the effective request as sbatch would and list every problem with the grant."""
    result = Validation()
    params = validate_parameters(parameters, result)
    if not script or not script.strip():
        result.add("The script is empty.")
        return result, params
    if len(script.encode("utf-8")) > MAX_SCRIPT_BYTES:
        result.add(f"The script is larger than {MAX_SCRIPT_BYTES // 1024} KiB.")
        return result, params
    if "\r\n" in script:
        result.add("The script has DOS line breaks (\\r\\n); sbatch refuses them. Save it with UNIX line breaks.")
        return result, params
    if not script.startswith("#!"):
        # sbatch itself refuses a script without an interpreter line.
        result.add("The script must start with an interpreter line such as #!/bin/bash, as sbatch requires.", 1)
    # Whether the script is an array decides the log file names the hub adds.
    script_only, _ = sbatch.effective_request(script)
    stdout_path, stderr_path = log_paths(workdir, script_only.array is not None)
    request, problems = sbatch.effective_request(script, hub_args(stdout_path=stdout_path, stderr_path=stderr_path))
    for p in problems:
        result.add(p.message, p.line)
    result.effective_request = request.as_dict()
    if grant is not None:
        for p in sbatch.check_against_limits(request, grant_limits(grant, workdir)):
            result.add(p.message, p.line)
    return result, params
