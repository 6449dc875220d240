"""Lineage graphs on rows built directly: what a node came from and what came of it, only
what the user may see, bounded."""

import pytest

from apps.jobs.models import Job
from apps.lineage import graph as lineage_graph
from apps.lineage.selectors import lineage
from apps.registry.models import ModelVersion
from tests.registry.conftest import make_dataset_version, make_job, make_model_version


def edges(g) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.relation) for e in g.edges}


@pytest.fixture
def world(alice, team):
    """iris v1 -> train (code, image) -> iris-clf v1; train reproduced as repro -> iris-clf v2;
    an unrelated job on another dataset."""
    data = make_dataset_version(team, alice, "iris", 1)
    other_data = make_dataset_version(team, alice, "mnist", 1)
    train = make_job(
        alice,
        team=team,
        name="train",
        code_repo="https://git.example.org/ml/iris.git",
        code_ref="main",
        code_commit="a" * 40,
        image_path="/images/torch.sif",
        image_digest="sha256:" + "b" * 64,
        mlflow_run_id="run-train",
    )
    train.dataset_versions.set([data])
    repro = make_job(
        alice, team=team, name="repro", reproduced_from=train, mlflow_run_id="run-repro", script=train.script
    )
    repro.dataset_versions.set([data])
    unrelated = make_job(alice, team=team, name="unrelated")
    unrelated.dataset_versions.set([other_data])
    v1 = make_model_version(train, alice, "iris-clf", 1, {"accuracy": 0.9})
    v2 = make_model_version(repro, alice, "iris-clf", 2, {"accuracy": 0.9})
    return {"data": data, "train": train, "repro": repro, "unrelated": unrelated, "v1": v1, "v2": v2}


def nid(kind, obj) -> str:
    return f"{kind}:{obj.uuid}"


def test_a_model_version_leads_back_to_its_job_and_everything_the_job_used(alice, world):
    g = lineage(user=alice, kind="model_version", id=world["v1"].uuid)
    v1, train, data = (
        nid("model_version", world["v1"]),
        nid("job", world["train"]),
        nid("dataset_version", world["data"]),
    )
    assert g.focus == v1 and not g.truncated
    code = "code:https://git.example.org/ml/iris.git@" + "a" * 40
    image = "image:/images/torch.sif@sha256:" + "b" * 64
    script = f"script:{world['train'].script_sha256}"
    assert edges(g) == {
        (train, v1, "produced"),
        (data, train, "input_of"),
        (code, train, "code_of"),
        (image, train, "image_of"),
        (script, train, "script_of"),
    }
    node = g.nodes[train]
    assert node.kind == "job" and node.label == "train" and node.url == f"/jobs/{world['train'].uuid}/"
    assert g.nodes[code].label == "iris@aaaaaaaaaa" and g.nodes[code].attrs["commit"] == "a" * 40
    assert g.nodes[v1].url == "/models/iris-clf/#v1" and g.nodes[v1].attrs["sha256"] == world["v1"].sha256


def test_a_dataset_version_leads_to_the_jobs_that_read_it_and_their_models(alice, world):
    g = lineage(user=alice, kind="dataset_version", id=world["data"].uuid)
    data = nid("dataset_version", world["data"])
    train, repro = nid("job", world["train"]), nid("job", world["repro"])
    assert edges(g) == {
        (data, train, "input_of"),
        (data, repro, "input_of"),
        (train, repro, "reproduced_as"),
        (train, nid("model_version", world["v1"]), "produced"),
        (repro, nid("model_version", world["v2"]), "produced"),
    }
    assert nid("job", world["unrelated"]) not in g.nodes


def test_a_job_shows_its_inputs_its_original_its_reproductions_and_its_models(alice, world):
    g = lineage(user=alice, kind="job", id=world["repro"].uuid)
    train, repro = nid("job", world["train"]), nid("job", world["repro"])
    assert (train, repro, "reproduced_as") in edges(g)
    assert (repro, nid("model_version", world["v2"]), "produced") in edges(g)
    # Upstream through the original: its own model is a sibling, not an ancestor.
    assert (nid("dataset_version", world["data"]), train, "input_of") in edges(g)
    assert nid("model_version", world["v1"]) not in g.nodes
    # Both jobs ran the same script: one script node feeds both.
    assert {(s, t) for s, t, r in edges(g) if r == "script_of"} == {
        (f"script:{world['train'].script_sha256}", train),
        (f"script:{world['train'].script_sha256}", repro),
    }

    g = lineage(user=alice, kind="job", id=world["train"].uuid)
    assert (train, repro, "reproduced_as") in edges(g)
    assert (repro, nid("model_version", world["v2"]), "produced") in edges(g)


def test_a_rerun_is_linked_to_the_job_it_reruns(alice, team):
    first = make_job(alice, team=team, status=Job.Status.FAILED)
    second = make_job(alice, team=team, rerun_of=first)
    g = lineage(user=alice, kind="job", id=first.uuid)
    assert (nid("job", first), nid("job", second), "rerun_as") in edges(g)


