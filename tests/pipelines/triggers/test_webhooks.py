"""Push webhooks from GitHub, GitLab and Gitea, through Django's whole request handling (the
test client; CSRF checks on), each signed with real HMAC-SHA256 (or GitLab's token) under the
pipeline's own secret."""

import json
import logging

import pytest

from apps.audit.models import AuditEvent
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers import services
from apps.pipelines.triggers.models import WebhookDelivery

from .conftest import push_body, signed_headers

FORGES = ["github", "gitlab", "gitea"]


@pytest.fixture
def csrf_client(client):
    client.handler.enforce_csrf_checks = True
    return client


@pytest.fixture
def secret(pipeline, alice):
    return services.webhook_secret_rotate(user=alice, pipeline=pipeline)[1]


def post(client, pipeline, body: bytes, headers: dict):
    return client.post(f"/hooks/pipelines/{pipeline.uuid}/", body, content_type="application/json", **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_signed_push_to_the_branch_is_accepted_and_queues_one_run(
    forge, csrf_client, pipeline, secret, django_capture_on_commit_callbacks
):
    body = push_body()
    with django_capture_on_commit_callbacks() as queued:
        response = post(csrf_client, pipeline, body, signed_headers(forge, secret, body, delivery="d-1"))
    assert response.status_code == 202, response.content
    assert "accepted" in response.json()["message"]
    delivery = WebhookDelivery.objects.get(pipeline=pipeline)
    assert (delivery.forge, delivery.delivery_id, delivery.commit, delivery.outcome) == (
        forge,
        "d-1",
        "a" * 40,
        WebhookDelivery.Outcome.QUEUED,
    )
    assert len(queued) == 1  # the worker starts the run: the forge does not wait for the cluster
    event = AuditEvent.objects.get(action="pipeline.webhook_accepted")
    assert event.request_id == response["X-Request-ID"]
    assert event.after["delivery_id"] == "d-1" and event.after["forge"] == forge


@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_bad_signature_gets_403_and_an_audit_event_never_a_run(
    forge, csrf_client, pipeline, secret, django_capture_on_commit_callbacks
):
    body = push_body()
    with django_capture_on_commit_callbacks() as queued:
        wrong_secret = post(csrf_client, pipeline, body, signed_headers(forge, "not-" + secret, body))
    assert wrong_secret.status_code == 403
    if forge != "gitlab":  # GitLab sends its token as it is: nothing of the body is signed
        with django_capture_on_commit_callbacks() as more:
            # The right secret's signature of another body: the body was changed on the way.
            tampered = post(csrf_client, pipeline, push_body(after="b" * 40), signed_headers(forge, secret, body))
        assert tampered.status_code == 403
        queued += more
    assert not queued
    assert not WebhookDelivery.objects.exists() and not PipelineRun.objects.exists()
    rejected = AuditEvent.objects.filter(action="pipeline.webhook_rejected", subject_id=str(pipeline.uuid))
    event = rejected.get(request_id=wrong_secret["X-Request-ID"])
    assert event.after["forge"] == forge and event.actor is None
    assert secret not in json.dumps(list(rejected.values("after")))


@pytest.mark.django_db
def test_gitlab_token_is_compared_whole(csrf_client, pipeline, secret):
    body = push_body()
    for token in ("", secret[:-1], secret + "x", secret.upper()):
        headers = signed_headers("gitlab", secret, body)
        headers["HTTP_X_GITLAB_TOKEN"] = token
        assert post(csrf_client, pipeline, body, headers).status_code == 403, token


@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_missing_signature_is_refused(forge, csrf_client, pipeline, secret):
    body = push_body()
    headers = signed_headers(forge, secret, body)
    for name in ("HTTP_X_HUB_SIGNATURE_256", "HTTP_X_GITEA_SIGNATURE", "HTTP_X_GITLAB_TOKEN"):
        headers.pop(name, None)
    assert post(csrf_client, pipeline, body, headers).status_code in (400, 403)
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_replayed_delivery_is_ignored(forge, csrf_client, pipeline, secret, django_capture_on_commit_callbacks):
    body = push_body()
    with django_capture_on_commit_callbacks() as queued:
        first = post(csrf_client, pipeline, body, signed_headers(forge, secret, body, delivery="same-id"))
        again = post(csrf_client, pipeline, body, signed_headers(forge, secret, body, delivery="same-id"))
        # A captured request sent again under a new delivery id: the same body, still a replay.
        renamed = post(csrf_client, pipeline, body, signed_headers(forge, secret, body, delivery="new-id"))
    assert first.status_code == 202
    assert again.status_code == 200 and "received before" in again.json()["message"]
    assert renamed.status_code == 200 and "received before" in renamed.json()["message"]
    assert WebhookDelivery.objects.filter(pipeline=pipeline).count() == 1
    assert len(queued) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_push_to_another_branch_is_ignored_with_the_reason(
    forge, csrf_client, pipeline, secret, django_capture_on_commit_callbacks
):
    body = push_body(ref="refs/heads/feature")
    with django_capture_on_commit_callbacks() as queued:
        response = post(csrf_client, pipeline, body, signed_headers(forge, secret, body))
    assert response.status_code == 202
    assert response.json()["message"] == (
        "ignored: a push to refs/heads/feature; this pipeline follows refs/heads/main."
    )
    assert not queued and not PipelineRun.objects.exists()
    assert WebhookDelivery.objects.get().outcome == WebhookDelivery.Outcome.IGNORED
    tag = push_body(ref="refs/tags/v1")
    assert (
        post(csrf_client, pipeline, tag, signed_headers(forge, secret, tag))
        .json()["message"]
        .startswith("ignored: a push to refs/tags/v1")
    )


@pytest.mark.django_db
def test_other_events_and_pings_start_nothing(csrf_client, pipeline, secret):
    ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    response = post(csrf_client, pipeline, ping, signed_headers("github", secret, ping, event="ping"))
    assert response.status_code == 200 and response.json()["message"].startswith("pong")
    issue = b'{"action": "opened"}'
    response = post(csrf_client, pipeline, issue, signed_headers("gitea", secret, issue, event="issues"))
    assert response.status_code == 200 and "not a push" in response.json()["message"]
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_pipeline_without_a_webhook_answers_404(csrf_client, pipeline):
    body = push_body()
    assert post(csrf_client, pipeline, body, signed_headers("github", "anything", body)).status_code == 404


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_unread(csrf_client, pipeline, secret, settings):
    settings.AXLE_WEBHOOK_MAX_BYTES = 1000
    body = push_body(extra={"padding": "x" * 2000})
    response = post(csrf_client, pipeline, body, signed_headers("github", secret, body))
    assert response.status_code == 413
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_only_post_is_answered(csrf_client, pipeline, secret):
    assert csrf_client.get(f"/hooks/pipelines/{pipeline.uuid}/").status_code == 405


@pytest.mark.django_db
def test_the_secret_is_shown_once_and_never_again(client, api, alice, pipeline, caplog):
    from apps.accounts.services import token_create

    caplog.set_level(logging.DEBUG)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=alice, name='t')[1]}")
    made = api.post(f"/api/v1/pipelines/{pipeline.uuid}/triggers/webhook/")
    assert made.status_code == 201 and made["Cache-Control"] == "no-store"
    secret = made.json()["secret"]
    assert len(secret) >= 40 and made.json()["url"].endswith(f"/hooks/pipelines/{pipeline.uuid}/")
    shown = api.get(f"/api/v1/pipelines/{pipeline.uuid}/triggers/")
    assert shown.json()["webhook"]["configured"] is True
    assert secret not in shown.content.decode()
    client.force_login(alice)
    page = client.post(f"/pipelines/{pipeline.uuid}/triggers/webhook/")
    assert page.status_code == 200
    second = page.context["secret"]
    assert second != secret and second in page.content.decode()
    assert "no-cache" in page["Cache-Control"] or "no-store" in page["Cache-Control"]
    stored = pipeline.trigger_settings
    stored.refresh_from_db()
    assert second not in stored.webhook_secret_encrypted and secret not in stored.webhook_secret_encrypted
    everything = json.dumps(list(AuditEvent.objects.values("after", "before")), default=str)
    assert secret not in everything and second not in everything
    assert secret not in caplog.text and second not in caplog.text
    # The old secret stopped working when the new one was made.
    body = push_body()
    assert post(client, pipeline, body, signed_headers("github", secret, body)).status_code == 403
    assert post(client, pipeline, body, signed_headers("github", second, body)).status_code == 202


