"""The sweep pages in a real browser: the form's live validation names the field at fault,
and the sweep page draws the objective with the best-so-far line and sorts its trials."""

import pytest

from apps.sweeps import services
from apps.sweeps.models import Sweep, Trial
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.sweeps.conftest import experiment

from .test_jobs import login

pytestmark = [pytest.mark.browser]


@pytest.fixture
def grant(transactional_db, alice):
    return ClusterGrantFactory(
        user=alice, cluster=ClusterFactory(name="hpc"), cluster_username="alice01", allowed_partitions=["debug"]
    )


def test_the_form_validates_as_you_type_with_the_path_of_the_field(page, grant):
    login(page, "alice")
    page.goto("/sweeps/new/")
    page.fill("#id_spec", experiment().replace("algorithmName: random", "algorithmName: pbt"))
    page.locator("#id_spec").press("End")  # a keyup: htmx asks the hub
    page.wait_for_selector("#validation .problems")
    text = page.locator("#validation").inner_text()
    assert "spec.algorithm.algorithmName" in text and "pbt" in text
    page.fill("#id_spec", experiment())
    page.locator("#id_spec").press("End")
    page.wait_for_selector("#validation .flash.success")
    assert "fits your grant" in page.locator("#validation").inner_text()
    page.click("button[value=create]")
    page.wait_for_url("**/sweeps/*/")
    assert Sweep.objects.get().name == "lr"


def test_the_sweep_page_draws_the_objectives_and_sorts_the_trials(page, grant, alice):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=4))
    for number, value in enumerate([0.4, 0.2, 0.3, 0.1]):
        Trial.objects.filter(sweep=sweep, number=number).update(state="succeeded", objective=value)
    login(page, "alice")
    page.goto(f"/sweeps/{sweep.uuid}/")
    page.wait_for_function("Chart.getChart('sweep-chart') !== undefined")
    best = page.evaluate("Chart.getChart('sweep-chart').data.datasets[1].data.map(p => p.y)")
    assert best == [0.4, 0.2, 0.2, 0.1]
    assert page.locator("tr.best").get_attribute("data-trial") == "3"
    assert page.locator("#sweep-parallel").get_attribute("data-lines") == "4"  # one line per trial
    page.locator("#trials th", has_text="loss").click()
    order = page.locator("#trials tbody tr").evaluate_all("rows => rows.map(r => r.dataset.trial)")
    assert order == ["3", "1", "2", "0"]


def test_the_sweep_page_is_live_as_a_whole_until_the_sweep_ends(page, grant, alice):
    from apps.sweeps import advance

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2))
    Trial.objects.filter(sweep=sweep).update(state="running")
    login(page, "alice")
    page.goto(f"/sweeps/{sweep.uuid}/")
    page.wait_for_function("Chart.getChart('sweep-chart') !== undefined")
    assert page.locator("#sweep-live").get_attribute("data-status") == "running"
    assert page.locator("#sweep-stop").is_visible()
    assert "2 running" in page.locator("#sweep-counts").inner_text()
    # The trials end and the sweep with them: the hub's own cycle records it.
    for number, value in enumerate([0.4, 0.2]):
        Trial.objects.filter(sweep=sweep, number=number).update(state="succeeded", objective=value)
    advance.sweep_advance(sweep_id=sweep.pk)
    page.wait_for_selector("#sweep-live[data-status=succeeded]", timeout=15_000)
    # State, counts, best, buttons and plots all re-rendered, without reloading the page.
    assert page.locator("#sweep-stop").count() == 0
    assert "2 succeeded" in page.locator("#sweep-counts").inner_text()
    assert "trial 1: 0.2" in page.locator("#sweep-best").inner_text()
    assert page.locator("#register-best").is_visible()
    assert page.evaluate("Chart.getChart('sweep-chart').data.datasets[0].data.length") == 2
    assert page.locator("#sweep-parallel").get_attribute("data-lines") == "2"
    assert page.locator("tr.best").get_attribute("data-trial") == "1"
    # An ended sweep's page stops polling: its poller (apps/core/live.py) is final.
    assert page.locator("#live-sweep").get_attribute("data-live-final") == "true"
    assert page.locator("#live-sweep").get_attribute("hx-trigger") is None
