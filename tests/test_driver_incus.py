"""The Incus driver passes the contract against a real Incus, plus checks of its own.

Needs Incus on its default socket with the test image (`scripts/engines`): without it
the engine tests are skipped locally and fail under CI=true. The busybox test image
(scripts/build-test-image) stops at once on SIGPWR and takes a DHCP lease on incusbr0.
"""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from appliance import drivers
from appliance.drivers.base import MISSING, RUNNING, DriverError, Limits
from appliance.drivers.incus.driver import IncusDriver, addresses_of
from tests.driver_contract import DriverContract, require_engine

IMAGE = "appliance-test/busybox"


def _probe(driver: IncusDriver) -> None:
    driver.info()
    if IMAGE not in [found.ref for found in driver.images()]:
        raise LookupError(f"Incus answers but has no image {IMAGE}")


@pytest.fixture(scope="module")
def incus():
    driver = drivers.connect("incus", "")
    require_engine("incus", lambda: _probe(driver))
    return driver


class TestIncusDriver(DriverContract):
    address_prefix = "10.123.45."

    @pytest.fixture
    def driver(self, incus):
        return incus

    @pytest.fixture
    def image(self):
        return IMAGE

    def leftovers(self, driver):
        images = {f"image {image['fingerprint']}" for image in
                  driver._call("GET", "/1.0/images", params={"recursion": 1})
                  if "appliance.transfer" in (image.get("properties") or {})}
        snapshots = {f"snapshot {name}/{url.rpartition('/')[2]}"
                     for name in driver.inventory("contract-")
                     for url in driver._call("GET", f"/1.0/instances/{name}/snapshots")
                     if url.rpartition("/")[2].startswith("appliance-export-")}
        return images | snapshots

    @pytest.fixture(scope="class")
    @classmethod
    def booted(cls, incus):
        """One running instance shared by the checks that leave it as it was."""
        contract = cls()
        ref = incus.create(contract.spec(IMAGE))
        try:
            contract.running_address(incus, ref)
            yield ref
        finally:
            incus.delete(ref)

    def assert_limits(self, driver, ref, limits):
        instance = driver._call("GET", f"/1.0/instances/{ref}")
        assert instance["expanded_config"]["limits.cpu"] == str(limits.vcpus)
        assert instance["expanded_config"]["limits.memory"] == f"{limits.memory_mb}MiB"
        root = instance["expanded_devices"]["root"]
        assert root["path"] == "/" and root["size"] == f"{limits.disk_gb}GiB"

    # -- incus-specific ----------------------------------------------------------------

    def test_images_carry_the_image_properties(self, driver):
        found = {info.ref: info for info in driver.images()}[IMAGE]
        assert found.os == "busybox" and found.release
        assert found.description.startswith("Appliance test image")
        assert found.size_bytes and found.size_bytes > 0

    def test_exec_returns_the_exit_code_and_both_streams(self, driver, booted):
        code, output = driver.exec(booted, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (code, output) == (3, "out\nerr\n")
        assert driver.exec(booted, ["no-such-command"]) == (127, "")

    def test_ssh_keys_are_private_to_the_user(self, driver, booted):
        code, output = driver.exec(booted, ["stat", "-c", "%a %u %g",
                                            "/root/.ssh", "/root/.ssh/authorized_keys"])
        assert (code, output) == (0, "700 0 0\n600 0 0\n")

    def test_the_console_log_shows_the_boot_every_time_it_is_read(self, driver, booted):
        assert f"booting {booted}" in driver.logs(booted)
        assert f"booting {booted}" in driver.logs(booted)  # Incus drains its buffer
        assert driver.logs(booted, lines=1) == driver.logs(booted).splitlines()[-1]

    def test_a_running_instance_reports_usage(self, driver, booted):
        state = driver.state(booted)
        assert state.cpu_seconds is not None and state.cpu_seconds >= 0
        assert state.memory_bytes and state.memory_bytes > 0

    def test_the_disk_cannot_shrink(self, driver, booted):
        with pytest.raises(DriverError) as caught:
            driver.resize(booted, Limits(vcpus=1, memory_mb=128, disk_gb=0))
        assert caught.value.permanent

    def test_it_removes_what_an_interrupted_export_left(self, driver, booted):
        """A kill -9 during an export leaves its snapshot or its image; the start-up's
        remove_leftovers takes them, and nothing else."""
        driver._call("POST", f"/1.0/instances/{booted}/snapshots",
                     json={"name": "appliance-export-crashed"}, wait=60)
        driver._call("POST", f"/1.0/instances/{booted}/snapshots", json={"name": "mine"},
                     wait=60)
        published = driver._call("POST", "/1.0/images", wait=60, json={
            "source": {"type": "snapshot", "name": f"{booted}/mine"},
            "properties": {"appliance.transfer": f"export:{booted}"}})
        try:
            removed = driver.remove_leftovers()
            assert f"snapshot {booted}/appliance-export-crashed" in removed
            assert f"image {published['fingerprint'][:12]}" in removed
            assert self.leftovers(driver) == set()
            snapshots = driver._call("GET", f"/1.0/instances/{booted}/snapshots")
            assert [url.rpartition("/")[2] for url in snapshots] == ["mine"]
            assert IMAGE in [found.ref for found in driver.images()]
        finally:
            driver._call("DELETE", f"/1.0/instances/{booted}/snapshots/mine", wait=60)

    def test_a_password_is_set_with_chpasswd(self, driver, image, booted, made):
        _, unset = driver.exec(booted, ["grep", "^root:", "/etc/shadow"])
        ref = driver.create(self.spec(image, password="correct horse battery"))
        made.append(ref)
        code, line = driver.exec(ref, ["grep", "^root:", "/etc/shadow"])
        assert code == 0 and line != unset
        assert line.split(":")[1][:1] not in ("", "*", "!")
        assert driver.exec(ref, ["sh", "-c", "ls /root/.appliance-chpasswd-*"])[0] != 0

    def test_a_password_for_a_user_the_image_lacks_fails_and_leaves_nothing(self, driver, image,
                                                                           made):
        spec = self.spec(image, user="nobody-here", ssh_keys=(), password="correct horse battery")
        with pytest.raises(DriverError) as caught:
            made.append(driver.create(spec))
        assert caught.value.permanent and "chpasswd failed" in caught.value.message
        assert driver.state(spec.name).power == MISSING

    def test_a_graceful_stop_of_the_busybox_init_is_quick(self, driver, instance):
        self.running_address(driver, instance)
        started = time.monotonic()
        driver.stop(instance, graceful=True, timeout=20)
        assert time.monotonic() - started < 5
        assert driver.state(instance).power != RUNNING
        with pytest.raises(DriverError) as caught:
            driver.exec(instance, ["true"])
        assert caught.value.permanent

    def test_a_graceful_stop_the_init_ignores_is_forced_after_the_timeout(self, driver,
                                                                          instance):
        # PID 1 ignores a signal it has no handler for: the halt signal goes unheard
        driver._call("PATCH", f"/1.0/instances/{instance}",
                     json={"config": {"raw.lxc": "lxc.signal.halt = SIGUSR1"}})
        driver.reset(instance)
        started = time.monotonic()
        driver.stop(instance, graceful=True, timeout=2)
        assert 2 <= time.monotonic() - started < 10
        assert driver.state(instance).power != RUNNING


# -- without an engine -----------------------------------------------------------------

def test_a_missing_socket_is_a_transient_error(tmp_path):
    driver = IncusDriver(f"unix://{tmp_path}/incus.socket")
    with pytest.raises(DriverError) as caught:
        driver.info()
    assert not caught.value.permanent
    with pytest.raises(DriverError):  # an unreachable engine never says "missing"
        driver.state("anything")


def test_an_https_endpoint_that_does_not_answer_is_a_transient_error():
    driver = IncusDriver("https://127.0.0.1:9", {"timeout": "2"})
    with pytest.raises(DriverError) as caught:
        driver.images()
    assert not caught.value.permanent


def _certificate(openssl: str, directory, name: str) -> tuple[str, str]:
    cert, key = str(directory / f"{name}.crt"), str(directory / f"{name}.key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def test_https_endpoints_use_the_client_certificate_and_verify_the_server(tmp_path):
    openssl = shutil.which("openssl") or pytest.skip("needs the openssl command")
    server_cert, server_key = _certificate(openssl, tmp_path, "server")
    client_cert, client_key = _certificate(openssl, tmp_path, "client")
    auth = {"value": "trusted"}

    class Incus(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"type": "sync", "status_code": 200, "metadata": {
                "auth": auth["value"], "environment": {"server_version": "6.0.4"}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Incus)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED  # like Incus: no client certificate, no answer
    context.load_verify_locations(client_cert)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        options = {"client_cert": client_cert, "client_key": client_key,
                   "server_cert": server_cert, "timeout": "5"}
        assert IncusDriver(endpoint, options).info().version == "6.0.4"
        with pytest.raises(DriverError) as caught:  # not the server we were told about
            IncusDriver(endpoint, {**options, "server_cert": client_cert}).info()
        assert caught.value.permanent
        with pytest.raises(DriverError):  # no client certificate
            IncusDriver(endpoint, {"server_cert": server_cert, "timeout": "5"}).info()
        auth["value"] = "untrusted"
        with pytest.raises(DriverError) as caught:
            IncusDriver(endpoint, options).info()
        assert caught.value.permanent and "trust" in caught.value.message
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_of_another_kind_is_a_permanent_error():
    with pytest.raises(DriverError) as caught:
        IncusDriver("ftp://incus.example")
    assert caught.value.permanent


def test_addresses_are_global_ipv4_first_eth0_first():
    network = {
        "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
        "eth1": {"addresses": [{"family": "inet", "address": "10.0.0.5", "scope": "global"}]},
        "eth0": {"addresses": [
            {"family": "inet6", "address": "fe80::1", "scope": "link"},
            {"family": "inet6", "address": "fd42::5", "scope": "global"},
            {"family": "inet", "address": "10.123.45.7", "scope": "global"},
        ]},
    }
    assert addresses_of(network) == ("10.123.45.7", "10.0.0.5", "fd42::5")
