"""The database the core part loads: SEED_USERS users with SEED_KEYS API keys, a project of
SEED_INSTANCES instances, and what the create rounds need (a key, a plan, a node per
engine with its test image); see the GET project and GET instances items in
benchmarks/core.py and the create-to-running one in benchmarks/engines.py.

It is made in a child interpreter with the appliance's own models while the server runs
(like create-admin), then checked over HTTP; a failure of either raises BenchError.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BENCH_KEY_RPM,
    INSTANCES_PATH,
    PLAN,
    PROJECT_PATH,
    SCRIPTS_DIR,
    TEST_IMAGE,
    BenchError,
    Server,
    call_json,
    insert_all,
    server_env,
)

SEED_USERS = 1_000  # users in the database while GET project is loaded with an API key
SEED_KEYS = 10_000  # API keys in the database then
SEED_SERVICE_USERS = 5  # of the users, made by accounts.create_user (argon2, ~45 ms each)
SEED_TIMEOUT_S = 120
BENCH_KEY_SCOPES = ("instances:read", "projects:write")
SEED_INSTANCES = 500  # instances in the project whose list is loaded
LIST_PAGE = 50  # the list's default page size
CREATE_KEY_SCOPES = ("instances:read", "instances:write", "instances:delete")


@dataclass(frozen=True)
class Seeded:
    """What `seed_database` made: the measured key's secret and project, and the totals."""

    secret: str
    project_id: str
    users: int
    api_keys: int
    projects: int
    seconds: float
    instances_project_id: str  # SEED_INSTANCES instances, listed with `secret`
    instances: int
    create_secret: str  # a key with CREATE_KEY_SCOPES of another user
    create_project_id: str  # that user's default project, where instances are created
    engines: dict[str, dict[str, str]]  # engine: {"image_id", "node"} or {"skipped"}


# Run by `seed_database` as
# `python -c SEED_CODE <scripts dir> <data dir> <result file> <engines, comma-separated>`.
SEED_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import seed; "
             "seed.seed_in_this_process(sys.argv[2], sys.argv[3], sys.argv[4])")


def seed_in_this_process(data_dir: str, result_path: str, engines: str = "") -> None:
    """Fill the database in `data_dir` to SEED_USERS users and SEED_KEYS API keys, add a
    project of SEED_INSTANCES instances and prepare the `engines` for creates.

    Runs in a child interpreter (see `seed_database`): it imports the appliance and
    activates its settings. Writes the measured keys' secrets and projects, the engines'
    images (or why they are skipped) and the totals as JSON to `result_path`.
    """
    from appliance import create_app
    from appliance.db import database
    from appliance.models import ApiKey, Membership, Project, User
    from appliance.services import clock
    from appliance.services.accounts import api_keys, passwords, users
    from appliance.services.ids import hash_token, new_id
    from appliance.services.principal import Principal

    began = time.perf_counter()
    app = create_app({"DATA_DIR": data_dir})
    with app.app_context():
        # The real path first: users with their default project, and the measured key.
        password = secrets.token_urlsafe(18)
        made = [users.create_user(f"bench-user{index}@example.com", password,
                                     verified=True)
                for index in range(SEED_SERVICE_USERS)]
        owner = Principal(made[0], None, "session")
        new = api_keys.create_key(owner, "bench load", list(BENCH_KEY_SCOPES),
                                  rate_limit_rpm=BENCH_KEY_RPM)
        project_id = Project.get(Project.created_by == made[0].id, Project.is_default).id
        creates = prepare_creates(made[1], [e for e in engines.split(",") if e])

        # The rest in bulk, one transaction: users, their default projects, memberships.
        now = clock.now()
        fixed_hash = passwords.hash_password(secrets.token_urlsafe(18))
        user_rows, projects, members = [], [], []
        for index in range(SEED_USERS - User.select().count()):
            created = now - dt.timedelta(minutes=index)
            user_id, prj_id = new_id("usr"), new_id("prj")
            user_rows.append({"id": user_id, "email": f"user{index:05d}@bench.example.com",
                          "display_name": f"User {index}", "password_hash": fixed_hash,
                          "role": "user", "status": "active", "email_verified_at": created,
                          "password_changed_at": created, "created_at": created,
                          "updated_at": created})
            projects.append({"id": prj_id, "name": "Default project", "is_default": True,
                             "created_by": user_id, "created_at": created,
                             "updated_at": created})
            members.append({"project": prj_id, "user": user_id, "role": "owner",
                            "created_at": created, "updated_at": created})
        with database.atomic():
            for model, rows in ((User, user_rows), (Project, projects), (Membership, members)):
                insert_all(model, rows)
            defaults = {row.created_by_id: row.id for row in
                        Project.select(Project.id, Project.created_by).where(Project.is_default)}
            owners = sorted(defaults)
            keys = []
            for index in range(SEED_KEYS - ApiKey.select().count()):
                user_id = owners[index % len(owners)]
                prefix = api_keys.SECRET_PREFIX + secrets.token_hex(4)
                secret = f"{prefix}_{secrets.token_urlsafe(24)}"
                keys.append({
                    "id": new_id("key"), "user": user_id, "name": f"key {index}",
                    "prefix": prefix, "last_four": secret[-4:],
                    "secret_hash": hash_token(secret), "scopes": " ".join(BENCH_KEY_SCOPES),
                    "project": defaults[user_id] if index % 2 else None,
                    "usage_count": 0, "created_at": now - dt.timedelta(seconds=index),
                    "revoked_at": now if index % 10 == 9 else None})
            insert_all(ApiKey, keys)
        plan = bench_plan()
        instances_project_id, instances = seed_instances(made[0], plan)
        totals = {"users": User.select().count(), "api_keys": ApiKey.select().count(),
                  "projects": Project.select().count()}
    Path(result_path).write_text(json.dumps(
        {"secret": new.secret, "project_id": project_id, **totals,
         "instances_project_id": instances_project_id, "instances": instances, **creates,
         "seconds": round(time.perf_counter() - began, 3)}))


