"""Money: integer minor units, read from what a person types and shown back to them.

Every amount the appliance stores or sends is an integer count of the currency's minor
unit (cents for EUR, yen for JPY, fils for KWD); the ISO 4217 exponent says how many of
them make a major unit. This module is the one place that turns typed text into minor
units (`parse`) and minor units into text (`format`, `major`), so every form and page
reads and shows an amount the same way.

What `parse` reads: digits with at most one decimal separator, which may be a point or a
comma ("9.50", "9,50", "9"); spaces (also no-break and thin ones) and apostrophes group
thousands ("1 234,56", "1'234.56"); when both a point and a comma appear, the last one is
the decimal separator and the other groups ("1.234,56", "1,234.56"); a separator that
appears more than once only groups ("1.234.567"), and so does a single one in a
currency without decimals ("1,234" JPY is 1234; "1,234" EUR is refused: too many
decimals, never read as a thousand). Groups have three digits. A sign, when allowed,
comes first. More decimals than the currency has are refused, never rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal

from appliance.errors import InvalidRequest

# Minor-unit exponents that are not 2 (ISO 4217; the same as Stripe's amounts).
_EXPONENTS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "MGA",
                               "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
              **dict.fromkeys(("BHD", "JOD", "KWD", "OMR", "TND"), 3)}
LARGEST = 10**15  # minor units: more than any amount the appliance keeps
_GROUPING = re.compile(r"[\s\u00a0\u202f\u2009']")
_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*[.,]?[0-9]*")


def exponent(currency: str) -> int:
    """How many decimals the currency's major unit has: EUR 2, JPY 0, KWD 3."""
    return _EXPONENTS.get(currency.upper(), 2)


def example(currency: str) -> str:
    """A small amount as a person would type it, for messages: "0.05", "5", "0.005"."""
    places = exponent(currency)
    return "0." + "0" * (places - 1) + "5" if places else "5"


def parse(text: str, currency: str, *, field: str, allow_negative: bool = False) -> int:
    """The minor units of an amount typed in the currency's major unit.

    "9,50" and "9.50" EUR are 950; "1 234,56" EUR is 123456; "950" JPY is 950. Raises
    InvalidRequest naming `field` for empty text, anything that is not such an amount,
    more decimals than the currency has, a negative amount unless `allow_negative`, or
    more than LARGEST. Ranges of a particular amount are the service's to check.
    """
    raw = _GROUPING.sub("", text or "").replace("\u2212", "-")
    if not raw:
        raise InvalidRequest("Enter an amount.", field=field)
    sign = 1
    if raw[0] in "+-":
        sign, raw = (-1 if raw[0] == "-" else 1), raw[1:]
    places = exponent(currency)
    if not _NUMBER.fullmatch(raw):
        raise InvalidRequest(_malformed(currency), field=field)
    parts = _split(raw, places)
    if parts is None or len(parts[1]) > places:
        raise InvalidRequest(_malformed(currency), field=field)
    whole, fraction = parts
    minor = sign * int((whole or "0") + fraction.ljust(places, "0"))
    if minor < 0 and not allow_negative:
        raise InvalidRequest("Enter an amount of zero or more.", field=field)
    if abs(minor) > LARGEST:
        raise InvalidRequest("That amount is too large.", field=field)
    return minor


def _split(raw: str, places: int) -> tuple[str, str] | None:
    """(whole digits, fraction digits) of a number with grouping and decimal marks; None
    when its marks make no sense (groups of other than three digits)."""
    last = max(raw.rfind("."), raw.rfind(","))
    if last < 0:
        return raw, ""
    mark = raw[last]
    other = "," if mark == "." else "."
    after = raw[last + 1:]
    if raw.count(mark) > 1 or (other not in raw and len(after) == 3 and places == 0):
        # Only grouping: "1.234.567", or "1,234" in a currency without decimals.
        groups = raw.split(mark)
        if other in raw or not all(len(group) == 3 for group in groups[1:]):
            return None
        return "".join(groups), ""
    head = raw[:last].split(other)
    if not all(len(group) == 3 for group in head[1:]):
        return None
    return "".join(head), after


def _malformed(currency: str) -> str:
    """The one message for text that is not an amount of `currency`."""
    places = exponent(currency)
    code = currency.upper()
    if places == 0:
        return f"Enter an amount in {code} like {example(currency)} ({code} has no decimals)."
    return f"Enter an amount in {code} like {example(currency)} (at most {places} decimals)."


def format(amount: int, currency: str) -> str:  # shadows the builtin: money.format reads best
    """`1234, "EUR"` -> `"12.34 EUR"`; `1234, "JPY"` -> `"1,234 JPY"`: minor units shown in
    the currency's major unit with its own number of decimals."""
    places = exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(int(amount)), 10 ** places)
    text = f"{whole:,}" + (f".{fraction:0{places}d}" if places else "")
    return f"{sign}{text} {currency.upper()}"


def compact(amount: int, currency: str) -> str:
    """The amount in the major unit, without the currency and trailing zeros, for a
    chart's axis: "1.5", "20", "1,500"."""
    places = exponent(currency)
    text = f"{Decimal(int(amount)).scaleb(-places):,.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def major(amount: int | None, currency: str) -> str:
    """Minor units as the amount a person types back into a form ("12.50", "950"); "" for
    None."""
    if amount is None:
        return ""
    places = exponent(currency)
    return f"{Decimal(int(amount)).scaleb(-places):.{places}f}"


def step(currency: str) -> str:
    """The smallest amount of the currency in its major unit, for an input's `step`."""
    places = exponent(currency)
    return "1" if places == 0 else "0." + "0" * (places - 1) + "1"
