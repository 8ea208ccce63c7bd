"""TOTP second factor (RFC 6238) with one-time recovery codes.

The contract:

- Enrolment is two steps. `begin_enrolment` makes (or replaces) an *unconfirmed*
  `MfaFactor` with a fresh 160-bit secret and returns what the user's authenticator app
  needs (the secret, the otpauth URI and a QR code as inline SVG). `confirm_enrolment`
  takes the first code from the app, marks the factor confirmed and returns ten recovery
  codes - the only time they exist in plain text; only their SHA-256 hashes are stored.
  MFA is "enabled" for a user exactly when a confirmed factor exists.
- `verify` is the check at sign-in (and before turning MFA off or renewing recovery
  codes). It takes a 6-digit TOTP code (spaces allowed) or a recovery code. A TOTP code
  is valid for its 30-second step and one step either side (clock drift), and is accepted
  once: the accepted step is stored in `MfaFactor.last_used_step` and any step at or
  before it is refused, so neither a replay nor an older code still inside the drift
  window passes. A recovery code is consumed by the first use. Both are claimed with a
  conditional UPDATE that must change exactly one row, so two concurrent requests with
  the same code cannot both pass.
- Failures raise `InvalidRequest(code="mfa_code_invalid", field="code")`; state errors
  raise `Conflict` (`mfa_already_enabled`, `mfa_not_pending`, `mfa_not_enabled`).
  Nothing is written when a call fails. Throttling failed codes (a 6-digit code can be
  guessed without it) and checking the password are the caller's job
  (`services.accounts`).
- Time comes from `services.clock.now()`, so tests move the clock instead of sleeping.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

import pyotp
import segno

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest
from appliance.models import MfaFactor, RecoveryCode, User
from appliance.services import audit, clock
from appliance.services.ids import hash_token

STEP_SECONDS = 30
DRIFT_STEPS = 1
TOTP_DIGITS = 6
RECOVERY_CODE_COUNT = 10
# Crockford's base32 in lower case: no i, l, o or u, so a code read aloud or copied by
# hand cannot be mistaken. 12 characters of 5 bits each: 60 bits per code.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LENGTH = 4
QR_TARGET_PIXELS = 200
QR_BORDER_MODULES = 4  # the quiet zone the QR specification asks for


@dataclass(frozen=True)
class Enrolment:
    """What the user needs to add the account to an authenticator app.

    `secret` is also shown as text for typing in by hand; `qr_svg` is an `<svg>` element
    (no XML declaration) to embed in a page: black modules on a white square, about
    200 px wide. The secret is kept out of `repr` so it never lands in a log line.
    """

    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


def _invalid_code() -> InvalidRequest:
    return InvalidRequest("The code is not valid.", code="mfa_code_invalid", field="code")


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=STEP_SECONDS)


def qr_svg(data: str) -> str:
    """`data` as a QR code: an inline `<svg>`, black on white, about 200 px square."""
    qr = segno.make(data, error="m", micro=False)
    width, _ = qr.symbol_size(scale=1, border=QR_BORDER_MODULES)
    scale = max(1, round(QR_TARGET_PIXELS / width))
    return qr.svg_inline(scale=scale, border=QR_BORDER_MODULES, dark="#000", light="#fff",
                         omitsize=True,
                         title="QR code for your authenticator app")


def _normalise(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _looks_like_totp(normalised: str) -> bool:
    return (len(normalised) == TOTP_DIGITS and normalised.isascii()
            and normalised.isdigit())


def _hash_recovery_code(normalised: str) -> str:
    return hash_token(normalised)


def _new_recovery_code() -> str:
    groups = (
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_GROUP_LENGTH))
        for _ in range(RECOVERY_GROUPS)
    )
    return "-".join(groups)


def _replace_recovery_codes(user: User) -> list[str]:
    """Delete the user's recovery codes and store the hashes of ten new ones; call in a
    transaction. Returns the plain codes."""
    codes: list[str] = []
    while len(codes) < RECOVERY_CODE_COUNT:
        code = _new_recovery_code()
        if code not in codes:
            codes.append(code)
    RecoveryCode.delete().where(RecoveryCode.user == user.id).execute()
    RecoveryCode.insert_many(
        [{"user": user.id, "code_hash": _hash_recovery_code(_normalise(code))}
         for code in codes]
    ).execute()
    return codes


def _matching_step(secret: str, code: str) -> int | None:
    """The time step (now, or one either side) whose code is `code`, or None.

    All candidates are compared in constant time, so the answer's timing does not say
    how close a guess was. The current step wins over its neighbours.
    """
    if not _looks_like_totp(code):
        return None
    totp = _totp(secret)
    current = totp.timecode(clock.now())
    found: int | None = None
    for step in (current, current - DRIFT_STEPS, current + DRIFT_STEPS):
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def _factor(user: User) -> MfaFactor | None:
    return MfaFactor.get_or_none(MfaFactor.user == user.id)


def _confirmed_factor(user: User) -> MfaFactor:
    factor = _factor(user)
    if factor is None or factor.confirmed_at is None:
        raise Conflict("Two-factor authentication is not enabled.", code="mfa_not_enabled")
    return factor


def is_enabled(user: User) -> bool:
    """True when the user has a confirmed TOTP factor."""
    return (MfaFactor.select()
            .where(MfaFactor.user == user.id, MfaFactor.confirmed_at.is_null(False))
            .exists())


def remaining_recovery_codes(user: User) -> int:
    """How many of the user's recovery codes are still unused."""
    return (RecoveryCode.select()
            .where(RecoveryCode.user == user.id, RecoveryCode.used_at.is_null())
            .count())


