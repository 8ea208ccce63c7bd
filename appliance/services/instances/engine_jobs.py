"""What the instance jobs do on the engine, run by the job runner (services/instances/jobs.py).

Each handler can be re-run after a crash: it asks the engine for the instance's state
first and only does what is still missing. After every handler the instance row mirrors
the engine (status, power state, addresses), and an event is added to its timeline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.db import database
from appliance.drivers.base import MISSING, RUNNING, Driver, DriverError, InstanceSpec, Limits
from appliance.errors import ApplianceError
from appliance.models import Image, Instance, InstanceEvent, Job, Node, Plan
from appliance.services import clock, sealing
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.instances import backups, jobs, nodes, templates
from appliance.services.instances.lifecycle import engine_name

log = logging.getLogger("appliance.instances")
ADDRESS_WAIT = 20.0  # seconds a new instance is given to report an address
ADDRESS_POLL = 0.05  # DHCP answers within about a second: look often


def _instance(job: Job) -> Instance:
    return Instance.get_by_id(job.instance_id)


def _password(sealed: str) -> str:
    """The password a job carries, unsealed. When it cannot be read back (SECRET_KEY
    changed since the job was queued) the job fails rather than go on without it."""
    password = sealing.unseal(sealed)
    if password is None:
        raise ApplianceError("The password cannot be read back (the secret key changed "
                             "since it was set); set it again.", code="password_unreadable")
    return password


def _event(instance_id: str, kind: str, message: str, job: Job | None) -> None:
    with database.atomic():
        InstanceEvent.create(id=new_id("iev"), instance=instance_id, job=job, type=kind,
                             message=message, created_at=clock.now())
        outbox.instance_event(instance_id, kind, message, job)


def _sync(instance: Instance, driver: Driver, *, wait_for_address: bool = False,
          **changes: Any) -> str:
    """Copy the engine's view into the row; return the power state."""
    state = driver.state(instance.driver_ref)
    deadline = time.monotonic() + ADDRESS_WAIT
    while (wait_for_address and state.power == RUNNING and not state.addresses
           and time.monotonic() < deadline):
        time.sleep(ADDRESS_POLL)
        state = driver.state(instance.driver_ref)
    ipv4 = next((a for a in state.addresses if ":" not in a), None)
    ipv6 = next((a for a in state.addresses if ":" in a), None)
    status = {"running": "running", "stopped": "stopped"}.get(state.power, "failed")
    with database.atomic():
        Instance.update(power_state=state.power, ipv4=ipv4, ipv6=ipv6, status=status,
                        updated_at=clock.now(), **changes).where(
            Instance.id == instance.id).execute()
    return state.power


def _limits(plan: Plan) -> Limits:
    return Limits(plan.vcpus, plan.memory_mb, plan.disk_gb)


def create(job: Job, progress: jobs.Progress) -> None:
    instance = _instance(job)
    driver = nodes.driver_for(instance.node)
    ref = engine_name(instance.id)
    params = json.loads(job.params)
    progress(1, f"Creating on {instance.node.name}")
    found = driver.state(ref).power
    if found not in (MISSING, RUNNING):
        # A creation interrupted (crash, kill -9) before the engine started the instance:
        # its keys or password may be missing too, so it is made again from scratch.
        driver.delete(ref)
        found = MISSING
    sealed = params.get("password")
    spec = InstanceSpec(name=ref, image=instance.image.ref, limits=_limits(instance.plan),
                        ssh_keys=tuple(json.loads(instance.ssh_keys or "[]")),
                        password=_password(sealed) if sealed else None,
                        user=instance.image.default_user, env=params.get("env") or {})
    if found == MISSING:
        ref = _create_on_engine(instance, driver, spec, params.get("backup_id"),
                                params.get("template_id"))
    elif spec.password is not None:
        # Running already: a crash came after the start, perhaps before the password.
        driver.set_password(ref, spec.user, spec.password)
    with database.atomic():
        Instance.update(driver_ref=ref).where(Instance.id == instance.id).execute()
    instance.driver_ref = ref
    progress(2, "Waiting for an address")
    _sync(instance, driver, wait_for_address=True)
    progress(3, "Ready")
    if params.get("backup_id"):
        backups.release(params["backup_id"], job)
    _event(instance.id, "instance.ready", f"Running on {instance.node.name}", job)


