"""The audit log: who did what to what, from where, and when."""

from __future__ import annotations

import json
from typing import Any

from appliance.models import AuditLog, User
from appliance.services import clock
from appliance.services.ids import new_id


def record(action: str, *, actor: User | str | None = None, target_type: str | None = None,
           target_id: str | None = None, ip: str = "", success: bool = True,
           **details: Any) -> AuditLog:
    """Write one audit row; call inside the transaction of the change it records."""
    return AuditLog.create(
        id=new_id("aud"),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip=ip or "",
        details=json.dumps(details, default=str),
        success=success,
        created_at=clock.now(),
    )
