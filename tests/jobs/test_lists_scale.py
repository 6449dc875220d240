"""Job lists that stay flat in N and in depth: lean list items, keyset pages, indexes for
every filter, 304 for the live parts when nothing changed, a home page in a fixed number of
queries."""

import pytest
from django.db import connection
from django.utils import timezone

from apps.jobs import selectors
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.registry.conftest import make_job

pytestmark = pytest.mark.django_db

S = Job.Status


@pytest.fixture
def grant(alice):
    return ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"))


def test_the_api_list_is_lean_and_the_detail_full(api, alice, grant):
    job = make_job(alice, grant=grant, parameters={"LR": "0.1"}, accounting={"node_list": "n1"})
    api.force_authenticate(alice)
    [item] = api.get("/api/v1/jobs/").json()["results"]
    assert item["id"] == str(job.uuid) and item["status"] == job.status and item["cluster"] == "hpc"
    for heavy in ("script", "parameters", "effective_request", "accounting", "metrics", "inputs"):
        assert heavy not in item
    detail = api.get(f"/api/v1/jobs/{job.uuid}/").json()
    assert detail["script"] == job.script and detail["parameters"] == {"LR": "0.1"}


def test_the_next_links_walk_every_job_once_even_when_they_share_a_moment(api, alice, grant):
    jobs = [make_job(alice, grant=grant) for _ in range(7)]
    same = timezone.now()
    Job.objects.filter(pk__in=[j.pk for j in jobs[2:6]]).update(created_at=same)
    api.force_authenticate(alice)
    seen, url, pages = [], "/api/v1/jobs/?limit=3", 0
    while url:
        body = api.get(url).json()
        seen += [item["id"] for item in body["results"]]
        pages += 1
        if pages > 1:
            assert body["count"] is None and body["previous"] is None  # keyset pages do not count
        url = body["next"]
    assert sorted(seen) == sorted(str(j.uuid) for j in jobs) and len(seen) == 7
    expected = list(Job.objects.filter(owner=alice).order_by("-created_at", "-id").values_list("uuid", flat=True))
    assert seen == [str(u) for u in expected]


def test_offset_pages_still_count_and_a_forged_cursor_is_refused(api, alice, grant):
    for _ in range(5):
        make_job(alice, grant=grant)
    api.force_authenticate(alice)
    body = api.get("/api/v1/jobs/?limit=2&offset=2").json()
    assert body["count"] == 5 and len(body["results"]) == 2 and "cursor=" in body["next"]
    response = api.get("/api/v1/jobs/?cursor=bm90LWEtY3Vyc29y")
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


def test_every_offset_page_holds_the_same_rows_read_from_either_end(api, alice, grant):
    jobs = [make_job(alice, grant=grant) for _ in range(11)]
    same = timezone.now()
    Job.objects.filter(pk__in=[j.pk for j in jobs[3:9]]).update(created_at=same)  # ties: the id decides
    expected = [
        str(u) for u in Job.objects.filter(owner=alice).order_by("-created_at", "-id").values_list("uuid", flat=True)
    ]
    api.force_authenticate(alice)
    for offset in range(12):  # the pages past the middle are read from the index's far end
        body = api.get(f"/api/v1/jobs/?limit=3&offset={offset}").json()
        assert [item["id"] for item in body["results"]] == expected[offset : offset + 3]
        assert body["count"] == 11 and (body["next"] is not None) == (offset + 3 < 11)
    from apps.core.pagination import IdsFirstPaginator

    listed = selectors.job_list(user=alice)
    paginator = IdsFirstPaginator(listed, 2)
    assert [str(j.uuid) for n in paginator.page_range for j in paginator.page(n)] == expected


def _poll(client, url, version):
    return client.get(url, {"live": version}, headers={"HX-Request": "true"})


def test_the_live_list_answers_204_until_a_job_changes(client, alice, grant, django_assert_max_num_queries):
    # The list's poll (apps.core.live): an unchanged page answers 204 with nothing rendered,
    # in a fixed few queries however many jobs the user has.
    for _ in range(40):
        make_job(alice, grant=grant, status=S.PENDING)
    job = make_job(alice, grant=grant, status=S.PENDING)  # the newest: on the first page
    client.force_login(alice)
    first = client.get("/jobs/?status=active")
    assert first.status_code == 200 and job.name in first.content.decode()
    version = first.context["live_version"]
    with django_assert_max_num_queries(8):
        again = _poll(client, "/jobs/?status=active", version)
    assert again.status_code == 204 and again.content == b""
    Job.objects.filter(pk=job.pk).update(status=S.RUNNING, updated_at=timezone.now())
    changed = _poll(client, "/jobs/?status=active", version)
    assert changed.status_code == 200 and changed["ETag"].strip('"') != version


