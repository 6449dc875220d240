"""`./dev up`'s demo sweep, against the real local cluster and MLflow: seed_sweep leaves a
finished four-trial sweep of the digits example, one job array, and finds it the next time."""

import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.jobs.models import Job
from apps.sweeps.models import Sweep, Trial
from tests.local_cluster import CLUSTER_ENV, LOCAL_CLUSTER_MISSING, local_cluster_env

pytestmark = [pytest.mark.django_db, pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]


def test_seed_sweep_leaves_a_finished_sweep_once():
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    with override_settings(AXLE_STACK_DIR=str(CLUSTER_ENV.parent)):
        call_command("seed_demo", stdout=StringIO())
        out = StringIO()
        started = time.monotonic()
        call_command("seed_sweep", stdout=out)
        took = time.monotonic() - started
        sweep = Sweep.objects.get(name="digits-lr-demo")
        assert sweep.status == Sweep.Status.SUCCEEDED, (sweep.message, out.getvalue())
        trials = list(sweep.trials.all())
        assert len(trials) == 4 and Job.objects.filter(trials__sweep=sweep).distinct().count() == 1
        assert all(t.state in (Trial.State.SUCCEEDED, Trial.State.EARLY_STOPPED) for t in trials)
        assert sweep.best_value == max(t.objective for t in trials if t.state == Trial.State.SUCCEEDED) > 0.5
        print(f"seed_sweep took {took:.0f} s")  # ./dev up's budget is a minute on an idle machine
        again = StringIO()
        call_command("seed_sweep", stdout=again)
        assert "already ran" in again.getvalue() and Sweep.objects.count() == 1
