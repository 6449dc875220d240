"""Register the digits pipeline (examples/digits-pipeline) and run it once, so a newcomer finds
a pipeline with a finished run: four Slurm jobs linked by afterok, their outputs checksummed,
and the model its last step registered. It waits for the run, printing each change of its
steps, and returns once the run is finished and recorded (outputs checksummed, jobs finalized,
model registered). Idempotent: a second call finds the finished run."""

import time

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Team, User
from apps.clusters.models import Cluster
from apps.clusters.selectors import grant_for_submission
from apps.jobs import services as job_services
from apps.pipelines import services
from apps.pipelines.models import Pipeline, PipelineRun
from apps.pipelines.triggers.services import schedule_ensure
from apps.registry.services import model_version_register_from_job

NAME = "digits"
PATH = "examples/digits-pipeline/axle-pipeline.yaml"
TIMEOUT_SECONDS = 900
SCHEDULE, SCHEDULE_TZ = "0 3 * * *", "UTC"


class Command(BaseCommand):
    help = "Register the digits pipeline on the local cluster and leave one finished run."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", default="local-ssh")
        parser.add_argument("--code-repo", required=True, help="git repository the cluster account can read")
        parser.add_argument("--code-ref", required=True, help="the branch the pipeline follows")
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="submit every step and return: the run goes on on Slurm and the hub's workers record it",
        )

    def say(self, text: str) -> None:
        self.stdout.write(f"    {text}")
        self.stdout.flush()

    def handle(self, *args, cluster: str, code_repo: str, code_ref: str, no_wait: bool = False, **options):
        scientist = User.objects.get(username="scientist")
        team = Team.objects.get(name="vision")
        grant = grant_for_submission(user=scientist, cluster=Cluster.objects.get(name=cluster))
        if grant is None:
            raise CommandError(f"scientist has no usable grant on {cluster}: run seed_demo first.")
        pipeline = Pipeline.objects.filter(team=team, name=NAME).first() or services.pipeline_create(
            user=scientist, team=team, name=NAME, grant=grant, repo_url=code_repo, branch=code_ref, path=PATH
        )
        # Nightly, as a team would run it; the worker's triggers task fires it (see README).
        schedule = schedule_ensure(user=scientist, pipeline=pipeline, cron_expression=SCHEDULE, tz_name=SCHEDULE_TZ)
        self.say(f"schedule {schedule.cron} ({schedule.timezone}), next at {schedule.next_fire_at:%Y-%m-%d %H:%M} UTC")
        done = pipeline.runs.exclude(status__in=(PipelineRun.Status.FAILED, PipelineRun.Status.CANCELLED)).first()
        if done is not None and (done.is_terminal or no_wait):
            self.say(f"pipeline {NAME} already ran: run #{done.number} at {done.commit[:12]} ({done.status})")
            return
        started = time.monotonic()
        if done is not None:  # an earlier seeding (or --no-wait) left it running: wait for it
            run = done
            self.say(f"pipeline {NAME} run #{run.number} at {run.commit[:12]} is still running; waiting for it")
        else:
            run = services.pipeline_run_start(pipeline=pipeline, actor=scientist, trigger="user")
            self.say(f"pipeline {NAME} run #{run.number} at {run.commit[:12]}: {len(run.spec['steps'])} steps")
        if no_wait:
            services.pipeline_run_advance(run_id=run.pk)
            on_slurm = ", ".join(f"{s.name} {s.job.slurm_job_id}" for s in run.steps.select_related("job") if s.job)
            self.say(f"on Slurm, linked by afterok: {on_slurm}; the hub's workers record the run as it ends")
            return
        self.wait(run, started)

    def wait(self, run: PipelineRun, started: float) -> None:
        # What the worker's loops do (the jobs' batched poll, then a pass over the run), here,
        # so `./dev up` ends with the run finished and recorded: the worker starts after it.
        deadline, last = started + TIMEOUT_SECONDS, None
        while True:
            services.pipeline_run_advance(run_id=run.pk)
            run.refresh_from_db()
            states = ", ".join(_progress(s) for s in run.steps.select_related("job"))
            if states != last:
                self.say(f"{time.monotonic() - started:5.0f} s  {states}")
                last = states
            if run.is_terminal:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"the pipeline run did not finish in {TIMEOUT_SECONDS} s ({states})")
            time.sleep(1)
            job_services.jobs_poll()
        if run.status != PipelineRun.Status.SUCCEEDED:
            raise CommandError(f"the pipeline run ended {run.status}: {run.message}")
        for step in run.steps.select_related("job"):
            if step.job:
                job_services.job_finalize(job_id=step.job.pk)
                if step.job.register_model_as:
                    version = model_version_register_from_job(job_id=step.job.pk)
                    if version is not None:
                        self.say(f"model {version.model.name} v{version.number} registered by step {step.name}")
        self.say(
            f"run #{run.number} succeeded: {run.duration_seconds} s on the hub's clock, "
            f"{time.monotonic() - started:.0f} s for this command"
        )


def _progress(step) -> str:
    """A step's state, with its job's Slurm state while it is on Slurm (pending, running)."""
    if step.state == "submitted" and step.job is not None:
        return f"{step.name} {step.job.status}"
    return f"{step.name} {step.state}"