def bench_plan() -> Any:
    """The plan of every instance made here (PLAN: 1 vCPU, 128 MiB, 1 GB)."""
    from appliance.models import Plan
    from appliance.services import clock
    from appliance.services.ids import new_id

    now = clock.now()
    return Plan.create(id=new_id("pln"), slug="bench-small", name="Bench small",
                       price_hourly=1, price_monthly_cap=100, created_at=now,
                       updated_at=now, **PLAN)


def seed_instances(owner: Any, plan: Any) -> tuple[str, int]:
    """A new project of `owner` with SEED_INSTANCES running instances on a simulated node,
    each with its succeeded create job and two events; return its id and live count.

    The node is disabled: the scheduler's reconcile sweep (healthy, enabled nodes) would
    otherwise find none of the rows on the simulated engine and rewrite them all."""
    from appliance.db import database
    from appliance.models import Image, Instance, InstanceEvent, Job
    from appliance.services import clock, projects
    from appliance.services.ids import new_id
    from appliance.services.instances import nodes
    from appliance.services.instances.lifecycle import engine_name
    from appliance.services.principal import Principal

    project = projects.create_project(Principal(owner, None, "session"),
                                      "Bench instances").project
    node = nodes.check_health(nodes._insert(
        "bench-simulated", "fake", "fake://bench", options={}, enabled=False,
        capacity=nodes.Capacity(10_000, 10_000_000, 100_000)))
    image = Image.get(Image.node == node.id, Image.active)
    now = clock.now()
    instances, jobs, events = [], [], []
    for index in range(SEED_INSTANCES):
        created = now - dt.timedelta(minutes=index + 1)
        instance_id, job_id = new_id("ins"), new_id("job")
        instances.append({
            "id": instance_id, "project": project.id, "name": f"bench-{index:04d}",
            "plan": plan.id, "image": image.id, "node": node.id,
            "driver_ref": engine_name(instance_id), "status": "running",
            "power_state": "running", "ipv4": f"10.99.{index // 250}.{index % 250 + 2}",
            "ssh_keys": "[]", "created_by": owner.id, "created_at": created,
            "updated_at": created})
        jobs.append({
            "id": job_id, "type": "instance.create", "project": project.id,
            "instance": instance_id, "user": owner.id, "status": "succeeded",
            "params": "{}", "step": 3, "total_steps": 3, "message": "Done", "attempts": 1,
            "created_at": created, "started_at": created,
            "finished_at": created + dt.timedelta(seconds=2)})
        events += [{"id": new_id("iev"), "instance": instance_id, "job": job_id,
                    "type": kind, "message": message, "created_at": created}
                   for kind, message in (("instance.created", f"Created by {owner.email}"),
                                         ("instance.ready", f"Running on {node.name}"))]
    with database.atomic():
        for model, rows in ((Instance, instances), (Job, jobs), (InstanceEvent, events)):
            insert_all(model, rows)
    return project.id, Instance.select().where(Instance.project == project.id,
                                               Instance.deleted_at.is_null()).count()


