"""The Incus driver passes the contract against a real Incus, plus checks of its own.

Needs Incus on its default socket with the test image (`scripts/engines`): without it
the engine tests are skipped locally and fail under CI=true. The busybox test image
(scripts/build-test-image) stops at once on SIGPWR and takes a DHCP lease on incusbr0.
"""

from __future__ import annotations

import time

import pytest

from appliance import drivers
from appliance.drivers.base import RUNNING, DriverError, Limits
from appliance.drivers.incus import IncusDriver, _addresses
from tests.driver_contract import DriverContract, require_engine

IMAGE = "appliance-test/busybox"


def _probe(driver: IncusDriver) -> None:
    driver.info()
    if IMAGE not in [found.ref for found in driver.images()]:
        raise LookupError(f"Incus answers but has no image {IMAGE}")


class TestIncusDriver(DriverContract):
    address_prefix = "10.123.45."

    @pytest.fixture
    def driver(self):
        driver = drivers.connect("incus", "")
        require_engine("incus", lambda: _probe(driver))
        return driver

    @pytest.fixture
    def image(self):
        return IMAGE

    def assert_limits(self, driver, ref, limits):
        instance = driver._call("GET", f"/1.0/instances/{ref}")
        assert instance["expanded_config"]["limits.cpu"] == str(limits.vcpus)
        assert instance["expanded_config"]["limits.memory"] == f"{limits.memory_mb}MiB"
        root = instance["expanded_devices"]["root"]
        assert root["path"] == "/" and root["size"] == f"{limits.disk_gb}GiB"

    # -- incus-specific ----------------------------------------------------------------

    def test_exec_returns_the_exit_code_and_both_streams(self, driver, instance):
        code, output = driver.exec(instance, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (code, output) == (3, "out\nerr\n")
        code, output = driver.exec(instance, ["no-such-command"])
        assert code != 0

    def test_exec_in_a_stopped_instance_is_a_permanent_error(self, driver, instance):
        driver.stop(instance, graceful=False)
        with pytest.raises(DriverError) as caught:
            driver.exec(instance, ["true"])
        assert caught.value.permanent

    def test_ssh_keys_are_private_to_the_user(self, driver, instance):
        code, output = driver.exec(instance, ["stat", "-c", "%a %u %g",
                                              "/root/.ssh", "/root/.ssh/authorized_keys"])
        assert (code, output) == (0, "700 0 0\n600 0 0\n")

    def test_the_console_log_shows_the_boot(self, driver, instance):
        self.running_address(driver, instance)
        assert f"booting {instance}" in driver.logs(instance)
        assert len(driver.logs(instance, lines=1).splitlines()) == 1

    def test_a_password_is_set_with_chpasswd(self, driver, image, instance, made):
        _, unset = driver.exec(instance, ["grep", "^root:", "/etc/shadow"])
        ref = driver.create(self.spec(image, password="correct horse battery"))
        made.append(ref)
        code, line = driver.exec(ref, ["grep", "^root:", "/etc/shadow"])
        assert code == 0 and line != unset
        assert line.split(":")[1][:1] not in ("", "*", "!")
        assert driver.exec(ref, ["sh", "-c", "ls /root/.appliance-chpasswd-*"])[0] != 0

    def test_a_graceful_stop_of_the_busybox_init_is_quick(self, driver, instance):
        self.running_address(driver, instance)
        started = time.monotonic()
        driver.stop(instance, graceful=True, timeout=20)
        assert time.monotonic() - started < 5
        assert driver.state(instance).power != RUNNING

    def test_a_running_instance_reports_usage(self, driver, instance):
        state = driver.state(instance)
        assert state.cpu_seconds is not None and state.cpu_seconds >= 0
        assert state.memory_bytes and state.memory_bytes > 0

    def test_the_disk_cannot_shrink(self, driver, instance):
        with pytest.raises(DriverError) as caught:
            driver.resize(instance, Limits(vcpus=1, memory_mb=128, disk_gb=0))
        assert caught.value.permanent

    def test_an_exported_template_is_an_image(self, driver, instance):
        alias = driver.export_template(instance, "contract")
        try:
            assert alias == "appliance-template/contract"
            assert alias in [found.ref for found in driver.images()]
            assert driver.snapshot(instance, "after") == f"{instance}/after"
        finally:
            target = driver._call("GET", "/1.0/images/aliases/appliance-template%2Fcontract")
            driver._call("DELETE", f"/1.0/images/{target['target']}")

    def test_restoring_an_unknown_backup_is_permanent(self, driver, instance):
        with pytest.raises(DriverError) as caught:
            driver.restore(instance, f"{instance}/never-taken")
        assert caught.value.permanent


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
    assert _addresses(network) == ("10.123.45.7", "10.0.0.5", "fd42::5")
