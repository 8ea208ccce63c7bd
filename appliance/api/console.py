"""Web consoles and the live console log of an instance (`.../console`, `.../logs/stream`).

Callers: an access token or an API key (`instances:write` to open and use a console,
`instances:read` for the log), or the dashboard's session cookie - then every POST and
DELETE must carry the session's CSRF token in `X-CSRF-Token`, as the dashboard's own
forms do. The rules are services/instances/console.py's and console_log.py's.
"""

from __future__ import annotations

import datetime as dt
import hmac

from flask import Response, g, request
from pydantic import Field

from appliance.api.schema import ApiBlueprint, Schema
from appliance.errors import ApplianceError, Forbidden
from appliance.http import client_ip
from appliance.services.accounts import sessions
from appliance.services.instances import console, console_log
from appliance.services.principal import Principal

bp = ApiBlueprint("console_api", __name__)
TAGS = ("instances",)
AUTH = ("bearer", "api_key", "session")
ONE = "/projects/<project_id>/instances/<instance_id>"
CONSOLE = ONE + "/console/<console_id>"
SESSION_COOKIE = "appliance_session"  # the dashboard's (appliance/web/session.py)


@bp.before_request
def _session_cookie() -> None:
    """With neither a bearer token nor an API key, the dashboard's cookie may sign in;
    then a state-changing request needs the session's CSRF token."""
    if request.headers.get("Authorization") or request.headers.get("X-API-Key"):
        return
    token = request.cookies.get(SESSION_COOKIE)
    try:
        found = sessions.principal_from_cookie(token) if token else None
    except ApplianceError:  # e.g. a suspended user: as if signed out
        found = None
    if found is None:
        return
    principal, web_session = found
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), web_session.csrf_token.encode()):
            raise Forbidden("The request did not come from this site's dashboard (no CSRF "
                            "token); reload the page and try again.", code="csrf_failed")
    # Not counted against the API rate limit: each keystroke batch is one request.
    g.principal = Principal(principal.user, principal.session_id, principal.via,
                            ip=client_ip())


class ConsoleIn(Schema):
    cols: int = Field(80, ge=10, le=500, description="Columns of the TTY.")
    rows: int = Field(24, ge=4, le=200, description="Rows of the TTY.")


class ConsoleOut(Schema):
    id: str
    instance_id: str
    status: str = Field(description="open")
    opened_at: dt.datetime
    expires_at: dt.datetime = Field(description="When it closes unless input comes "
                                                "first (CONSOLE_IDLE_TIMEOUT_SECONDS after "
                                                "the last input).")
    idle_timeout_seconds: int
    stream_url: str = Field(description="GET: the output, as Server-Sent Events.")
    input_url: str
    resize_url: str

    @classmethod
    def of(cls, session: console.ConsoleSession) -> ConsoleOut:
        base = (f"/api/v1/projects/{session.project_id}/instances/{session.instance_id}"
                f"/console/{session.id}")
        return cls(id=session.id, instance_id=session.instance_id, status="open",
                   opened_at=session.opened_clock or dt.datetime.now(dt.UTC),
                   expires_at=session.expires_at(),
                   idle_timeout_seconds=int(console.idle_timeout()),
                   stream_url=base + "/stream", input_url=base + "/input",
                   resize_url=base + "/resize")


class ConsoleBody(Schema):
    console: ConsoleOut


class ConsoleInputIn(Schema):
    data: str = Field(min_length=1, max_length=(console.INPUT_MAX * 4) // 3 + 4,
                      description="The bytes to type, in base64 (at most 64 KiB).")


class TerminalSizeIn(Schema):
    cols: int = Field(ge=10, le=500)
    rows: int = Field(ge=4, le=200)


class LogStreamQuery(Schema):
    lines: int = Field(200, ge=1, le=5000, description="Lines of the first snapshot.")