def begin_enrolment(user: User, issuer: str) -> Enrolment:
    """Start (or restart) enrolment with a new secret; `issuer` names this service in the
    authenticator app.

    Raises `Conflict(mfa_already_enabled)` when MFA is already on: turning it off first
    takes the password and a code, replacing it must too.
    """
    secret = pyotp.random_base32()  # 32 base32 characters: 160 bits, as RFC 4226 advises
    with database.atomic():
        if is_enabled(user):
            raise Conflict("Two-factor authentication is already enabled.",
                           code="mfa_already_enabled")
        MfaFactor.delete().where(MfaFactor.user == user.id).execute()
        MfaFactor.create(user=user.id, secret=secret, confirmed_at=None, last_used_step=0,
                         created_at=clock.now())
    return _enrolment(user, secret, issuer)


def _enrolment(user: User, secret: str, issuer: str) -> Enrolment:
    uri = _totp(secret).provisioning_uri(name=user.email, issuer_name=issuer)
    return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=qr_svg(uri))


def pending_enrolment(user: User, issuer: str) -> Enrolment | None:
    """The enrolment begun but not confirmed yet (same secret), or None."""
    factor = _factor(user)
    if factor is None or factor.confirmed_at is not None:
        return None
    return _enrolment(user, factor.secret, issuer)


def confirm_enrolment(user: User, code: str, *, ip: str = "") -> list[str]:
    """Turn MFA on with the first code from the app; return the ten recovery codes.

    The codes are returned once and stored only as hashes; older recovery codes are
    deleted. The confirming code counts as used (it cannot then sign in). Raises
    `InvalidRequest(mfa_code_invalid)` for a wrong code, `Conflict(mfa_not_pending)`
    when no enrolment was begun, `Conflict(mfa_already_enabled)` when it is already on.
    """
    with database.atomic():
        factor = _factor(user)
        if factor is not None and factor.confirmed_at is not None:
            raise Conflict("Two-factor authentication is already enabled.",
                           code="mfa_already_enabled")
        if factor is None:
            raise Conflict("Start the two-factor set-up first.", code="mfa_not_pending")
        normalised = _normalise(code) if isinstance(code, str) else ""
        step = _matching_step(factor.secret, normalised)
        if step is None or step <= factor.last_used_step:
            raise _invalid_code()
        # Conditional: a concurrent confirmation, or a restarted enrolment with a new
        # secret, makes this change no row and the code is refused.
        claimed = (MfaFactor.update(confirmed_at=clock.now(), last_used_step=step)
                   .where(MfaFactor.id == factor.id,
                          MfaFactor.secret == factor.secret,
                          MfaFactor.confirmed_at.is_null(),
                          MfaFactor.last_used_step < step)
                   .execute())
        if claimed != 1:
            raise _invalid_code()
        codes = _replace_recovery_codes(user)
        audit.record("mfa.enabled", actor=user, target_type="user", target_id=user.id, ip=ip)
    return codes


def _claim_totp(factor: MfaFactor, code: str) -> bool:
    step = _matching_step(factor.secret, code)
    if step is None or step <= factor.last_used_step:
        return False
    claimed = (MfaFactor.update(last_used_step=step)
               .where(MfaFactor.id == factor.id,
                      MfaFactor.confirmed_at.is_null(False),
                      MfaFactor.last_used_step < step)
               .execute())
    return claimed == 1


def _claim_recovery_code(user: User, code: str) -> bool:
    claimed = (RecoveryCode.update(used_at=clock.now())
               .where(RecoveryCode.user == user.id,
                      RecoveryCode.code_hash == _hash_recovery_code(code),
                      RecoveryCode.used_at.is_null())
               .execute())
    return claimed == 1


def verify(user: User, code: str) -> str:
    """Check a sign-in code and use it up; return "totp" or "recovery".

    Six digits (spaces allowed) are a TOTP code, anything else a recovery code (case,
    dashes and spaces ignored). Raises `InvalidRequest(mfa_code_invalid)` for a wrong,
    replayed or already used code and `Conflict(mfa_not_enabled)` when MFA is off.
    """
    with database.atomic():
        factor = _confirmed_factor(user)
        normalised = _normalise(code) if isinstance(code, str) else ""
        if not normalised:
            raise _invalid_code()
        if _looks_like_totp(normalised):
            if _claim_totp(factor, normalised):
                return "totp"
        elif _claim_recovery_code(user, normalised):
            return "recovery"
    raise _invalid_code()


def disable(user: User, code: str, *, ip: str = "") -> None:
    """Turn MFA off: delete the factor and every recovery code once `code` passes `verify`.

    The caller must have checked the user's password first (re-authentication before
    changing MFA); this function checks only the code. Raises what `verify` raises, and
    then changes nothing.
    """
    with database.atomic():
        method = verify(user, code)
        RecoveryCode.delete().where(RecoveryCode.user == user.id).execute()
        MfaFactor.delete().where(MfaFactor.user == user.id).execute()
        audit.record("mfa.disabled", actor=user, target_type="user", target_id=user.id,
                     ip=ip, method=method)


def regenerate_recovery_codes(user: User, code: str, *, ip: str = "") -> list[str]:
    """Replace all recovery codes with ten new ones once `code` passes `verify`.

    Returns the plain codes (shown once). Raises what `verify` raises, and then changes
    nothing.
    """
    with database.atomic():
        method = verify(user, code)
        codes = _replace_recovery_codes(user)
        audit.record("mfa.recovery_codes_regenerated", actor=user, target_type="user",
                     target_id=user.id, ip=ip, method=method)
    return codes