def _create_on_engine(instance: Instance, driver: Driver, spec: InstanceSpec,
                      backup_id: str | None, template_id: str | None = None) -> str:
    """driver.create (or create_from_archive, from the backup's or the template's
    archive); the row shows
    the instance running as soon as the engine runs it, while the driver finishes
    (password, crash watch), and goes back to creating if the create fails after that
    (a transient failure is retried from nothing)."""
    shown = False

    def started() -> None:
        nonlocal shown
        instance.driver_ref = spec.name
        _sync(instance, driver, driver_ref=spec.name)
        shown = True

    try:
        if template_id is not None:
            with templates.verified_archive(template_id) as archive:
                return driver.create_from_archive(spec, archive, started=started)
        if backup_id is None:
            return driver.create(spec, started=started)
        with backups.verified_archive(backup_id) as archive:
            return driver.create_from_archive(spec, archive, started=started)
    except Exception:
        if shown:
            with database.atomic():
                Instance.update(status="creating", power_state="unknown", ipv4=None, ipv6=None,
                                updated_at=clock.now()).where(
                    Instance.id == instance.id).execute()
        raise


def _create_failed(job: Job, error: str) -> None:
    """Nothing half-made stays on the engine; the row says failed, with the reason."""
    instance = _instance(job)
    try:
        driver = nodes.driver_for(instance.node)
        if driver.state(engine_name(instance.id)).power != MISSING:
            driver.delete(engine_name(instance.id))
    except DriverError as exc:
        error = f"{error} (and cleaning up failed: {exc.message})"
    with database.atomic():
        Instance.update(status="failed", updated_at=clock.now()).where(
            Instance.id == job.instance_id).execute()
    backup_id = json.loads(job.params).get("backup_id")
    if backup_id:
        backups.release(backup_id, job)
    _event(job.instance_id, "instance.failed", error, job)


def _power(action: str, event: str, done: str) -> Callable[[Job, jobs.Progress], None]:
    def run(job: Job, progress: jobs.Progress) -> None:
        instance = _instance(job)
        driver = nodes.driver_for(instance.node)
        {"start": lambda: driver.start(instance.driver_ref),
         "stop": lambda: driver.stop(instance.driver_ref, graceful=False),
         "shutdown": lambda: driver.stop(instance.driver_ref, graceful=True),
         "reboot": lambda: driver.reboot(instance.driver_ref),
         "reset": lambda: driver.reset(instance.driver_ref)}[action]()
        _sync(instance, driver, wait_for_address=action not in {"stop", "shutdown"})
        _event(instance.id, event, done, job)

    return run


def _resync_after_failure(job: Job, error: str) -> None:
    """A failed operation leaves the instance as the engine says it is."""
    instance = _instance(job)
    try:
        if instance.driver_ref:
            _sync(instance, nodes.driver_for(instance.node))
    except DriverError:
        pass
    _event(instance.id, "job.failed", error, job)


def delete(job: Job, progress: jobs.Progress) -> None:
    instance = _instance(job)
    backup_id = json.loads(job.params).get("backup_id")
    if instance.driver_ref:
        driver = nodes.driver_for(instance.node)
        if backup_id:
            progress(1, "Keeping a final backup")
            backups.take(backup_id, instance, driver)
        progress(2 if backup_id else 1, "Destroying on the engine")
        driver.delete(instance.driver_ref)
    now = clock.now()
    with database.atomic():
        Instance.update(status="deleted", power_state="missing", deleted_at=now, ipv4=None,
                        ipv6=None, password_sealed=None, updated_at=now).where(
            Instance.id == instance.id).execute()
    _event(instance.id, "instance.deleted", "Deleted", job)


def resize(job: Job, progress: jobs.Progress) -> None:
    instance = _instance(job)
    plan = Plan.get_by_id(json.loads(job.params)["plan_id"])
    driver = nodes.driver_for(instance.node)
    was_running = driver.state(instance.driver_ref).power == RUNNING
    live = driver.capabilities().resize_live
    if was_running and not live:
        progress(1, "Stopping for the resize")
        driver.stop(instance.driver_ref, graceful=True)
    progress(2, f"Applying {plan.name}")
    driver.resize(instance.driver_ref, _limits(plan))
    if was_running and not live:
        driver.start(instance.driver_ref)
    _sync(instance, driver, plan=plan)
    _event(instance.id, "instance.resized", f"Now {plan.name}", job)


