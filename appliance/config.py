"""Every setting of the appliance, declared once.

A setting has a name, a default, a parser and a line of help. Values come, from lowest
to highest priority, from the default, an optional TOML config file (`APPLIANCE_CONFIG`),
the environment (`APPLIANCE_<NAME>`, or `APPLIANCE_<NAME>_FILE` for secrets) and the
`overrides` mapping given to `create_app`. Parsing is strict: a value that does not
parse stops the start-up with a message naming the setting, never a silent default.

The README's settings table is checked against `SETTINGS` by a test.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "APPLIANCE_"


class ConfigError(Exception):
    """A setting is missing, malformed or contradictory; the message names it."""


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_int(value: str) -> int:
    return int(value.strip(), 10)


def parse_positive_int(value: str) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def parse_port(value: str) -> int:
    number = parse_int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number between 0 and 65535")
    return number


def parse_str(value: str) -> str:
    return value.strip()


def int_between(least: int, most: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = parse_int(value)
        if not least <= number <= most:
            raise ValueError(f"expected a whole number from {least} to {most}")
        return number

    return parse


def empty_or_int_between(least: int, most: int) -> Callable[[str], str]:
    """A whole number from `least` to `most`, or empty (the caller's fallback); kept as
    text so that empty stays empty."""
    def parse(value: str) -> str:
        return "" if not value.strip() else str(int_between(least, most)(value))

    return parse


def parse_currency(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValueError("expected a three-letter ISO 4217 currency code such as EUR")
    return code


def parse_amounts(value: str) -> str:
    """Comma-separated amounts in minor units ("1000,200"), normalised, largest first."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    numbers = sorted({int_between(1, 1_000_000_000)(part) for part in parts}, reverse=True)
    if len(numbers) > 10:
        raise ValueError("expected at most 10 amounts")
    return ",".join(str(number) for number in numbers)


def parse_http_url(value: str) -> str:
    """An http(s) URL without a trailing slash; empty stays empty."""
    url = value.strip().rstrip("/")
    if url and not (url.startswith(("http://", "https://")) and len(url.split("/")[2]) > 0):
        raise ValueError("expected an http:// or https:// URL")
    return url


def parse_hex_color(value: str) -> str:
    """A colour as #rrggbb (lower-cased); empty stays empty."""
    text = value.strip().lower()
    if text and not re.fullmatch(r"#[0-9a-f]{6}", text):
        raise ValueError("expected a colour as #rrggbb")
    return text


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return lowered

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def parse_email_or_empty(value: str) -> str:
    """One plain address such as help@example.org (no display name); empty stays empty."""
    text = value.strip()
    if not text:
        return ""
    local, at, domain = text.rpartition("@")
    if (not at or not local or "." not in domain or any(ch.isspace() for ch in text)
            or any(ch in text for ch in '<>",;')):
        raise ValueError("expected one email address such as help@example.org")
    return text


def parse_ip_address_or_empty(value: str) -> str:
    """One IP address, written as the WSGI server compares it (`::1`, not `0::1`); empty
    stays empty."""
    text = value.strip()
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("expected one IP address such as 127.0.0.1 or ::1") from None


# The forwarded headers waitress can take from a trusted proxy.
PROXY_HEADERS = ("forwarded", "x-forwarded-by", "x-forwarded-for", "x-forwarded-host",
                 "x-forwarded-port", "x-forwarded-proto")


def parse_proxy_headers(value: str) -> str:
    """Comma-separated names from PROXY_HEADERS, normalised (lower case, sorted);
    `forwarded` (RFC 7239) stands alone."""
    names = sorted({part.strip().lower() for part in value.split(",") if part.strip()})
    unknown = [name for name in names if name not in PROXY_HEADERS]
    if not names or unknown:
        raise ValueError("expected a comma-separated list of " + ", ".join(PROXY_HEADERS))
    if "forwarded" in names and len(names) > 1:
        raise ValueError("forwarded cannot be combined with the x-forwarded-* headers")
    return ",".join(names)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    public: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./data", parse_str,
            "Directory for the SQLite database, generated secrets and backups."),
    Setting("BACKUP_DIR", "", parse_str,
            "Directory of the instance backups' archive files (may be a NAS mount); empty "
            "means DATA_DIR/backups."),
    Setting("DATABASE_URL", "", parse_str,
            "Database URL; empty means SQLite at DATA_DIR/appliance.db. "
            "postgresql://user:password@host:5432/name uses PostgreSQL (15 or newer; the "
            "`postgres` extra), for several processes on one database.",
            secret=True),
    Setting("DATABASE_STATEMENT_TIMEOUT_SECONDS", 30, int_between(1, 3600),
            "PostgreSQL: a statement running longer is cancelled (the request answers "
            "503)."),
    Setting("LEADER_LEASE_SECONDS", 30, int_between(3, 3600),
            "Several processes on one PostgreSQL database: the one running the periodic "
            "tasks holds a lease this long, renewed every third of it; when it dies, "
            "another takes over within this time plus a third."),
    Setting("HOST", "127.0.0.1", parse_str, "Address `appliance serve` listens on."),
    Setting("PORT", 8080, parse_port, "Port `appliance serve` listens on."),
    Setting("THREADS", 8, parse_positive_int, "Worker threads of the waitress server."),
    Setting("CONNECTION_LIMIT", 1000, int_between(10, 100_000),
            "Client connections `appliance serve` keeps open at once, idle ones included; "
            "past it new ones wait in the kernel's queue. The soft limit of open files is "
            "raised to fit at start-up."),
    Setting("CHANNEL_TIMEOUT_SECONDS", 60, int_between(1, 86_400),
            "A connection with no request running is closed after this long without a "
            "byte from its client."),
    Setting("HEADER_TIMEOUT_SECONDS", 10, int_between(1, 3600),
            "A request's line and headers must all arrive within this long of their first "
            "byte, or the connection is closed (slow-loris clients)."),
    Setting("TRUSTED_PROXY", "", parse_ip_address_or_empty,
            "Address of the reverse proxy in front (e.g. 127.0.0.1): only its requests' "
            "TRUSTED_PROXY_HEADERS are believed, and others' are removed. Empty means none."),
    Setting("TRUSTED_PROXY_HEADERS", "x-forwarded-for,x-forwarded-proto", parse_proxy_headers,
            "Forwarded headers taken from TRUSTED_PROXY (comma-separated x-forwarded-for, "
            "-proto, -host, -port, -by, or forwarded alone)."),
    Setting("TRUSTED_PROXY_COUNT", 1, int_between(1, 10),
            "Proxies in front, TRUSTED_PROXY the last: the client address is the entry this "
            "many from the right of X-Forwarded-For."),
    Setting("SITE_NAME", "Appliance", parse_str,
            "The operator's name, shown in the dashboard and in /api/v1/config.", public=True),
    Setting("SIGNUP", "open", one_of("open", "closed", "invite"),
            "Who may create an account: open, closed or invite (invite-only).", public=True),
    Setting("SUPPORT_EMAIL", "", parse_email_or_empty,
            "Where users write for help: shown at the foot of every page and in "
            "/api/v1/config. Empty: not shown.", public=True),
    Setting("REQUIRE_VERIFIED_EMAIL", True, parse_bool,
            "An account must confirm its email address before it creates instances, API "
            "keys or webhooks (403 email_not_verified); it can sign in and look around "
            "before. Changeable at run time."),
    Setting("BRANDING_ACCENT_COLOR", "", parse_hex_color,
            "The accent colour of the dashboard (#rrggbb, e.g. #0b7285); empty: the "
            "built-in blue. Changeable at run time (Settings > Branding).", public=True),
    Setting("BRANDING_FOOTER_TEXT", "", parse_str,
            "A line shown at the foot of every page and of mails. Changeable at run time.",
            public=True),
    Setting("BRANDING_SUPPORT_URL", "", parse_http_url,
            "A help or support page linked at the foot of every page and of mails; empty: "
            "not shown. Changeable at run time.", public=True),
    Setting("NOTIFY_ADMINS_OF_SIGNUPS", False, parse_bool,
            "Tell the administrators of every new signup (their bell, and the "
            "user.signed_up event to their webhooks). Changeable at run time."),
    Setting("SECRET_KEY", "", parse_str,
            "Key for signing sessions and tokens; generated into DATA_DIR/secrets on "
            "first start when not given.", secret=True),
    Setting("MAX_BODY_BYTES", 1_048_576, parse_positive_int,
            "Largest request body accepted; bigger ones get 413 payload_too_large."),
    Setting("SQLITE_SYNCHRONOUS", "full", one_of("full", "normal"),
            "SQLite synchronous mode; full never loses a committed write on power loss."),
    Setting("SQLITE_BUSY_TIMEOUT_MS", 5000, parse_positive_int,
            "How long a SQLite writer waits for the lock before failing."),
    Setting("METRICS_TOKEN", "", parse_str,
            "When set, GET /metrics needs `Authorization: Bearer <token>`.", secret=True),
    Setting("LOG_LEVEL", "info", one_of("debug", "info", "warning", "error"),
            "Log level of the appliance's own log lines."),
    Setting("LOG_FORMAT", "text", one_of("text", "json"),
            "Log lines on standard error: text, or json (one object per line); one line "
            "per event either way."),
    Setting("BASE_URL", "", parse_str,
            "Public URL of the dashboard, used in links sent by email; empty means "
            "http://HOST:PORT."),
    Setting("WEBHOOKS_ALLOW_PRIVATE", False, parse_bool,
            "Let webhooks reach private LAN addresses (10/8, 172.16/12, 192.168/16, "
            "100.64/10, fc00::/7); loopback, link-local and metadata addresses never."),
    Setting("EVENT_STREAMS_MAX", 0, int_between(0, 10_000),
            "Live event streams (GET /api/v1/events/stream) open at once, in total; each "
            "holds a server thread. 0 means half of THREADS (at least 1)."),
    Setting("EVENT_STREAMS_PER_USER", 3, int_between(1, 1000),
            "Live event streams one user may have open at once (one per dashboard tab); "
            "a new one past it ends their oldest."),
    Setting("EVENT_STREAM_SECONDS", 300, int_between(5, 86_400),
            "How long a live event stream stays open before it ends (the browser "
            "reconnects with Last-Event-ID)."),
    Setting("CONSOLE_IDLE_TIMEOUT_SECONDS", 900, int_between(30, 86_400),
            "A web console with no input for this long is closed (its session ends)."),
    Setting("CONSOLE_SESSIONS_PER_USER", 2, int_between(1, 100),
            "Web consoles one user may have open at once; past it opening one is 429 "
            "`too_many_consoles` with Retry-After."),
    Setting("CONSOLE_SESSIONS_MAX", 4, int_between(1, 1000),
            "Web consoles open at once, in total. Each attached console holds a server "
            "thread, so `appliance serve` runs this many worker threads on top of THREADS; "
            "past it opening one is 429 `too_many_consoles` with Retry-After."),
    Setting("EVENT_RETENTION_DAYS", 90, int_between(1, 36_500),
            "Days events, finished webhook deliveries (with their attempts) and read "
            "notifications are kept before the daily purge deletes them."),
    Setting("SELF_BACKUP_SCHEDULE", "daily", one_of("daily", "off"),
            "Back up the appliance itself (database, secrets, uploads) once a day, or off."),
    Setting("SELF_BACKUP_KEEP", 7, int_between(1, 1000),
            "Archives of the appliance kept in SELF_BACKUP_DIR; older ones are deleted "
            "after each scheduled backup."),
    Setting("SELF_BACKUP_DIR", "", parse_str,
            "Directory of the appliance's own backup archives; empty means "
            "DATA_DIR/backups/appliance."),
    Setting("SMTP_HOST", "", parse_str,
            "SMTP server for outgoing mail; empty keeps mail in the outbox the admin reads."),
    Setting("SMTP_PORT", 587, parse_port, "SMTP server port."),
    Setting("SMTP_SECURITY", "starttls", one_of("starttls", "tls", "none"),
            "How to secure the SMTP connection: starttls, tls (implicit) or none."),
    Setting("SMTP_USER", "", parse_str, "SMTP user name; empty means no authentication."),
    Setting("SMTP_PASSWORD", "", parse_str, "SMTP password.", secret=True),
    Setting("SMTP_FROM", "appliance@localhost", parse_str, "Sender address of outgoing mail."),
    Setting("SMTP_TIMEOUT_SECONDS", 10, parse_positive_int,
            "How long to wait for the SMTP server before the mail is kept as failed."),
    Setting("SESSION_IDLE_MINUTES", 120, parse_positive_int,
            "A dashboard session ends after this long without a request."),
    Setting("SESSION_MAX_HOURS", 168, parse_positive_int,
            "A dashboard session ends this long after sign-in, however active."),
    Setting("COOKIE_SECURE", "auto", one_of("auto", "true", "false"),
            "Mark cookies Secure: auto means when the request came over HTTPS."),
    Setting("LOGIN_FAILURES_PER_ACCOUNT", 10, parse_positive_int,
            "Failed sign-ins allowed per account in 15 minutes before 429 (wrong MFA codes and "
            "wrong current passwords each have their own budget of this size)."),
    Setting("LOGIN_FAILURES_PER_IP", 30, parse_positive_int,
            "Failed sign-ins allowed per client address in 15 minutes before 429."),
    Setting("RATE_LIMIT_KEY_PER_MINUTE", 600, parse_positive_int,
            "API requests per minute of an API key without its own limit."),
    Setting("RATE_LIMIT_USER_PER_MINUTE", 1200, parse_positive_int,
            "API requests per minute of a signed-in user (access tokens)."),
    Setting("RATE_LIMIT_AUTH_PER_MINUTE", 60, parse_positive_int,
            "Requests per minute from one address to sign-in, signup and recovery endpoints."),
    Setting("BILLING_CURRENCY", "EUR", parse_currency,
            "Currency of every price, balance and invoice (ISO 4217 code); amounts are "
            "integer minor units of it.", public=True),
    Setting("BILLING_VAT_RATE_BP", 0, int_between(0, 10000),
            "VAT rate on invoices in basis points (2000 = 20 %)."),
    Setting("BILLING_MIN_BALANCE", 0, int_between(-1_000_000_000, 1_000_000_000),
            "Balance (minor units) an account needs to create or resize an instance."),
    Setting("BILLING_GRACE_HOURS", 72, int_between(0, 8760),
            "Hours an account may stay at or below zero before its instances are stopped."),
    Setting("BILLING_LOW_BALANCE_THRESHOLDS", "", parse_amounts,
            "Low-balance alerts (comma-separated minor units) every new account starts with."),
    Setting("BILLING_OPERATOR_NAME", "", parse_str,
            "The operator's legal name on invoices; empty means SITE_NAME."),
    Setting("BILLING_OPERATOR_ADDRESS", "", parse_str,
            "The operator's postal address on invoices."),
    Setting("BILLING_BACKUP_GB_MONTH", 5, int_between(0, 1_000_000),
            "Price of keeping one GB of backup for a month (minor units), charged by the "
            "hour pro rata."),
    Setting("BILLING_TEMPLATE_GB_MONTH", "", empty_or_int_between(0, 1_000_000),
            "Price of keeping one GB of template for a month (minor units), charged by the "
            "hour pro rata; empty means BILLING_BACKUP_GB_MONTH."),
    Setting("BILLING_BACKUP_TIER_BASIC_HOURLY", 1, int_between(0, 1_000_000),
            "Hourly price (minor units) of the `basic` backup tier of an instance, charged "
            "by the metering tick like its plan."),
    Setting("BILLING_BACKUP_TIER_EXTENDED_HOURLY", 2, int_between(0, 1_000_000),
            "Hourly price (minor units) of the `extended` backup tier of an instance."),
    Setting("BACKUP_TIER_BASIC_DAYS", 7, int_between(1, 366),
            "Days the `basic` backup tier keeps each daily backup."),
    Setting("BACKUP_TIER_EXTENDED_DAYS", 14, int_between(1, 366),
            "Days the `extended` backup tier keeps each daily backup."),
    Setting("BACKUP_TIER_EXTENDED_WEEKS", 8, int_between(0, 520),
            "Weeks the `extended` backup tier keeps the first backup of each ISO week "
            "(0: no weeklies)."),
    Setting("BACKUP_TIER_HOUR", 3, int_between(0, 23),
            "UTC hour in which the daily backups of the backup tiers are taken, each "
            "instance at its own minute of it."),
    Setting("METERING_INTERVAL_SECONDS", 300, parse_positive_int,
            "How often the metering tick records started hours (each hour is counted once "
            "however often it runs)."),
    Setting("ENGINE_CHECK_INTERVAL_SECONDS", 60, int_between(1, 86_400),
            "How often every node's engine is health-checked (and its images discovered) "
            "and instance rows are reconciled with what the engines report."),
    Setting("INSTANCE_METRICS_INTERVAL_SECONDS", 60, int_between(1, 3600),
            "How often the running instances' CPU, memory, network and disk (and every "
            "node's host figures) are read from the engines, one request per node."),
    Setting("INSTANCE_METRICS_MINUTE_HOURS", 24, int_between(1, 24 * 30),
            "Hours resource metrics are kept at minute resolution."),
    Setting("INSTANCE_METRICS_FIVE_MINUTE_DAYS", 7, int_between(1, 365),
            "Days resource metrics are kept at 5-minute resolution."),
    Setting("INSTANCE_METRICS_HOURLY_DAYS", 90, int_between(1, 3650),
            "Days resource metrics are kept at hourly resolution (then purged)."),
    Setting("STRIPE_SECRET_KEY", "", parse_str,
            "Stripe secret API key (sk_...); empty turns Stripe top-ups off.", secret=True),
    Setting("STRIPE_WEBHOOK_SECRET", "", parse_str,
            "Signing secret (whsec_...) of the Stripe webhook endpoint "
            "/api/v1/billing/stripe/webhook.", secret=True),
    Setting("STRIPE_API_BASE", "https://api.stripe.com", parse_http_url,
            "Base URL of Stripe's API (a stand-in's, for tests)."),
)

