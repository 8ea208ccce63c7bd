"""Rebuilds on the real engines: the fresh disk gets every SSH key of the instance (those
added after the creation too) and the new password the rebuild answered with.

The appliance runs in this process with a node of the engine; its jobs run here
(`run_jobs`), and the instance's files are read through the engine itself. Skipped
with the reason where the engine does not answer; under CI=true that is a failure.
"""

from __future__ import annotations

import pytest

from appliance import drivers
from appliance.models import Image, Job
from appliance.services.instances import nodes
from tests.driver_contract import METHODS, require_engine
from tests.factories import api, create_instance, make_node, make_plan, run_jobs
from tests.sshkeys import ED25519, RSA_2048

IMAGE = "appliance-test/busybox"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"


def _password_is(driver, ref: str, password: str) -> bool:
    """Whether root's /etc/shadow hash is `password` (made again with the same salt)."""
    hashed = driver.exec(ref, ["grep", "^root:", "/etc/shadow"])[1].split(":")[1]
    _, method, salt, _ = hashed.split("$")
    code, output = driver.exec(ref, ["mkpasswd", "-m", METHODS[method], password, salt])
    return code == 0 and output.strip() == hashed


def _keys_on(driver, ref: str) -> list[str]:
    code, output = driver.exec(ref, ["cat", AUTHORIZED_KEYS])
    assert code == 0, output
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("engine", ["incus", "docker"])
def test_a_rebuild_on_a_real_engine_puts_back_every_key_and_sets_the_new_password(
        app, client, owner, owner_project, engine):
    require_engine(engine, lambda: drivers.connect(engine, "").info())
    with app.app_context():
        make_plan("small", memory_mb=128, disk_gb=1)
        node = make_node(engine, engine=engine, capacity=nodes.Capacity(8, 8192, 100),
                         check=True)
        image_id = Image.get(Image.node == node.id, Image.ref == IMAGE).id
    catalog = {"plan": "small", "image": image_id}
    driver = drivers.connect(engine, "")
    created = create_instance(app, client, owner, owner_project, catalog,
                              name=f"rebuild-{engine}")
    ref = "ins-" + created["id"].removeprefix("ins_")
    path = f"/projects/{owner_project}/instances/{created['id']}"
    try:
        with app.app_context():
            assert Job.get(Job.instance == created["id"]).status == "succeeded"
        for key in (ED25519[0], RSA_2048[0]):
            added = api(client, "POST", path + "/ssh-keys", owner, json={"public_key": key})
            assert added.status_code == 202, added.get_json()
            run_jobs(app)
        before = _keys_on(driver, ref)
        assert len(before) == 2
        rebuilt = api(client, "POST", path + "/rebuild", owner, json={"image_id": image_id})
        assert rebuilt.status_code == 202, rebuilt.get_json()
        password = rebuilt.get_json()["password"]
        run_jobs(app)
        job_id = rebuilt.get_json()["job"]["id"]
        job = api(client, "GET", f"/projects/{owner_project}/jobs/{job_id}", owner).get_json()
        assert job["status"] == "succeeded", job
        assert sorted(_keys_on(driver, ref)) == sorted(before)
        assert _password_is(driver, ref, password)
        shown = api(client, "GET", path + "/password", owner).get_json()
        assert shown == {"password": password}
        again = api(client, "POST", path + "/ssh-keys", owner, json={"public_key": ED25519[0]})
        assert again.status_code == 409  # true: the key is on the instance
    finally:
        driver.delete(ref)