def rebuild(job: Job, progress: jobs.Progress) -> None:
    """Reinstall, then give the fresh disk what the rows say the instance has: the new
    password the request generated and every SSH key (those added after the creation
    too, which the engine does not keep)."""
    instance = _instance(job)
    params = json.loads(job.params)
    image = Image.get_by_id(params["image_id"])
    driver = nodes.driver_for(instance.node)
    progress(1, f"Reinstalling from {image.name}")
    ref = driver.rebuild(instance.driver_ref, image.ref)
    instance.driver_ref = ref
    _sync(instance, driver, wait_for_address=True, image=image, driver_ref=ref)
    progress(2, "Setting the password and the SSH keys")
    if params.get("password"):
        driver.set_password(ref, image.default_user, _password(params["password"]))
    for key in json.loads(instance.ssh_keys or "[]"):
        _install_key(driver, ref, key)
    progress(3, "Ready")
    _event(instance.id, "instance.rebuilt", f"Rebuilt from {image.name}", job)


def _rebuild_failed(job: Job, error: str) -> None:
    """The new password may never have reached the disk: none is offered as waiting."""
    with database.atomic():
        Instance.update(password_sealed=None).where(Instance.id == job.instance_id).execute()
    _resync_after_failure(job, error)


def set_password(job: Job, progress: jobs.Progress) -> None:
    instance = _instance(job)
    password = _password(json.loads(job.params)["password"])
    driver = nodes.driver_for(instance.node)
    driver.set_password(instance.driver_ref, instance.image.default_user, password)
    _event(instance.id, "instance.password_set", "Password changed", job)


_ADD_KEY = ('mkdir -p ~/.ssh && chmod 700 ~/.ssh && '
            '{ grep -qxF "$1" ~/.ssh/authorized_keys 2>/dev/null || '
            'echo "$1" >> ~/.ssh/authorized_keys; } && chmod 600 ~/.ssh/authorized_keys')


def _install_key(driver: Driver, ref: str, key: str) -> None:
    """Append `key` to the authorized keys inside the instance unless it is there."""
    driver.capabilities().require("exec")
    code, output = driver.exec(ref, ["sh", "-c", _ADD_KEY, "sh", key])
    if code != 0:
        raise DriverError(f"could not add the key: {output.strip()[:200]}", permanent=True)


def add_ssh_key(job: Job, progress: jobs.Progress) -> None:
    instance = _instance(job)
    key = json.loads(job.params)["public_key"]
    driver = nodes.driver_for(instance.node)
    _install_key(driver, instance.driver_ref, key)
    keys = json.loads(instance.ssh_keys or "[]")
    with database.atomic():
        Instance.update(ssh_keys=json.dumps([*keys, key])).where(
            Instance.id == instance.id).execute()


POWER_ACTIONS = (("start", "instance.started", "Started"),
                 ("stop", "instance.stopped", "Powered off"),
                 ("shutdown", "instance.stopped", "Shut down"),
                 ("reboot", "instance.rebooted", "Rebooted"),
                 ("reset", "instance.rebooted", "Reset"))


def _delete_failed(job: Job, error: str) -> None:
    backup_id = json.loads(job.params).get("backup_id")
    if backup_id:
        backups.mark_failed(backup_id, error, job)
    _resync_after_failure(job, error)


def back_up(job: Job, progress: jobs.Progress) -> None:
    """backup.create: the archive of the instance (running or not) into the store."""
    instance = _instance(job)
    backup_id = json.loads(job.params)["backup_id"]
    progress(1, "Archiving the disk")
    backups.take(backup_id, instance, nodes.driver_for(instance.node), job)
    _event(instance.id, "backup.created", "Backed up", job)


def _back_up_failed(job: Job, error: str) -> None:
    backups.mark_failed(json.loads(job.params)["backup_id"], error, job)
    _resync_after_failure(job, error)


