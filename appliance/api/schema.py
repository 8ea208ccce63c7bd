"""One schema definition drives validation, serialization and the OpenAPI document.

An API view is declared with `ApiBlueprint.operation(...)`, naming pydantic models for
its query string, its JSON body and its response. The decorator

- validates the query string and the body against their models (400 `invalid_request`
  naming the field, also for a body nested deeper than MAX_JSON_DEPTH; 400
  `malformed_json`; 415 for a non-JSON body) and passes the parsed models to the view as
  `query=` and `body=`;
- serializes what the view returns through the response model, so a response can only
  carry the fields the document promises;
- runs a creating request with `Idempotency-Key` once: its service call, its serialized
  answer and its idempotency record commit in one transaction (see `_run_idempotent`);
- records the operation, from which `build_openapi` writes the OpenAPI 3.1 document.

A view may also return a Flask `Response` (CSV, streams); it is passed through.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Annotated, Any

from flask import Blueprint, Flask, Response, request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

from appliance import __version__
from appliance.api import principal as callers
from appliance.errors import ApplianceError, InvalidRequest, UnsupportedMediaType
from appliance.services import projects
from appliance.services.accounts import authcache
from appliance.services.billing import ledger
from appliance.services.instances import jobs
from appliance.services.limits import idempotency
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints

API_VERSION = "v1"
API_PREFIX = "/api/v1"
# JSON bodies nest no deeper than this (the API's own models need 4): deeper is refused
# before parsing, which would otherwise recurse once per level.
MAX_JSON_DEPTH = 32


class Schema(BaseModel):
    """Base of request and response models: unknown fields in a request are refused.

    `defer_build`: a model's validator and serializer are built on its first use, not at
    import, so start-up does not pay for the two hundred models most requests never touch.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)


def _iso_date(value: Any) -> Any:
    """A query string's date is YYYY-MM-DD, not a number read as a Unix time."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


# A calendar date in a query string.
QueryDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class ErrorDetail(Schema):
    code: str
    message: str
    request_id: str
    details: dict[str, Any] = {}


class ErrorBody(Schema):
    """The one error envelope every failing response carries."""

    error: ErrorDetail


@dataclass
class Operation:
    method: str
    summary: str
    description: str = ""
    tags: tuple[str, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: tuple[str, ...] = ()
    produces: str = "application/json"
    ip_limited: bool = False
    idempotent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    commits_apart: bool = False


def _field_errors(exc: ValidationError, location: str) -> InvalidRequest:
    fields = []
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in error["loc"]) or location
        fields.append({"field": path, "message": error["msg"]})
    first = fields[0]
    return InvalidRequest(
        f"{first['field']}: {first['message']}",
        field=first["field"],
        details={"location": location, "fields": fields},
    )


def parse_query(model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for name in request.args:
        items = request.args.getlist(name)
        values[name] = items if len(items) > 1 else items[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _field_errors(exc, "query") from None


# A JSON string (skipped whole, escapes included) or a bracket that opens or closes a level.
_JSON_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _nests_deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text `raw` opens more than `limit` arrays/objects at once.

    Brackets inside strings do not count. Counting the brackets first keeps the usual
    small body to two C-speed scans.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for token in _JSON_NESTING.finditer(raw):
        mark = token.group()
        if mark in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif mark in (b"]", b"}"):
            depth -= 1
    return False


def _too_deep() -> InvalidRequest:
    return InvalidRequest(f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH} "
                          "levels.", details={"location": "body", "max_depth": MAX_JSON_DEPTH})


def parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        if request.mimetype != "application/json":
            raise UnsupportedMediaType()
        if _nests_deeper_than(raw, MAX_JSON_DEPTH):
            raise _too_deep()
        try:
            data = json.loads(raw)
        except RecursionError:
            raise _too_deep() from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"The body is not valid JSON: {exc}",
                                 code="malformed_json") from None
    try:
        # Strict: JSON's types are taken as they are ("5" or true is not an integer);
        # JSON-mode strictness still reads ISO-8601 strings as datetimes.
        return model.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise _field_errors(exc, "body") from None


def render(op: Operation, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    status = op.status
    if isinstance(result, tuple):
        result, status = result
    if op.response is None:
        return Response(status=status)
    if not isinstance(result, op.response):
        result = op.response.model_validate(result)
    return Response(result.model_dump_json(), status=status, mimetype="application/json")


def _project_role(principal: Principal, path_args: dict[str, Any]) -> str | None:
    """The caller's role in the project a route names ("" for none), None elsewhere."""
    project_id = path_args.get("project_id")
    if not isinstance(project_id, str):
        return None
    try:
        return projects.access(principal, project_id).role
    except ApplianceError:
        return ""  # a first request still gets its view's own answer


