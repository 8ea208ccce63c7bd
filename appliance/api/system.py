"""Health, meta, public config and the OpenAPI document."""

from __future__ import annotations

import os

from flask import current_app, jsonify
from peewee import MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from appliance import __version__
from appliance.api.schema import API_VERSION, ApiBlueprint, Schema, openapi_document
from appliance.db import database
from appliance.errors import ServiceUnavailable
from appliance.services import settings

ENGINE_NAMES = ((SqliteDatabase, "sqlite"), (PostgresqlDatabase, "postgresql"),
                (MySQLDatabase, "mysql"))

bp = ApiBlueprint("system", __name__)


class Health(Schema):
    ok: bool


class DatabaseHealth(Schema):
    ok: bool
    engine: str
    migrations_applied: int


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
    signup: str
    signup_open: bool


@bp.operation("/health", summary="Is the appliance up?", tags=("system",), response=Health)
def health():
    return {"ok": True}


@bp.operation("/health/db", summary="Can the database be queried?", tags=("system",),
              response=DatabaseHealth, errors=(503,))
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
        raise ServiceUnavailable("The database cannot be queried.",
                                 code="database_unavailable") from None
    engine = next((name for cls, name in ENGINE_NAMES if isinstance(database.obj, cls)),
                  type(database.obj).__name__.lower())
    return {"ok": True, "engine": engine, "migrations_applied": applied}


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
    return settings.public_config(current_app.config["APPLIANCE"])


@bp.route("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document, built once from the registered operations."""
    return jsonify(openapi_document(current_app))
