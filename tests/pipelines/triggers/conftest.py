"""A pipeline whose repository is a real git repository on the local cluster, written and
committed over SSH as the grant's own account, and signed webhook requests as each forge
sends them."""

import json
import uuid

import pytest

from apps.clusters.transport import slurm_client
from apps.pipelines import services as pipeline_services
from apps.pipelines.triggers import forges
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

STEP = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:05:00
#SBATCH --mem=100M
echo "hello from $(hostname)" > "$OUTPUT_GREETING/hello.txt"
"""
PIPELINE = """name: tiny
steps:
  hello:
    script: hello.sbatch
    outputs: [greeting]
"""
FILES = {"axle-pipeline.yaml": PIPELINE, "hello.sbatch": STEP}


class ClusterRepo:
    """A git repository in the grant account's job root, made and committed over SSH."""

    def __init__(self, grant):
        self.grant = grant
        self.path = f"{grant.job_root}/trigger-repos/{uuid.uuid4().hex[:12]}"

    def _git(self, files, *args: str) -> str:
        result = files.run(
            ["git", "-c", "user.name=Axle Test", "-c", "user.email=test@axle.invalid", "-C", self.path, *args],
            timeout=60,
        )
        assert result.exit_status == 0, result.err
        return result.out

    def commit(self, contents: dict[str, str] | None = None, message: str = "change", branch: str = "main") -> str:
        with slurm_client(self.grant) as client:
            files = client.files
            if files.run(["test", "-d", f"{self.path}/.git"]).exit_status != 0:
                files.mkdir(self.path)
                self._git(files, "init", "--quiet", "--initial-branch=main")
            if branch != "main":
                self._git(files, "checkout", "--quiet", "-B", branch)
            for name, text in (contents or {}).items():
                files.write(f"{self.path}/{name}", text.encode())
            self._git(files, "add", "--all")
            self._git(files, "commit", "--quiet", "--allow-empty", "-m", message)
            sha = self._git(files, "rev-parse", "HEAD").strip()
            if branch != "main":
                self._git(files, "checkout", "--quiet", "main")
            return sha


@pytest.fixture
def cluster_grant(alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


@pytest.fixture
def cluster_repo(cluster_grant):
    repo = ClusterRepo(cluster_grant)
    repo.first_commit = repo.commit(FILES, "the pipeline")
    return repo


@pytest.fixture
def cluster_pipeline(alice, team, cluster_grant, cluster_repo):
    return pipeline_services.pipeline_create(
        user=alice, team=team, name="tiny", grant=cluster_grant, repo_url=cluster_repo.path, branch="main"
    )


@pytest.fixture
def pipeline(alice, team):
    """A pipeline on a cluster nobody can reach: enough for everything that starts no run."""
    grant = ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"), cluster_username="alice01")
    return pipeline_services.pipeline_create(
        user=alice, team=team, name="nightly", grant=grant, repo_url="https://git.example.org/ml/nightly.git"
    )


def push_body(*, ref="refs/heads/main", after="a" * 40, repository="ml/nightly", extra=None) -> bytes:
    payload = {
        "ref": ref,
        "before": "0" * 40,
        "after": after,
        "repository": {"full_name": repository, "name": repository.split("/")[-1]},
        "commits": [{"id": after, "message": "train on more data"}],
        **(extra or {}),
    }
    return json.dumps(payload).encode()


def signed_headers(forge: str, secret: str, body: bytes, *, delivery: str | None = None, event: str = "push") -> dict:
    """The headers each forge sends with a delivery, for Django's test client (HTTP_… keys)."""
    delivery = delivery or str(uuid.uuid4())
    mac = forges.hmac_hex(secret, body)
    if forge == "github":
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={mac}"}
    elif forge == "gitlab":
        headers = {
            "X-Gitlab-Event": "Push Hook" if event == "push" else event,
            "X-Gitlab-Token": secret,
            "X-Gitlab-Event-UUID": delivery,
        }
    else:
        # Gitea sends GitHub's headers beside its own; its own decide.
        headers = {
            "X-Gitea-Event": event,
            "X-Gitea-Delivery": delivery,
            "X-Gitea-Signature": mac,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={mac}",
        }
    return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
