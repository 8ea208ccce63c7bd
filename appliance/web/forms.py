"""Reading dashboard forms, written once: text, whole numbers, money, dates, checkboxes,
and the one way a form post ends.

Every reader takes the field's name and raises `InvalidRequest` naming that field, so
the page shows the message next to it. Money goes through `appliance.services.money`,
so "9,50", "9.50" and "1 234,56" read the same on every form. Ranges and lengths are the
services' rules (their constants are passed in where a form needs them, e.g. `maxlength`).

A post ends in one of two ways: the service call succeeds and the browser is redirected
(post/redirect/get) with a notice - or, for htmx, gets the card it posted from again
(`done`) - or the call raises a domain error and the same page is rendered again with
the error, the status it carries and what was typed (`rerender_on_error`, `failed`).
A page function takes the view's URL values, `status`, `fragment` and the context.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, make_response, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import money as money_rules
from appliance.services import pagination, projects
from appliance.services.accounts import api_keys, ssh_keys
from appliance.services.billing import ledger, prepaid
from appliance.services.instances import backups, catalog, lifecycle, nodes, templates
from appliance.services.webhooks import endpoints

T = TypeVar("T")

# The services' field limits, for the forms' maxlength (templates read `field_limits`):
# defined once in the services, which enforce them, and in the API schemas by reference.
LIMITS: dict[str, dict[str, int]] = {
    "project": {"name": projects.NAME_MAX},
    "api_key": {"name": api_keys.NAME_MAX},
    "ssh_key": {"name": ssh_keys.NAME_MAX},
    "instance": {"name": lifecycle.NAME_MAX, "password_min": lifecycle.PASSWORD_MIN,
                 "password_max": lifecycle.PASSWORD_MAX},
    "webhook": {"url": endpoints.URL_MAX, "description": endpoints.DESCRIPTION_MAX},
    "billing": {name: most for name, most in prepaid.TEXT_MAX.items()},
    "ledger": {"note": ledger.NOTE_MAX},
    "catalog": {"slug": catalog.SLUG_MAX, "name": catalog.NAME_MAX, "label": catalog.LABEL_MAX,
                "description": catalog.DESCRIPTION_MAX, "ref": catalog.REF_MAX,
                "number": catalog.NUMBER_MAX, "image_disk": catalog.IMAGE_DISK_MAX},
    "node": {"name": nodes.NAME_MAX},
    "backup": {"name": backups.NAME_MAX},
    "template": {"name": templates.NAME_MAX},
}
Page = Callable[..., Any]  # page(status=, fragment=, **context) -> the rendered page


# Reading fields ------------------------------------------------------------------------


def text(name: str, *, max_length: int | None = None, required: bool = True) -> str:
    """The field's text with its ends trimmed; 400 when required and empty, or longer
    than `max_length` (the service's limit)."""
    value = request.form.get(name, "").strip()
    if required and not value:
        raise InvalidRequest("This cannot be empty.", field=name)
    if max_length is not None and len(value) > max_length:
        raise InvalidRequest(f"At most {max_length} characters.", field=name)
    return value


def integer(name: str, *, required: bool = False, least: int | None = None,
            most: int | None = None) -> int | None:
    """A whole number; None when left empty and not required. 400 naming the field for
    anything else, or outside [least, most] when they are given."""
    raw = request.form.get(name, "").strip()
    if not raw:
        if required:
            raise InvalidRequest("Enter a whole number.", field=name)
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest("Enter a whole number.", field=name) from None
    if least is not None and most is not None and not least <= value <= most:
        raise InvalidRequest(f"Enter a whole number from {least} to {most}.", field=name)
    if least is not None and value < least:
        raise InvalidRequest(f"Enter a whole number of at least {least}.", field=name)
    if most is not None and value > most:
        raise InvalidRequest(f"Enter a whole number of at most {most}.", field=name)
    return value


def required_integer(name: str, *, least: int | None = None, most: int | None = None) -> int:
    value = integer(name, required=True, least=least, most=most)
    assert value is not None  # required: integer raised for an empty field
    return value


def money(name: str, currency: str, *, required: bool = True,
          allow_negative: bool = False) -> int | None:
    """An amount typed in the currency's major unit as integer minor units (see
    services/money.py for what is read); None when left empty and not required."""
    raw = request.form.get(name, "")
    if not raw.strip() and not required:
        return None
    return money_rules.parse(raw, currency, field=name, allow_negative=allow_negative)


def required_money(name: str, currency: str, *, allow_negative: bool = False) -> int:
    value = money(name, currency, allow_negative=allow_negative)
    assert value is not None  # required: money raised for an empty field
    return value


def money_list(name: str, currency: str) -> list[int]:
    """Several amounts, one per line or separated by semicolons (a comma can be a decimal
    mark, so it does not separate); empty lines are skipped."""
    raw = request.form.get(name, "")
    parts = [part for line in raw.splitlines() for part in line.split(";")]
    return [money_rules.parse(part, currency, field=name) for part in parts if part.strip()]


def money_context(currency: str) -> dict[str, Any]:
    """What money-showing templates use: `money(minor)` for display, `major(minor)` for a
    form's value, the currency and the input `step`."""
    return {"money": lambda minor: money_rules.format(minor, currency),
            "major": lambda minor: money_rules.major(minor, currency), "currency": currency,
            "step": money_rules.step(currency)}


def checked(name: str) -> bool:
    """A checkbox: ticked boxes send a value, unticked ones send nothing."""
    return request.form.get(name) in ("on", "true", "1", "yes")


def date(name: str, *, required: bool = False, message: str = "Enter a date as YYYY-MM-DD.",
         field: str | None = None) -> dt.date | None:
    """A date from an `<input type=date>` (YYYY-MM-DD); None when left empty and not
    required. Errors name `field` (default: the input's name)."""
    raw = request.form.get(name, "").strip()
    if not raw and not required:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(message, field=field or name) from None


def utc_datetime(name: str) -> dt.datetime | None:
    """A UTC time from an `<input type=datetime-local>` (YYYY-MM-DDTHH:MM); None when
    left empty."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidRequest("Enter a time as YYYY-MM-DD HH:MM (UTC).", field=name) from None


def midnight_after(day: dt.date | None) -> dt.datetime | None:
    """The UTC midnight that ends `day`: something valid "through" a day stops then."""
    if day is None:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)


def pairs(name: str, *, max_lines: int = 100) -> dict[str, str]:
    """`KEY=value` lines (environment variables, options) as a dict; blank lines and
    `#` comments skipped; at most `max_lines` pairs."""
    found: dict[str, str] = {}
    for number, raw in enumerate(request.form.get(name, "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidRequest(f"Line {number} is not KEY=value.", field=name)
        found[key] = value.strip()
    if len(found) > max_lines:
        raise InvalidRequest(f"At most {max_lines} lines.", field=name)
    return found


def typed() -> MultiDict[str, str]:
    """What was posted, to fill the form again - never a password back into the page."""
    return MultiDict([(name, value) for name, value in request.form.items(multi=True)
                      if "password" not in name])


def values(*names: str) -> dict[str, str]:
    """What was typed into these fields, to show again on a failed post."""
    return {name: request.form.get(name, "") for name in names}


# Ending a post ---------------------------------------------------------------------------


def failed(page: Page, exc: ApplianceError, section: str | None = None,
           fragment: str | None = None, **context: Any) -> Any:
    """`page` rendered again with the error next to the field it names, with the error's
    status and (unless given) what was typed. `page(status=..., fragment=..., **context)`
    is the view's page function, its URL values already bound."""
    context.setdefault("form", typed())
    return page(status=exc.status, fragment=fragment, error=exc,
                error_field=exc.details.get("field"), section=section, **context)


def rerender_on_error(page: Callable[..., Any], section: str | None = None,
                      fragment: str | None = None, *,
                      keep_form: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Decorate a form post: a domain error raised while it runs renders `page` again
    (see `failed`), called with the view's URL values; anything else propagates.

    `section` names the form on the page that shows the error; it may use the URL values
    ("node-{node_id}"). Without `keep_form` the page's forms show their stored values,
    not what was typed (a toggle or a delete button, not an edit form).
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(**url_values: Any) -> Any:
            try:
                return view(**url_values)
            except ApplianceError as exc:
                context = {} if keep_form else {"form": {}}
                return failed(functools.partial(page, **url_values), exc,
                              section.format(**url_values) if section else None, fragment,
                              **context)

        return wrapped

    return decorate


def template_page(template: str) -> Page:
    """A page function for a plain template (the sign-in and sign-up pages)."""

    def page(status: int = 200, fragment: str | None = None, **context: Any) -> Any:
        return render_template(template, **context), status

    return page


def back(endpoint: str, notice: str | None = None, **url_values: Any) -> Response:
    """Redirect after a successful post (post/redirect/get), with a notice to show."""
    return redirect(url_for(endpoint, notice=notice, **url_values))


def done(page: Page, notice: str, endpoint: str, fragment: str | None = None,
         **url_values: Any) -> Any:
    """After a change: htmx gets its card (`fragment`) again, a plain form post a redirect
    to `endpoint`."""
    if fragment and request.headers.get("HX-Request"):
        return page(fragment=fragment, notice=notice, **url_values)
    return back(endpoint, notice, **url_values)


# Rendering -------------------------------------------------------------------------------

# Sent with a fragment that shows a form error at its real (4xx) status: base.html asks
# htmx to swap such a fragment in, as htmx leaves error answers unswapped by default.
ERROR_FRAGMENT_HEADER = "X-Error-Fragment"


def render_fragment_or_page(page: str, fragment: str | None, status: int = 200,
                            **context: Any) -> Response:
    """The whole page, or the fragment htmx asked for (flagged when it shows an error)."""
    is_fragment = bool(fragment and request.headers.get("HX-Request"))
    response = make_response(render_template(fragment if is_fragment else page, **context),
                             status)
    if is_fragment and status >= 400:
        response.headers[ERROR_FRAGMENT_HEADER] = "1"
    return response


def every_page(list_page: Callable[..., tuple[list[Any], str | None]], *args: Any) -> list[Any]:
    """All rows of a paged service list (members of a project, keys of a project)."""
    rows, cursor = list_page(*args, pagination.MAX_LIMIT)
    while cursor:
        more, cursor = list_page(*args, pagination.MAX_LIMIT, cursor)
        rows += more
    return rows