def _replayed(op: Operation, stored: idempotency.Stored) -> Response:
    response = Response(stored.body, status=stored.status, mimetype=op.produces)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _after_commit() -> None:
    """What the services signalled inside the shared transaction, when nothing was visible
    to other threads yet, signalled again now that it is: the job runner and the webhook
    dispatcher look for new work, the authorization cache drops what it read meanwhile."""
    jobs.wake()
    endpoints.wake()
    authcache.invalidate()


def _run_idempotent(op: Operation, principal: Principal, path_args: dict[str, Any],
                    call: Callable[[], Any]) -> Response:
    """Run a creating request once per Idempotency-Key (see services/limits/idempotency.py).

    The record belongs to the caller's credential and standing (`authority_of`): another
    credential, or the same one with another role, gets 422 / 403, never the stored body.
    The claim, the view (its service call and the serialized answer) and the stored answer
    are one durable transaction (the services' own blocks nest in it as savepoints), so a
    crash leaves the resource and its record both or neither. A domain error keeps what
    the service committed before it (as without a key) and stores nothing; any other
    failure rolls everything back.
    """
    key = idempotency.check_key(request.headers["Idempotency-Key"].strip())
    print_ = idempotency.fingerprint(request.method, request.path,
                                     request.get_data(cache=True))
    owner = principal.user.id
    authority = idempotency.authority_of(principal, _project_role(principal, path_args))
    if op.commits_apart:
        return _run_idempotent_apart(op, call, owner=owner, key=key, print_=print_,
                                     authority=authority)
    refused: ApplianceError | None = None
    with ledger.durable():
        stored = idempotency.begin(owner, key, print_, authority)
        if stored is not None:
            return _replayed(op, stored)
        try:
            response = render(op, call())
        except ApplianceError as exc:
            idempotency.abandon(owner, key)
            refused = exc
        else:
            if 200 <= response.status_code < 300:
                idempotency.finish(owner, key, response.status_code,
                                   response.get_data(as_text=True))
            else:
                idempotency.abandon(owner, key)
    if refused is not None:
        raise refused
    _after_commit()
    return response


def _run_idempotent_apart(op: Operation, call: Callable[[], Any], *, owner: str, key: str,
                          print_: str, authority: str) -> Response:
    """For a view that commits by itself (`commits_apart`): claim, run, then store, each in
    its own transaction. A crash in between leaves the key in flight (409) until
    IN_FLIGHT_TIMEOUT: such views create nothing a second run would duplicate harmfully."""
    stored = idempotency.begin(owner, key, print_, authority)
    if stored is not None:
        return _replayed(op, stored)
    try:
        response = render(op, call())
    except BaseException:
        idempotency.abandon(owner, key)
        raise
    if 200 <= response.status_code < 300:
        idempotency.finish(owner, key, response.status_code, response.get_data(as_text=True))
    else:
        idempotency.abandon(owner, key)
    return response


