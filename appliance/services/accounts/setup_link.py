"""The first-run set-up link: `/setup?token=...` creates the first administrator.

While no account exists, the serving process makes a one-time token at start-up, logs
its link, and logs it again every REMIND_SECONDS (the `remind_setup_link` task) until
someone uses it; `appliance setup-link` makes a fresh one from a shell at any time. Only
the token's SHA-256 is stored (a `setting` row, so every process of the appliance and
the CLI agree on it), and only the newest token works: making one replaces the last.
The token goes with the first administrator: `create_first_admin` checks it, creates the
account and deletes it in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging

from appliance import invocation
from appliance.config import active
from appliance.db import database
from appliance.errors import Conflict, Forbidden
from appliance.models import Setting, User
from appliance.services import clock
from appliance.services.accounts import mail, users
from appliance.services.ids import hash_token, new_token

ROW_KEY = "first_run_setup_token"
REMIND_SECONDS = 300
TOKEN_BYTES = 18

log = logging.getLogger("appliance")


def issue() -> str | None:
    """A new set-up token (the previous one stops working), or None when an account
    exists already."""
    token = new_token(nbytes=TOKEN_BYTES)
    value = json.dumps({"sha256": hash_token(token), "issued_at": clock.now().isoformat()})
    with database.atomic():
        if User.select().exists():
            return None
        (Setting.insert(key=ROW_KEY, value=value, updated_at=clock.now())
         .on_conflict(conflict_target=[Setting.key],
                      update={Setting.value: value, Setting.updated_at: clock.now()})
         .execute())
    return token


def _stored() -> dict | None:
    row = Setting.get_or_none(Setting.key == ROW_KEY)
    return json.loads(row.value) if row is not None else None


def is_current(token: str) -> bool:
    """Whether `token` is the newest set-up token and no account exists yet."""
    stored = _stored()
    return (bool(token) and stored is not None and users.user_count() == 0
            and hmac.compare_digest(hash_token(token), stored["sha256"]))


def link(token: str) -> str:
    return f"{mail.link('/setup')}?token={token}"


def announce(token: str) -> None:
    """Log the set-up link (and the shell alternatives) on one line."""
    data_dir = active()["DATA_DIR"]
    log.warning(
        "first run: no administrator yet. Open %s to create one (this link works once; "
        "`%s` prints a new one), or run `%s`.", link(token),
        invocation.command("setup-link", data_dir=data_dir),
        invocation.command("create-admin", "--email", "you@example.com", data_dir=data_dir))


def remind(token: str | None) -> bool:
    """The periodic reminder: while no account exists, log this process's link again if
    it still works, or say that a newer one replaced it. True when something was logged."""
    if users.user_count() > 0:
        return False
    if token and is_current(token):
        announce(token)
        return True
    stored = _stored()
    issued = (dt.datetime.fromisoformat(stored["issued_at"]).strftime("%Y-%m-%d %H:%M UTC")
              if stored else "")
    log.warning("first run: no administrator yet; the set-up link logged at start-up was "
                "replaced%s. `%s` prints a new one.", f" at {issued}" if issued else "",
                invocation.command("setup-link", data_dir=active()["DATA_DIR"]))
    return True


def create_first_admin(token: str, email: str, password: str, display_name: str = "",
                       ip: str = "") -> User:
    """Create the first administrator with the newest set-up token, which then stops
    working. Forbidden (`setup_token_invalid`) for any other token; Conflict
    (`setup_done`) once an account exists."""
    with database.atomic():
        if User.select().exists():
            raise Conflict("The appliance is already set up.", code="setup_done")
        if not is_current(token):
            raise Forbidden("The set-up token is wrong or was replaced by a newer one; the "
                            "newest link is in the server log.",
                            code="setup_token_invalid", details={"field": "token"})
        user = users.create_first_admin(email, password, display_name, ip=ip)
        Setting.delete().where(Setting.key == ROW_KEY).execute()
    return user
