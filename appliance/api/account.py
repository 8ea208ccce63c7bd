"""The account over JSON: SSH keys, limits and requests to raise them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import LimitRequest, SshKey
from appliance.services.accounts import ssh_keys
from appliance.services.limits import quotas
from appliance.services.limits.quotas import Limit
from appliance.services.principal import Principal

bp = ApiBlueprint("account_api", __name__)
TAGS = ("account",)
AUTH = USER_OR_KEY
ResourceName = Literal["instances", "vcpus", "memory_mb", "backups", "template_storage_gb",
                       "api_keys"]


class SshKeyOut(Schema):
    id: str
    name: str
    key_type: str
    bits: int
    fingerprint: str
    public_key: str
    created_at: dt.datetime

    @classmethod
    def of(cls, key: SshKey) -> SshKeyOut:
        return cls(id=key.id, name=key.name, key_type=key.key_type, bits=key.bits,
                   fingerprint=key.fingerprint, public_key=key.public_key,
                   created_at=key.created_at)


class SshKeyList(Schema):
    data: list[SshKeyOut]
    page: PageInfo


class SshKeyIn(Schema):
    public_key: str = Field(min_length=1, max_length=ssh_keys.MAX_KEY_LENGTH,
                            description="One OpenSSH public key line (ed25519, rsa, ecdsa).")
    name: str = Field("", max_length=ssh_keys.NAME_MAX,
                      description="Defaults to the key's comment.")


class LimitOut(Schema):
    resource: ResourceName
    label: str
    unit: str
    used: int
    limit: int
    available: int
    overridden: bool = Field(description="Set for this account rather than the default.")

    @classmethod
    def of(cls, limit: Limit) -> LimitOut:
        return cls(resource=limit.resource.name, label=limit.resource.label,
                   unit=limit.resource.unit, used=limit.used, limit=limit.limit,
                   available=limit.available, overridden=limit.overridden)


class LimitsOut(Schema):
    data: list[LimitOut]


class LimitRequestOut(Schema):
    id: str
    user_id: str
    resource: ResourceName
    current_limit: int
    requested: int
    reason: str
    status: Literal["pending", "approved", "declined"]
    decision_note: str
    decided_at: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: LimitRequest) -> LimitRequestOut:
        return cls(id=row.id, user_id=row.user_id, resource=row.resource,
                   current_limit=row.current_limit, requested=row.requested, reason=row.reason,
                   status=row.status, decision_note=row.decision_note,
                   decided_at=row.decided_at, created_at=row.created_at)


class LimitRequestList(Schema):
    data: list[LimitRequestOut]
    page: PageInfo


class LimitRequestIn(Schema):
    resource: ResourceName
    requested: int = Field(ge=1, le=quotas.MAX_LIMIT)
    reason: str = Field("", max_length=1000)


@bp.operation("/account/ssh-keys", summary="Your SSH public keys", tags=TAGS, query=ListQuery,
              response=SshKeyList, auth=AUTH)
def list_ssh_keys(principal: Principal, query: ListQuery):
    rows, next_cursor = ssh_keys.list_keys(principal, query.limit, query.cursor)
    return page_body([SshKeyOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/account/ssh-keys", "POST", summary="Add an SSH public key", tags=TAGS,
              body=SshKeyIn, response=SshKeyOut, status=201, auth=AUTH,
              description="400 `invalid_ssh_key` for anything but one valid OpenSSH public "
                          "key; 409 `ssh_key_exists` when it is already on the account.")
def add_ssh_key(principal: Principal, body: SshKeyIn):
    return SshKeyOut.of(ssh_keys.add_key(principal, body.public_key, body.name))


@bp.operation("/account/ssh-keys/<ssh_key_id>", summary="One SSH key", tags=TAGS,
              response=SshKeyOut, auth=AUTH, errors=(404,))
def get_ssh_key(principal: Principal, ssh_key_id: str):
    return SshKeyOut.of(ssh_keys.get_key(principal, ssh_key_id))


@bp.operation("/account/ssh-keys/<ssh_key_id>", "DELETE", summary="Delete an SSH key", tags=TAGS,
              status=204, auth=AUTH, errors=(404,))
def delete_ssh_key(principal: Principal, ssh_key_id: str):
    ssh_keys.delete_key(principal, ssh_key_id)
    return None, 204


@bp.operation("/account/limits", summary="Your limits and what is in use", tags=TAGS,
              response=LimitsOut, auth=AUTH)
def limits(principal: Principal):
    return {"data": [LimitOut.of(limit) for limit in quotas.limits(principal.user)]}


@bp.operation("/account/limit-requests", summary="Your requests for higher limits", tags=TAGS,
              query=ListQuery, response=LimitRequestList, auth=AUTH)
def list_limit_requests(principal: Principal, query: ListQuery):
    rows, next_cursor = quotas.list_requests(principal, query.limit, query.cursor)
    return page_body([LimitRequestOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/account/limit-requests", "POST", summary="Ask for a higher limit", tags=TAGS,
              body=LimitRequestIn, response=LimitRequestOut, status=201, auth=AUTH,
              errors=(409,))
def request_limit(principal: Principal, body: LimitRequestIn):
    return LimitRequestOut.of(quotas.request_increase(principal, body.resource, body.requested,
                                                      body.reason))