def test_the_live_job_page_answers_204_until_the_job_changes(client, alice, grant, django_assert_max_num_queries):
    job = make_job(alice, grant=grant, status=S.PENDING)
    client.force_login(alice)
    url = f"/jobs/{job.uuid}/"
    version = client.get(url).context["live_version"]
    with django_assert_max_num_queries(10):
        again = _poll(client, url, version)
    assert again.status_code == 204
    Job.objects.filter(pk=job.pk).update(status=S.RUNNING, updated_at=timezone.now())
    assert _poll(client, url, version).status_code == 200


def test_a_deep_page_of_the_list_shows_the_right_jobs(client, alice, grant):
    jobs = [make_job(alice, grant=grant) for _ in range(30)]
    client.force_login(alice)
    page = client.get("/jobs/?page=2")
    shown = [j for j in jobs if str(j.uuid) in page.content.decode()]
    oldest_first = sorted(jobs, key=lambda j: (j.created_at, j.pk))
    assert shown == oldest_first[:5]


def test_the_home_page_costs_the_same_few_queries_for_3_or_30_jobs(client, alice, grant, django_assert_max_num_queries):
    client.force_login(alice)
    for _ in range(3):
        make_job(alice, grant=grant)
    with django_assert_max_num_queries(20) as few:
        assert client.get("/").status_code == 200
    for _ in range(27):
        make_job(alice, grant=grant)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/").status_code == 200


def test_an_unchanged_home_poll_reads_the_recent_jobs_without_their_scripts(
    client, alice, grant, django_assert_max_num_queries
):
    # Every open home page polls every 5 s (bench/portal_load.py): session, user, the five
    # recent jobs' shown columns with their cluster, the five recent sweeps.
    job = make_job(alice, grant=grant, status=S.RUNNING)
    client.force_login(alice)
    page = client.get("/")
    assert job.name in page.content.decode()
    with django_assert_max_num_queries(4) as queries:
        assert _poll(client, "/", page.context["live_version"]).status_code == 204
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert '"jobs_job"."script"' not in sql and "datasets_datasetversion" not in sql
    assert '"sweeps_sweep"."spec_text"' not in sql
    Job.objects.filter(pk=job.pk).update(status=S.COMPLETED)
    changed = _poll(client, "/", page.context["live_version"])
    assert changed.status_code == 200 and 'data-status="completed"' in changed.content.decode()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("kwargs", "index"),
    [
        ({}, "jobs_owner_created"),
        ({"status": "running"}, "jobs_owner_status_created"),
        ({"status": "active"}, "jobs_owner_active_created"),
        ({"cluster": "hpc"}, "jobs_owner_cluster_created"),
    ],
)
def test_every_list_filter_reads_an_index_in_the_lists_order(alice, grant, kwargs, index):
    if connection.vendor != "postgresql":
        pytest.skip("the indexes are checked on PostgreSQL")
    # Enough rows, with the planner's statistics, for a filter's own index to be the cheap one:
    # 1 job in 50 running, and on cluster hpc.
    first = make_job(alice, grant=grant)
    elsewhere = ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="other"))
    Job.objects.bulk_create(
        Job(
            owner=alice,
            grant=grant if i % 50 == 0 else elsewhere,
            cluster=grant.cluster if i % 50 == 0 else elsewhere.cluster,
            name=f"bulk-{i}",
            status=S.RUNNING if i % 50 == 0 else S.COMPLETED,
            script=first.script,
            script_sha256=first.script_sha256,
            cluster_username=first.cluster_username,
            marker=f"axle-test-bulk-{i}-{first.pk}",
            workdir=f"/scratch/bulk/{i}",
        )
        for i in range(2000)
    )
    qs = selectors.job_list(user=alice, **kwargs).select_related(None).prefetch_related(None)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
        cursor.execute("SET LOCAL enable_sort = off")  # the index must serve the order too
        sql, params = qs[:25].query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # That filter's own index, or (for one status) the one of active jobs: any of them reads
    # the page in order, so no Sort and no scan of every job.
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
    assert index in plan or (kwargs.get("status") and "jobs_owner_active_created" in plan), plan
