"""In CI a skip is a failure.

Locally a test that needs the Slurm stack, MLflow, Chromium or PostgreSQL skips when that is
not up, so a laptop can run the rest. CI (``CI=true``) starts all of them, so a skip there means
a spoke went untested while the run looked green: this plugin turns every skip into a failure
that says why it was skipped. Deselecting with ``-m`` is not a skip and stays allowed.

One kind of skip stays a skip in CI: ``skip_not_applicable(reason)``, for a test that checks a
property the host's filesystem or kernel cannot have (``chattr +a`` on tmpfs or overlayfs),
not a service that should have been started. Use it only where CI could not make it pass."""

import os

import pytest

CI_MESSAGE = "skipped in CI, where every service is up, so this counts as a failure"
NOT_APPLICABLE = "not applicable on this host: "


def skip_not_applicable(reason: str):
    pytest.skip(NOT_APPLICABLE + reason)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _fail_if_skipped(report) -> None:
    if not in_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if reason.startswith(("Skipped: " + NOT_APPLICABLE, NOT_APPLICABLE)):
        return
    report.outcome = "failed"
    report.longrepr = f"{CI_MESSAGE}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module that calls pytest.skip(allow_module_level=True) skips at collection.
    outcome = yield
    _fail_if_skipped(outcome.get_result())
