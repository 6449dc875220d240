"""apps.core.live: the polling pattern every live page uses."""

from django.http import HttpResponse
from django.test import RequestFactory

from apps.core.live import STOP_POLLING, is_live_poll, live_answer, live_version


def _render():
    return HttpResponse("<div id='x' hx-swap-oob='true'>new</div>")


def test_the_version_changes_with_the_state_and_only_with_it():
    assert live_version("running", {"loss": 0.1}) == live_version("running", {"loss": 0.1})
    assert live_version("running", {"loss": 0.1}) != live_version("completed", {"loss": 0.1})


def test_a_poller_holding_the_current_version_gets_204_then_286_once_final():
    rf = RequestFactory()
    version = live_version("running")
    request = rf.get(f"/x/?live={version}", HTTP_HX_REQUEST="true")
    assert is_live_poll(request)
    assert live_answer(request, version=version, final=False, render=_render).status_code == 204
    assert live_answer(request, version=version, final=True, render=_render).status_code == STOP_POLLING


def test_a_stale_version_gets_the_regions_and_the_new_etag():
    request = RequestFactory().get("/x/?live=old", HTTP_HX_REQUEST="true")
    response = live_answer(request, version="new1", final=False, render=_render)
    assert response.status_code == 200 and b"hx-swap-oob" in response.content
    assert response["ETag"] == '"new1"'


def test_a_conditional_request_with_the_etag_is_answered_without_rendering():
    request = RequestFactory().get("/x/?live=", HTTP_HX_REQUEST="true", HTTP_IF_NONE_MATCH='"v9"')
    assert live_answer(request, version="v9", final=False, render=_render).status_code == 204


def test_a_plain_visit_is_not_a_poll():
    assert not is_live_poll(RequestFactory().get("/x/?live=abc"))