class ApiBlueprint(Blueprint):
    """A blueprint whose routes are declared with their schemas."""

    def operation(
        self,
        rule: str,
        method: str = "GET",
        *,
        summary: str,
        description: str = "",
        tags: tuple[str, ...] = (),
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        auth: tuple[str, ...] = (),
        produces: str = "application/json",
        ip_limited: bool = False,
        commits_apart: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an API operation.

        `auth` names who may call it (`principal.USER`, `principal.USER_OR_KEY`); the view
        then gets `principal=`. `ip_limited` counts it against the per-address limit of the
        sign-in endpoints. An authenticated POST answering 201/202 creates something, so
        it honours `Idempotency-Key`: its view then runs inside one transaction with the
        key's record, unless `commits_apart` says it cannot (it sends mail after its own
        commit, or waits on an outside service that must not hold the write lock).
        """
        idempotent = method.upper() == "POST" and status in (201, 202) and bool(auth)
        op = Operation(method.upper(), summary, description, tags or (self.name,), query,
                       body, response, status, errors, auth, produces, ip_limited, idempotent,
                       commits_apart=commits_apart)

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def endpoint(**path_args: Any) -> Response:
                if ip_limited:
                    callers.limit_auth_ip()
                if auth:
                    path_args["principal"] = callers.resolve_principal("api_key" in auth)
                if query is not None:
                    path_args["query"] = parse_query(query)
                if body is not None:
                    path_args["body"] = parse_body(body)
                if idempotent and "Idempotency-Key" in request.headers:
                    return _run_idempotent(op, path_args["principal"], path_args,
                                           lambda: view(**path_args))
                return render(op, view(**path_args))

            endpoint.openapi = op  # type: ignore[attr-defined]
            self.add_url_rule(rule, endpoint=view.__name__, view_func=endpoint,
                              methods=[op.method])
            return endpoint

        return decorate


_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "A 15-minute access token (JWT) or an API key (sk_...)."},
    "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "session": {"type": "apiKey", "in": "cookie", "name": "appliance_session",
                "description": "Dashboard session; state-changing requests need X-CSRF-Token."},
}

_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content"}


def _operations(app: Flask) -> list[tuple[str, Operation, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions.get(rule.endpoint), "openapi", None)
        if op is not None:
            found.append((_RULE_ARG.sub(r"{\1}", rule.rule), op, rule.endpoint))
    return sorted(found, key=lambda item: (item[0], item[1].method))


def _operation_id(endpoint: str) -> str:
    """`auth_api.login` -> `auth_login`: the blueprint's domain and the view's name."""
    blueprint, _, view = endpoint.rpartition(".")
    return f"{blueprint.removesuffix('_api')}_{view}" if blueprint else view


def _parameters(path: str, op: Operation) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}]+)}", path)
    ]
    if op.idempotent:
        parameters.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "Repeat a creating request safely: the first response is "
                           "replayed for 24 hours."})
    if op.query is not None:
        query_schema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)
    return parameters


_SSE_EVENT: dict[str, Any] = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "contentMediaType": "application/json"},
                   "event": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}}}


def _responses(op: Operation, ref: Callable[[type[BaseModel], str], dict[str, Any]],
               error_response: dict[str, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(op.status, "Success")}
    if op.response is not None:
        success["content"] = {op.produces: {"schema": ref(op.response, "serialization")}}
    elif op.produces == "text/event-stream":
        # One event of the stream (the OpenAPI 3.2 reading of an SSE schema): its `data`
        # is the JSON text the operation's description names.
        success["content"] = {op.produces: {"schema": _SSE_EVENT}}
    elif op.produces != "application/json":
        success["content"] = {op.produces: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): success}
    error_codes = set(op.errors)
    if op.body is not None or op.query is not None:
        error_codes.add(400)
    if op.body is not None:
        error_codes.update({413, 415})
    if op.auth:
        error_codes.update({401, 403, 429})
    if op.ip_limited:
        error_codes.add(429)
    if op.idempotent:
        error_codes.update({400, 409, 422})
    for code in sorted(error_codes):
        responses[str(code)] = error_response
    responses["default"] = error_response
    return responses


class SchemaNameCollision(RuntimeError):
    """Two schema classes of the API would share one name in the OpenAPI document."""


def check_schema_names(schemas: dict[str, Any]) -> None:
    """Refuse a document in which two schemas share a name.

    Clients generated from the document name their classes after each component's key and
    `title` (the class name). pydantic gives two classes of the same name module-qualified
    keys (`appliance__api__webhooks__WebhookOut`) that generators cannot resolve, and the
    validation and serialization forms of one class (`Foo-Input`, `Foo-Output`) the same
    title. Raises `SchemaNameCollision` naming them (at the first request for the document,
    so a test of the document fails): rename one class of each pair.
    """
    problems = []
    qualified = sorted(name for name in schemas if "__" in name)
    by_class: dict[str, list[str]] = {}
    for name in qualified:
        by_class.setdefault(name.rsplit("__", 1)[-1], []).append(name)
    for cls, keys in sorted(by_class.items()):
        problems.append(f"{cls} names several classes ({', '.join(keys)})")
    titles: dict[str, list[str]] = {}
    for name, schema in schemas.items():
        titles.setdefault(schema.get("title", name), []).append(name)
    for title, names in sorted(titles.items()):
        if len(names) > 1 and not all("__" in name for name in names):
            # Typically `Foo-Input` and `Foo-Output`: one class in requests and responses
            # whose two forms differ; give each direction a class of its own.
            problems.append(f"the schemas {', '.join(sorted(names))} share the title {title}")
    if problems:
        raise SchemaNameCollision(
            "API schema names must be unique (generated clients name their classes after "
            "them); rename one class of each: " + "; ".join(problems))


def build_openapi(app: Flask, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every operation registered on `app`."""
    operations = _operations(app)
    wanted: list[tuple[type[BaseModel], str]] = [(ErrorBody, "serialization")]
    for _, op, _ in operations:
        wanted += [(model, mode) for model, mode in ((op.body, "validation"),
                                                     (op.query, "validation"),
                                                     (op.response, "serialization"))
                   if model is not None]
    refs, top = models_json_schema(list(dict.fromkeys(wanted)),
                                   ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    check_schema_names(schemas)

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]

    error_response = {"description": "Error", "content": {
        "application/json": {"schema": ref(ErrorBody, "serialization")}}}
    paths: dict[str, dict[str, Any]] = {}
    for path, op, endpoint in operations:
        item: dict[str, Any] = {
            "operationId": _operation_id(endpoint),
            "summary": op.summary,
            "tags": list(op.tags),
        }
        if op.description:
            item["description"] = op.description
        parameters = _parameters(path, op)
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            # An empty body counts as {}: it is required only when a field is.
            required = bool(op.body.model_json_schema().get("required"))
            item["requestBody"] = {"required": required, "content": {
                "application/json": {"schema": ref(op.body, "validation")}}}
        item["responses"] = _responses(op, ref, error_response)
        item["security"] = [{scheme: []} for scheme in op.auth]
        paths.setdefault(path, {})[op.method.lower()] = item

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Appliance API",
            "version": version,
            "description": "Accounts, API keys, instances, usage, billing and webhooks "
                           "of a self-hosted appliance. Errors always carry the envelope "
                           "`{\"error\": {\"code\", \"message\", \"request_id\", \"details\"}}`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def openapi_document(app: Flask) -> dict[str, Any]:
    """The app's OpenAPI document, built on first use (routes are fixed by then)."""
    document = app.extensions.get("openapi")
    if document is None:
        document = app.extensions["openapi"] = build_openapi(app, __version__)
    return document


class PageInfo(Schema):
    limit: int
    next_cursor: str | None
    has_more: bool


class ListQuery(Schema):
    """`?limit=1..100&cursor=...` of every list."""

    limit: int = Field(50, ge=1, le=100, description="Items per page (1-100).")
    cursor: str | None = Field(None, max_length=200,
                               description="`page.next_cursor` of the previous page.")


def page_body(items: list[Any], limit: int, next_cursor: str | None) -> dict[str, Any]:
    """The `{"data": [...], "page": {...}}` body of a list response."""
    return {"data": items,
            "page": {"limit": limit, "next_cursor": next_cursor,
                     "has_more": next_cursor is not None}}
