"""Checking a script against a grant before anything reaches Slurm (pure, no I/O)."""

from dataclasses import dataclass, field

from django.utils import timezone

from apps.clusters.models import Cluster, ClusterGrant
from apps.core.tasks import enqueue
from apps.integrations.slurm import environment, names, policy, request, sbatch

MAX_SCRIPT_BYTES = 256 * 1024
CONFIG_UNKNOWN = "The cluster's configuration has not been read yet; try again in a minute."
NAME_CONTROL = (
    "The job name holds a control character (a line break, tab, escape or the like), which would "
    "corrupt Slurm's listings; use printable characters only."
)


@dataclass
class Validation:
    """Everything job creation needs from one parse of the script: the problems, the
    effective request, the clean parameters and the hub's own options and log paths."""

    effective_request: dict = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    stdout_path: str = ""
    stderr_path: str = ""
    # The hub's own sbatch options for this job: log paths, and what the script leaves to
    # Slurm's defaults that the grant must bound (time, partition, memory).
    hub_args: list[str] = field(default_factory=list)
    # The script's directives as parsed here ([line, option, value, text] each), recorded on
    # the job so submission translates them without reading the script again.
    script_directives: list[list] = field(default_factory=list)

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


def grant_limits(grant: ClusterGrant, workdir: str, job_name: str | None = None) -> policy.Limits:
    state = grant.cluster.state or {}
    default_partition = next((p["name"] for p in state.get("partitions", []) if p.get("is_default")), None)
    return policy.Limits(
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
        # Before the job has a name (a preview), %x stands for the default one; the job is
        # checked again with its real name when it is created.
        job_name=job_name or "job",
        username=grant.cluster_username,
        rest=grant.cluster.transport == Cluster.Transport.REST,
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


def validate(
    *, script: str, grant: ClusterGrant | None, workdir: str, parameters=None, name: str | None = None
) -> Validation:
    """Resolve the effective request as Slurm would and list every problem with the grant.
    The script is parsed once."""
    result = Validation()
    result.parameters = validate_parameters(parameters, result)
    if name and policy.has_control_characters(name):
        result.add(NAME_CONTROL)
    if not script or not script.strip():
        result.add("The script is empty.")
        return result
    if len(script) > MAX_SCRIPT_BYTES or len(script.encode("utf-8")) > MAX_SCRIPT_BYTES:
        result.add(f"The script is larger than {MAX_SCRIPT_BYTES // 1024} KiB.")
        return result
    if "\r\n" in script:
        result.add("The script has DOS line breaks (\\r\\n); sbatch refuses them. Save it with UNIX line breaks.")
        return result
    if "\0" in script:
        result.add("The script holds a NUL character, which sbatch refuses; save it as plain text.")
        return result
    if not script.startswith("#!"):
        # sbatch itself refuses a script without an interpreter line.
        result.add("The script must start with an interpreter line such as #!/bin/bash, as sbatch requires.", 1)
    if grant is not None and (problem := names.name_problem(grant.cluster_username, "The grant's cluster username")):
        # stored before names were checked: Slurm would read it as more than one user
        result.add(f"{problem} An administrator must correct the grant.")
    partitions = request.partitions_from_state(grant.cluster.state) if grant else None
    if grant is not None and partitions is None:
        # Without the partitions' defaults the hub cannot see what Slurm would give the job.
        result.add(CONFIG_UNKNOWN)
        refresh_cluster_later(grant.cluster)
    directives, problems = sbatch.parse_script(script)
    result.script_directives = [d.as_list() for d in directives]
    # What the script alone asks decides the log file names and the defaults the hub adds.
    script_only = request.resolve(directives, [])
    if partitions is not None:
        request.apply_cluster(script_only, partitions)
    result.stdout_path, result.stderr_path = log_paths(workdir, script_only.array is not None)
    args = [
        *hub_args(stdout_path=result.stdout_path, stderr_path=result.stderr_path),
        *request.hub_defaults(
            script_only,
            max_time_minutes=grant.max_time_minutes if grant else None,
            max_mem_mb=grant.max_mem_mb if grant else None,
        ),
    ]
    cli, cli_problems = sbatch.parse_command_line(args)
    problems.extend(cli_problems)
    req = request.resolve([*directives, *cli], problems)
    if partitions is not None:
        request.apply_cluster(req, partitions)
    if partitions is not None and (unknown := request.unknown_partitions(req, partitions)):
        result.add(
            f"Cluster {grant.cluster.name} has no partition {', '.join(unknown)} in its configuration as last "
            f"read (known: {', '.join(p.name for p in partitions)}); if it is new, try again in a minute.",
            req.winning["partition"].line if "partition" in req.winning else None,
        )
        refresh_cluster_later(grant.cluster)
    for p in problems:
        result.add(p.message, p.line)
    result.effective_request = req.as_dict()
    result.hub_args = args
    if grant is not None:
        for p in policy.check_against_limits(req, grant_limits(grant, workdir, name)):
            result.add(p.message, p.line)
    if len(result.problems) > sbatch.MAX_PROBLEMS + 1:
        result.problems[sbatch.MAX_PROBLEMS :] = [{"line": None, "message": f"{sbatch.STOPPED}."}]
    return result


def refresh_cluster_later(cluster: Cluster) -> None:
    """Queue a read of the cluster's configuration (its health check), so that the next
    try finds it."""
    enqueue("apps.clusters.tasks.cluster_refresh_health", cluster.pk)


def grant_problems_at_submission(*, job, grant: ClusterGrant) -> list[str]:
    """What keeps a job created earlier from being submitted now: its grant no longer
    usable, or narrowed so that the request recorded at creation (the script and the
    hub's options as stored) no longer fits. One sentence each."""
    if grant.status != ClusterGrant.Status.ACTIVE:
        return [f"Your grant on {grant.cluster.name} is {grant.get_status_display().lower()}."]
    if not grant.cluster.is_active:
        return [f"Cluster {grant.cluster.name} was taken out of service."]
    if grant.valid_until is not None and grant.valid_until <= timezone.now():
        return [f"Your grant on {grant.cluster.name} expired at {grant.valid_until:%Y-%m-%d %H:%M} UTC."]
    if grant.cluster_username != job.cluster_username:
        return [f"Your grant on {grant.cluster.name} now runs jobs as another cluster account."]
    partitions = request.partitions_from_state(grant.cluster.state)
    req, problems = request.effective_request(job.script, list(job.hub_args), partitions)
    problems += policy.check_against_limits(req, grant_limits(grant, job.workdir, job.name))
    return [(f"line {p.line}: " if p.line else "") + p.message for p in problems[: sbatch.MAX_PROBLEMS]]
