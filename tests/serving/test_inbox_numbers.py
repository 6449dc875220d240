import pytest

from tests.registry.conftest import make_job, make_model_version
from tests.serving.test_four_eyes import approver, artifact, production, request  # noqa: F401  (fixtures)


@pytest.mark.django_db
def test_the_inbox_rounds_metrics_with_the_full_value_on_hover(client, alice, approver, team, production, artifact):  # noqa: F811
    version = make_model_version(make_job(alice, team=team), alice, name="digits", metrics={"accuracy": 0.912345678901})
    request(alice, version, production)
    client.force_login(approver)
    page = client.get("/deployments/inbox/").content.decode()
    assert '<span class="num" title="0.912345678901">0.9123</span>' in page
