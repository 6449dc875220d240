"""The triggers section of a pipeline's page and its forms."""

from zoneinfo import ZoneInfo

import pytest

from apps.pipelines.triggers import services
from apps.pipelines.triggers.models import PipelineSchedule, TriggerSettings
from tests.factories import ClusterGrantFactory

pytestmark = pytest.mark.django_db


def test_the_page_shows_the_webhook_url_never_its_secret_and_each_schedules_next_time(client, alice, pipeline):
    _, secret = services.webhook_secret_rotate(user=alice, pipeline=pipeline)
    schedule = services.schedule_create(
        user=alice, pipeline=pipeline, cron_expression="0 3 * * *", tz_name="Asia/Tokyo"
    )
    client.force_login(alice)
    html = client.get(f"/pipelines/{pipeline.uuid}/").content.decode()
    assert f"http://testserver/hooks/pipelines/{pipeline.uuid}/" in html
    assert secret not in html
    local = schedule.next_fire_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert local.hour == 3
    assert f"{local:%Y-%m-%d} 03:00 Asia/Tokyo" in html
    assert f"({schedule.next_fire_at:%Y-%m-%d %H:%M} UTC)" in html


def test_a_teammate_manages_triggers_from_the_page(client, bob, pipeline):
    # A trigger bob sets up runs as bob's own grant: he needs one on the pipeline's cluster.
    ClusterGrantFactory(user=bob, cluster=pipeline.cluster, cluster_username="bob01")
    client.force_login(bob)
    page = f"/pipelines/{pipeline.uuid}/"
    response = client.post(f"{page}triggers/polling/", {"enabled": "on", "interval_minutes": "15"}, follow=True)
    assert "Polling every 15 min." in response.content.decode()
    row = TriggerSettings.objects.get(pipeline=pipeline)
    assert row.polling_enabled and row.poll_interval_minutes == 15 and row.polling_set_by == bob
    assert "with <code>git ls-remote</code> as bob's grant" in response.content.decode()

    response = client.post(f"{page}schedules/", {"cron": "*/30 * * * *", "timezone": "Europe/Berlin"}, follow=True)
    assert "Schedule */30 * * * * (Europe/Berlin) added." in response.content.decode()
    schedule = PipelineSchedule.objects.get(pipeline=pipeline)
    assert schedule.created_by == bob

    client.post(f"{page}schedules/{schedule.uuid}/remove/")
    assert not PipelineSchedule.objects.exists()

    client.post(f"{page}triggers/polling/", {"interval_minutes": "15"})
    assert not TriggerSettings.objects.get(pipeline=pipeline).polling_enabled


def test_a_bad_schedule_is_refused_with_the_field_named(client, alice, pipeline):
    client.force_login(alice)
    response = client.post(f"/pipelines/{pipeline.uuid}/schedules/", {"cron": "0 25 * * *"}, follow=True)
    html = response.content.decode()
    assert 'class="flash error"' in html and "cron: &#x27;0 25 * * *&#x27; is not a valid cron expression" in html
    assert not PipelineSchedule.objects.exists()


def test_nobody_outside_the_team_sees_or_changes_the_triggers(client, api, charlie, pipeline):
    from apps.accounts.services import token_create

    client.force_login(charlie)
    for path in ("triggers/webhook/", "triggers/webhook/disable/", "triggers/polling/", "schedules/"):
        assert client.post(f"/pipelines/{pipeline.uuid}/{path}", {"cron": "* * * * *"}).status_code == 404
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=charlie, name='t')[1]}")
    assert api.get(f"/api/v1/pipelines/{pipeline.uuid}/triggers/").status_code == 404
    assert api.post(f"/api/v1/pipelines/{pipeline.uuid}/triggers/webhook/").status_code == 404
    assert not TriggerSettings.objects.exists() and not PipelineSchedule.objects.exists()


def test_the_triggers_section_is_live_without_redrawing_its_forms(client, alice, pipeline):
    """A push, a poll or a schedule changes the section by itself: its live poll answers 204
    while nothing changed, and the deliveries, the last poll and the schedules (never the
    forms, where a member may be typing) when something did."""
    from django.utils import timezone

    from apps.pipelines.triggers.models import WebhookDelivery

    client.force_login(alice)
    html = client.get(f"/pipelines/{pipeline.uuid}/").content.decode()
    live = f"/pipelines/{pipeline.uuid}/triggers/live/"
    assert f'hx-get="{live}?live=' in html
    version = html.split(f'hx-get="{live}?live=')[1].split('"')[0]
    poll = {"HTTP_HX_REQUEST": "true"}
    assert client.get(live, {"live": version}, **poll).status_code == 204

    WebhookDelivery.objects.create(
        pipeline=pipeline,
        forge="github",
        delivery_id="live-delivery-1",
        body_sha256="0" * 64,
        commit="a" * 40,
        outcome=WebhookDelivery.Outcome.STARTED,
    )
    answer = client.get(live, {"live": version}, **poll)
    assert answer.status_code == 200
    body = answer.content.decode()
    assert 'id="trigger-deliveries" hx-swap-oob="true"' in body and "live-delivery-1" in body
    assert 'id="trigger-schedules" hx-swap-oob="true"' in body and 'id="trigger-polling" hx-swap-oob="true"' in body
    assert 'name="cron"' not in body and 'name="interval_minutes"' not in body  # the forms stay as typed
    newer = body.split(f'hx-get="{live}?live=')[1].split('"')[0]
    assert newer != version and client.get(live, {"live": newer}, **poll).status_code == 204

    TriggerSettings.objects.update_or_create(
        pipeline=pipeline,
        defaults={
            "polling_enabled": True,
            "polling_set_by": alice,
            "last_polled_at": timezone.now(),
            "last_seen_commit": "b" * 40,
        },
    )
    body = client.get(live, {"live": newer}, **poll).content.decode()
    assert "Last poll:" in body and "b" * 12 in body
    # Not a live poll (a visit): back to the pipeline's page.
    assert client.get(live).status_code == 302


def test_a_stranger_gets_nothing_from_the_triggers_live_poll(client, charlie, pipeline):
    client.force_login(charlie)
    assert (
        client.get(f"/pipelines/{pipeline.uuid}/triggers/live/", {"live": "x"}, HTTP_HX_REQUEST="true").status_code
        == 404
    )
