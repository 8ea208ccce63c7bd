"""The catalog (plans, images, apps) and nodes: admins manage, everyone signed in reads."""

from __future__ import annotations

import pytest

from appliance.models import Node, Plan
from appliance.services.instances import nodes
from tests.factories import api, make_user, signed_in

PLAN = {"slug": "small", "name": "Small", "vcpus": 1, "memory_mb": 512, "disk_gb": 10,
        "price_hourly": 1, "price_monthly_cap": 500}
FAKE_NODE = {"name": "demo", "engine": "fake", "endpoint": "fake://demo",
             "capacity_vcpus": 4, "capacity_memory_mb": 2048, "capacity_disk_gb": 100}


@pytest.fixture
def people(app, client, admin):
    make_user(app, "user@example.test")
    return {"admin": admin, "user": signed_in(client, "user@example.test")}


def test_admins_add_plans_and_everyone_reads_the_active_ones(client, people):
    created = api(client, "POST", "/admin/plans", people["admin"], json=PLAN)
    assert created.status_code == 201
    plan = created.get_json()
    api(client, "POST", "/admin/plans", people["admin"],
        json={**PLAN, "slug": "old", "active": False})
    listed = api(client, "GET", "/plans", people["user"]).get_json()["data"]
    assert [p["slug"] for p in listed] == ["small"]
    everything = api(client, "GET", "/plans", people["admin"], query_string={"all": "true"})
    assert {p["slug"] for p in everything.get_json()["data"]} == {"small", "old"}
    assert api(client, "POST", "/admin/plans", people["user"], json=PLAN).status_code == 403
    assert api(client, "POST", "/admin/plans", people["admin"], json=PLAN).status_code == 409
    patched = api(client, "PATCH", f"/admin/plans/{plan['id']}", people["admin"],
                  json={"price_hourly": 2, "active": False})
    assert patched.get_json()["price_hourly"] == 2
    assert api(client, "GET", "/plans", people["user"]).get_json()["data"] == []
    assert api(client, "DELETE", f"/admin/plans/{plan['id']}", people["admin"]).status_code == 204


@pytest.mark.parametrize(("body", "field"), [
    ({**PLAN, "slug": "Not A Slug"}, "slug"),
    ({**PLAN, "vcpus": 0}, "vcpus"),
    ({**PLAN, "price_hourly": -1}, "price_hourly"),
    ({**PLAN, "memory_mb": "512"}, "memory_mb"),
])
def test_bad_plans_name_the_field(client, people, body, field):
    response = api(client, "POST", "/admin/plans", people["admin"], json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_a_fake_node_is_healthy_simulated_and_its_images_are_discovered(client, people):
    response = api(client, "POST", "/admin/nodes", people["admin"], json=FAKE_NODE)
    assert response.status_code == 201
    node = response.get_json()
    assert (node["health"], node["simulated"], node["engine_version"]) == ("healthy", True,
                                                                          "1.0")
    assert node["free_memory_mb"] == 2048
    images = api(client, "GET", "/images", people["user"]).get_json()["data"]
    assert {i["ref"] for i in images} == {"fake/debian-12", "fake/alpine-3"}
    assert all(i["discovered"] and i["node_id"] == node["id"] for i in images)


def test_an_unreachable_node_is_kept_and_marked_unhealthy(client, people):
    response = api(client, "POST", "/admin/nodes", people["admin"],
                   json={**FAKE_NODE, "options": {"down": "true"}})
    node = response.get_json()
    assert node["health"] == "unhealthy"
    assert "down" in node["health_message"]


def test_nodes_are_for_administrators(client, people):
    assert api(client, "GET", "/admin/nodes", people["user"]).status_code == 403
    assert api(client, "POST", "/admin/nodes", people["user"], json=FAKE_NODE).status_code == 403


def test_bad_node_input_names_the_field(client, people):
    response = api(client, "POST", "/admin/nodes", people["admin"],
                   json={**FAKE_NODE, "endpoint": "ftp://x"})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "endpoint"
    response = api(client, "POST", "/admin/nodes", people["admin"],
                   json={**FAKE_NODE, "engine": "vmware"})
    assert response.get_json()["error"]["details"]["field"] == "engine"


def test_apps_name_an_image_and_their_minimums(client, people):
    api(client, "POST", "/admin/nodes", people["admin"], json=FAKE_NODE)
    image = api(client, "GET", "/images", people["user"]).get_json()["data"][0]
    created = api(client, "POST", "/admin/apps", people["admin"],
                  json={"slug": "whoami", "name": "Who am I", "image_id": image["id"],
                        "env": {"PORT": "80"}, "min_memory_mb": 256})
    assert created.status_code == 201
    app = api(client, "GET", "/apps/whoami", people["user"]).get_json()
    assert app["image"]["id"] == image["id"] and app["env"] == {"PORT": "80"}
    assert api(client, "GET", "/apps/nope", people["user"]).status_code == 404
    in_use = api(client, "DELETE", f"/admin/images/{image['id']}", people["admin"])
    assert in_use.status_code == 409


def test_placement_picks_a_healthy_node_with_room(app, client, people):
    small = api(client, "POST", "/admin/plans", people["admin"], json=PLAN).get_json()
    first = api(client, "POST", "/admin/nodes", people["admin"], json=FAKE_NODE).get_json()
    second = api(client, "POST", "/admin/nodes", people["admin"],
                 json={**FAKE_NODE, "name": "big", "capacity_memory_mb": 8192}).get_json()
    api(client, "PATCH", f"/admin/nodes/{second['id']}", people["admin"],
        json={"enabled": False})
    with app.app_context():
        plan = Plan.get_by_id(small["id"])
        from appliance.models import Image

        image = Image.get(Image.node == first["id"])
        assert nodes.place(plan, image).id == first["id"]
        Node.update(capacity_memory_mb=256).where(Node.id == first["id"]).execute()
        with pytest.raises(Exception, match="room"):
            nodes.place(plan, image)


def test_the_local_engines_are_registered_only_when_no_node_exists(app):
    with app.app_context():
        nodes.register_local_engines()  # whatever this machine has
        count = Node.select().count()
        assert nodes.register_local_engines() == []
        assert Node.select().count() == count
        assert all(not node.simulated for node in Node.select())


def test_blank_names_are_refused_by_the_service(client, people):
    response = api(client, "POST", "/admin/plans", people["admin"], json={**PLAN, "name": "  "})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "name"
    response = api(client, "POST", "/admin/images", people["admin"],
                   json={"engine": "docker", "ref": "x:1", "name": " "})
    assert response.get_json()["error"]["details"]["field"] == "name"
    first = api(client, "POST", "/admin/images", people["admin"],
                json={"engine": "docker", "ref": "x:1", "name": "X"})
    assert first.status_code == 201
    again = api(client, "POST", "/admin/images", people["admin"],
                json={"engine": "docker", "ref": "x:1", "name": "X again"})
    assert again.status_code == 409
