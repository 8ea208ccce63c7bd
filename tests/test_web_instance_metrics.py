"""The resource graphs on the dashboard, in-process: the instance page's card (four
graphs, the window from the query, polling at the sampling interval, one hx-sync scope,
tables), its fragment route (htmx only; a gone instance stops the polling), who may see
it, and the admin node page's graphs beside the allocation. The browser test is
test_browser_metrics.py."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from appliance import scheduler
from appliance.models import Instance
from appliance.services import clock
from tests.factories import add_member_by_form, default_project_id, run_jobs

HX = {"HX-Request": "true"}


@pytest.fixture
def project(app, ada):
    return default_project_id(app, "ada@example.test")


@pytest.fixture
def instance_id(app, ada, project, catalog) -> str:
    ada.post(f"/projects/{project}/instances", {
        "name": "graphs-1", "plan_id": "pln_small", "source": "image:" + catalog["image"],
        "password_mode": "generate"})
    run_jobs(app)
    with app.app_context():
        found = Instance.get(Instance.name == "graphs-1").id
    scheduler.run_task(app, "sample_resources")
    clock.advance(dt.timedelta(minutes=1))
    scheduler.run_task(app, "sample_resources")
    return found


def test_the_instance_page_has_four_graphs_that_poll_and_share_one_sync_scope(
        ada, project, instance_id):
    page = ada.page(f"/projects/{project}/instances/{instance_id}")
    card = page[page.index('<section class="card metrics-card"'):]
    card = card[:card.index("</section>")]
    assert card.count('<svg class="chart chart-small metric-svg"') == 4
    assert 'data-window="24h"' in card and 'hx-trigger="every 60s, instance-changed' in card
    assert 'hx-sync="this:drop"' in card and card.count('hx-sync="closest section:replace"') == 4
    assert "<polyline" in card or "<circle" in card  # the samples are drawn
    assert "Show as a table" in card and "<table" in card
    assert re.search(r'<a href="[^"]*metrics_window=7d#metrics"', card)  # works without JS
    week = ada.page(f"/projects/{project}/instances/{instance_id}?metrics_window=7d")
    assert 'data-window="7d"' in week
    odd = ada.page(f"/projects/{project}/instances/{instance_id}?metrics_window=2y")
    assert 'data-window="24h"' in odd  # an unknown window shows the default, never a 400


def test_the_card_is_a_fragment_for_htmx_and_a_redirect_otherwise(ada, project, instance_id):
    path = f"/projects/{project}/instances/{instance_id}/metrics?window=1h"
    fragment = ada.get(path, headers=HX)
    assert fragment.status_code == 200
    text = fragment.get_data(as_text=True)
    assert 'data-window="1h"' in text
    assert "<html" not in text
    plain = ada.get(path)
    assert plain.status_code == 302
    assert plain.headers["Location"].endswith(f"/instances/{instance_id}?metrics_window=1h"
                                              "#metrics")


def test_a_viewer_sees_the_graphs_an_outsider_gets_404_and_a_gone_instance_stops_polling(  # noqa: PLR0917
        app, ada, bob, eve, project, instance_id):
    add_member_by_form(ada, project, "bob@example.test", "viewer")
    assert 'id="metrics"' in bob.page(f"/projects/{project}/instances/{instance_id}")
    path = f"/projects/{project}/instances/{instance_id}/metrics?window=1h"
    assert eve.get(f"/projects/{project}/instances/{instance_id}").status_code == 404
    assert eve.get(path).status_code == 404
    outsider = eve.get(path, headers=HX)  # a poll: stopped, and nothing of it is shown
    assert outsider.status_code == 286 and "graphs-1" not in outsider.get_data(as_text=True)
    with app.app_context():
        Instance.update(status="deleted").where(Instance.id == instance_id).execute()
    gone = ada.get(path, headers=HX)
    assert gone.status_code == 286  # htmx stops polling


def test_the_admin_node_page_shows_measured_figures_and_host_graphs(root, catalog,
                                                                    instance_id):
    page = root.page(f"/admin/nodes/{catalog['node']}")
    assert 'data-testid="measured-running">1<' in page
    assert "of 64.0 GiB" in page  # the simulated host's memory
    assert page.count("metric-svg") == 4
    fragment = root.get(f"/admin/nodes/{catalog['node']}/metrics?window=7d", headers=HX)
    assert 'data-window="7d"' in fragment.get_data(as_text=True)
