"""The one test suite every instance driver passes (fake, incus, docker).

A driver's test module subclasses `DriverContract` and provides the `driver` fixture
(a connected driver), `image` (an image ref the engine has) and, optionally,
`address_prefix` (what the engine's addresses start with). Engine-specific checks (that
limits really reached the engine, for instance) live in the subclass.

`require_engine(name, probe)` decides whether the real engines' suites run: with
`CI=true` an unreachable engine fails the tests (CI must never go green by skipping);
elsewhere they are skipped with the reason and the fix (`scripts/engines`).
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Callable

import pytest

from appliance.drivers.base import (
    MISSING,
    RUNNING,
    STOPPED,
    Driver,
    DriverError,
    InstanceSpec,
    Limits,
    Unsupported,
)
from appliance.drivers.fake import WRITE_FILE

SMALL = Limits(vcpus=1, memory_mb=128, disk_gb=1)
BIGGER = Limits(vcpus=2, memory_mb=256, disk_gb=2)
ADDRESS_TIMEOUT = 30.0
# Shell and quoting hazards a password may hold (not ':' or a line break: refused before).
TRICKY_PASSWORD = """ lead $HOME `id` \\n 'q' "dq" trail """
METHODS = {"1": "md5", "5": "sha256", "6": "sha512"}  # /etc/shadow $id$ -> mkpasswd -m
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnecwh7bkk3QGByRquKIT4NexvEYhdnLFIWkogGtq1O "
           "contract@test")


class StoreFull(Exception):
    """What a test's archive destination raises: it must reach the caller unchanged."""


def require_engine(name: str, probe: Callable[[], object]) -> None:
    """Skip (locally) or fail (CI=true) when `probe()` cannot reach the engine."""
    try:
        probe()
    except Exception as exc:  # whatever the client raises: the engine is not usable here
        reason = (f"{name} is not reachable here ({exc.__class__.__name__}: {exc}); "
                  "run scripts/engines to install and start it")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


