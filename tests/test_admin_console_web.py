"""The operator's console in the dashboard: every account's instances with their owner
and node, the owner's actions done from the admin list, and a node's page."""

from __future__ import annotations

import re

import pytest

from appliance.models import AuditLog, Project
from tests.factories import (
    EVIL,
    EVIL_ESCAPED,
    HTML,
    create_instance,
    default_project_id,
    error_next_to,
    run_jobs,
    signed_in,
)


@pytest.fixture
def ada_instance(app, ada, catalog) -> dict:
    """A running instance of Ada's, made through the API as she would."""
    client = app.test_client()
    project_id = default_project_id(app, "ada@example.test")
    return create_instance(app, client, signed_in(client, "ada@example.test"), project_id,
                           catalog, name="ada-web") | {"project_id": project_id}


def test_the_admin_list_shows_every_instance_with_its_owner_and_node(root, ada_instance,
                                                                     catalog):
    page = root.page("/admin/instances")
    row = re.search(rf'<tr id="instance-{ada_instance["id"]}">(.*?)</tr>', page, re.S)
    assert row, page
    assert "ada-web" in row.group(1) and "ada@example.test" in row.group(1)
    assert f'href="/admin/nodes/{catalog["node"]}"' in row.group(1)
    assert ">fake<" in row.group(1)  # the node's name
    engine_name = "ins-" + ada_instance["id"].removeprefix("ins_")
    assert "ada-web" in root.page(f"/admin/instances?q={engine_name}")
    assert "ada-web" in root.page("/admin/instances?q=ada@example")
    assert "ada-web" not in root.page("/admin/instances?q=eve@example")
    # htmx asks for the table only.
    fragment = root.get("/admin/instances?q=ada", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert '<div id="instances-table">' in body
    assert "<html" not in body and "ada-web" in body


def test_an_admin_stops_a_customers_instance_from_the_list_and_the_customer_sees_it(
        app, root, ada, ada_instance, admin_user):
    response = root.post(f"/admin/instances/{ada_instance['id']}/power/stop?q=ada")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/admin/instances?") and "q=ada" in location
    run_jobs(app)
    page = ada.page(f"/projects/{ada_instance['project_id']}/instances/{ada_instance['id']}")
    assert re.search(r'status-badge badge-off">stopped<', page)
    assert "root@example.test, administrator" in page  # the timeline says who
    with app.app_context():
        row = AuditLog.get(AuditLog.action == "instance.stop")
    assert row.actor_id == admin_user.id and '"owner_email": "ada@example.test"' in row.details


def test_a_refused_action_shows_its_error_on_the_list(app, root, ada_instance):
    root.post(f"/admin/instances/{ada_instance['id']}/power/stop")
    run_jobs(app)
    again = root.post(f"/admin/instances/{ada_instance['id']}/power/stop")
    assert again.status_code == 409
    assert "Cannot stop an instance that is stopped." in again.get_data(as_text=True)


def test_deleting_from_the_list_needs_the_name_typed_back(app, root, ada, ada_instance):
    url = f"/admin/instances/{ada_instance['id']}/delete"
    wrong = root.post(url, {"confirm_name": "ada-wub"})
    assert wrong.status_code == 400
    page = wrong.get_data(as_text=True)
    field = f"f-instance-{ada_instance['id']}-confirm_name"
    assert error_next_to(page, field) == "Type the instance&#39;s name exactly to confirm."
    assert f'id="instance-{ada_instance["id"]}"' in page
    assert re.search(rf'<tr id="instance-{ada_instance["id"]}">.*?<details class="confirm" open>',
                     page, re.S)
    gone = root.post(url, {"confirm_name": "ada-web"}, follow=True)
    assert gone.status_code == 200
    assert "Deleting ada-web." in gone.get_data(as_text=True)
    run_jobs(app)
    assert ada.get(f"/projects/{ada_instance['project_id']}/instances/"
                   f"{ada_instance['id']}").status_code == 404


def test_a_node_page_lists_its_instances_and_what_is_allocated(root, ada_instance, catalog):
    page = root.page(f"/admin/nodes/{catalog['node']}")
    assert "ada-web" in page and "ada@example.test" in page
    # One "small" plan (1 vCPU, 512 MB, 10 GB) on a node of 64 vCPUs, 64 GB, 1000 GB.
    # Placement allots 4x the vCPUs by default (overcommit), memory and disk 1x.
    assert re.search(r'data-testid="allocated-vcpus">1 of 256 \(64 &times; 4\)<', page)
    assert re.search(r'data-testid="allocated-memory">512 MB of 64 GB \(64 GB &times; 1\)<',
                     page)
    assert re.search(r'data-testid="allocated-disk">10 GB of 1000 GB \(1000 GB &times; 1\)<',
                     page)
    assert f'href="/admin/nodes/{catalog["node"]}"' in root.page("/admin/nodes")
    stopped = root.post(f"/admin/instances/{ada_instance['id']}/power/stop"
                        f"?from_node={catalog['node']}")
    assert stopped.headers["Location"].startswith(f"/admin/nodes/{catalog['node']}?")
    assert root.get("/admin/nodes/node_nothing").status_code == 404


def test_names_users_type_are_escaped_in_the_admin_list(app, root, ada_instance):
    with app.app_context():
        Project.update(name=EVIL).where(Project.id == ada_instance["project_id"]).execute()
    page = root.page("/admin/instances")
    assert EVIL not in page and EVIL_ESCAPED in page


def test_the_admin_pages_are_for_administrators_and_customer_pages_stay_404(  # noqa: PLR0917
        app, root, ada, eve, ada_instance, catalog):
    for path in ("/admin/instances", f"/admin/nodes/{catalog['node']}"):
        assert ada.get(path).status_code == 403, path
    refused = eve.post(f"/admin/instances/{ada_instance['id']}/power/stop")
    assert refused.status_code == 403
    customer_page = f"/projects/{ada_instance['project_id']}/instances/{ada_instance['id']}"
    assert root.get(customer_page).status_code == 404
    assert root.client.get("/admin/instances", headers=HTML).status_code == 200
