"""One way to show numbers and times, branded error pages, the favicon."""

import datetime

import pytest
from django.test import Client, RequestFactory
from django.utils import timezone

from apps.core import views as core_views
from apps.core.templatetags.axle import duration, metric, metric_text, when


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.912345678901234, "0.9123"),
        (0.1, "0.1"),
        (12.3456, "12.35"),
        (1234.5678, "1235"),
        (42, "42"),
        (3.0, "3"),
        (0, "0"),
        (-0.000012345, "-1.234e-05"),
        (123456789.0, "1.235e+08"),
        (float("nan"), "NaN"),
        (None, "—"),
    ],
)
def test_metrics_are_rounded_to_four_significant_digits(value, shown):
    assert metric_text(value) == shown


def test_the_full_metric_value_is_on_hover():
    assert str(metric(0.912345678901234)) == '<span class="num" title="0.912345678901234">0.9123</span>'


def test_times_carry_their_zone_relative_within_a_day_and_exact_on_hover(settings):
    now = timezone.now()
    recent = str(when(now - datetime.timedelta(minutes=5)))
    assert ">5 min ago</time>" in recent and 'title="' in recent and " UTC" in recent
    old = str(when(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)))
    assert ">2026-01-02 03:04 UTC</time>" in old and 'title="2026-01-02 03:04:05 UTC"' in old
    exact = str(when(now, "exact"))
    assert "ago" not in exact and "UTC</time>" in exact


def test_durations_read_as_hours_minutes_seconds():
    assert (duration(42), duration(185), duration(3725), duration(None)) == ("42 s", "3 min 05 s", "1 h 02 min", "")


@pytest.mark.django_db
def test_an_unknown_page_is_branded_with_a_way_back(client, alice):
    client.force_login(alice)
    response = client.get("/no/such/page/", HTTP_REFERER="http://testserver/jobs/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "Nothing here" in page and 'href="http://testserver/jobs/"' in page and 'id="error-home"' in page
    assert 'rel="icon"' in page


@pytest.mark.django_db
def test_a_way_back_never_leads_off_site(client, alice):
    client.force_login(alice)
    page = client.get("/no/such/page/", HTTP_REFERER="https://evil.example/").content.decode()
    assert "evil.example" not in page and 'id="error-back"' not in page


def test_a_way_back_from_a_request_for_another_host_is_none_not_an_error(rf):
    from apps.core.templatetags.axle import safe_back

    request = rf.get("/", HTTP_HOST="evil.example", HTTP_REFERER="http://evil.example/x")
    assert safe_back(request) == ""


@pytest.mark.django_db
def test_a_request_for_another_host_is_djangos_bad_request_not_a_server_error(client):
    response = client.get("/login/", HTTP_HOST="evil.example", HTTP_REFERER="http://evil.example/x")
    assert response.status_code == 400


@pytest.mark.django_db
def test_a_forbidden_page_is_branded(rf, alice):
    from django.core.exceptions import PermissionDenied

    request = rf.get("/admin/thing/")
    request.user = alice
    request.request_id = "req-12345678"
    response = core_views.permission_denied(request, PermissionDenied())
    assert response.status_code == 403 and "You may not do that" in response.content.decode()
    api = core_views.permission_denied(rf.get("/api/v1/x/"), PermissionDenied())
    assert api.status_code == 403 and api["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_an_expired_form_shows_the_csrf_page_with_a_way_back(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/tokens/", {"name": "x"}, HTTP_REFERER="http://testserver/tokens/")
    page = response.content.decode()
    assert response.status_code == 403
    assert "The form expired" in page and 'href="http://testserver/tokens/"' in page


def test_the_500_page_needs_no_database():
    # No django_db mark: any query would raise. The page renders from templates alone.
    request = RequestFactory().get("/jobs/")
    request.request_id = "req-abcdefgh"
    response = core_views.server_error(request)
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in page and "req-abcdefgh" in page and 'href="/"' in page


def test_the_favicon_is_served_as_a_static_file():
    from django.contrib.staticfiles import finders

    assert finders.find("favicon.svg")
