"""Health, meta, public config and the OpenAPI document."""

from __future__ import annotations

import os

from flask import current_app, jsonify
from peewee import MySQLDatabase, PostgresqlDatabase, SqliteDatabase
from pydantic import Field

from appliance import __version__
from appliance.api.schema import API_VERSION, ApiBlueprint, Schema, openapi_document
from appliance.db import database, retry_after, unavailable_reason, write_probe
from appliance.errors import DatabaseUnavailable
from appliance.services import branding

ENGINE_NAMES = ((SqliteDatabase, "sqlite"), (PostgresqlDatabase, "postgresql"),
                (MySQLDatabase, "mysql"))

bp = ApiBlueprint("system", __name__)


class Health(Schema):
    ok: bool


class DatabaseHealth(Schema):
    ok: bool
    engine: str
    migrations_applied: int
    writable: bool | None = Field(
        description="A write was committed (SQLite; null: not probed on this engine).")


class PaginationPolicy(Schema):
    style: str
    default_limit: int
    max_limit: int
    parameters: list[str]


class IdempotencyPolicy(Schema):
    header: str
    retention_hours: int
    applies_to: str


class Meta(Schema):
    version: str
    api_version: str
    openapi_url: str
    pagination: PaginationPolicy
    idempotency: IdempotencyPolicy


class PublicConfig(Schema):
    site_name: str
    support_email: str = Field(description="Where users write for help; empty: none.")
    signup: str
    signup_open: bool
    accent_color: str = Field(description="#rrggbb; empty: the built-in colour.")
    footer_text: str
    support_url: str = Field(description="The operator's help page; empty: none.")
    logo_url: str | None = Field(description="The logo (PNG or JPEG), its URL changing "
                                             "with the image; null: none uploaded.")
    favicon_url: str | None
    theme_url: str | None = Field(description="The stylesheet setting the accent colour.")


@bp.operation("/health", summary="Is the appliance up?", tags=("system",), response=Health)
def health():
    return {"ok": True}


@bp.operation("/health/db", summary="Can the database be queried and written?",
              tags=("system",), response=DatabaseHealth, errors=(503,),
              description="503 `database_unavailable` when the database cannot be read, "
                          "or cannot be written (`details.writable` false, "
                          "`details.reason` locked, read_only, io_error, full or "
                          "cannot_open); a writer holding the lock for over 1 s counts.")
def health_db():
    try:
        # A pooled SQLite connection keeps working on a file deleted under it: look.
        if isinstance(database.obj, SqliteDatabase) and not os.path.exists(
                database.obj.database):
            raise FileNotFoundError(database.obj.database)
        database.execute_sql("SELECT 1").fetchone()
        applied = database.execute_sql("SELECT COUNT(*) FROM schema_migration").fetchone()[0]
    except Exception as exc:  # whatever the driver raises, the database is down for us
        current_app.logger.warning("database health check failed: %s", exc)
        reason = unavailable_reason(exc) or "unavailable"
        raise DatabaseUnavailable(reason, retry_after(reason),
                                  "The database cannot be queried.",
                                  details={"readable": False, "writable": False}) from None
    reason = write_probe(database.obj)
    if reason is not None:
        current_app.logger.warning("database health check: cannot write (%s)", reason)
        raise DatabaseUnavailable(reason, retry_after(reason), "The database cannot be written.",
                                  details={"writable": False})
    engine = next((name for cls, name in ENGINE_NAMES if isinstance(database.obj, cls)),
                  type(database.obj).__name__.lower())
    return {"ok": True, "engine": engine, "migrations_applied": applied,
            "writable": True if isinstance(database.obj, SqliteDatabase) else None}


@bp.operation("/meta", summary="Version and API policies", tags=("system",), response=Meta)
def meta():
    return {
        "version": __version__,
        "api_version": API_VERSION,
        "openapi_url": "/api/v1/openapi.json",
        "pagination": {"style": "cursor", "default_limit": 50, "max_limit": 100,
                       "parameters": ["limit", "cursor"]},
        "idempotency": {"header": "Idempotency-Key", "retention_hours": 24,
                        "applies_to": "every creating POST"},
    }


@bp.operation("/config", summary="Public settings of this appliance", tags=("system",),
              response=PublicConfig)
def public_config():
    return branding.public_config(current_app.config["APPLIANCE"])


@bp.route("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document, built once from the registered operations."""
    return jsonify(openapi_document(current_app))
