"""The tables the migrations make are the ones the models describe, on either database.

Migrations are written by hand (raw SQL where peewee's migrator would rebuild a table),
so a column can come out of one with another type than its model field on one of the
databases (an INTEGER where PostgreSQL needs a BOOLEAN, say) and fail only there. This
test compares, after all migrations ran, every model's columns with its fields: present,
of the same kind, NULL where the field allows it.
"""

from __future__ import annotations

import appliance.models  # noqa: F401 - every model registered under BaseModel
from appliance import db
from appliance.db import BaseModel

KINDS = (("bool", "bool"), ("serial", "int"), ("int", "int"), ("char", "text"),
         ("text", "text"), ("clob", "text"), ("timestamp", "time"), ("datetime", "time"),
         ("date", "time"), ("numeric", "decimal"), ("decimal", "decimal"),
         ("double", "float"), ("real", "float"), ("float", "float"), ("blob", "bytes"),
         ("bytea", "bytes"), ("json", "json"), ("uuid", "text"))


def _kind(declared: str) -> str:
    declared = declared.lower()
    return next((kind for word, kind in KINDS if word in declared), declared)


def _models() -> list[type[BaseModel]]:
    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo += model.__subclasses__()
        if not model._meta.table_name.startswith("_"):
            found.append(model)
    return sorted(found, key=lambda m: m._meta.table_name)


def test_every_model_column_is_in_its_table_with_its_type_and_nullability(app):
    database = db.database
    with app.app_context():
        field_types = database._field_types  # peewee's own declared type per field kind
        tables = set(database.get_tables())
        wrong = []
        for model in _models():
            table = model._meta.table_name
            if table not in tables:
                wrong.append(f"{table}: no such table")
                continue
            columns = {c.name: c for c in database.get_columns(table)}
            for field in model._meta.sorted_fields:
                column = columns.get(field.column_name)
                if column is None:
                    wrong.append(f"{table}.{field.column_name}: missing")
                    continue
                wanted = _kind(field_types.get(field.field_type, field.field_type))
                if _kind(column.data_type) != wanted:
                    wrong.append(f"{table}.{field.column_name}: {column.data_type} in the "
                                 f"database, {field.field_type} in the model")
                if column.null != (field.null and not field.primary_key):
                    wrong.append(f"{table}.{field.column_name}: NULL "
                                 f"{'allowed' if column.null else 'refused'} in the "
                                 "database, not in the model")
    assert not wrong, "\n".join(wrong)
