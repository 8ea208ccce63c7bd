"""How the domains plug into one another, in one place, at start-up.

Lower domains offer hooks and know nothing of who uses them: the outbox runs fan-outs
and listeners for each event, the job runner runs handlers by job type, quotas ask
counters for usage, projects ask holders whether they are empty. The domains above fill
them in here, so nothing depends on which module happened to be imported first and no
import cycle is needed. `create_app` calls `connect()`; calling it again changes nothing.
"""

from __future__ import annotations

from appliance.models import User
from appliance.services import projects
from appliance.services.accounts import api_keys
from appliance.services.billing import prepaid
from appliance.services.events import live, notifications, outbox
from appliance.services.instances import backups, engine_jobs, lifecycle, templates
from appliance.services.limits import quotas
from appliance.services.ops import selfbackup
from appliance.services.webhooks import endpoints


def connect() -> None:
    """Register every hook (idempotent)."""
    outbox.fan_out_to(endpoints.fan_out, endpoints.wake)
    outbox.listen(notifications.from_event)
    notifications.register_mail_check("billing.grace_started", prepaid.still_in_grace)
    notifications.register_mail_check("billing.suspended", prepaid.still_suspended)
    notifications.register_mail_check("billing.low_balance", prepaid.still_low)
    notifications.register_mail_check("appliance.backup_failed", selfbackup.still_failing)
    outbox.listen(live.on_event)
    engine_jobs.register_handlers()
    quotas.register_usage("instances", lifecycle.live_instance_count)
    quotas.register_usage("vcpus", lifecycle.vcpus_in_use)
    quotas.register_usage("memory_mb", lifecycle.memory_mb_in_use)
    quotas.register_usage("api_keys", api_keys.active_key_count)
    quotas.register_usage("backups", kept_backup_count)
    quotas.register_usage("template_storage_gb", kept_template_gb)
    projects.register_holder(lifecycle.instances_in_project)
    projects.register_holder(templates.templates_in_project)


def kept_backup_count(user: User) -> int:
    """The backups counted against the `backups` limit: those of the user's projects that
    are kept or being taken (not failed, not deleted)."""
    return backups.kept_count(user.id)


def kept_template_gb(user: User) -> int:
    """The template storage counted against `template_storage_gb`: the archives' sizes
    (GiB, rounded up) of the templates of the user's projects that are kept or being made."""
    return templates.kept_gb(user.id)
