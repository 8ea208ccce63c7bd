"""The Docker engine: `DockerDriver` (driver.py: endpoint, options, lifecycle, errors),
mixed from files.py (accounts and passwords inside a container), copies.py (backup
archives: `docker save`s of commits) and networks.py (private networks); names.py
holds the names and labels of what the driver owns.
"""

from appliance.drivers.docker.driver import DockerDriver

__all__ = ["DockerDriver"]
