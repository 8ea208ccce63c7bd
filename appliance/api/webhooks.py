"""Webhooks over JSON: manage them, read their delivery log, redeliver, test, rotate."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Webhook, WebhookAttempt, WebhookDelivery
from appliance.services.principal import Principal
from appliance.services.webhooks import deliveries, endpoints

bp = ApiBlueprint("webhooks_api", __name__)
TAGS = ("webhooks",)
AUTH = USER_OR_KEY
ONE = "/webhooks/<webhook_id>"
DELIVERY = ONE + "/deliveries/<delivery_id>"
TypeName = Annotated[str, Field(min_length=1, max_length=60)]
TYPES_HELP = "Event types (GET /event-types) or [\"*\"] for every type."


class WebhookOut(Schema):
    id: str
    url: str
    description: str
    event_types: list[str] = Field(description=TYPES_HELP)
    project_id: str | None = Field(description="null: every event of your account and "
                                               "your projects.")
    status: Literal["active", "paused", "disabled"]
    disabled_reason: str | None
    failing_since: dt.datetime | None = Field(
        description="Deliveries have failed since then; after 5 days it is disabled.")
    previous_secret_valid_until: dt.datetime | None = Field(
        description="Until then deliveries are also signed with the previous secret.")
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(id=webhook.id, url=webhook.url, description=webhook.description,
                   event_types=endpoints.event_types_of(webhook), project_id=webhook.project_id,
                   status=webhook.status, disabled_reason=webhook.disabled_reason,
                   failing_since=webhook.failing_since,
                   previous_secret_valid_until=webhook.previous_valid_until,
                   created_at=webhook.created_at, updated_at=webhook.updated_at)


class WebhookList(Schema):
    data: list[WebhookOut]
    page: PageInfo


class WebhookIn(Schema):
    url: str = Field(min_length=1, max_length=endpoints.URL_MAX,
                     description="http(s) URL; private LAN addresses only when the operator "
                                 "allows them.")
    event_types: list[TypeName] = Field(["*"], min_length=1, max_length=50,
                                        description=TYPES_HELP)
    project_id: str | None = Field(None, max_length=40,
                                   description="Only this project's events.")
    description: str = Field("", max_length=endpoints.DESCRIPTION_MAX)


class WebhookPatch(Schema):
    url: str | None = Field(None, min_length=1, max_length=endpoints.URL_MAX)
    event_types: list[TypeName] | None = Field(None, min_length=1, max_length=50,
                                               description=TYPES_HELP)
    description: str | None = Field(None, max_length=endpoints.DESCRIPTION_MAX)


class WebhookSecretOut(Schema):
    webhook: WebhookOut
    secret: str = Field(description="`whsec_...`: shown this once; verify deliveries with it.")


class WebhookRotateIn(Schema):
    grace_seconds: int = Field(endpoints.DEFAULT_GRACE_SECONDS, ge=0, le=604800,
                               description="How long the old secret keeps signing too "
                                           "(default 24 hours, at most 7 days).")


class WebhookQuery(ListQuery):
    project_id: str | None = Field(None, max_length=40,
                                   description="Only the webhooks of this project.")


class AttemptOut(Schema):
    number: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    response_excerpt: str = Field(description="At most 2 KB of the response body.")
    error: str | None

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptOut:
        return cls(number=row.number, started_at=row.started_at, duration_ms=row.duration_ms,
                   status_code=row.status_code, response_excerpt=row.response_excerpt or "",
                   error=row.error)


class DeliveryOut(Schema):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    message_id: str = Field(description="The `webhook-id` header: the same on every "
                                        "attempt and redelivery of the event.")
    trigger: Literal["event", "redelivery", "test"]
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def fields_of(cls, row: WebhookDelivery) -> dict[str, Any]:
        return dict(id=row.id, webhook_id=row.webhook_id, event_id=row.event_id,
                    event_type=row.event.type, message_id=row.msg_id, trigger=row.trigger,
                    status=row.status, attempts=row.attempts,
                    next_attempt_at=row.next_attempt_at, last_status_code=row.last_status_code,
                    last_error=row.last_error, created_at=row.created_at,
                    finished_at=row.finished_at)

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(**cls.fields_of(row))


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any] = Field(description="The body sent: {type, timestamp, data}.")
    attempt_log: list[AttemptOut]

    @classmethod
    def with_attempts(cls, row: WebhookDelivery,
                      attempts: list[WebhookAttempt]) -> DeliveryDetail:
        return cls(**cls.fields_of(row), payload=json.loads(deliveries.payload(row.event)),
                   attempt_log=[AttemptOut.of(a) for a in attempts])


class DeliveryList(Schema):
    data: list[DeliveryOut]
    page: PageInfo


class DeliveryQuery(ListQuery):
    status: Literal["pending", "succeeded", "failed"] | None = None


class TestOut(Schema):
    succeeded: bool = Field(description="The endpoint answered 2xx within 15 s.")
    status_code: int | None
    error: str | None
    duration_ms: int
    delivery: DeliveryDetail


# Webhooks ----------------------------------------------------------------------------


@bp.operation("/webhooks", summary="Your webhooks", tags=TAGS, query=WebhookQuery,
              response=WebhookList, auth=AUTH)
def list_webhooks(principal: Principal, query: WebhookQuery):
    rows, next_cursor = endpoints.list_webhooks(principal, query.limit, query.cursor,
                                               query.project_id)
    return page_body([WebhookOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/webhooks", "POST", summary="Create a webhook (the secret is shown once)",
              tags=TAGS, body=WebhookIn, response=WebhookSecretOut, status=201, auth=AUTH,
              errors=(403, 409),
              description="Deliveries are signed per Standard Webhooks with the returned "
                          "`whsec_` secret. A URL the SSRF guard refuses is 400 "
                          "`webhook_invalid_url`.")
def create_webhook(principal: Principal, body: WebhookIn):
    created = endpoints.create_webhook(
        principal, body.url, event_types=list(body.event_types), project_id=body.project_id,
        description=body.description)
    return {"webhook": WebhookOut.of(created.webhook), "secret": created.secret}


@bp.operation(ONE, summary="One webhook", tags=TAGS, response=WebhookOut, auth=AUTH,
              errors=(404,))
def get_webhook(principal: Principal, webhook_id: str):
    return WebhookOut.of(endpoints.get_webhook(principal, webhook_id))


@bp.operation(ONE, "PATCH", summary="Change a webhook's URL, event types or description",
              tags=TAGS, body=WebhookPatch, response=WebhookOut, auth=AUTH, errors=(404,))
def update_webhook(principal: Principal, webhook_id: str, body: WebhookPatch):
    return WebhookOut.of(endpoints.update_webhook(
        principal, webhook_id, url=body.url, description=body.description,
        event_types=list(body.event_types) if body.event_types is not None else None))


@bp.operation(ONE, "DELETE", summary="Delete a webhook and its delivery log", tags=TAGS,
              status=204, auth=AUTH, errors=(404,))
def delete_webhook(principal: Principal, webhook_id: str):
    endpoints.delete_webhook(principal, webhook_id)


@bp.operation(ONE + "/pause", "POST", summary="Pause a webhook", tags=TAGS,
              response=WebhookOut, auth=AUTH, errors=(404, 409),
              description="New events are not queued for it; queued deliveries wait.")
def pause_webhook(principal: Principal, webhook_id: str):
    return WebhookOut.of(endpoints.pause_webhook(principal, webhook_id))


@bp.operation(ONE + "/resume", "POST", summary="Resume a paused or disabled webhook",
              tags=TAGS, response=WebhookOut, auth=AUTH, errors=(404,))
def resume_webhook(principal: Principal, webhook_id: str):
    return WebhookOut.of(endpoints.resume_webhook(principal, webhook_id))


@bp.operation(ONE + "/rotate-secret", "POST", summary="Give a webhook a new secret",
              tags=TAGS, body=WebhookRotateIn, response=WebhookSecretOut, auth=AUTH, errors=(404,),
              description="The new secret is shown once. For `grace_seconds` deliveries "
                          "carry a signature with each secret.")
def rotate_secret(principal: Principal, webhook_id: str, body: WebhookRotateIn):
    rotated = endpoints.rotate_secret(principal, webhook_id, body.grace_seconds)
    return {"webhook": WebhookOut.of(rotated.webhook), "secret": rotated.secret}


@bp.operation(ONE + "/test", "POST", summary="Send a webhook.test event now",
              tags=TAGS, response=TestOut, auth=AUTH, errors=(404, 409),
              description="One attempt, to this webhook only; the answer says how it went.")
def test_webhook(principal: Principal, webhook_id: str):
    delivery, outcome = deliveries.send_test(principal, webhook_id)
    _, attempts = deliveries.get_delivery(principal, webhook_id, delivery.id)
    return TestOut(succeeded=outcome.status == "succeeded", status_code=outcome.status_code,
                   error=outcome.error, duration_ms=outcome.duration_ms,
                   delivery=DeliveryDetail.with_attempts(delivery, attempts))


# Deliveries --------------------------------------------------------------------------


@bp.operation(ONE + "/deliveries", summary="A webhook's deliveries", tags=TAGS,
              query=DeliveryQuery, response=DeliveryList, auth=AUTH, errors=(404,))
def list_deliveries(principal: Principal, webhook_id: str, query: DeliveryQuery):
    rows, next_cursor = deliveries.list_deliveries(principal, webhook_id, query.status,
                                                   query.limit, query.cursor)
    return page_body([DeliveryOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation(DELIVERY, summary="One delivery with its attempts", tags=TAGS,
              response=DeliveryDetail, auth=AUTH, errors=(404,))
def get_delivery(principal: Principal, webhook_id: str, delivery_id: str):
    delivery, attempts = deliveries.get_delivery(principal, webhook_id, delivery_id)
    return DeliveryDetail.with_attempts(delivery, attempts)


@bp.operation(DELIVERY + "/redeliver", "POST", summary="Send a delivery's event again",
              tags=TAGS, response=DeliveryOut, status=202, auth=AUTH, errors=(404, 409),
              description="A new delivery of the same event with the same `webhook-id`.")
def redeliver(principal: Principal, webhook_id: str, delivery_id: str):
    return DeliveryOut.of(deliveries.redeliver(principal, webhook_id, delivery_id))
