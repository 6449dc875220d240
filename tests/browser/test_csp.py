"""Issue 8, finding 7: the Content-Security-Policy refuses inline code, and the dashboard's
own pages (with htmx, Chart.js and the Swagger UI) run under it without a single violation."""

import uuid

import pytest
import requests
from django.conf import settings

from apps.accounts.models import Membership
from apps.registry.models import ModelVersion, RegisteredModel
from apps.serving.models import Environment
from apps.serving.services import deployment_request
from tests.factories import PASSWORD
from tests.registry.conftest import make_job

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.slow]

# Every violation the page reports, whoever caused it; injected by Playwright before the page's
# own scripts, so the policy does not apply to it.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def run_with_metrics():
    """A real MLflow run with a metric curve, for the job page's chart."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = settings.AXLE_MLFLOW_TRACKING_URI
    try:
        requests.get(f"{uri}/health", timeout=3).raise_for_status()
    except requests.RequestException:
        pytest.skip("needs the MLflow server of compose/local (stack.sh up)")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("axle-tests-csp") or client.get_experiment(
        client.create_experiment("axle-tests-csp")
    )
    run = client.create_run(experiment.experiment_id)
    client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0 / (s + 1), 0, s) for s in range(10)])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def pages(transactional_db, alice, team, run_with_metrics):
    alice.is_staff = alice.is_superuser = True  # so /audit/ and /admin/ are hers to load too
    alice.save()
    team.memberships.filter(user=alice).update(role=Membership.Role.APPROVER)
    job = make_job(alice, team=team, mlflow_run_id=run_with_metrics, name="csp-run")
    model = RegisteredModel.objects.create(name=f"csp-{uuid.uuid4().hex[:6]}", team=team, created_by=alice)
    version = ModelVersion.objects.create(
        model=model,
        number=1,
        job=job,
        mlflow_run_id=run_with_metrics,
        source_uri=f"runs:/{run_with_metrics}/model",
        artifact_uri="mlflow-artifacts:/x",
        sha256="0" * 64,
        created_by=alice,
    )
    production = Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    deployment = deployment_request(user=alice, model_version=version, environment=production, reason="csp test")
    return {
        "job": f"/jobs/{job.uuid}/",
        "deployment": f"/deployments/{deployment.uuid}/",
        "others": [
            "/jobs/",
            "/jobs/new/",
            "/datasets/",
            "/models/",
            f"/models/{model.name}/",
            f"/lineage/job/{job.uuid}/",
            "/deployments/",
            "/deployments/inbox/",
            "/clusters/",
            "/audit/",
            "/tokens/",
            "/admin/",
            "/admin/audit/auditevent/",
        ],
    }


def _violations(page):
    return page.evaluate("window.__csp")


def test_the_policy_refuses_inline_code(page, live_server):
    header = requests.get(f"{live_server.url}/login/", timeout=10).headers["Content-Security-Policy"]
    assert "script-src 'self'" in header and "unsafe-inline" not in header and "unsafe-eval" not in header
    assert "object-src 'none'" in header and "frame-ancestors 'none'" in header
    # The detector below works: an injected inline handler is refused and reported.
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.goto("/login/")
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__ran = 1\">')")
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("window.__ran") is None
    assert "script-src" in _violations(page)[0]


def test_the_dashboards_own_pages_run_without_a_violation(page, pages):
    console = []
    page.on("console", lambda msg: console.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.context.add_init_script(RECORD_VIOLATIONS)

    page.goto("/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert _violations(page) == [], "home"

    page.goto(pages["job"])
    page.wait_for_selector("#metric-charts figure[data-metric=loss] canvas")
    page.wait_for_timeout(500)  # htmx parts (status, logs, artifacts) load after the page
    assert _violations(page) == [], "job page"

    page.goto(pages["deployment"])
    page.wait_for_selector("[data-status=requested]")
    page.wait_for_timeout(500)
    assert _violations(page) == [], "deployment page"

    for path in pages["others"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert _violations(page) == [], path

    docs = page.goto("/api/docs/")
    # Its two inline blocks carry this response's nonce; nothing else may run inline.
    assert "'nonce-" in docs.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Axle API" in page.locator(".swagger-ui .info .title").inner_text()
    assert _violations(page) == [], "api docs"
    assert console == []