def test_lineage_shows_only_what_the_user_may_see(alice, bob, charlie, team, world):
    from apps.core.errors import NotFound
    from tests.factories import MembershipFactory, TeamFactory

    with pytest.raises(NotFound):
        lineage(user=charlie, kind="model_version", id=world["v1"].uuid)
    # A teammate sees the team's graph.
    assert len(lineage(user=bob, kind="model_version", id=world["v1"].uuid).nodes) == 6
    # Charlie's own job reading vision's data never shows vision's data to him, nor his job to them.
    MembershipFactory(user=charlie, team=TeamFactory(name="nlp"))
    spy = make_job(charlie, team=charlie.memberships.get().team, name="charlies")
    spy.dataset_versions.set([world["data"]])
    g = lineage(user=charlie, kind="job", id=spy.uuid)
    assert set(g.nodes) == {nid("job", spy), f"script:{spy.script_sha256}"}
    assert nid("job", spy) not in lineage(user=alice, kind="dataset_version", id=world["data"].uuid).nodes


def test_a_large_graph_is_truncated(alice, team, world):
    for n in range(12):
        job = make_job(alice, team=team, name=f"sweep-{n}")
        job.dataset_versions.set([world["data"]])
    g = lineage(user=alice, kind="dataset_version", id=world["data"].uuid, max_nodes=10)
    assert len(g.nodes) == 10 and g.truncated
    assert all(e.source in g.nodes and e.target in g.nodes for e in g.edges)


def test_another_app_can_hang_deployments_after_model_versions(alice, world, monkeypatch):
    from apps.lineage.graph import Node

    monkeypatch.setattr(lineage_graph, "KINDS", dict(lineage_graph.KINDS))
    monkeypatch.setattr(
        lineage_graph, "EXPANDERS", {d: {k: list(v) for k, v in e.items()} for d, e in lineage_graph.EXPANDERS.items()}
    )

    def deployments(*, user, ids):
        for key in ids:
            yield key, Node(id=f"deployment:d-{key}", kind="deployment", label="prod"), "deployed_as"

    lineage_graph.register_expander("model_version", "downstream", deployments)
    g = lineage(user=alice, kind="dataset_version", id=world["data"].uuid)
    v1 = nid("model_version", world["v1"])
    assert (v1, f"deployment:d-{world['v1'].uuid}", "deployed_as") in edges(g)


# ---------------------------------------------------------------- API and page


def test_the_api_returns_nodes_and_edges(api, alice, world):
    api.force_authenticate(alice)
    response = api.get(f"/api/v1/lineage/?kind=model_version&id={world['v1'].uuid}")
    assert response.status_code == 200
    body = response.json()
    assert body["focus"] == nid("model_version", world["v1"]) and body["truncated"] is False
    assert {"id", "kind", "label", "url", "attrs"} == set(body["nodes"][0])
    assert {"source": nid("job", world["train"]), "target": body["focus"], "relation": "produced"} in body["edges"]


def test_the_api_refuses_a_bad_kind_and_hides_unknown_ids(api, alice, charlie, world):
    api.force_authenticate(alice)
    response = api.get(f"/api/v1/lineage/?kind=cluster&id={world['v1'].uuid}")
    assert response.status_code == 400 and "dataset_version" in response.json()["detail"]
    assert api.get("/api/v1/lineage/?kind=job").status_code == 400
    assert api.get("/api/v1/lineage/?kind=job&id=nope").status_code == 404
    assert api.get(f"/api/v1/lineage/?kind=job&id={world['v1'].uuid}").status_code == 404
    api.force_authenticate(charlie)
    assert api.get(f"/api/v1/lineage/?kind=job&id={world['train'].uuid}").status_code == 404


def test_the_page_draws_the_graph_with_the_focus_highlighted(
    client, alice, charlie, world, django_assert_max_num_queries
):
    client.force_login(alice)
    with django_assert_max_num_queries(25):
        page = client.get(f"/lineage/job/{world['train'].uuid}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and html.count('class="edge"') == 7
    assert f'class="node focus" data-id="job:{world["train"].uuid}"' in html
    assert (
        'href="/models/iris-clf/#v1"' in html and f'href="/datasets/{world["data"].dataset.uuid}/versions/1/"' in html
    )
    client.force_login(charlie)
    assert client.get(f"/lineage/job/{world['train'].uuid}/").status_code == 404
    assert client.get(f"/lineage/nonsense/{world['train'].uuid}/").status_code == 404


def test_model_versions_are_immutable_rows_with_one_version_per_job(alice, team):
    from django.db import IntegrityError, transaction

    job = make_job(alice, team=team)
    make_model_version(job, alice, "iris-clf", 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_model_version(job, alice, "iris-clf", 2)
    assert ModelVersion.objects.count() == 1