def restore(job: Job, progress: jobs.Progress) -> None:
    """backup.restore: the instance's disk replaced by the backup's archive (checked
    against its checksum first); the engine stops and starts it again as needed."""
    instance = _instance(job)
    params = json.loads(job.params)
    driver = nodes.driver_for(instance.node)
    progress(1, "Checking the archive")
    with backups.verified_archive(params["backup_id"]) as archive:
        progress(2, "Replacing the disk")
        driver.restore_archive(instance.driver_ref, archive)
    if params.get("start"):  # running when asked (a re-run may find it stopped)
        progress(3, "Starting")
        driver.start(instance.driver_ref)
    _sync(instance, driver, wait_for_address=True)
    with database.atomic():
        backups.release(params["backup_id"], job)
        backups.restored(params["backup_id"], instance, job)
    _event(instance.id, "backup.restored", "Restored from a backup", job)


def _restore_failed(job: Job, error: str) -> None:
    backups.release(json.loads(job.params)["backup_id"], job)
    _resync_after_failure(job, error)


def register_handlers() -> None:
    """Give the job runner the instance jobs (services/wiring.py calls this at start-up,
    so every process that can enqueue an instance job can also run it)."""
    jobs.register("instance.create", create, _create_failed)
    for action, event_type, done in POWER_ACTIONS:
        jobs.register(f"instance.{action}", _power(action, event_type, done),
                      _resync_after_failure)
    jobs.register("instance.delete", delete, _delete_failed)
    jobs.register("instance.resize", resize, _resync_after_failure)
    jobs.register("instance.rebuild", rebuild, _rebuild_failed)
    jobs.register("instance.password", set_password, _resync_after_failure)
    jobs.register("instance.ssh_key", add_ssh_key, _resync_after_failure)
    jobs.register("backup.create", back_up, _back_up_failed)
    jobs.register("backup.restore", restore, _restore_failed)
    jobs.register(templates.JOB_TYPE, templates.copy_archive, templates.copy_failed)


# Reconciling -------------------------------------------------------------------------

ENGINE_PREFIX = "ins-"


def reconcile_node(node: Node) -> int:
    """Make the rows of a node's instances agree with its engine; return rows changed.

    Instances with an operation in progress are left to their job. One stopped or deleted
    outside the appliance is shown as such (a vanished one becomes failed/missing with an
    event). Engine instances named like ours that no row knows are recorded on the node
    for administrators and never touched.
    """
    driver = nodes.driver_for(node)
    busy = {job.instance_id for job in Job.select(Job.instance).where(
        Job.status.in_(jobs.UNFINISHED), Job.instance.is_null(False))}
    live = list(Instance.select().where(Instance.node == node, Instance.deleted_at.is_null(),
                                        Instance.driver_ref.is_null(False)))
    changed = 0
    for instance in live:
        if instance.id in busy:
            continue
        state = driver.state(instance.driver_ref)
        if state.power == instance.power_state:
            continue
        if state.power == MISSING:
            with database.atomic():
                Instance.update(status="failed", power_state=MISSING, ipv4=None, ipv6=None,
                                updated_at=clock.now()).where(
                    Instance.id == instance.id).execute()
            _event(instance.id, "instance.missing",
                   "The engine no longer has this instance (deleted outside the appliance).",
                   None)
        else:
            _sync(instance, driver)
            _event(instance.id, f"instance.{state.power}",
                   f"Found {state.power} on the engine (changed outside the appliance).", None)
        changed += 1
    try:
        known = {instance.driver_ref for instance in Instance.select(Instance.driver_ref).where(
            Instance.node == node, Instance.deleted_at.is_null())}
        unknown = sorted(set(driver.inventory(ENGINE_PREFIX)) - known)
    except ApplianceError:  # the engine cannot list its instances
        unknown = []
    with database.atomic():
        type(node).update(unknown_instances=json.dumps(unknown)).where(
            type(node).id == node.id).execute()
    return changed


def reconcile_all() -> int:
    """The scheduler's sync of every healthy node. The nodes are read in full first (see
    nodes.check_all: no read snapshot is held across the engine calls and writes)."""
    changed = 0
    for node in list(Node.select().where(Node.enabled, Node.health == "healthy")):
        try:
            changed += reconcile_node(node)
        except DriverError as exc:
            log.warning("reconciling node %s failed: %s", node.name, exc.message)
    return changed
