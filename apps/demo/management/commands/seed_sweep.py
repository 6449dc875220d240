"""Run a small sweep of the digits example once, so a newcomer finds a finished sweep: four
trials of the learning rate as one job array, two at a time, Katib's median stopping rule
watching their validation accuracy. Idempotent: a second run finds the sweep the first made
(and drives it to its end if it was interrupted). About 40 s on an idle local cluster."""

import time
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Team, User
from apps.clusters.models import Cluster
from apps.clusters.selectors import grant_for_submission
from apps.clusters.transport import slurm_client
from apps.core import context
from apps.jobs import services as job_services
from apps.jobs.models import Job
from apps.sweeps import advance, services
from apps.sweeps.models import Sweep

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "digits"
SWEEP_NAME = "digits-lr-demo"
TIMEOUT_SECONDS = 600


def demo_spec(code_dir: str) -> str:
    """examples/digits/sweep.yaml, made small: four trials of three epochs, code in `code_dir`."""
    document = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    spec = document["spec"]
    document["metadata"]["name"] = SWEEP_NAME
    spec["maxTrialCount"] = 4
    spec["parallelTrialCount"] = 2
    spec["earlyStopping"]["algorithmSettings"] = [
        {"name": "min_trials_required", "value": "2"},
        {"name": "start_step", "value": "2"},
    ]
    script = spec["trialTemplate"]["trialSpec"]
    script = script.replace('CODE="$HOME/axle/examples/digits"', f'CODE="{code_dir}"').replace("EPOCHS=8", "EPOCHS=3")
    spec["trialTemplate"]["trialSpec"] = script
    return yaml.safe_dump(document, sort_keys=False)


class Command(BaseCommand):
    help = "Run a four-trial sweep of the digits example on the local cluster once and leave it finished."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", default="local-ssh")

    def say(self, text: str) -> None:
        self.stdout.write(f"    {text}")
        self.stdout.flush()

    def handle(self, *args, cluster: str, **options):
        scientist = User.objects.get(username="scientist")
        team = Team.objects.get(name="vision")
        cluster_row = Cluster.objects.get(name=cluster)
        grant = grant_for_submission(user=scientist, cluster=cluster_row)
        if grant is None:
            raise CommandError(f"scientist has no usable grant on {cluster}: run seed_demo first.")
        sweep = Sweep.objects.filter(owner=scientist, name=SWEEP_NAME).order_by("-created_at").first()
        if sweep is not None and sweep.status == Sweep.Status.SUCCEEDED:
            self.say(f"demo sweep already ran: {sweep.uuid} (best val_accuracy {sweep.best_value:.3f})")
            return
        with context.bind(actor_id=scientist.pk):
            if sweep is None or sweep.is_terminal:
                code_dir = f"{grant.job_root}/examples/digits"
                with slurm_client(grant) as client:
                    client.files.write(f"{code_dir}/train.py", (EXAMPLE / "train.py").read_bytes())
                sweep = services.sweep_create(
                    user=scientist, cluster=cluster_row, spec_text=demo_spec(code_dir), team=team
                )
                self.say(f"sweep {SWEEP_NAME}: {sweep.max_trial_count} trials of the learning rate, one job array")
            sweep = self._drive(sweep)
        trials = ", ".join(
            f"#{t.number} {t.state}" + (f" {t.objective:.3f}" if t.objective is not None else "")
            for t in sweep.trials.order_by("number")
        )
        self.say(f"sweep {sweep.status}: {trials}")
        if sweep.status != Sweep.Status.SUCCEEDED:
            raise CommandError(f"the demo sweep ended {sweep.status}: {sweep.message}")

    def _drive(self, sweep: Sweep) -> Sweep:
        """What the worker does, here, before the worker runs: launch the array, submit it,
        poll Slurm and advance the sweep until it ends."""
        deadline = time.monotonic() + TIMEOUT_SECONDS
        seen = ""
        while not sweep.is_terminal:
            states = " ".join(sweep.trials.order_by("number").values_list("state", flat=True))
            if states != seen:
                self.say(f"trials: {states}")
                seen = states
            if time.monotonic() > deadline:
                raise CommandError(f"the demo sweep did not finish in {TIMEOUT_SECONDS} s; the worker will follow it")
            services.sweep_launch(sweep_id=sweep.pk)
            for job in Job.objects.filter(trials__sweep=sweep, status=Job.Status.QUEUED).distinct():
                job_services.job_submit(job_id=job.pk)
            job_services.jobs_poll()
            sweep = advance.sweep_advance(sweep_id=sweep.pk)
            if not sweep.is_terminal:
                # Short: each cycle is where a starting task gets its MLflow run and an ended
                # one is noticed, and the demo's budget is a minute.
                time.sleep(0.5)
        return sweep
