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