class DriverContract:
    """Tests every driver passes. Instances made here are deleted after each test."""

    address_prefix = ""

    @pytest.fixture
    def made(self, driver: Driver):
        refs: list[str] = []
        yield refs
        for ref in refs:
            try:
                driver.delete(ref)
            except DriverError:
                pass

    @pytest.fixture
    def instance(self, driver: Driver, image: str, made: list[str]) -> str:
        ref = driver.create(self.spec(image))
        made.append(ref)
        return ref

    def spec(self, image: str, **fields) -> InstanceSpec:
        fields.setdefault("name", f"contract-{uuid.uuid4().hex[:10]}")
        fields.setdefault("limits", SMALL)
        fields.setdefault("ssh_keys", (SSH_KEY,))
        return InstanceSpec(image=image, **fields)

    def running_address(self, driver: Driver, ref: str) -> str:
        def address():
            state = driver.state(ref)
            return state.power == RUNNING and state.addresses and state.addresses[0]

        return wait_for(address, ADDRESS_TIMEOUT, "an address")

    # -- the engine --------------------------------------------------------------------

    def test_it_reports_the_engine(self, driver: Driver):
        info = driver.info()
        assert info.engine == driver.engine
        assert info.version
        assert info.simulated == driver.simulated

    def test_it_lists_the_test_image(self, driver: Driver, image: str):
        assert image in [found.ref for found in driver.images()]

    # -- lifecycle ---------------------------------------------------------------------

    def test_a_created_instance_runs_and_gets_an_address(self, driver, instance):
        address = self.running_address(driver, instance)
        assert address.startswith(self.address_prefix)
        assert not address.startswith(("127.", "169.254.", "fe80"))

    def test_an_unknown_image_is_a_permanent_error(self, driver, made):
        with pytest.raises(DriverError) as caught:
            made.append(driver.create(self.spec("no-such-image/anywhere")))
        assert caught.value.permanent

    def test_power_actions_change_the_state_and_repeat_harmlessly(self, driver, instance):
        self.running_address(driver, instance)
        driver.stop(instance, graceful=True, timeout=10)
        assert driver.state(instance).power == STOPPED
        assert driver.state(instance).addresses == ()
        driver.stop(instance)  # again: nothing to do
        driver.start(instance)
        assert driver.state(instance).power == RUNNING
        driver.start(instance)  # again: nothing to do
        driver.reboot(instance)
        assert driver.state(instance).power == RUNNING
        driver.reset(instance)
        assert driver.state(instance).power == RUNNING
        driver.stop(instance, graceful=False)
        assert driver.state(instance).power == STOPPED
        driver.reboot(instance)  # a stopped instance is started
        assert driver.state(instance).power == RUNNING

    def test_a_deleted_instance_is_missing_and_deleting_again_is_harmless(self, driver,
                                                                         instance):
        driver.delete(instance)
        assert driver.state(instance).power == MISSING
        driver.delete(instance)

    def test_an_unknown_ref_is_missing(self, driver):
        assert driver.state("appliance-never-created").power == MISSING

    def test_resize_applies_new_limits(self, driver, instance):
        if not driver.capabilities().resize_live:
            driver.stop(instance, timeout=10)
        driver.resize(instance, BIGGER)
        self.assert_limits(driver, instance, BIGGER)
        driver.start(instance)
        assert driver.state(instance).power == RUNNING

    def assert_limits(self, driver: Driver, ref: str, limits: Limits) -> None:
        """Subclasses check the engine's own view of the limits."""

    def test_rebuild_reinstalls_and_keeps_the_instance_running(self, driver, image, instance,
                                                               made):
        ref = driver.rebuild(instance, image)
        if ref != instance:
            made.append(ref)
        assert driver.state(ref).power == RUNNING

    def test_two_instances_cannot_share_a_name(self, driver, image, made):
        spec = self.spec(image)
        made.append(driver.create(spec))
        with pytest.raises(DriverError):
            made.append(driver.create(spec))

    # -- inside the instance -----------------------------------------------------------

    def test_exec_runs_a_command_and_ssh_keys_are_installed(self, driver, instance):
        if not driver.capabilities().exec:
            with pytest.raises(Unsupported):
                driver.exec(instance, ["true"])
            return
        self.running_address(driver, instance)
        assert driver.exec(instance, ["echo", "hello"]) == (0, "hello\n")
        code, output = driver.exec(instance, ["cat", "/root/.ssh/authorized_keys"])
        assert code == 0 and SSH_KEY in output

    def password_is(self, driver: Driver, ref: str, password: str) -> bool:
        """Whether root's password on the engine is `password`: its /etc/shadow hash is
        made again in the instance with the same method and salt (busybox mkpasswd)."""
        hashed = driver.exec(ref, ["grep", "^root:", "/etc/shadow"])[1].split(":")[1]
        _, method, salt, _ = hashed.split("$")
        code, output = driver.exec(ref, ["mkpasswd", "-m", METHODS[method], password, salt])
        return code == 0 and output.strip() == hashed

    def test_a_password_can_be_set_on_a_running_instance(self, driver, instance):
        driver.set_password(instance, "root", TRICKY_PASSWORD)
        assert self.password_is(driver, instance, TRICKY_PASSWORD)
        driver.set_password(instance, "root", "another horse battery")
        assert self.password_is(driver, instance, "another horse battery")
        with pytest.raises(DriverError) as caught:
            driver.set_password(instance, "root", "two\nlines")
        assert caught.value.permanent

    def test_create_sets_the_password_and_says_when_the_instance_runs(self, driver, image,
                                                                        made):
        spec = self.spec(image, password=TRICKY_PASSWORD)
        seen: list[str] = []
        made.append(driver.create(spec, started=lambda: seen.append(
            driver.state(spec.name).power)))
        assert seen == [RUNNING]  # once, while the instance ran
        assert self.password_is(driver, spec.name, TRICKY_PASSWORD)

    def test_logs_are_text(self, driver, instance):
        if not driver.capabilities().console:
            with pytest.raises(Unsupported):
                driver.logs(instance)
            return
        assert isinstance(driver.logs(instance), str)

    # -- the terminal ------------------------------------------------------------------

    def read_until(self, terminal, pattern: bytes, timeout: float = 10.0) -> bytes:
        """What the terminal wrote until `pattern` (a regex) showed up in it."""
        seen, deadline = b"", time.monotonic() + timeout
        while not re.search(pattern, seen):
            assert time.monotonic() < deadline, f"{pattern!r} not in {seen!r}"
            chunk = terminal.read(0.2)
            assert chunk != b"", f"the shell ended before {pattern!r}: {seen!r}"
            seen += chunk or b""
        return seen

    def read_to_the_end(self, terminal, timeout: float = 10.0) -> bytes:
        seen, deadline = b"", time.monotonic() + timeout
        while (chunk := terminal.read(0.2)) != b"":
            assert time.monotonic() < deadline, f"the shell did not end: {seen!r}"
            seen += chunk or b""
        return seen

    def test_a_terminal_echoes_runs_resizes_and_ends_on_exit(self, driver, instance):
        if not driver.capabilities().terminal:
            with pytest.raises(Unsupported):
                driver.open_terminal(instance)
            return
        self.running_address(driver, instance)
        terminal = driver.open_terminal(instance, 100, 30)
        try:
            self.read_until(terminal, rb"[#$] ")
            terminal.write(b"echo size $(stty size) hello-$RANDOM\r")
            seen = self.read_until(terminal, rb"\r\nsize \d+ \d+ hello-\d+\r\n")
            assert b"echo size $(stty size) hello-$RANDOM" in seen  # the TTY echoes
            assert b"size 30 100 hello-" in seen
            terminal.resize(120, 40)
            terminal.write(b"echo now $(stty size)\r")
            self.read_until(terminal, rb"now 40 120")
            terminal.write(b"exit\r")
            self.read_to_the_end(terminal)
            assert terminal.read(0) == b""
            with pytest.raises(DriverError):
                terminal.write(b"x")
        finally:
            terminal.close()
        terminal.close()  # again: harmless

    def test_a_terminal_ends_when_the_instance_stops_and_needs_it_running(self, driver,
                                                                          instance):
        if not driver.capabilities().terminal:
            return
        self.running_address(driver, instance)
        terminal = driver.open_terminal(instance)
        try:
            self.read_until(terminal, rb"[#$] ")
            driver.stop(instance, graceful=False)
            self.read_to_the_end(terminal, timeout=30)
        finally:
            terminal.close()
        with pytest.raises(DriverError) as caught:
            driver.open_terminal(instance)
        assert caught.value.permanent

    # -- backups -----------------------------------------------------------------------

    def leftovers(self, driver: Driver) -> set[str]:
        """What exports and restores leave on the engine for a while (temporary snapshots
        and images), by name: each driver's module says how to list them."""
        return set()

    def write(self, driver: Driver, ref: str, path: str, content: str) -> None:
        assert driver.exec(ref, ["sh", "-c", WRITE_FILE, "sh", path, content]) == (0, "")

    def read(self, driver: Driver, ref: str, path: str) -> tuple[int, str]:
        code, output = driver.exec(ref, ["cat", path])
        return code, output if code == 0 else ""

    def export(self, driver: Driver, ref: str, path) -> None:
        with open(path, "wb") as out:
            driver.export_archive(ref, out)
        assert path.stat().st_size > 0

    def test_an_archive_of_a_running_instance_restores_its_disk(self, driver, instance,
                                                                 tmp_path):
        if not driver.capabilities().backups:
            with pytest.raises(Unsupported):
                driver.export_archive(instance, io.BytesIO())
            return
        self.running_address(driver, instance)
        before = self.leftovers(driver)
        self.write(driver, instance, "/root/marker", "taken")
        self.export(driver, instance, tmp_path / "a.archive")
        assert driver.state(instance).power == RUNNING
        assert self.leftovers(driver) - before == set()
        self.write(driver, instance, "/root/marker", "changed")
        self.write(driver, instance, "/root/later", "made after")
        with open(tmp_path / "a.archive", "rb") as archive:
            driver.restore_archive(instance, archive)
        assert driver.state(instance).power == RUNNING  # as it was
        assert self.read(driver, instance, "/root/marker") == (0, "taken")
        assert self.read(driver, instance, "/root/later")[0] != 0
        assert SSH_KEY in self.read(driver, instance, "/root/.ssh/authorized_keys")[1]
        assert self.leftovers(driver) - before == set()

    def test_a_stopped_instance_is_restored_and_stays_stopped(self, driver, instance,
                                                               tmp_path):
        self.write(driver, instance, "/root/marker", "taken while stopped")
        driver.stop(instance, timeout=10)
        self.export(driver, instance, tmp_path / "a.archive")
        driver.start(instance)
        self.write(driver, instance, "/root/marker", "changed")
        driver.stop(instance, timeout=10)
        with open(tmp_path / "a.archive", "rb") as archive:
            driver.restore_archive(instance, archive)
        assert driver.state(instance).power == STOPPED
        driver.start(instance)
        assert self.read(driver, instance, "/root/marker") == (0, "taken while stopped")

    def test_an_archive_outlives_its_instance_and_makes_new_ones(self, driver, image, made,
                                                                  tmp_path):
        ref = driver.create(self.spec(image))
        made.append(ref)
        before = self.leftovers(driver)
        self.write(driver, ref, "/root/marker", "from the first")
        self.export(driver, ref, tmp_path / "a.archive")
        driver.delete(ref)
        spec = self.spec(image, password=TRICKY_PASSWORD)
        with open(tmp_path / "a.archive", "rb") as archive:
            made.append(driver.create_from_archive(spec, archive))
        assert driver.state(spec.name).power == RUNNING
        assert self.read(driver, spec.name, "/root/marker") == (0, "from the first")
        assert driver.exec(spec.name, ["hostname"]) == (0, spec.name + "\n")
        assert self.password_is(driver, spec.name, TRICKY_PASSWORD)
        assert SSH_KEY in self.read(driver, spec.name, "/root/.ssh/authorized_keys")[1]
        driver.delete(spec.name)
        assert self.leftovers(driver) - before == set()
        assert self.images_made_for(driver, spec.name) == set()

    def test_a_template_makes_several_instances_after_its_source_is_gone(self, driver,
                                                                          image, made,
                                                                          tmp_path):
        """A template is a copy of an archive (the appliance links or copies the file):
        made from again and again, each instance its own, once the instance and the
        archive it came from are gone."""
        if not driver.capabilities().backups:
            with pytest.raises(Unsupported):
                driver.create_from_archive(self.spec(image), io.BytesIO())
            return
        ref = driver.create(self.spec(image))
        made.append(ref)
        before = self.leftovers(driver)
        self.write(driver, ref, "/root/golden", "from the template")
        self.export(driver, ref, tmp_path / "a.archive")
        os.link(tmp_path / "a.archive", tmp_path / "template.archive")
        (tmp_path / "a.archive").unlink()
        driver.delete(ref)
        specs = [self.spec(image), self.spec(image, password=TRICKY_PASSWORD)]
        for spec in specs:
            with open(tmp_path / "template.archive", "rb") as archive:
                made.append(driver.create_from_archive(spec, archive))
        for spec in specs:
            assert driver.state(spec.name).power == RUNNING
            assert self.read(driver, spec.name, "/root/golden") == (0, "from the template")
            assert driver.exec(spec.name, ["hostname"]) == (0, spec.name + "\n")
        self.write(driver, specs[0].name, "/root/golden", "changed in the first")
        assert self.read(driver, specs[1].name, "/root/golden") == (0, "from the template")
        assert self.password_is(driver, specs[1].name, TRICKY_PASSWORD)
        driver.delete(specs[0].name)
        assert driver.state(specs[1].name).power == RUNNING
        assert self.read(driver, specs[1].name, "/root/golden") == (0, "from the template")
        driver.delete(specs[1].name)
        assert self.leftovers(driver) - before == set()
        for spec in specs:
            assert self.images_made_for(driver, spec.name) == set()

    def images_made_for(self, driver: Driver, ref: str) -> set[str]:
        """Images on the engine that belong to the instance `ref` (none once deleted)."""
        return set()

    def test_an_archive_of_another_instance_restores_onto_this_one(self, driver, image,
                                                                    instance, made,
                                                                    tmp_path):
        other = driver.create(self.spec(image))
        made.append(other)
        self.write(driver, other, "/root/marker", "cloned back")
        self.export(driver, other, tmp_path / "other.archive")
        with open(tmp_path / "other.archive", "rb") as archive:
            driver.restore_archive(instance, archive)
        assert self.read(driver, instance, "/root/marker") == (0, "cloned back")
        assert driver.exec(instance, ["hostname"]) == (0, instance + "\n")
        assert driver.state(other).power == RUNNING  # the source is untouched

    def test_an_archive_the_engine_cannot_read_is_refused_for_good(self, driver, instance):
        self.write(driver, instance, "/root/marker", "kept")
        with pytest.raises(DriverError) as caught:
            driver.restore_archive(instance, io.BytesIO(b"this is not an archive"))
        assert caught.value.permanent
        assert driver.state(instance).power == RUNNING
        assert self.read(driver, instance, "/root/marker") == (0, "kept")

    def test_a_failing_write_ends_the_export_and_leaves_nothing(self, driver, instance):
        before = self.leftovers(driver)

        class Full:
            def write(self, data):
                raise StoreFull

        with pytest.raises(StoreFull):
            driver.export_archive(instance, Full())
        assert self.leftovers(driver) - before == set()
        assert driver.state(instance).power == RUNNING

    def test_networks_attach_and_detach_repeat_harmlessly(self, driver, instance):
        if not driver.capabilities().networks:
            with pytest.raises(Unsupported):
                driver.create_network("n1", "10.200.0.0/24")
            return
        network = driver.create_network(f"contract-{uuid.uuid4().hex[:6]}", "10.201.7.0/24")
        try:
            for step in (driver.attach, driver.attach, driver.detach, driver.detach):
                step(instance, network)
        finally:
            driver.delete_network(network)
        driver.delete_network(network)  # again: nothing to do

    # -- metrics -----------------------------------------------------------------------

    def test_metrics_read_running_instances_and_leave_out_the_others(self, driver, image,
                                                                      instance, made):
        if not driver.capabilities().metrics:
            with pytest.raises(Unsupported):
                driver.metrics([instance])
            return
        stopped = driver.create(self.spec(image))
        made.append(stopped)
        driver.stop(stopped, graceful=False)
        first = driver.metrics([instance, stopped, "contract-no-such-ref"])
        assert list(first) == [instance]
        driver.exec(instance, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
        second = driver.metrics([instance])[instance]
        assert second.read_at > first[instance].read_at
        assert second.cpu_seconds is not None and second.cpu_seconds > 0
        assert second.cpu_seconds >= first[instance].cpu_seconds  # a cumulative counter
        assert second.memory_bytes and second.memory_bytes > 0
        assert second.rx_bytes is not None and second.tx_bytes is not None
        assert driver.metrics([]) == {}

    def test_host_metrics_describe_the_engines_host(self, driver):
        if not driver.capabilities().metrics:
            return
        host = driver.host_metrics()
        assert host.cpus and host.memory_total_bytes
        assert host.instances_running is not None and host.instances_running >= 0

    def test_the_inventory_lists_what_was_made_here(self, driver, instance):
        try:
            refs = driver.inventory("contract-")
        except Unsupported:
            return
        assert instance in refs

    def test_unsupported_features_say_which(self, driver, instance):
        capabilities = driver.capabilities()
        if not capabilities.vm:
            with pytest.raises(Unsupported) as caught:
                capabilities.require("vm")
            assert caught.value.details["capability"] == "vm"
        if not capabilities.firewall:
            with pytest.raises(Unsupported):
                driver.apply_firewall(instance, [])
        if not capabilities.networks:
            with pytest.raises(Unsupported):
                driver.create_network("n1", "10.200.0.0/24")
