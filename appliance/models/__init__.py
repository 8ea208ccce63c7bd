"""Peewee models, one module per domain. Their tables are created by migrations only."""

from appliance.models.settings import Setting

__all__ = ["Setting"]