@pytest.mark.django_db
def test_charlie_cannot_touch_alices_triggers(client, charlie, pipeline):
    client.force_login(charlie)
    assert client.post(f"/pipelines/{pipeline.uuid}/triggers/webhook/").status_code == 404
    assert not AuditEvent.objects.filter(action__startswith="pipeline.webhook_secret").exists()


@pytest.mark.slurm
@pytest.mark.django_db
@pytest.mark.parametrize("forge", FORGES)
def test_a_push_starts_one_run_at_its_commit_recording_the_delivery(
    forge, csrf_client, alice, cluster_pipeline, cluster_repo, django_capture_on_commit_callbacks
):
    _, secret = services.webhook_secret_rotate(user=alice, pipeline=cluster_pipeline)
    commit = cluster_repo.commit({"README": f"pushed for {forge}\n"}, "a push")
    body = push_body(after=commit)
    with django_capture_on_commit_callbacks() as queued:
        response = post(csrf_client, cluster_pipeline, body, signed_headers(forge, secret, body, delivery="deliv-7"))
    assert response.status_code == 202 and len(queued) == 1
    delivery = WebhookDelivery.objects.get(pipeline=cluster_pipeline)
    # What the queued task does in the worker once the request committed: the run reads the
    # pipeline file at the pushed commit on the cluster, as the grant's account.
    run = services.webhook_delivery_start(delivery_id=delivery.pk)
    assert run is not None and run.status == PipelineRun.Status.RUNNING, run.message if run else None
    assert (run.trigger, run.commit, run.delivery_id) == (PipelineRun.Trigger.PUSH, commit, "deliv-7")
    assert run.trigger_detail["forge"] == forge
    delivery.refresh_from_db()
    assert delivery.outcome == WebhookDelivery.Outcome.STARTED and delivery.run == run
    # The task running twice starts nothing more.
    assert services.webhook_delivery_start(delivery_id=delivery.pk) is None
    assert PipelineRun.objects.filter(pipeline=cluster_pipeline).count() == 1


