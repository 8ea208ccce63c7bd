"""API keys over JSON: create (secret shown once), list, get, revoke, rotate."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import ApiKey
from appliance.services.accounts import api_keys
from appliance.services.principal import Principal

bp = ApiBlueprint("api_keys_api", __name__)
TAGS = ("api-keys",)
AUTH = USER_OR_KEY
Scope = Literal["instances:read", "instances:write", "instances:delete", "backups:write",
                "networks:write", "usage:read", "billing:read", "billing:write",
                "webhooks:read", "webhooks:write", "keys:write", "projects:write", "admin"]


class ApiKeyOut(Schema):
    id: str
    name: str
    prefix: str = Field(description="The start of the secret, to tell keys apart.")
    last_four: str
    owner_id: str
    scopes: list[Scope]
    project_id: str | None
    expires_at: dt.datetime | None
    allowed_ips: list[str]
    rate_limit_rpm: int | None = Field(description="null: the appliance's default.")
    status: Literal["active", "expired", "revoked"]
    last_used_at: dt.datetime | None
    last_used_ip: str | None
    usage_count: int
    created_at: dt.datetime
    rotated_at: dt.datetime | None
    previous_secret_valid_until: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(id=key.id, name=key.name, prefix=key.prefix, last_four=key.last_four,
                   owner_id=key.user_id, scopes=sorted(api_keys.scopes_of(key)),
                   project_id=key.project_id, expires_at=key.expires_at,
                   allowed_ips=api_keys.allowed_networks(key),
                   rate_limit_rpm=key.rate_limit_rpm, status=api_keys.status_of(key),
                   last_used_at=key.last_used_at, last_used_ip=key.last_used_ip,
                   usage_count=key.usage_count, created_at=key.created_at,
                   rotated_at=key.rotated_at,
                   previous_secret_valid_until=key.previous_valid_until,
                   revoked_at=key.revoked_at)


class ApiKeyList(Schema):
    data: list[ApiKeyOut]
    page: PageInfo


class ApiKeyIn(Schema):
    name: str = Field(min_length=1, max_length=api_keys.NAME_MAX)
    scopes: list[Scope] = Field(min_length=1, max_length=20)
    project_id: str | None = Field(None, max_length=40,
                                   description="Restrict the key to one of your projects.")
    expires_at: dt.datetime | None = None
    allowed_ips: list[str] | None = Field(None, max_length=50,
                                          description="Addresses or CIDR networks; "
                                                      "null: any address.")
    rate_limit_rpm: int | None = Field(None, ge=1, le=api_keys.MAX_RATE_LIMIT_RPM)


class ApiKeySecretOut(Schema):
    key: ApiKeyOut
    secret: str = Field(description="Shown this once; only its hash is kept.")


class ApiKeyRotateIn(Schema):
    grace_seconds: int = Field(0, ge=0, le=604800,
                               description="How long the old secret keeps working (max 7 "
                                           "days).")


@bp.operation("/api-keys", summary="Your API keys", tags=TAGS, query=ListQuery,
              response=ApiKeyList, auth=AUTH)
def list_keys(principal: Principal, query: ListQuery):
    rows, next_cursor = api_keys.list_keys(principal, query.limit, query.cursor)
    return page_body([ApiKeyOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/api-keys", "POST", summary="Create an API key (the secret is shown once)",
              tags=TAGS, body=ApiKeyIn, response=ApiKeySecretOut, status=201, auth=AUTH,
              description="Use it as `Authorization: Bearer sk_...` or `X-API-Key: sk_...`. "
                          "It acts as you, limited by its scopes and project.")
def create_key(principal: Principal, body: ApiKeyIn):
    created = api_keys.create_key(
        principal, body.name, list(body.scopes), project_id=body.project_id,
        expires_at=body.expires_at, allowed_ips=body.allowed_ips,
        rate_limit_rpm=body.rate_limit_rpm)
    return {"key": ApiKeyOut.of(created.key), "secret": created.secret}


@bp.operation("/api-keys/<key_id>", summary="One API key", tags=TAGS, response=ApiKeyOut,
              auth=AUTH, errors=(404,))
def get_key(principal: Principal, key_id: str):
    return ApiKeyOut.of(api_keys.get_key(principal, key_id))


@bp.operation("/api-keys/<key_id>", "DELETE", summary="Revoke an API key (at once)",
              tags=TAGS, response=ApiKeyOut, auth=AUTH, errors=(404,))
def revoke_key(principal: Principal, key_id: str):
    return ApiKeyOut.of(api_keys.revoke_key(principal, key_id))


@bp.operation("/api-keys/<key_id>/rotate", "POST", summary="Give a key a new secret",
              tags=TAGS, body=ApiKeyRotateIn, response=ApiKeySecretOut, auth=AUTH, errors=(404,),
              description="Same key, same settings, new secret (shown once). The old secret "
                          "keeps working for `grace_seconds`, then is refused.")
def rotate_key(principal: Principal, key_id: str, body: ApiKeyRotateIn):
    rotated = api_keys.rotate_key(principal, key_id, body.grace_seconds)
    return {"key": ApiKeyOut.of(rotated.key), "secret": rotated.secret}
