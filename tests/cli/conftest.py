"""The installed `axle` command run as a person runs it: a subprocess with its own config
folder, against the portal of the suite (pytest-django's live_server) and, where a test says
so, the real local Slurm cluster and MLflow. The workers' loops are driven by the test while
the command waits (`drive`), as tests/browser does."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.accounts import services as account_services
from tests.serving.conftest import real_version, serving_dir, trained_model  # noqa: F401  (shared fixtures)

AXLE = Path(sys.executable).with_name("axle")


class Axle:
    """`axle` for one person: their own $XDG_CONFIG_HOME, nothing from the caller's AXLE_*."""

    def __init__(self, url: str, home: Path):
        self.url = url
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AXLE_") or k == "AXLE_DEBUG"}
        self.env.update(XDG_CONFIG_HOME=str(home), COLUMNS="200", NO_COLOR="1")

    @property
    def config(self) -> Path:
        return self.home / "axle" / "config.toml"

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120, env=None):
        result = subprocess.run(
            [str(AXLE), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )
        assert "Traceback" not in result.stderr, result.stderr  # never a stack trace, whatever happened
        return result

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(AXLE), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def login(self, user) -> str:
        _, key = account_services.token_create(user=user, name="cli test")
        result = self("login", "--url", self.url, input=key + "\n")
        assert result.returncode == 0, result.stderr
        return key


@pytest.fixture(scope="session")
def axle_installed():
    if not AXLE.exists():
        pytest.fail(f"{AXLE} is missing: install the client with `pip install ./clients/python` (./dev test does)")
    return AXLE


@pytest.fixture
def axle_for(axle_installed, live_server, tmp_path):
    """axle_for(user): the command, logged in as that user with a new token."""

    def make(user=None, name: str | None = None) -> Axle:
        home = tmp_path / f"home-{name or (user.username if user else 'nobody')}"
        home.mkdir(exist_ok=True)
        axle = Axle(live_server.url, home)
        if user is not None:
            axle.login(user)
        return axle

    return make


def drive(proc: subprocess.Popen, step, *, timeout: float = 600) -> tuple[int, str, str]:
    """Do the workers' work (`step()`) until the command exits; (exit code, stdout, stderr).
    The local cluster has one node of 2 CPUs that the whole suite shares: a job may wait minutes
    for it, so the time allowed is long."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"axle still running after {timeout} s\n{out}\n{err}")
        step()
        time.sleep(1)
    out, err = proc.communicate()
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
