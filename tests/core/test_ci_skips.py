"""A green CI run cannot hide an untested spoke: with CI=true, a test that skips because the
local Slurm stack (or MLflow, Chromium, PostgreSQL) is missing fails the run."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NEEDS_THE_CLUSTER = """
import os
from pathlib import Path

import pytest


@pytest.fixture
def cluster_env():
    path = Path(os.environ["AXLE_LOCAL_CLUSTER_ENV"])
    if not path.exists():
        pytest.skip(f"{path} is missing: the local Slurm cluster is not up")
    return path

@pytest.mark.slurm
def test_submits_a_job(cluster_env):
    assert cluster_env.exists()

def test_needs_nothing():
    assert True

@pytest.mark.xfail(reason="a known bug, not a missing service", strict=True)
def test_known_bug():
    assert False
"""

SKIPPED_MODULE = """
import pytest

pytest.skip("Chromium is not installed", allow_module_level=True)

def test_logs_in():
    assert True
"""


NOT_APPLICABLE_HERE = """
from tests.ci_skips import skip_not_applicable

def test_append_only_file():
    skip_not_applicable("tmpfs does not support chattr +a")
"""


def _run(pytester, monkeypatch, source: str, *, ci: str | None):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("AXLE_LOCAL_CLUSTER_ENV", str(pytester.path / "no-such-cluster.env"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeini("[pytest]\nmarkers =\n    slurm: needs the local Slurm cluster\n")
    pytester.makepyfile(test_spoke=source)
    return pytester.runpytest_subprocess("-p", "tests.ci_skips", "-p", "no:django", "-p", "no:cacheprovider", "-rA")


def test_in_ci_a_test_skipped_for_a_missing_cluster_fails_the_run(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, NEEDS_THE_CLUSTER, ci="true")
    result.assert_outcomes(passed=1, errors=1, xfailed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*skipped in CI*no-such-cluster.env is missing*"])


def test_outside_ci_the_same_test_only_skips(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, NEEDS_THE_CLUSTER, ci=None)
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == 0


def test_in_ci_a_module_skipped_at_collection_fails_the_run(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, SKIPPED_MODULE, ci="true")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*skipped in CI*Chromium is not installed*"])


def test_the_suite_loads_the_plugin(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("tests.ci_skips")


def test_in_ci_a_test_not_applicable_to_the_hosts_filesystem_stays_a_skip(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, NOT_APPLICABLE_HERE, ci="true")
    result.assert_outcomes(skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*not applicable on this host: tmpfs does not support chattr +a*"])
