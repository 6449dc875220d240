"""A NUL character in any query parameter, of the API or a page, is refused (400) before any view
sees it: no database stores one, and PostgreSQL refuses it as a server error."""

import json

import pytest


@pytest.mark.django_db
def test_a_nul_in_any_query_parameter_of_any_get_is_refused_as_json_not_a_server_error(api, alice):
    api.force_authenticate(alice)
    api.raise_request_exception = False  # a server error is counted, not raised
    schema = json.loads(api.get("/api/schema/?format=json").content)
    tried, broken = 0, []
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if get is None or "{" in path:
            continue
        for parameter in get.get("parameters", []):
            if parameter["in"] != "query":
                continue
            tried += 1
            response = api.get(path, {parameter["name"]: "a\x00b"})
            if response.status_code != 400 or "NUL" not in response.json()["detail"]:
                broken.append(f"{path}?{parameter['name']}: {response.status_code}")
    assert tried > 10
    assert broken == [], broken


@pytest.mark.django_db
def test_an_unknown_sweep_status_filter_is_refused_as_the_jobs_one_is(api, alice):
    api.force_authenticate(alice)
    assert api.get("/api/v1/sweeps/?status=runing").status_code == 400
    assert api.get("/api/v1/sweeps/?status=active").status_code == 200
    assert api.get("/api/v1/sweeps/?status=").status_code == 200


def _pages(patterns, prefix=""):
    """Every dashboard URL that takes no argument in its path (the API is checked above)."""
    from django.urls import URLPattern, URLResolver

    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _pages(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and "<" not in route and "(?P" not in route and "^" not in route:
            yield "/" + route.lstrip("/")


# The query parameters the dashboard's views read (`request.GET`), each given a NUL.
PAGE_PARAMETERS = ["status", "team", "q", "from", "ids", "id", "page", "path", "rows", "part", "state", "live", "task"]


@pytest.mark.django_db
def test_a_nul_in_a_pages_query_is_refused_with_the_error_page_never_a_server_error(client, alice):
    from django.urls import get_resolver

    client.force_login(alice)
    client.raise_request_exception = False
    pages = [p for p in _pages(get_resolver().url_patterns) if not p.startswith(("/api/", "/admin/", "/static/"))]
    assert len(pages) > 10
    broken = []
    for page in pages:
        for name in PAGE_PARAMETERS:
            response = client.get(page, {name: "a\x00b"})
            if response.status_code != 400 or b"NUL character" not in response.content:
                broken.append(f"{page}?{name}: {response.status_code}")
    assert broken == [], broken


@pytest.mark.django_db
def test_a_nul_in_a_parameters_name_is_refused_too_and_a_plain_query_is_not(client, alice):
    client.force_login(alice)
    assert client.get("/jobs/?a%00b=1").status_code == 400
    assert client.get("/jobs/?status=running").status_code == 200


@pytest.mark.django_db
def test_a_nul_in_the_path_is_refused_too(api, client, alice):
    # Paths that take a name (not a uuid) would hand the NUL to PostgreSQL.
    api.force_authenticate(alice)
    for path in ["/api/v1/models/a%00b/", "/api/v1/clusters/a%00b/"]:
        response = api.get(path)
        assert response.status_code == 400 and "NUL" in response.json()["detail"], path
    client.force_login(alice)
    response = client.get("/models/a%00b/")
    assert response.status_code == 400 and b"The address holds a NUL character" in response.content
