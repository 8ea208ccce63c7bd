"""Cursor pagination, one way for every list: newest first, stable, keyset-based.

Rows are ordered by (created_at desc, id desc). The cursor is an opaque URL-safe string
naming the last row of a page; the next page starts strictly after it, so rows added
meanwhile never shift a page and none is shown twice.

Every `list_*` service returns a `Page[T]`: the rows and the cursor of the next page
(None on the last one), a plain tuple that callers unpack as `rows, next_cursor = ...`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any, TypeAlias, TypeVar

from appliance.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 100

T = TypeVar("T")
Page: TypeAlias = tuple[list[T], str | None]
"""One page of rows of type T and the cursor of the next page (None on the last)."""


def encode_cursor(created_at: dt.datetime, row_id: str | int) -> str:
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str | int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        if not isinstance(row_id, str | int) or isinstance(row_id, bool):
            raise ValueError("id is not a string or an integer")
        return dt.datetime.fromisoformat(created_at), row_id
    except (binascii.Error, ValueError, TypeError):
        raise InvalidRequest("The cursor is not valid.", field="cursor") from None


def page(query: Any, model: Any, limit: int = DEFAULT_LIMIT,
         cursor: str | None = None) -> Page[Any]:
    """One page of `query` over `model` (which has created_at and id) and the next cursor.

    `next_cursor` is None on the last page. Raises InvalidRequest for a limit outside
    1-100 or a cursor that was not handed out here.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", field="limit")
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where((model.created_at < created_at) |
                            ((model.created_at == created_at) & (model.id < row_id)))
    rows = list(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
