"""Notifications over JSON: the caller's in-app notifications, marking them read.

A person's inbox: access tokens only (an API key gets 403 `api_key_not_allowed`).
Another user's notification is 404 `notification_not_found`.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from appliance.api.principal import USER
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Notification
from appliance.services.events import notifications
from appliance.services.principal import Principal

bp = ApiBlueprint("notifications_api", __name__)
TAGS = ("notifications",)


class NotificationOut(Schema):
    id: str
    type: str = Field(description="The type of the event it came from.")
    event_id: str | None = Field(description="That event (GET /events), when kept.")
    title: str
    body: str
    link: str = Field(description="A dashboard path for more, or empty.")
    read: bool
    read_at: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Notification) -> NotificationOut:
        return cls(id=row.id, type=row.type, event_id=row.event_id, title=row.title,
                   body=row.body, link=row.link, read=row.read_at is not None,
                   read_at=row.read_at, created_at=row.created_at)


class NotificationList(Schema):
    data: list[NotificationOut]
    page: PageInfo


class NotificationQuery(ListQuery):
    unread: bool = Field(False, description="Only unread notifications.")


class UnreadCount(Schema):
    unread: int


class MarkedAll(Schema):
    marked: int = Field(description="How many were unread and are now read.")


@bp.operation("/notifications", summary="Your notifications", tags=TAGS,
              query=NotificationQuery, response=NotificationList, auth=USER,
              description="Newest first; `?unread=true` for the unread ones only.")
def list_notifications(principal: Principal, query: NotificationQuery):
    rows, next_cursor = notifications.list_notifications(principal, query.unread,
                                                         query.limit, query.cursor)
    return page_body([NotificationOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/notifications/unread-count", summary="How many notifications are unread",
              tags=TAGS, response=UnreadCount, auth=USER)
def unread_count(principal: Principal):
    return {"unread": notifications.unread_count(principal)}


@bp.operation("/notifications/read-all", "POST", summary="Mark every notification read",
              tags=TAGS, response=MarkedAll, auth=USER)
def read_all(principal: Principal):
    return {"marked": notifications.mark_all_read(principal)}


@bp.operation("/notifications/<notification_id>/read", "POST", tags=TAGS,
              summary="Mark a notification read", response=NotificationOut, auth=USER,
              errors=(404,))
def read_one(principal: Principal, notification_id: str):
    return NotificationOut.of(notifications.mark_read(principal, notification_id))