_active: dict[str, Any] = {}
_active_sources: dict[str, str] = {}


def active() -> dict[str, Any]:
    """The settings of the app built last in this process (services read them here)."""
    if not _active:
        raise ConfigError("no app has been created in this process yet")
    return _active


def activate(settings: dict[str, Any], sources: Mapping[str, str] | None = None) -> None:
    """Make `settings` the active ones; `sources` names where each setting that was given
    (not left at its default) came from (see `load_settings`)."""
    _active.clear()
    _active.update(settings)
    _active_sources.clear()
    _active_sources.update(sources or {})


def source_of(name: str) -> str | None:
    """Where the active value of `name` was given - `APPLIANCE_<NAME>`,
    `APPLIANCE_<NAME>_FILE`, `<config file>: <name>` or `overrides[...]` - or None when it
    is the default."""
    return _active_sources.get(name)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}

# Secrets generated on first start when the operator gives none: setting -> file name.
GENERATED_SECRETS = {"SECRET_KEY": "secret_key"}


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"APPLIANCE_CONFIG: file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"APPLIANCE_CONFIG: {path} is not valid TOML: {exc}") from None
    values = {}
    for key, value in raw.items():
        name = key.upper()
        if name not in SETTINGS_BY_NAME:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        values[name] = value
    return values


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    """Parse `value` for `setting`; typed values from TOML or overrides pass the parser too."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    try:
        return setting.parse(str(value))
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid value {value!r} ({exc})") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return every setting's value, parsed; raise ConfigError on any bad value. When
    `sources` is given, it is filled with where each given setting came from."""
    environ = os.environ if environ is None else environ
    values = {setting.name: setting.default for setting in SETTINGS}
    sources = {} if sources is None else sources

    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        for name, value in _read_config_file(config_path).items():
            values[name] = value
            sources[name] = f"{config_path}: {name.lower()}"

    for setting in SETTINGS:
        file_var = setting.env + "_FILE"
        if setting.secret and environ.get(file_var):
            try:
                values[setting.name] = Path(environ[file_var]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{file_var}: cannot read {environ[file_var]}: {exc}") from None
            sources[setting.name] = file_var
        elif setting.env in environ:
            values[setting.name] = environ[setting.env]
            sources[setting.name] = setting.env

    for name, value in (overrides or {}).items():
        key = name.upper()
        if key not in SETTINGS_BY_NAME:
            raise ConfigError(f"overrides: unknown setting {name!r}")
        values[key] = value
        sources[key] = f"overrides[{name!r}]"

    return {
        name: _coerce(SETTINGS_BY_NAME[name], value, sources.get(name, name))
        if name in sources else value
        for name, value in values.items()
    }


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory (mode 0700 when new) and return its absolute path."""
    data_dir = data_dir.expanduser().resolve()
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    elif not data_dir.is_dir():
        raise ConfigError(f"APPLIANCE_DATA_DIR: {data_dir} is not a directory")
    return data_dir


def backup_dir(settings: dict[str, Any]) -> Path:
    """Where the instance backups' archives go: BACKUP_DIR, or DATA_DIR/backups (absolute;
    made on first use, not here: a NAS mount may come up after the appliance)."""
    chosen = settings.get("BACKUP_DIR") or str(Path(settings["DATA_DIR"]) / "backups")
    return Path(chosen).expanduser().resolve()


def ensure_secrets(settings: dict[str, Any], data_dir: Path) -> None:
    """Fill each missing generated secret from DATA_DIR/secrets, creating it (0600) once."""
    secrets_dir = data_dir / "secrets"
    for name, file_name in GENERATED_SECRETS.items():
        if settings[name]:
            continue
        secrets_dir.mkdir(mode=0o700, exist_ok=True)
        path = secrets_dir / file_name
        if not path.exists():
            # Write aside, then link into place: link fails when the name exists, so two
            # processes starting at once agree on one secret and never read a half file.
            temp = secrets_dir / f".{file_name}.{os.getpid()}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            try:
                os.link(temp, path)
            except FileExistsError:
                pass
            finally:
                temp.unlink()
        value = path.read_text().strip()
        if not value:
            raise ConfigError(f"{name}: {path} is empty; delete it to generate a new one")
        settings[name] = value