def prepare_creates(user: Any, engines: list[str]) -> dict[str, Any]:
    """For the create rounds: a key of `user` with CREATE_KEY_SCOPES, its default project,
    and per engine a healthy node with TEST_IMAGE discovered (like _prepare in
    tests/test_engines_e2e.py), or why the engine is skipped."""
    from appliance import drivers
    from appliance.models import Image, Node, Project
    from appliance.services.accounts import api_keys
    from appliance.services.instances import nodes
    from appliance.services.principal import Principal

    new = api_keys.create_key(Principal(user, None, "session"), "bench creates",
                              list(CREATE_KEY_SCOPES), rate_limit_rpm=BENCH_KEY_RPM)
    project_id = Project.get(Project.created_by == user.id, Project.is_default).id
    prepared: dict[str, dict[str, str]] = {}
    for engine in engines:
        try:
            drivers.connect(engine, "").info()
        except Exception as exc:  # DriverError, a missing SDK: skipped
            reason = getattr(exc, "message", None) or str(exc)
            prepared[engine] = {"skipped": f"{engine} does not answer: {reason}"}
            continue
        # The server registered the first reachable local engine when it first started.
        node = Node.get_or_none(Node.engine == engine, Node.endpoint == "") or nodes._insert(
            f"bench-{engine}", engine, "", options={}, enabled=True,
            capacity=nodes.Capacity(8, 8192, 100))
        node = nodes.check_health(node)
        image = Image.get_or_none(Image.node == node.id, Image.ref == TEST_IMAGE,
                                  Image.active)
        if node.health != "healthy" or not node.enabled:
            state = node.health if node.enabled else "disabled"
            prepared[engine] = {"skipped": f"node {node.name} is {state}: "
                                           f"{node.health_message}"}
            continue
        if image is None:
            prepared[engine] = {"skipped": f"{engine} has no image {TEST_IMAGE} "
                                           "(scripts/engines imports it)"}
            continue
        prepared[engine] = {"image_id": image.id, "node": node.name}
    return {"create_secret": new.secret, "create_project_id": project_id,
            "engines": prepared}


def seed_database(server: Server, work: Path, engines: tuple[str, ...] = ()) -> Seeded:
    """Fill the data directory `server` serves (see `seed_in_this_process`) and check the
    measured key over HTTP: GET its project must answer 200 with that project, and GET
    the instances project 200 with a full first page."""
    result_path = work / "seeded.json"
    argv = [sys.executable, "-c", SEED_CODE, str(SCRIPTS_DIR), str(server.data_dir),
            str(result_path), ",".join(engines)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=server_env(),
                              timeout=SEED_TIMEOUT_S, cwd=server.log_path.parent,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"seeding the database took more than {SEED_TIMEOUT_S} s") from None
    if done.returncode != 0 or not result_path.exists():
        raise BenchError(f"seeding the database failed with status {done.returncode}:\n"
                         f"{done.stdout}{done.stderr}")
    seeded = Seeded(**json.loads(result_path.read_text()))
    if (seeded.users, seeded.api_keys, seeded.instances) != (SEED_USERS, SEED_KEYS,
                                                              SEED_INSTANCES):
        raise BenchError(f"seeding made {seeded.users} users, {seeded.api_keys} API keys "
                         f"and {seeded.instances} instances, not {SEED_USERS}, {SEED_KEYS} "
                         f"and {SEED_INSTANCES}")
    path = PROJECT_PATH.format(project_id=seeded.project_id)
    status, body = call_json(server.port, "GET", path, api_key=seeded.secret)
    if status != 200 or not isinstance(body, dict) or body.get("id") != seeded.project_id:
        raise BenchError(f"GET {path} with the bench API key answered {status}: {body}\n"
                         f"{server.log_tail()}")
    path = INSTANCES_PATH.format(project_id=seeded.instances_project_id)
    status, body = call_json(server.port, "GET", path, api_key=seeded.secret)
    data = body.get("data") if isinstance(body, dict) else None
    if (status != 200 or not isinstance(data, list) or len(data) != LIST_PAGE
            or not body["page"]["has_more"]):
        raise BenchError(f"GET {path} with the bench API key answered {status} without a "
                         f"full page of {LIST_PAGE}: {str(body)[:500]}\n{server.log_tail()}")
    return seeded
