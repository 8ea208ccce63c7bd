"""Private networks of the Docker driver: internal user-defined bridges (mixed into
`DockerDriver`). A rebuild reattaches the instance, with new addresses on them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.types

from appliance.drivers.base import DriverError
from appliance.drivers.docker.names import MANAGED, networks_of


class DockerNetworks:
    """Private networks (needs DockerDriver's helpers)."""

    if TYPE_CHECKING:  # DockerDriver's, declared for the type checker
        @property
        def _client(self) -> docker.DockerClient: ...
        def _errors(self, what: str) -> AbstractContextManager[None]: ...
        def _get(self, ref: str) -> Any: ...

    def create_network(self, name: str, cidr: str) -> str:
        """An internal user-defined bridge `name` on `cidr` (the default bridge stays the
        way out); its ref is the name. Creating it again returns it as it is."""
        if self._network(name, missing_ok=True) is not None:
            return name
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=cidr)])
        with self._errors(f"creating the network {name}"):
            self._client.networks.create(name, driver="bridge", ipam=ipam, internal=True,
                                         check_duplicate=True, labels={MANAGED: "true"})
        return name

    def _network(self, network_ref: str, missing_ok: bool = False) -> Any:
        with self._errors(f"looking up the network {network_ref}"):
            try:
                network = self._client.networks.get(network_ref)
            except docker.errors.NotFound:
                network = None
        if network is None or network.name != network_ref or (
                network.attrs.get("Labels") or {}).get(MANAGED) != "true":
            if missing_ok:
                return None
            raise DriverError(f"no network {network_ref}", permanent=True)
        return network

    def delete_network(self, network_ref: str) -> None:
        """Remove the network; a permanent error while instances are attached."""
        network = self._network(network_ref, missing_ok=True)
        if network is not None:
            with self._errors(f"deleting the network {network_ref}"):
                network.remove()

    def attach(self, ref: str, network_ref: str) -> None:
        network, container = self._network(network_ref), self._get(ref)
        if network_ref not in networks_of(container):
            with self._errors(f"attaching {ref} to {network_ref}"):
                network.connect(container)

    def detach(self, ref: str, network_ref: str) -> None:
        container = self._get(ref)
        if network_ref in networks_of(container):
            with self._errors(f"detaching {ref} from {network_ref}"):
                self._network(network_ref).disconnect(container)
