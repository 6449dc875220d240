"""What the schema promises about every list and error, checked directly (the schemathesis run
in test_api_schema.py checks the same things by fuzzing, marked slow)."""

import json

import pytest

LISTS = ["/api/v1/jobs/", "/api/v1/datasets/", "/api/v1/models/", "/api/v1/deployments/", "/api/v1/clusters/"]


@pytest.fixture
def as_alice(api, alice):
    api.force_authenticate(alice)
    return api


@pytest.fixture
def served_schema(as_alice):
    return json.loads(as_alice.get("/api/schema/?format=json").content)


@pytest.mark.django_db
@pytest.mark.parametrize("path", LISTS)
def test_every_list_is_documented_and_answered_as_a_page(as_alice, served_schema, path):
    documented = served_schema["paths"][path]["get"]
    page = documented["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(served_schema["components"]["schemas"][page]["properties"]) >= {"count", "next", "previous", "results"}
    assert {p["name"] for p in documented["parameters"]} >= {"limit", "offset"}
    body = as_alice.get(path).json()
    assert set(body) == {"count", "next", "previous", "results"}


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "offset=-1", "offset=", "limit=1001", "offset=1e3"])
def test_a_limit_or_offset_that_is_not_a_whole_number_in_range_is_refused(as_alice, query):
    response = as_alice.get(f"/api/v1/jobs/?{query}")
    assert response.status_code == 400 and "whole number" in response.json()["detail"]


@pytest.mark.django_db
def test_an_unknown_status_filter_is_refused_rather_than_ignored(as_alice):
    assert as_alice.get("/api/v1/jobs/?status=runing").status_code == 400
    assert as_alice.get("/api/v1/jobs/?status=active").status_code == 200
    assert as_alice.get("/api/v1/deployments/?status=").status_code == 200


@pytest.mark.django_db
def test_an_api_url_no_route_matches_answers_json(as_alice, client, alice):
    response = as_alice.get("/api/v1/jobs/not-a-uuid/")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "detail" in response.json()
    client.force_login(alice)
    page = client.get("/jobs/not-a-uuid/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_the_api_takes_json_bodies_only(as_alice):
    response = as_alice.post("/api/v1/datasets/", {"team": "vision", "name": "x"}, format="multipart")
    assert response.status_code == 415
    documented = as_alice.get("/api/schema/?format=json").json()
    assert list(documented["paths"]["/api/v1/datasets/"]["post"]["requestBody"]["content"]) == ["application/json"]


@pytest.mark.django_db
def test_every_operation_documents_the_errors_it_can_give(served_schema):
    for path, operations in served_schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            public = path == "/api/v1/auth/token/"
            assert public or {"401", "403"} <= codes, f"{method.upper()} {path}: {sorted(codes)}"
            if "{" in path:
                assert "404" in codes, f"{method.upper()} {path}: {sorted(codes)}"
            if "requestBody" in operation:
                assert {"400", "415"} <= codes, f"{method.upper()} {path}: {sorted(codes)}"


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["stream=", "stream=stdin", "offset=", "offset=-1", "task=../x"])
def test_a_log_query_outside_its_documented_values_is_refused(as_alice, alice, team, query):
    from tests.registry.conftest import make_job

    job = make_job(alice, team=team)
    assert as_alice.get(f"/api/v1/jobs/{job.uuid}/logs/?{query}").status_code == 400
    assert as_alice.get(f"/api/v1/jobs/{job.uuid}/logs/?stream=stderr&offset=0&task=").status_code == 200
