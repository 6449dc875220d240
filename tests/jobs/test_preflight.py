"""Before you submit: the grant's limits, `sbatch --test-only` as the grant's account and
`sshare`, against the real local cluster; nothing is submitted."""

import re

import pytest
from django.test import Client

from apps.clusters.transport import slurm_client
from apps.jobs.models import Job
from apps.jobs.preflight import job_preflight
from apps.sweeps.preflight import sweep_preflight
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.django_db]

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:05:00\n#SBATCH --mem=100M\necho hi\n"


def local_grant(transport, user, **limits):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(transport, f"local-{transport}")
    limits = {"max_cpus": 2, "max_time_minutes": 60, "max_mem_mb": 4096, **limits}
    return make_local_grant(cluster, user, "scientist", **limits)


def queued_names(grant) -> set[str]:
    with slurm_client(grant) as slurm:
        return {j.name for j in slurm.queue("scientist")}


def test_over_ssh_slurm_says_when_it_would_start_and_nothing_is_submitted(alice):
    grant = local_grant("ssh", alice)
    before = queued_names(grant)
    p = job_preflight(user=alice, cluster=grant.cluster, script=SCRIPT, name="preflight-probe")
    assert p.problems == [] and p.estimate_error == ""
    assert p.estimate.start is not None and p.estimate.partition == "debug" and p.estimate.processors >= 1
    assert p.estimate.message.startswith("Job ") and " to start at " in p.estimate.message
    assert "preflight-probe" not in queued_names(grant) | before
    assert Job.objects.count() == 0
    assert ("vision", "scientist") in {(s.account, s.user) for s in p.shares} and p.shares_error == ""
    assert ("Max memory (MB)", "4,096 MB (4 GB)") in p.limits and ("Max GPUs", "no limit") in p.limits


def test_over_ssh_slurms_refusal_is_said_in_its_words(alice):
    grant = local_grant("ssh", alice)
    script = SCRIPT.replace("echo hi", "#SBATCH --constraint=no-such-feature\necho hi")
    p = job_preflight(user=alice, cluster=grant.cluster, script=script)
    assert p.problems == [] and p.estimate is None
    assert p.estimate_error.startswith("Slurm would refuse this job:")
    assert re.search(r"feature", p.estimate_error, re.I)


def test_a_script_the_grant_refuses_is_not_put_to_slurm(alice):
    grant = local_grant("ssh", alice, max_cpus=1)
    p = job_preflight(
        user=alice, cluster=grant.cluster, script=SCRIPT.replace("echo hi", "#SBATCH --cpus-per-task=4\necho hi")
    )
    assert p.problems and "4" in p.problems[0]["message"]
    assert p.estimate is None and p.estimate_error.startswith("Fix the problems above first")
    assert p.shares  # the fair-share is still worth knowing


def test_over_rest_it_says_what_is_not_available(alice):
    grant = local_grant("rest", alice)
    p = job_preflight(user=alice, cluster=grant.cluster, script=SCRIPT)
    assert p.estimate is None and "not available over REST" in p.estimate_error
    assert p.shares == [] and "not available over REST" in p.shares_error
    assert p.limits


SWEEP = """apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: lr}
spec:
  objective: {type: minimize, objectiveMetricName: loss}
  algorithm: {algorithmName: random}
  parallelTrialCount: 2
  maxTrialCount: 3
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.01", max: "0.1"}}
  trialTemplate:
    trialParameters: [{name: LR, reference: lr}]
    trialSpec: |
      #!/bin/bash
      #SBATCH --partition=debug
      #SBATCH --time=5
      #SBATCH --mem=100M
      echo ${trialParameters.LR}
"""


def test_a_sweep_puts_its_first_array_to_slurm(alice):
    grant = local_grant("ssh", alice, max_array_size=10)
    p = sweep_preflight(user=alice, cluster=grant.cluster, spec_text=SWEEP)
    assert p.problems == [] and p.estimate is not None and p.estimate.start is not None
    client = Client()
    client.force_login(alice)
    assert 'hx-post="/sweeps/preflight/"' in client.get("/sweeps/new/").content.decode()
    html = client.post("/sweeps/preflight/", {"cluster": grant.cluster.name, "spec": SWEEP}).content.decode()
    assert "Slurm expects it to start" in html and "Max array size" in html
    broken = client.post("/sweeps/preflight/", {"cluster": grant.cluster.name, "spec": "kind: [oops"})
    assert 'role="alert"' in broken.content.decode() and "Slurm expects" not in broken.content.decode()


def test_the_form_panel_answers_with_limits_estimate_and_fairshare(alice):
    grant = local_grant("ssh", alice)
    client = Client()
    client.force_login(alice)
    form = client.get("/jobs/new/").content.decode()
    assert 'id="ask-slurm"' in form and 'hx-post="/jobs/preflight/"' in form
    resp = client.post("/jobs/preflight/", {"cluster": grant.cluster.name, "script": SCRIPT, "parameters": "LR=0.1"})
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    assert "Max memory (MB)" in html and "4,096 MB" in html and "no limit" in html
    assert "Slurm expects it to start" in html and "sbatch --test-only" in html
    assert "vision" in html.split('id="fairshare"')[1]
    bad = client.post("/jobs/preflight/", {"cluster": "nowhere", "script": SCRIPT})
    assert "Pick a cluster you hold a grant on." in bad.content.decode()
