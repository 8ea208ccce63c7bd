"""The fake driver passes the contract, and says it is simulated."""

from __future__ import annotations

import pytest

from appliance import drivers
from appliance.drivers import fake
from tests.driver_contract import DriverContract


class TestFakeDriver(DriverContract):
    address_prefix = "10.99."

    @pytest.fixture
    def driver(self):
        fake.forget_all()
        yield drivers.connect("fake", "fake://contract")
        fake.forget_all()

    @pytest.fixture
    def image(self):
        return "fake/debian-12"

    def password_is(self, driver, ref, password):
        return driver._get(ref)["password"] == password

    def assert_limits(self, driver, ref, limits):
        assert driver._get(ref)["limits"] == limits


def test_the_registry_caches_drivers_per_node():
    one = drivers.connect("fake", "fake://a")
    assert drivers.connect("fake", "fake://a") is one
    assert drivers.connect("fake", "fake://b") is not one
    drivers.forget("fake", "fake://a")
    assert drivers.connect("fake", "fake://a") is not one


def test_a_down_engine_is_a_transient_error():
    from appliance.drivers.base import DriverError

    with pytest.raises(DriverError) as caught:
        drivers.connect("fake", "fake://down", {"down": "true"}).info()
    assert not caught.value.permanent
