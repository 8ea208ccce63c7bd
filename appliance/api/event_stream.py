"""GET /api/v1/events/stream: the caller's events, live, as Server-Sent Events.

Who may open one: an access token or an API key with `webhooks:read` (the scope of
GET /events), or the dashboard's session cookie (a GET that changes nothing, so no CSRF
token; the browser sends the cookie only to this site). The rules - what is shown,
resuming after Last-Event-ID, heartbeats, the bounded lifetime, the caps and their 429 -
are services/events/live.py's.
"""

from __future__ import annotations

from flask import Response, g, request
from pydantic import Field

from appliance.api.schema import ApiBlueprint, Schema
from appliance.errors import ApplianceError
from appliance.services.accounts import sessions
from appliance.services.events import live
from appliance.services.limits import ratelimit
from appliance.services.principal import Principal

bp = ApiBlueprint("event_stream_api", __name__)

SESSION_COOKIE = "appliance_session"  # the dashboard's (appliance/web/session.py)


class StreamQuery(Schema):
    last_event_id: str | None = Field(
        None, max_length=60, description="Resume after this event, like the Last-Event-ID "
                                         "header (which wins when both are sent).")


@bp.before_request
def _session_cookie() -> None:
    """With neither a bearer token nor an API key, the dashboard's cookie may sign in."""
    if request.headers.get("Authorization") or request.headers.get("X-API-Key"):
        return
    token = request.cookies.get(SESSION_COOKIE)
    try:
        found = sessions.principal_from_cookie(token) if token else None
    except ApplianceError:  # e.g. a suspended user: as if signed out
        found = None
    if found is not None:
        g.principal = found[0]
        g.rate_quota = ratelimit.for_principal(found[0])


@bp.operation(
    "/events/stream", summary="Your events, live (Server-Sent Events)", tags=("events",),
    query=StreamQuery, auth=("bearer", "api_key", "session"), errors=(429,),
    produces="text/event-stream",
    description="What GET /events shows you, as it happens: `id: <event id>`, "
                "`event: <type>`, `data: <the event as JSON>`. Send `Last-Event-ID` to get "
                "the events after that one (EventSource does on reconnect); without it the "
                "stream starts with the next event. A `: heartbeat` comment every 15 s; the "
                "stream ends after EVENT_STREAM_SECONDS (default 300) and the client "
                "reconnects. Each open stream holds a server thread, so they are capped "
                "per user (EVENT_STREAMS_PER_USER: a new stream past it ends the user's "
                "oldest one) and in total (EVENT_STREAMS_MAX: past it, 429 "
                "`too_many_streams` with Retry-After). API keys need `webhooks:read`.")
def stream(principal: Principal, query: StreamQuery):
    after = request.headers.get("Last-Event-ID") or query.last_event_id
    opened = live.open_stream(principal, after,
                                      request.environ.get("waitress.client_disconnected"))
    response = Response(opened, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