def _sse(body) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@bp.operation(ONE + "/console", "POST", summary="Open a web console (a shell with a TTY)",
              tags=TAGS, body=ConsoleIn, response=ConsoleBody, status=201, auth=AUTH,
              errors=(402, 403, 404, 409, 429, 503),
              description="A login shell in the running instance, relayed by the appliance: "
                          "read its output from `stream_url` (Server-Sent Events: `output` "
                          "events of base64 bytes, then one `end` event with the reason), "
                          "type with `input_url`, resize with `resize_url`, close with "
                          "DELETE. Needs `instances:write` and the member role (viewers: "
                          "403); 409 `invalid_state` unless running, `unsupported` (naming "
                          "`terminal`) where the engine cannot. 429 `too_many_consoles` past "
                          "CONSOLE_SESSIONS_PER_USER or CONSOLE_SESSIONS_MAX. Only the "
                          "sign-in that opened it (the same dashboard session, access "
                          "token session or API key) can use it.")
def open_console(principal: Principal, project_id: str, instance_id: str, body: ConsoleIn):
    session = console.open_console(principal, project_id, instance_id, body.cols, body.rows)
    return {"console": ConsoleOut.of(session)}, 201


@bp.operation(CONSOLE, summary="A web console session", tags=TAGS, response=ConsoleBody,
              auth=AUTH, errors=(403, 404, 410))
def get_console(principal: Principal, project_id: str, instance_id: str, console_id: str):
    session = console.get(principal, project_id, instance_id, console_id)
    return {"console": ConsoleOut.of(session)}


@bp.operation(CONSOLE + "/stream", summary="A web console's output (Server-Sent Events)",
              tags=TAGS, auth=AUTH, errors=(403, 404, 410), produces="text/event-stream",
              description="`event: output` with `data: {\"data\": <base64 bytes>}` as the "
                          "shell writes; finally `event: end` with `{\"reason\", \"message\"}` "
                          "(exited, instance_stopped, idle, closed, abandoned, replaced, "
                          "server_stopping). One stream reads a session at a time: a newer "
                          "one ends the older (`replaced`). A session no stream reads for a "
                          "minute is closed.")
def console_stream(principal: Principal, project_id: str, instance_id: str, console_id: str):
    return _sse(console.stream(principal, project_id, instance_id, console_id,
                               request.environ.get("waitress.client_disconnected")))


@bp.operation(CONSOLE + "/input", "POST", summary="Type into a web console", tags=TAGS,
              body=ConsoleInputIn, status=204, auth=AUTH, errors=(403, 404, 410),
              description="410 `console_closed` once the session has ended.")
def console_input(principal: Principal, project_id: str, instance_id: str, console_id: str,
                  body: ConsoleInputIn):
    console.send_input(principal, project_id, instance_id, console_id, data=body.data)
    return None, 204


@bp.operation(CONSOLE + "/resize", "POST", summary="Resize a web console's TTY", tags=TAGS,
              body=TerminalSizeIn, status=204, auth=AUTH, errors=(403, 404, 410))
def console_resize(principal: Principal, project_id: str, instance_id: str, console_id: str,
                   body: TerminalSizeIn):
    console.resize(principal, project_id, instance_id, console_id, cols=body.cols,
                   rows=body.rows)
    return None, 204


@bp.operation(CONSOLE, "DELETE", summary="Close a web console", tags=TAGS, status=204,
              auth=AUTH, errors=(403, 404))
def close_console(principal: Principal, project_id: str, instance_id: str, console_id: str):
    console.close(principal, project_id, instance_id, console_id)
    return None, 204


@bp.operation(ONE + "/logs/stream", summary="Console / log output, live (Server-Sent Events)",
              tags=TAGS, query=LogStreamQuery, auth=AUTH, errors=(403, 404, 409, 429, 503),
              produces="text/event-stream",
              description="`event: logs` with `data: {\"data\": <text>, \"reset\": <bool>}`: "
                          "first the last `lines` lines with `reset: true` (replace what you "
                          "show), then what is added (`reset: false`, append); `reset: true` "
                          "again when the log no longer continues what was sent. Shares the "
                          "live event streams' caps (429 `too_many_streams`) and lifetime "
                          "(EVENT_STREAM_SECONDS; reconnect for a fresh snapshot). The plain "
                          "text is GET .../logs.")
def log_stream(principal: Principal, project_id: str, instance_id: str,
               query: LogStreamQuery):
    return _sse(console_log.open_log_stream(
        principal, project_id, instance_id, query.lines,
        request.environ.get("waitress.client_disconnected")))
