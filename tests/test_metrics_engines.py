"""Resource metrics on real Incus and real Docker, through the HTTP API of a served
appliance sampling every INTERVAL seconds.

`yes > /dev/null` started inside the instance (twice: one vCPU stays busy while other
processes share the host's two cores) (the engine's own exec) shows as CPU above
80 % of one vCPU within three intervals, and stopping it brings the CPU down again;
filling a tmpfs inside (/dev/shm: memory the instance's cgroup is charged for) raises the memory
used. The node's host figures come from the same engine.

Run wherever the engines answer (scripts/engines); under CI=true a missing engine fails.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from appliance import drivers
from tests.conftest import Server
from tests.test_backups_engines import inside, ref_of
from tests.test_engines_e2e import Client, _prepare

INTERVAL = 2  # seconds between samples
FILL_BYTES = 48 * 2**20  # /dev/shm of a Docker container is 64 MiB


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir),
                     "APPLIANCE_INSTANCE_METRICS_INTERVAL_SECONDS": str(INTERVAL)})
    server.wait()
    return server


def latest_within(api: Client, path: str, seconds: float, condition) -> dict:
    """The instance's latest sample once `condition(values)` holds; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    seen = None
    while True:
        body = api.get(path)
        seen = (body["latest"] or {}).get("values")
        if seen is not None and condition(seen):
            return body
        assert time.monotonic() < deadline, (
            f"not within {seconds} s; last sample {seen}; host load {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs (other processes take the instance's CPU time)")
        time.sleep(0.25)


@pytest.mark.parametrize("engine", ["incus", "docker"])
def test_cpu_and_memory_follow_what_runs_inside_the_instance(tmp_path, engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    server = _serve(data_dir)
    ref = None
    try:
        api = Client(server.url)
        base = f"/projects/{api.project}/instances"
        created = api.accepted("POST", base, name=f"mtx-{engine}", plan_id="small",
                               image_id=image_id)
        assert api.finish(created["job"])["status"] == "succeeded"
        instance = created["instance"]
        ref = ref_of(instance)
        path = f"{base}/{instance['id']}/metrics?window=1h"
        assert api.get(path)["limits"]["vcpus"] == 1

        idle = latest_within(api, path, 6 * INTERVAL, lambda v: v["cpu"] is not None)
        idle_memory = idle["latest"]["values"]["memory"]
        assert idle_memory > 0

        # Two, so one vCPU stays busy while the other helpers' processes share the host.
        started = inside(engine, ref, "for i in 1 2; do yes > /dev/null 2>&1 < /dev/null & "
                                      "echo $! >> /tmp/yes.pid; done")
        assert started.returncode == 0, started.stderr
        busy = latest_within(api, path, 3 * INTERVAL + 1, lambda v: v["cpu"] > 80)
        assert busy["latest"]["values"]["cpu"] <= 100
        minute = busy["series"][0]
        assert minute["name"] == "cpu" and minute["values"][-1] is not None

        stopped = inside(engine, ref, "kill $(cat /tmp/yes.pid)")
        assert stopped.returncode == 0, stopped.stderr
        latest_within(api, path, 3 * INTERVAL + 1, lambda v: v["cpu"] < 20)

        # Docker gives a container a /dev/shm (tmpfs); the Incus one has none: mount one.
        filled = inside(engine, ref, "grep -q ' /dev/shm ' /proc/mounts || { mkdir -p /dev/shm "
                        "&& mount -t tmpfs -o size=64m tmpfs /dev/shm; } && "
                        f"head -c {FILL_BYTES} /dev/zero > /dev/shm/fill")
        assert filled.returncode == 0, filled.stderr
        latest_within(api, path, 3 * INTERVAL + 1,
                      lambda v: v["memory"] >= idle_memory + FILL_BYTES * 0.9)

        node = api.get("/projects")  # the owner is no administrator: node metrics are 403
        assert node["data"]
        assert api.session.get(f"{api.url}/admin/nodes/x/metrics", timeout=10).status_code == 403

        gone = api.accepted("DELETE", f"{base}/{instance['id']}")
        assert api.finish(gone["job"])["status"] == "succeeded"
        ref = None
    finally:
        output = server.stop()
        if ref is not None:
            drivers.connect(engine, "").delete(ref)
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("engine", ["incus", "docker"])
def test_the_host_figures_come_from_the_engine(engine):
    from tests.driver_contract import require_engine

    driver = drivers.connect(engine, "")
    require_engine(engine, driver.info)
    host = driver.host_metrics()
    assert host.cpus and host.cpus >= 1
    assert host.memory_total_bytes and 0 < (host.memory_used_bytes or 0) < host.memory_total_bytes
    total = host.storage_total_bytes
    assert total and 0 < (host.storage_used_bytes or 0) <= total
    assert host.load1 is not None and host.instances_running is not None
