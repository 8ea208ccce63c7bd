"""The catalogue of event types: each type's description and an example of its data.

The OpenAPI document, `GET /event-types`, the webhook forms and the dashboard's live
updates read this list; `outbox.emit` refuses a type that is not in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidRequest

TYPE_MAX = 60


@dataclass(frozen=True)
class EventType:
    description: str
    example: dict[str, Any]


_INSTANCE = {"id": "ins_3f9a0c1d2e4b5a6c7d8e", "name": "web-1",
             "project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "status": "running",
             "power_state": "running", "ipv4": "10.0.0.12", "ipv6": None,
             "plan_id": "pln_small", "image_id": "img_5e6f7a8b9c0d1e2f3a4b"}
_JOB = {"id": "job_7c8d9e0f1a2b3c4d5e6f", "type": "instance.start", "status": "succeeded",
        "project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "instance_id": "ins_3f9a0c1d2e4b5a6c7d8e",
        "error": None, "error_code": None, "created_at": "2025-01-31T12:00:00Z",
        "finished_at": "2025-01-31T12:00:04Z"}


_USER_ID = "usr_1a2b3c4d5e6f7a8b9c0d"
_BACKUP = {"id": "bak_1a2b3c4d5e6f7a8b9c0d", "name": "before the upgrade", "kind": "manual",
           "project_id": _INSTANCE["project_id"], "instance_id": _INSTANCE["id"],
           "instance_name": _INSTANCE["name"], "engine": "incus", "size_bytes": 734003200,
           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
           "created_at": "2025-01-31T12:00:00Z"}

_TEMPLATE = {"id": "tpl_4d5e6f7a8b9c0d1e2f3a", "name": "web server, tuned",
             "project_id": _INSTANCE["project_id"], "source_instance_id": _INSTANCE["id"],
             "source_instance_name": _INSTANCE["name"], "source_backup_id": _BACKUP["id"],
             "engine": "incus", "size_bytes": _BACKUP["size_bytes"],
             "sha256": _BACKUP["sha256"], "created_at": "2025-01-31T12:05:00Z"}


def _instance_example(message: str, status: str = "running",
                      power: str = "running") -> dict[str, Any]:
    return {"instance": {**_INSTANCE, "status": status, "power_state": power},
            "message": message, "job_id": _JOB["id"]}


EVENT_TYPES: dict[str, EventType] = {
    "instance.created": EventType(
        "An instance was accepted; its creation job is queued.",
        _instance_example("Created by ada@example.com", "creating", "unknown")),
    "instance.ready": EventType(
        "A new instance is running (with its address, when the engine gave one).",
        _instance_example("Running on node-1")),
    "instance.started": EventType("An instance was started.", _instance_example("Started")),
    "instance.stopped": EventType(
        "An instance was stopped or shut down (also when found stopped on the engine).",
        _instance_example("Shut down", "stopped", "stopped")),
    "instance.rebooted": EventType("An instance was rebooted or reset.",
                                   _instance_example("Rebooted")),
    "instance.resized": EventType("An instance now has another plan.",
                                  _instance_example("Now Large")),
    "instance.rebuilt": EventType("An instance was reinstalled from an image.",
                                  _instance_example("Rebuilt from Debian 12")),
    "instance.deleted": EventType("An instance was destroyed.",
                                  _instance_example("Deleted", "deleted", "missing")),
    "instance.failed": EventType(
        "An instance could not be created, or vanished from its engine.",
        _instance_example("The engine refused the image", "failed", "missing")),
    "backup.created": EventType(
        "A backup of an instance was taken: its archive is in the backup store.",
        {"backup": {**_BACKUP, "status": "available"}, "job_id": _JOB["id"]}),
    "backup.failed": EventType(
        "A backup could not be taken (nothing of it is kept), or its archive no longer "
        "matches its checksum; `error` says why.",
        {"backup": {**_BACKUP, "status": "failed", "size_bytes": None, "sha256": None},
         "error": "Writing to the backup store failed: No space left on device.",
         "job_id": _JOB["id"]}),
    "backup.restored": EventType(
        "An instance's disk was replaced by a backup's (`instance_id`: the instance "
        "restored, which may be another one than the backup's).",
        {"backup": {**_BACKUP, "status": "available"}, "instance_id": _INSTANCE["id"],
         "job_id": _JOB["id"]}),
    "backup.deleted": EventType(
        "A backup was deleted: its archive is gone from the store.",
        {"backup": {**_BACKUP, "status": "deleted"}}),
    "template.created": EventType(
        "A template was made from a backup: its own archive is in the backup store, and "
        "instances of the project can be created from it.",
        {"template": {**_TEMPLATE, "status": "available"}, "job_id": _JOB["id"]}),
    "template.failed": EventType(
        "A template could not be made (nothing of it is kept), or its archive no longer "
        "matches its checksum; `error` says why.",
        {"template": {**_TEMPLATE, "status": "failed", "size_bytes": None, "sha256": None},
         "error": "Writing to the backup store failed: No space left on device.",
         "job_id": _JOB["id"]}),
    "template.deleted": EventType(
        "A template was deleted: its archive is gone from the store.",
        {"template": {**_TEMPLATE, "status": "deleted"}}),
    "job.succeeded": EventType("An asynchronous operation finished.", {"job": _JOB}),
    "job.failed": EventType(
        "An asynchronous operation failed; `error` says why.",
        {"job": {**_JOB, "status": "failed", "error": "The engine did not answer",
                 "error_code": "engine_error"}}),
    "billing.low_balance": EventType(
        "The prepaid balance fell below an alert threshold.",
        {"balance": 450, "threshold": 500, "currency": "EUR"}),
    "billing.suspended": EventType(
        "The account ran out of credit; its instances were stopped.",
        {"balance": -20, "currency": "EUR", "reason": "balance"}),
    "billing.grace_started": EventType(
        "The account is out of credit with priced instances: they are stopped when the "
        "grace period ends, unless credit is added.",
        {"currency": "EUR", "grace_ends_at": "2025-02-03T12:00:00Z"}),
    "billing.credited": EventType(
        "Credit was added to the account: a grant, top-up, promo code, refund or positive "
        "adjustment. `reference_type` is the kind of reference (stripe, promo, grant, ...).",
        {"amount": 2000, "currency": "EUR", "type": "topup", "balance_after": 2450,
         "reference_type": "stripe", "entry_id": 42}),
    "invoice.issued": EventType(
        "A monthly invoice was issued.",
        {"invoice": {"id": "inv_0f1e2d3c4b5a69788796", "number": "2025-0001",
                     "total": 1234, "currency": "EUR"}}),
    "api_key.created": EventType(
        "An API key was created (never with its secret).",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": "2025-12-31T23:59:59Z", "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"},
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "api_key.revoked": EventType(
        "An API key was revoked.",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": None, "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"},
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "api_key.expiring": EventType(
        "An API key expires within 7 days (told once per key).",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": "2025-12-31T23:59:59Z",
                     "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"}}),
    "member.added": EventType(
        "Someone was added to a project.",
        {"project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "user_id": "usr_5d6e7f8a9b0c1d2e3f4a",
         "email": "grace@example.com", "role": "member",
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "member.removed": EventType(
        "Someone was removed from a project, or left it.",
        {"project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "user_id": "usr_5d6e7f8a9b0c1d2e3f4a",
         "role": "member", "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "webhook.test": EventType(
        "A test sent from the webhook's page or `POST /webhooks/{id}/test`; only that "
        "webhook receives it.",
        {"webhook_id": "whk_2b3c4d5e6f7a8b9c0d1e", "message": "This is a test event."}),
    "appliance.backup_failed": EventType(
        "The daily backup of the appliance itself failed. Administrators only: each active "
        "administrator gets one, as an account event (the first failure since the last "
        "success, then at most one a day).",
        {"error": "No space left on device (/var/lib/appliance/backups/appliance)",
         "attempted_at": "2025-02-03T00:05:00Z",
         "directory": "/var/lib/appliance/backups/appliance"}),
    "webhook.disabled": EventType(
        "A webhook was disabled after five days of failed deliveries or a 410 answer.",
        {"webhook_id": "whk_2b3c4d5e6f7a8b9c0d1e", "url": "https://example.com/hooks",
         "reason": "Every delivery failed for 5 days."}),
    "limit_request.created": EventType(
        "An account asked for a higher limit. Administrators only: each active "
        "administrator gets one, as an account event.",
        {"limit_request": {"id": "lrq_4a5b6c7d8e9f0a1b2c3d", "resource": "instances",
                           "current_limit": 5, "requested": 10,
                           "reason": "A second web server", "user_id": _USER_ID,
                           "email": "grace@example.com"}}),
    "node.unhealthy": EventType(
        "A node that was healthy failed its health check. Administrators only: each "
        "active administrator gets one, as an account event.",
        {"node": {"id": "node_6b7c8d9e0f1a2b3c4d5e", "name": "local-incus",
                  "engine": "incus"},
         "message": "Cannot reach the local incus engine: connection refused."}),
    "user.signed_up": EventType(
        "Someone signed up. Only while NOTIFY_ADMINS_OF_SIGNUPS is on; administrators "
        "only: each active administrator gets one, as an account event.",
        {"user": {"id": "usr_5d6e7f8a9b0c1d2e3f4a", "email": "grace@example.com",
                  "display_name": "Grace"}}),
}

# Sent to each active administrator (`outbox.emit_to_administrators`), not to whom they
# are about: the operator's news.
ADMINISTRATOR_TYPES = frozenset({"appliance.backup_failed", "limit_request.created",
                                 "node.unhealthy", "user.signed_up"})


def check_type(type: str | None, field: str = "type") -> str | None:
    if type is not None and type not in EVENT_TYPES:
        raise InvalidRequest(f"Unknown event type {type[:TYPE_MAX]!r}; GET /event-types "
                             "lists them.", field=field)
    return type
