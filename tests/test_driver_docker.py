"""The Docker driver passes the contract against a real Docker, plus checks of its own.

Needs Docker on its default socket with the test image (`scripts/engines`): without it
the engine tests are skipped locally and fail under CI=true. The busybox test image
(scripts/build-test-image) exits at once on SIGTERM, so `docker stop` is quick.
"""

from __future__ import annotations

import ipaddress
import uuid

import pytest

from appliance import drivers
from appliance.drivers.base import MISSING, RUNNING, STOPPED, DriverError, Limits
from tests.driver_contract import SMALL, SSH_KEY, DriverContract, require_engine

IMAGE = "appliance-test/busybox"


def _probe(driver) -> None:
    driver.info()
    if IMAGE not in [found.ref for found in driver.images()]:
        raise LookupError(f"Docker answers but has no image {IMAGE}")


def _bridge_prefix(driver) -> str:
    """What addresses on the default bridge start with, from its subnet (172.17. usually)."""
    network = driver._client.networks.get("bridge")
    subnets = [ipaddress.ip_network(config["Subnet"])
               for config in network.attrs["IPAM"]["Config"] if "Subnet" in config]
    subnet = next(net for net in subnets if net.version == 4)
    octets = str(subnet.network_address).split(".")[:subnet.prefixlen // 8]
    return ".".join(octets) + "." if octets else ""


class TestDockerDriver(DriverContract):
    @pytest.fixture
    def driver(self):
        require_engine("docker", lambda: _probe(drivers.connect("docker", "")))
        driver = drivers.connect("docker", "")  # the same (cached) driver
        self.address_prefix = _bridge_prefix(driver)
        return driver

    @pytest.fixture
    def image(self):
        return IMAGE

    def leftovers(self, driver):
        tags = {tag for image in driver._client.images.list(
                    filters={"reference": "appliance-backup/*"})
                for tag in image.tags if ":export-" in tag}
        untagged = {image.id for image in driver._client.images.list(
            filters={"dangling": True, "label": "appliance.managed"})}
        return tags | untagged

    def images_made_for(self, driver, ref):
        return {tag for image in driver._client.images.list() for tag in image.tags
                if ref.lower() in tag}

    def inspect(self, driver, ref) -> dict:
        return driver._client.api.inspect_container(ref)

    def assert_limits(self, driver, ref, limits):
        host = self.inspect(driver, ref)["HostConfig"]
        assert host["NanoCpus"] == limits.vcpus * 10**9
        assert host["Memory"] == host["MemorySwap"] == limits.memory_mb * 2**20
        if host.get("StorageOpt"):  # only where the storage driver enforces a disk size
            assert host["StorageOpt"]["size"] == f"{limits.disk_gb}G"

    # -- docker-specific ---------------------------------------------------------------

    def test_an_unreachable_daemon_is_a_transient_error(self):
        from appliance.drivers.docker import DockerDriver

        driver = DockerDriver("unix:///nonexistent/docker.sock")
        for call in (driver.info, lambda: driver.state("anything"), driver.images):
            with pytest.raises(DriverError) as caught:
                call()
            assert not caught.value.permanent

    def test_a_malformed_endpoint_or_tls_setting_is_a_permanent_error(self):
        from appliance.drivers.docker import DockerDriver

        for endpoint, options in (("http://example.invalid", {}),
                                  ("tcp://127.0.0.1:2376", {"ca_cert": "/nonexistent.pem"}),
                                  ("tcp://127.0.0.1:2376", {"client_cert": "/cert.pem"})):
            with pytest.raises(DriverError) as caught:
                DockerDriver(endpoint, options)
            assert caught.value.permanent

    def test_a_refused_tcp_endpoint_is_a_transient_error(self):
        from appliance.drivers.docker import DockerDriver

        with pytest.raises(DriverError) as caught:
            DockerDriver("tcp://127.0.0.1:1").info()
        assert not caught.value.permanent

    def test_an_unknown_image_leaves_nothing_behind(self, driver, made):
        spec = self.spec("no-such-image/anywhere")
        with pytest.raises(DriverError) as caught:
            made.append(driver.create(spec))
        assert caught.value.permanent
        assert driver.state(spec.name).power == MISSING

    def test_chpasswd_failing_or_missing_is_a_permanent_error_with_its_reason(self, driver,
                                                                             instance):
        with pytest.raises(DriverError) as caught:
            driver.set_password(instance, "nobody-here", "a fine password")
        assert caught.value.permanent and "chpasswd failed (1)" in caught.value.message
        assert driver.exec(instance, ["rm", "/usr/sbin/chpasswd"])[0] == 0
        with pytest.raises(DriverError) as caught:
            driver.set_password(instance, "root", "a fine password")
        assert caught.value.permanent and "no chpasswd" in caught.value.message

    def test_an_image_whose_init_exits_is_a_permanent_error(self, image):
        from appliance.drivers.docker import DockerDriver

        driver = DockerDriver("", {"start_settle": "1"})  # generous: the host may be busy
        base = driver._client.containers.create(image)
        broken = base.commit("appliance-test/exits", "latest", changes=['CMD ["/bin/false"]'])
        base.remove()
        spec = self.spec("appliance-test/exits")
        try:
            with pytest.raises(DriverError) as caught:
                driver.delete(driver.create(spec))
            assert caught.value.permanent and "exit code 1" in caught.value.message
            assert driver.state(spec.name).power == MISSING
        finally:
            driver.delete(spec.name)
            driver._client.images.remove(broken.id, force=True)

    def test_a_created_container_carries_the_appliance_settings(self, driver, instance):
        details = self.inspect(driver, instance)
        labels = details["Config"]["Labels"]
        assert labels["appliance.managed"] == "true"
        assert labels["appliance.instance"] == instance
        assert labels["appliance.disk_gb"] == str(SMALL.disk_gb)
        assert labels["appliance.ssh_keys"] == SSH_KEY
        assert details["Config"]["Hostname"] == instance
        assert details["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        self.assert_limits(driver, instance, SMALL)
        assert driver.exec(instance, ["hostname"]) == (0, instance + "\n")

    def test_a_container_it_did_not_create_is_never_touched(self, driver, image):
        name = "appliance-foreign-test"
        foreign = driver._client.containers.create(image, name=name)
        try:
            assert driver.state(name).power == MISSING
            driver.delete(name)  # not ours: nothing happens
            with pytest.raises(DriverError) as caught:
                driver.start(name)
            assert caught.value.permanent
            foreign.reload()
            assert foreign.status == "created"
        finally:
            foreign.remove(force=True)

    def test_exec_returns_the_exit_code_and_both_streams(self, driver, instance):
        code, output = driver.exec(instance, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert code == 3 and sorted(output.splitlines()) == ["err", "out"]  # two pipes
        code, output = driver.exec(instance, ["no-such-command"])
        assert code in (126, 127) and "no-such-command" in output  # 126 before Docker 23

    def test_exec_in_a_stopped_instance_is_a_permanent_error(self, driver, instance):
        driver.stop(instance, graceful=False)
        with pytest.raises(DriverError) as caught:
            driver.exec(instance, ["true"])
        assert caught.value.permanent

    def test_a_slow_command_is_a_transient_error(self, driver, instance):
        with pytest.raises(DriverError) as caught:
            driver.exec(instance, ["sleep", "5"], timeout=1)
        assert not caught.value.permanent

    def test_ssh_keys_are_private_to_the_user(self, driver, instance):
        code, output = driver.exec(instance, ["stat", "-c", "%a %u %g",
                                              "/root/.ssh", "/root/.ssh/authorized_keys"])
        assert (code, output) == (0, "700 0 0\n600 0 0\n")

    def test_the_log_shows_the_boot(self, driver, instance):
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
        assert driver.exec(ref, ["sh", "-c", "ls /.appliance-chpasswd-*"])[0] != 0
        assert "correct horse" not in str(self.inspect(driver, ref))

    def test_a_password_for_a_user_the_image_lacks_fails_and_leaves_nothing(self, driver, image,
                                                                           made):
        spec = self.spec(image, user="nobody-here", ssh_keys=(), password="correct horse battery")
        with pytest.raises(DriverError) as caught:
            made.append(driver.create(spec))
        assert caught.value.permanent and "chpasswd failed" in caught.value.message
        assert driver.state(spec.name).power == MISSING

    def test_a_killed_instance_stays_stopped(self, driver, instance):
        driver.stop(instance, graceful=False)
        assert driver.state(instance).power == STOPPED
        assert self.inspect(driver, instance)["State"]["Status"] == "exited"

    def test_the_disk_cannot_shrink(self, driver, instance):
        with pytest.raises(DriverError) as caught:
            driver.resize(instance, Limits(vcpus=1, memory_mb=128, disk_gb=0))
        assert caught.value.permanent

    def test_a_refused_storage_opt_falls_back_to_a_recorded_disk_size(self, image, made):
        from appliance.drivers.docker import DockerDriver

        driver = DockerDriver("")
        driver._disk_quota = True  # as if the storage driver might enforce it
        made.append(driver.create(self.spec(image)))
        host = self.inspect(driver, made[0])["HostConfig"]
        if driver._disk_quota:  # this host enforces it after all
            assert host["StorageOpt"] == {"size": f"{SMALL.disk_gb}G"}
        else:
            assert not host.get("StorageOpt")
        driver.delete(made[0])

    def test_a_bigger_enforced_disk_recreates_the_container_keeping_its_files(
            self, driver, instance, monkeypatch):
        monkeypatch.setattr(driver, "_disk_enforced", lambda container: True)
        driver.exec(instance, ["sh", "-c", "echo kept > /marker"])
        before = self.inspect(driver, instance)["Id"]
        driver.resize(instance, Limits(vcpus=2, memory_mb=256, disk_gb=3))
        after = self.inspect(driver, instance)
        assert after["Id"] != before and after["Config"]["Labels"]["appliance.disk_gb"] == "3"
        assert driver.state(instance).power == RUNNING
        assert driver.exec(instance, ["cat", "/marker"]) == (0, "kept\n")
        self.assert_limits(driver, instance, Limits(vcpus=2, memory_mb=256, disk_gb=3))

    def test_a_rebuild_from_an_unknown_image_leaves_the_instance_alone(self, driver,
                                                                       instance):
        before = self.inspect(driver, instance)["Id"]
        with pytest.raises(DriverError) as caught:
            driver.rebuild(instance, "no-such-image/anywhere")
        assert caught.value.permanent
        assert self.inspect(driver, instance)["Id"] == before
        assert driver.state(instance).power == RUNNING

    def test_rebuild_makes_a_new_container_with_the_same_settings(self, driver, image,
                                                                  made):
        ref = driver.create(self.spec(image, env={"GREETING": "hello"}))
        made.append(ref)
        driver.exec(ref, ["touch", "/marker"])
        before = self.inspect(driver, ref)["Id"]
        assert driver.rebuild(ref, image) == ref
        after = self.inspect(driver, ref)
        assert after["Id"] != before and after["Config"]["Hostname"] == ref
        self.assert_limits(driver, ref, SMALL)
        assert driver.exec(ref, ["ls", "/marker"])[0] != 0  # a fresh filesystem
        assert driver.exec(ref, ["cat", "/root/.ssh/authorized_keys"]) == (0, SSH_KEY + "\n")
        assert driver.exec(ref, ["sh", "-c", "echo $GREETING"]) == (0, "hello\n")
        assert [c.name for c in driver._client.containers.list(
            all=True, filters={"label": f"appliance.instance={ref}"})] == [ref]

    def test_a_restored_container_is_a_new_one_with_the_same_settings(self, driver,
                                                                       instance, tmp_path):
        self.export(driver, instance, tmp_path / "a.archive")
        before = self.inspect(driver, instance)
        with open(tmp_path / "a.archive", "rb") as archive:
            driver.restore_archive(instance, archive)
        after = self.inspect(driver, instance)
        assert after["Id"] != before["Id"] and after["Config"]["Hostname"] == instance
        assert after["Config"]["Image"] == f"appliance-restored/{instance}:latest"
        assert after["Config"]["Labels"] == before["Config"]["Labels"]
        self.assert_limits(driver, instance, SMALL)
        labels = driver._client.images.get(after["Config"]["Image"]).labels
        assert labels["appliance.managed"] == labels["appliance.instance"] == ""
        driver.delete(instance)
        assert self.images_made_for(driver, instance) == set()

    def test_it_removes_what_an_interrupted_export_left(self, driver, instance):
        container = driver._client.containers.get(instance)
        container.commit(repository=f"appliance-backup/{instance}", tag="export-crashed",
                         changes=['LABEL appliance.managed="" appliance.instance=""'])
        kept = container.commit(repository=f"appliance-backup/{instance}", tag="mine")
        try:
            assert f"appliance-backup/{instance}:export-crashed" in driver.remove_leftovers()
            assert self.leftovers(driver) == set()
            assert driver._client.images.get(f"appliance-backup/{instance}:mine").id == kept.id
        finally:
            driver._client.images.remove(f"appliance-backup/{instance}:mine")

    def test_it_is_not_a_vm_engine_and_has_no_firewall(self, driver):
        capabilities = driver.capabilities()
        assert not capabilities.vm and not capabilities.firewall
        assert capabilities.snapshots and capabilities.exec and capabilities.resize_live
        assert capabilities.networks

    @pytest.fixture
    def network(self, driver):
        name = f"appliance-test-{uuid.uuid4().hex[:8]}"
        third = int(uuid.uuid4().hex[:2], 16)
        yield driver.create_network(name, f"10.213.{third}.0/24"), f"10.213.{third}."
        driver.delete_network(name)

    def test_instances_on_a_private_network_reach_each_other(self, driver, image, instance,
                                                             network, made):
        network_ref, prefix = network
        assert driver.create_network(network_ref, "10.214.0.0/24") == network_ref  # again
        other = driver.create(self.spec(image))
        made.append(other)
        for ref in (instance, other):
            driver.attach(ref, network_ref)
            driver.attach(ref, network_ref)  # again: nothing to do
        addresses = driver.state(other).addresses
        assert addresses[0].startswith(self.address_prefix) and addresses[1].startswith(prefix)
        assert driver.exec(instance, ["ping", "-c", "1", "-W", "2", addresses[1]])[0] == 0
        driver.rebuild(other, image)  # reattached, perhaps at a new address
        private = driver.state(other).addresses[1]
        assert private.startswith(prefix)
        with pytest.raises(DriverError) as caught:
            driver.delete_network(network_ref)  # instances are attached
        assert caught.value.permanent
        driver.detach(other, network_ref)
        driver.detach(other, network_ref)  # again: nothing to do
        remaining = driver.state(other).addresses
        assert len(remaining) == 1 and remaining[0].startswith(self.address_prefix)
        driver.detach(instance, network_ref)

    def test_an_unknown_network_is_a_permanent_error(self, driver, instance):
        for name in ("appliance-never-created", "bridge"):  # bridge: not the appliance's
            with pytest.raises(DriverError) as caught:
                driver.attach(instance, name)
            assert caught.value.permanent
        driver.delete_network("appliance-never-created")
