"""Helpers for the usage and billing tests: priced plans and instances made directly."""

from __future__ import annotations

import datetime as dt

from appliance.models import Image, Instance, Node, Plan, Project
from appliance.services import clock
from appliance.services.ids import new_id

T0 = dt.datetime(2025, 3, 10, 12, 30, tzinfo=dt.UTC)


def make_plan(slug: str = "std", price: int = 100, cap: int = 50_000) -> Plan:
    now = clock.now()
    return Plan.create(id=f"pln_{slug}", slug=slug, name=slug.title(), vcpus=1, memory_mb=512,
                       disk_gb=10, price_hourly=price, price_monthly_cap=cap, created_at=now,
                       updated_at=now)


def make_node_and_image() -> tuple[Node, Image]:
    now = clock.now()
    node = Node.create(id=new_id("node"), name=new_id("n"), engine="fake", capacity_vcpus=10**6,
                       capacity_memory_mb=10**9, capacity_disk_gb=10**9, simulated=True,
                       health="healthy", created_at=now, updated_at=now)
    image = Image.create(id=new_id("img"), name="debian", engine="fake", ref=new_id("ref"),
                         node=node, created_at=now, updated_at=now)
    return node, image


def default_project_of(user_id: str) -> Project:
    return Project.get(Project.created_by == user_id, Project.is_default)


def make_instance(project: Project | str, plan: Plan | str, node: Node, image: Image, *,
                  created_at: dt.datetime | None = None, status: str = "running",
                  name: str | None = None) -> Instance:
    at = created_at or clock.now()
    return Instance.create(id=new_id("ins"), project=project, name=name or new_id("i")[4:],
                           plan=plan, image=image, node=node, status=status,
                           driver_ref="ref", created_at=at, updated_at=at)


def delete_instance(instance: Instance, at: dt.datetime) -> None:
    Instance.update(status="deleted", deleted_at=at).where(Instance.id == instance.id).execute()
