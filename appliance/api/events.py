"""Events over JSON: the caller's event log and the catalog of event types."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Event
from appliance.services.events import event_types, outbox, queries
from appliance.services.principal import Principal

bp = ApiBlueprint("events_api", __name__)
TAGS = ("events",)


class EventOut(Schema):
    id: str = Field(description="Sorts in the order events happened; the `webhook-id` of "
                                "its deliveries.")
    type: str
    project_id: str | None
    user_id: str | None = Field(description="The account the event concerns, if any.")
    data: dict[str, Any]
    created_at: dt.datetime

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(id=event.id, type=event.type, project_id=event.project_id,
                   user_id=event.user_id, data=outbox.data_of(event),
                   created_at=event.created_at)


class EventList(Schema):
    data: list[EventOut]
    page: PageInfo


class EventQuery(ListQuery):
    type: str | None = Field(None, max_length=60, description="Only events of this type.")
    project_id: str | None = Field(None, max_length=40,
                                   description="Only events of this project.")


class EventTypeOut(Schema):
    type: str
    description: str
    example: dict[str, Any] = Field(description="An example of the event's `data`.")


class EventTypeList(Schema):
    data: list[EventTypeOut]


@bp.operation("/events", summary="Events you may see", tags=TAGS, query=EventQuery,
              response=EventList, auth=USER_OR_KEY, errors=(404,),
              description="Your account's events and those of the projects you belong to, "
                          "newest first. API keys need `webhooks:read`.")
def list_events(principal: Principal, query: EventQuery):
    rows, next_cursor = queries.list_events(principal, query.type, query.project_id,
                                           query.limit, query.cursor)
    return page_body([EventOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/event-types", summary="The event types, with example data", tags=TAGS,
              response=EventTypeList, auth=USER_OR_KEY)
def list_event_types(principal: Principal):
    return {"data": [EventTypeOut(type=name, description=kind.description,
                                  example=kind.example)
                     for name, kind in event_types.EVENT_TYPES.items()]}
