"""What an administrator reads while onboarding people: limits with units and "no limit"
said, a user search instead of a dropdown, the access requests waiting on the admin index
and on the home page, and audit changes as before → after."""

import re

import pytest

from apps.audit.models import AuditEvent
from apps.clusters import services
from apps.clusters.models import ClusterGrant
from tests.factories import ClusterFactory, ClusterGrantFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


def test_the_grant_form_has_labels_with_units_and_says_blank_is_no_limit(admin_client, alice):
    grant = ClusterGrantFactory(user=alice, max_mem_mb=None, max_cpus=4)
    page = admin_client.get(f"/admin/clusters/clustergrant/{grant.pk}/change/").content.decode()
    for label in ("Max memory (MB)", "Max time (minutes)", "Max CPUs", "Max GPUs", "Max array size"):
        assert f">{label}:</label>" in page, label
    assert "Max mem mb" not in page
    assert page.count("Blank means no limit") >= 6


def test_the_grant_list_shows_no_limit_explicitly(admin_client, alice):
    ClusterGrantFactory(user=alice, max_mem_mb=8192, max_time_minutes=90, max_gpus=None)
    page = admin_client.get("/admin/clusters/clustergrant/").content.decode()
    assert "Max memory (MB): 8,192 MB (8 GB)" in page
    assert "Max time (minutes): 90 min (1 h 30)" in page
    assert "Max GPUs: no limit" in page


def test_limit_rows_read_as_a_person_would(alice):
    grant = ClusterGrantFactory(user=alice, allowed_partitions=[], max_nodes=None, max_mem_mb=512)
    rows = dict(grant.limit_rows())
    assert rows["Allowed partitions"] == "the cluster's default only"
    assert rows["Max nodes"] == "no limit" and rows["Max memory (MB)"] == "512 MB"


def test_the_user_is_picked_by_searching(admin_client):
    for n in range(30):
        UserFactory(username=f"user{n:02d}")
    page = admin_client.get("/admin/clusters/clustergrant/add/").content.decode()
    select = re.search(r'<select[^>]*name="user"[^>]*>(.*?)</select>', page, re.S)
    assert select and "admin-autocomplete" in select.group(0)
    assert "user17" not in select.group(1)  # no option per user: the widget asks the server
    found = admin_client.get(
        "/admin/autocomplete/",
        {"term": "user1", "app_label": "clusters", "model_name": "clustergrant", "field_name": "user"},
    ).json()
    assert {r["text"] for r in found["results"]} == {f"user{n}" for n in range(10, 20)}


def test_pending_access_requests_are_on_the_admin_index_and_home_page(admin_client, root, alice, bob):
    cluster = ClusterFactory(name="hpc1")
    services.grant_request(user=alice, cluster=cluster, reason="GPU training for the paper")
    index = admin_client.get("/admin/").content.decode()
    box = index.split('id="pending-access-requests"')[1].split("</div>")[0]
    assert "Access requests waiting: 1" in box and "alice → hpc1" in box and "GPU training" in box
    home = admin_client.get("/").content.decode()
    assert 'id="access-requests"' in home and "GPU training for the paper" in home

    bob_client = type(admin_client)()
    bob_client.force_login(bob)
    assert 'id="access-requests"' not in bob_client.get("/").content.decode()


def test_the_audit_change_is_a_before_after_diff(admin_client, root, alice):
    grant = ClusterGrantFactory(user=alice, max_cpus=2, max_mem_mb=None)
    services.grant_update_limits(grant=grant, actor=root, max_cpus=8, max_mem_mb=4096)
    event = AuditEvent.objects.filter(action="grant.updated").latest("seq")
    rows = {r.field: (r.before, r.after, r.kind) for r in event.change_rows()}
    assert rows == {"max_cpus": ("2", "8", "changed"), "max_mem_mb": ("—", "4096", "changed")}
    page = admin_client.get("/audit/?action=grant.updated").content.decode()
    assert "<del>2</del> → <ins>8</ins>" in page and "{&#x27;max_cpus&#x27;" not in page
    detail = admin_client.get(f"/admin/audit/auditevent/{event.pk}/change/").content.decode()
    assert "<del>—</del> → <ins>4096</ins>" in detail


@pytest.mark.slurm
def test_a_gpu_job_is_refused_before_slurm_with_the_numbers(alice):
    from apps.jobs import validation
    from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    grant = make_local_grant(make_local_cluster("ssh", "local-ssh"), alice, max_gpus=0, max_cpus=2)
    script = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=5\n#SBATCH --gres=gpu:2\necho hi\n"
    checked = validation.validate(script=script, grant=grant, workdir=f"{grant.job_root}/x")
    messages = [p["message"] for p in checked.problems]
    assert any("asks for 2 GPUs, more than your grant's limit of 0" in m for m in messages), messages
    assert any("--gres asks for 2 GPUs, and partition debug has none (0 GPUs" in m for m in messages), messages
    assert all(p["line"] == 4 for p in checked.problems)


def test_access_requests_need_the_right_to_decide(alice):
    ClusterGrantFactory(user=alice, status=ClusterGrant.Status.REQUESTED)
    staff = UserFactory(username="helpdesk", is_staff=True)
    from apps.clusters.selectors import grant_requests_pending

    assert grant_requests_pending(user=staff).count() == 0  # staff without the permission
    assert grant_requests_pending(user=alice).count() == 0
