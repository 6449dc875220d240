"""Run the digits example once, so a newcomer finds a finished run with curves, its dataset
version and a registered model. Idempotent: a second run finds what the first one made."""

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Team, User
from apps.clusters.local import read_cluster_env
from apps.clusters.models import Cluster
from apps.clusters.selectors import grant_for_submission
from apps.clusters.transport import slurm_client
from apps.datasets import services as dataset_services
from apps.datasets.models import Dataset, DatasetVersion
from apps.jobs import services
from apps.jobs.models import Job

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "digits"
MODEL_NAME = "digits-classifier"
JOB_NAME = "digits-example"
TIMEOUT_SECONDS = 600


class Command(BaseCommand):
    help = "Run the digits example on the local cluster once: dataset version, job with curves, registered model."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", default="local-ssh")
        # The code input: a mirror of this repository where scientist's jobs can clone it, as a
        # site's git server would serve it. `./dev up` lays it out as root before this runs
        # (the hub's user can neither read the checkout's owner's git state nor chown).
        parser.add_argument("--code-repo", required=True, help="git repository the cluster account can read")
        parser.add_argument("--code-ref", required=True, help="branch or commit of that repository")

    def say(self, text: str) -> None:
        self.stdout.write(f"    {text}")
        self.stdout.flush()

    def handle(self, *args, cluster: str, code_repo: str, code_ref: str, **options):
        env = read_cluster_env(Path(settings.AXLE_STACK_DIR) / "cluster.env")
        if env is None:
            raise CommandError("The local cluster is not up (no cluster.env): run compose/local/stack.sh up first.")
        scientist = User.objects.get(username="scientist")
        team = Team.objects.get(name="vision")
        cluster_row = Cluster.objects.get(name=cluster)
        grant = grant_for_submission(user=scientist, cluster=cluster_row)
        if grant is None:
            raise CommandError(f"scientist has no usable grant on {cluster}: run seed_demo first.")

        done = Job.objects.filter(owner=scientist, name=JOB_NAME, status=Job.Status.COMPLETED).first()
        if done is not None and done.finalized_at:
            self.say(f"example job already ran: {done.uuid}")
            self._register(scientist, done)
            return

        scratch = env["AXLE_LOCAL_SCRATCH_ROOT"].rstrip("/") + "/scientist"
        data_dir = f"{scratch}/datasets/digits"
        self._write_dataset(grant, env, data_dir)
        version = self._dataset_version(scientist, team, cluster_row, data_dir)
        self.say(f"code: {code_repo} at {code_ref}")

        self.say("submitting the example job (scikit-learn on the digits data, logged with plain mlflow)")
        job = services.job_create(
            user=scientist,
            cluster=cluster_row,
            name=JOB_NAME,
            script=(EXAMPLE / "train.sbatch").read_text(),
            parameters={"EPOCHS": "15", "LEARNING_RATE": "0.01"},
            dataset_versions=[version.uuid],
            code={"repo": code_repo, "ref": code_ref},
            register_model_as=MODEL_NAME,
            team=team,
        )
        services.job_submit(job_id=job.pk)
        job.refresh_from_db()
        if job.status in Job.TERMINAL or job.status == Job.Status.QUEUED:
            raise CommandError(f"the example job could not be submitted: {job.failure_message or job.last_error}")
        deadline, last = time.monotonic() + TIMEOUT_SECONDS, ""
        while job.status not in Job.TERMINAL:
            if time.monotonic() > deadline:
                raise CommandError(f"the example job {job.slurm_job_id} did not finish in {TIMEOUT_SECONDS} s")
            time.sleep(2)
            services.jobs_poll()
            job.refresh_from_db()
            if job.status != last:
                self.say(f"job {job.slurm_job_id}: {job.get_status_display().lower()}")
                last = job.status
        if job.status != Job.Status.COMPLETED:
            raise CommandError(f"the example job ended {job.status}; see its page and logs ({job.stdout_path})")
        services.job_finalize(job_id=job.pk)
        job.refresh_from_db()
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(job.metrics.items()))
        self.say(f"run {job.mlflow_run_id[:12]}: {metrics}")
        self._register(scientist, job)

    def _write_dataset(self, grant, env, data_dir: str) -> None:
        with slurm_client(grant) as client:
            files = client.files
            if files.run(["test", "-s", f"{data_dir}/digits.csv"]).exit_status == 0:
                return
            self.say(f"writing the digits dataset to {data_dir} as scientist")
            result = files.run(
                [env["AXLE_LOCAL_PYTHON"], "-", data_dir], stdin=(EXAMPLE / "make_dataset.py").read_bytes(), timeout=300
            )
            if result.exit_status != 0:
                raise CommandError(f"writing the dataset failed: {result.err.strip()}")

    def _dataset_version(self, user, team, cluster, data_dir: str) -> DatasetVersion:
        dataset = Dataset.objects.filter(team=team, name="digits").first() or dataset_services.dataset_create(
            user=user, team=team, name="digits", description="scikit-learn's 8x8 handwritten digits, as CSV"
        )
        version = dataset.versions.filter(status="ready", path=data_dir).order_by("number").first()
        if version is None:
            version = dataset_services.dataset_version_register(
                user=user, dataset=dataset, cluster=cluster, path=data_dir
            )
            version = dataset_services.dataset_version_checksum(version_id=version.pk) or version
            version.refresh_from_db()
            if version.status != "ready":
                raise CommandError(f"checksumming the dataset failed: {version.error}")
        self.say(f"dataset digits v{version.number}: {version.file_count} files, sha256 {version.checksum[:16]}…")
        return version

    def _register(self, user, job: Job) -> None:
        from apps.registry.services import model_version_register

        version = model_version_register(user=user, model_name=MODEL_NAME, job=job)
        self.say(f"model {MODEL_NAME} v{version.number} registered (sha256 {version.sha256[:16]}…)")
