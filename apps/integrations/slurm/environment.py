"""Which environment variables a job may be given, and how they travel to sbatch.

A job's environment (the user's parameters, plus the hub's own MLFLOW_*/AXLE_* variables)
never becomes the environment of a command the hub runs, and never appears on a command
line: over SSH it is written to a private NUL-separated file that sbatch reads with
``--export-file`` (values are bytes, not shell words), over slurmrestd it is the JSON
``environment``. What is left to decide is which names are allowed at all.

Refused names are those that change how programs (not the user's own code) behave:
which program runs (``PATH``, ``CDPATH``), what a shell does before or while it runs a
script (``BASH_ENV``, ``ENV``, ``IFS``, ``SHELLOPTS``, ``PS4``, ``PROMPT_COMMAND``), what the
dynamic loader injects (``LD_*``, ``GCONV_PATH``, ``GLIBC_TUNABLES``), what interpreters load
first (``PYTHON*``, ``PERL5*``, ``RUBY*``, ``NODE_OPTIONS``, ``JAVA_TOOL_OPTIONS``), where
git, ssh and TLS look (``GIT_*``, ``SSH_*``, CA bundles, proxies, which would route the
job's MLflow credential), who the job is (``HOME``, ``USER``, ``SHELL``, ``KRB5*``), and the
variables Slurm, its commands and the hub set themselves (``SLURM_*``, ``SBATCH_*``,
``SRUN_*``, ``SALLOC_*``, ``SQUEUE_*``, ``SACCT_*``, ``CUDA_VISIBLE_DEVICES``, ``MLFLOW_*``,
``AXLE_*``). A script may still set any of them itself: the rule is about parameters, which
are meant to be values (learning rates, paths to data), not a way to reconfigure programs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME_LENGTH = 64

# Set by the hub for every job: parameters may not take or shadow them.
HUB_PREFIXES = ("MLFLOW_", "AXLE_")

RUNTIME_NAMES = frozenset(
    {
        # which program runs, and what a shell does around it
        "PATH",
        "CDPATH",
        "ENV",
        "BASH_ENV",
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "GLOBIGNORE",
        "PS4",
        "PROMPT_COMMAND",
        "POSIXLY_CORRECT",
        # who the job is and where it lives
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "MAIL",
        # the C library and the loader
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "TZDIR",
        # interpreters' start-up hooks
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "R_PROFILE",
        "R_PROFILE_USER",
        "R_ENVIRON",
        "R_ENVIRON_USER",
        "LUA_PATH",
        "LUA_CPATH",
        "TCLLIBPATH",
        # trust and network routes (the job carries an MLflow credential)
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "OPENSSL_CONF",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        # devices Slurm assigns to the job
        "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
    }
)
RUNTIME_PREFIXES = (
    "LD_",
    "DYLD_",
    "MALLOC_",
    "PYTHON",
    "PERL5",
    "PERLLIB",
    "RUBY",
    "GEM_",
    "BUNDLE_",
    "GIT_",
    "SSH_",
    "KRB5",
    "SLURM_",
    "SBATCH_",
    "SALLOC_",
    "SRUN_",
    "SQUEUE_",
    "SACCT_",
    "SINFO_",
    "SCANCEL_",
    "SCONTROL_",
    "SACCTMGR_",
    "PMI_",
    "PMIX_",
    "BASH_FUNC_",
)


class EnvironmentRefused(ValueError):
    """A name or value that may not reach a job's environment; the message says why."""


def runtime_name_problem(name: object) -> str | None:
    """Why `name` may not be in a job's environment at all (None if it may).

    Checked case-insensitively: many programs read ``http_proxy`` as well as ``HTTP_PROXY``,
    and a near-miss like ``Path`` is more likely a mistake than a parameter."""
    if not isinstance(name, str) or not NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        return (
            f"{str(name)[:80]!r} cannot be an environment variable name: use letters, digits and _, "
            f"not starting with a digit, at most {MAX_NAME_LENGTH} characters."
        )
    upper = name.upper()
    if upper in RUNTIME_NAMES or upper.startswith(RUNTIME_PREFIXES):
        return (
            f"{name} changes how programs run (the shell, the loader, interpreters, Slurm), "
            "so it cannot be a parameter; set it in the script itself if the job needs it."
        )
    return None


def parameter_name_problem(name: object) -> str | None:
    """Why `name` may not be a job parameter (None if it may): the runtime names, and the
    names the hub sets for every job."""
    problem = runtime_name_problem(name)
    if problem is None and str(name).upper().startswith(HUB_PREFIXES):
        problem = f"{name} uses a prefix the hub sets for every job ({', '.join(HUB_PREFIXES)})."
    return problem


def value_problem(name: str, value: str) -> str | None:
    if "\x00" in value:
        return f"The value of {name} contains a NUL character, which no environment can hold."
    return None


def check(env: Mapping[str, str]) -> None:
    """Raise EnvironmentRefused unless every variable may reach a job (hub's own included)."""
    for name, value in env.items():
        problem = runtime_name_problem(name)
        if problem is None and not isinstance(value, str):
            problem = f"The value of {name} is not text."
        problem = problem or value_problem(name, value)
        if problem:
            raise EnvironmentRefused(problem)


def export_file(env: Mapping[str, str]) -> bytes:
    """The content of sbatch's ``--export-file``: ``NAME=value`` entries separated by NUL,
    so a value may hold newlines, quotes, commas or ``$(...)`` and stays one value."""
    check(env)
    return b"".join(f"{name}={value}".encode() + b"\x00" for name, value in env.items())
