"""The Incus engine: `IncusDriver` (driver.py: endpoint, options, lifecycle, errors),
mixed from copies.py (backup archives: exported images); api.py holds what the modules
share about Incus's REST API, transport.py the HTTP over its unix socket.
"""

from appliance.drivers.incus.driver import IncusDriver

__all__ = ["IncusDriver"]
