"""OPTIONS on every route answers without a server error, whoever asks. The sweep walks the whole
URL configuration (the same walk as the permission sweep), so a route added later is covered."""

import pytest

from tests.core.test_url_permissions import ROUTES


@pytest.fixture(params=["anonymous", "member", "administrator"])
def visitor(request, client):
    if request.param == "member":
        client.force_login(request.getfixturevalue("alice"))
    elif request.param == "administrator":
        client.force_login(request.getfixturevalue("root"))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("path,name", ROUTES, ids=lambda v: str(v))
def test_it_answers_options_on_every_route_without_a_server_error(visitor, path, name):
    response = visitor.options(path)
    assert response.status_code < 500, f"OPTIONS {path} answered {response.status_code}"


@pytest.mark.django_db
def test_it_answers_options_on_the_api_docs_with_the_allowed_methods(client, alice):
    client.force_login(alice)
    response = client.options("/api/docs/")
    assert response.status_code == 200
    assert "GET" in response["Allow"]
    assert client.get("/api/docs/").status_code == 200