@pytest.mark.django_db
def test_rotate_secrets_reencrypts_webhook_secrets_and_deliveries_still_verify(client, alice, pipeline):
    from io import StringIO

    from cryptography.fernet import Fernet
    from django.core.management import call_command
    from django.test import override_settings

    from apps.core import crypto

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    try:
        with override_settings(AXLE_ENCRYPTION_KEYS=[old]):
            crypto.reset_cache()
            _, secret = services.webhook_secret_rotate(user=alice, pipeline=pipeline)
        with override_settings(AXLE_ENCRYPTION_KEYS=[new, old]):
            crypto.reset_cache()
            call_command("rotate_secrets", stdout=StringIO())
        with override_settings(AXLE_ENCRYPTION_KEYS=[new]):
            crypto.reset_cache()
            body = push_body()
            assert post(client, pipeline, body, signed_headers("gitea", secret, body)).status_code == 202
        assert AuditEvent.objects.filter(action="secrets.rotated", after__pipeline_webhooks=1).exists()
    finally:
        crypto.reset_cache()


@pytest.mark.django_db(transaction=True)
def test_a_forge_reaches_the_webhook_over_a_real_socket(live_server, alice, pipeline):
    import urllib.error
    import urllib.request

    from apps.pipelines.triggers import forges

    _, secret = services.webhook_secret_rotate(user=alice, pipeline=pipeline)
    body = push_body()
    url = f"{live_server.url}/hooks/pipelines/{pipeline.uuid}/"

    def send(signature: str, delivery: str):
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
        }
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    assert send("sha256=" + "0" * 64, "sock-0")[0] == 403
    status, answer = send("sha256=" + forges.hmac_hex(secret, body), "sock-1")
    assert status == 202, answer
    # The worker (run inline here, once the request committed) could not reach the pipeline's
    # cluster: the delivery waits for the triggers task to try again, and the forge was not kept
    # waiting on it.
    delivery = WebhookDelivery.objects.get(delivery_id="sock-1")
    assert delivery.outcome == WebhookDelivery.Outcome.QUEUED and delivery.attempts == 1
    assert "Trying again shortly." in delivery.message
    assert not PipelineRun.objects.exists()
