"""Reading the event log: what the caller may see of it, newest first."""

from __future__ import annotations

from peewee import Expression

from appliance.models import Event, Membership, Project
from appliance.services import pagination, projects
from appliance.services.events.event_types import check_type
from appliance.services.principal import Principal


def visible_to(principal: Principal) -> Expression:
    """Events of the caller's account, and of the live projects they are a member of."""
    if principal.project_id is not None:
        return Event.project == principal.project_id
    member_of = (Membership.select(Membership.project)
                 .join(Project, on=(Membership.project == Project.id))
                 .where(Membership.user == principal.user.id, Project.deleted_at.is_null()))
    return (Event.user == principal.user.id) | Event.project.in_(member_of)


def list_events(principal: Principal, type: str | None = None, project_id: str | None = None,
                limit: int = pagination.DEFAULT_LIMIT,
                cursor: str | None = None) -> pagination.Page[Event]:
    """Events the caller may see, newest first; 404 for a project that is not theirs."""
    principal.require_scope("webhooks:read")
    check_type(type)
    query = Event.select().where(visible_to(principal))
    if project_id is not None:
        projects.access(principal, project_id, projects.READ)
        query = query.where(Event.project == project_id)
    if type is not None:
        query = query.where(Event.type == type)
    return pagination.page(query, Event, limit, cursor)
