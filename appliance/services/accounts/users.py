"""Accounts: signup, email verification, sign-in, passwords and profiles.

Every function takes plain values (and the acting `Principal` where someone acts), owns
its transaction, writes audit rows for what matters, and raises `appliance.errors`.
Mail is sent after the transaction commits, never while holding the write lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from typing import TypeVar

from peewee import IntegrityError

from appliance import config
from appliance.db import database
from appliance.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from appliance.models import EmailToken, Invite, SuspensionEnd, User
from appliance.services import audit, clock, projects, settings
from appliance.services.accounts import authcache, mail, mfa, passwords, sessions
from appliance.services.events import outbox
from appliance.services.ids import hash_token, new_id, new_token
from appliance.services.limits import throttle
from appliance.services.principal import Principal

VERIFY_TTL = dt.timedelta(hours=48)
RESET_TTL = dt.timedelta(hours=1)
THROTTLE_WINDOW = 15 * 60.0
# Wrong codes one MFA token may take before the password must be entered again; the
# account's budget (LOGIN_FAILURES_PER_ACCOUNT) is separate and outlives sign-ins.
MFA_FAILURES_PER_TOKEN = 5
T = TypeVar("T")


@dataclass(frozen=True)
class SignInResult:
    """A right password: either the user (no MFA) or an MFA challenge to answer."""

    user: User
    mfa_required: bool
    mfa_token: str | None = None


def normalise_email(email: str) -> str:
    """The address lower-cased, or InvalidRequest when mail could not be sent to it."""
    email = email.strip()
    local, _, domain = email.rpartition("@")
    if (not local or "." not in domain or len(email) > 254
            or any(c.isspace() or ord(c) < 32 or c in ',;<>()"\\' for c in email)
            or parseaddr(email)[1] != email):
        raise InvalidRequest("Enter a valid email address.", code="invalid_email",
                             field="email")
    return f"{local}@{domain.lower()}".lower()


def _issue_email_token(user: User, purpose: str, email: str, ttl: dt.timedelta) -> str:
    token = new_token()
    now = clock.now()
    # A new link replaces the older ones of the same purpose.
    (EmailToken.update(used_at=now)
     .where(EmailToken.user == user, EmailToken.purpose == purpose,
            EmailToken.used_at.is_null()).execute())
    EmailToken.create(user=user, purpose=purpose, token_hash=hash_token(token), email=email,
                      created_at=now, expires_at=now + ttl)
    return token


def _send_verification(user: User, email: str, token: str) -> None:
    site = config.active()["SITE_NAME"]
    url = mail.link(f"/verify-email?token={token}")
    mail.send(email, f"Confirm your email address for {site}",
              f"Hello {user.display_name or email},\n\nconfirm your email address by opening "
              f"this link within 48 hours:\n\n{url}\n\nIf you did not ask for this, ignore "
              f"this message.\n")


def _claim_invite(code: str | None, email: str) -> Invite:
    if not code:
        raise Forbidden("Signing up needs an invitation.", code="invite_required")
    invite = Invite.get_or_none(Invite.code_hash == hash_token(code.strip()))
    now = clock.now()
    if invite is None or invite.used_at is not None or invite.expires_at <= now:
        raise Forbidden("This invitation is not valid.", code="invite_invalid")
    if invite.email and invite.email != email:
        raise Forbidden("This invitation is for another address.", code="invite_invalid")
    return invite


def create_user(email: str, password: str, display_name: str = "", *, role: str = "user",
                verified: bool = False) -> User:
    """Insert a user (with their default project) after checking the password rules."""
    email = normalise_email(email)
    passwords.check_rules(password, email)
    now = clock.now()
    try:
        with database.atomic():
            user = User.create(
                id=new_id("usr"), email=email, display_name=display_name.strip(),
                password_hash=passwords.hash_password(password), role=role,
                email_verified_at=now if verified else None, password_changed_at=now,
                created_at=now, updated_at=now)
            projects.create_default_project(user)
            return user
    except IntegrityError:
        raise Conflict("An account with this email address exists.",
                       code="email_taken", details={"field": "email"}) from None


def signup(email: str, password: str, display_name: str = "", invite_code: str | None = None,
           ip: str = "") -> User:
    """Create an account as the SIGNUP setting allows, and mail a verification link."""
    mode = settings.get(config.active(), "SIGNUP")
    if mode == "closed":
        raise Forbidden("Signing up is closed on this appliance.", code="signup_disabled")
    email = normalise_email(email)
    with database.atomic():
        invite = _claim_invite(invite_code, email) if mode == "invite" else None
        user = create_user(email, password, display_name)
        if invite is not None:
            claimed = (Invite.update(used_by=user, used_at=clock.now())
                       .where(Invite.id == invite.id, Invite.used_at.is_null()).execute())
            if not claimed:
                raise Forbidden("This invitation is not valid.", code="invite_invalid")
        token = _issue_email_token(user, "verify", email, VERIFY_TTL)
        audit.record("account.signed_up", actor=user, target_type="user", target_id=user.id,
                     ip=ip)
        if settings.get(config.active(), "NOTIFY_ADMINS_OF_SIGNUPS"):
            outbox.emit_to_administrators("user.signed_up", data={"user": {
                "id": user.id, "email": user.email, "display_name": user.display_name}})
    _send_verification(user, email, token)
    return user


def _usable_email_token(token: str, purpose: str) -> EmailToken:
    row = EmailToken.get_or_none(EmailToken.token_hash == hash_token(token.strip()),
                                 EmailToken.purpose == purpose)
    if row is None or row.used_at is not None:
        raise InvalidRequest("This link is not valid or was already used.",
                             code="token_invalid", field="token")
    if row.expires_at <= clock.now():
        raise InvalidRequest("This link has expired; ask for a new one.",
                             code="token_expired", field="token")
    return row


def check_email_link(token: str, purpose: str) -> None:
    """Whether a mailed link (`purpose` "verify" or "reset") can still be used, without
    using it: InvalidRequest `token_invalid` (unknown or used) or `token_expired`."""
    _usable_email_token(token or "", purpose)


def _take_email_token(token: str, purpose: str) -> EmailToken:
    """Consume a single-use token (conditional UPDATE); raise when unknown/used/expired."""
    row = _usable_email_token(token, purpose)
    now = clock.now()
    taken = (EmailToken.update(used_at=now)
             .where(EmailToken.id == row.id, EmailToken.used_at.is_null()).execute())
    if not taken:
        raise InvalidRequest("This link was already used.", code="token_invalid", field="token")
    return row


@authcache.invalidates  # a cached principal's user row must see the confirmation at once
def verify_email(token: str, ip: str = "") -> User:
    """Mark the address a verification link was sent to as confirmed (also email changes)."""
    with database.atomic():
        row = _take_email_token(token, "verify")
        user = User.get_by_id(row.user_id)
        if row.email != user.email:
            if User.select().where(User.email == row.email, User.id != user.id).exists():
                raise Conflict("An account with this email address exists.",
                               code="email_taken")
            audit.record("account.email_changed", actor=user, target_type="user",
                         target_id=user.id, ip=ip, old=user.email, new=row.email)
            user.email = row.email
        user.email_verified_at = clock.now()
        user.updated_at = clock.now()
        user.save()
        audit.record("account.email_verified", actor=user, target_type="user",
                     target_id=user.id, ip=ip)
    return user


def resend_verification(user: User) -> None:
    """Mail a fresh verification link; refused when the address is already confirmed."""
    if user.email_verified_at is not None:
        raise Conflict("This email address is already confirmed.", code="already_verified")
    with database.atomic():
        token = _issue_email_token(user, "verify", user.email, VERIFY_TTL)
    _send_verification(user, user.email, token)


def mail_suspension(user: User) -> None:
    """Tell a just-suspended user why (the reason the administrator gave); call after the
    suspension committed. Delivery failures are the outbox's to retry."""
    site = settings.get(config.active(), "SITE_NAME")
    end = user.suspended_until
    until = (f"It ends by itself on {end:%Y-%m-%d at %H:%M} UTC; until then you cannot "
             "sign in." if end else "You cannot sign in until the suspension is lifted.")
    mail.send(user.email, f"Your account on {site} is suspended",
              f"Hello {user.display_name or user.email},\n\nan administrator suspended your "
              f"account on {site}. {until}\n\n"
              f"Reason: {user.suspended_reason or '(none given)'}\n\nIf you think this "
              f"is a mistake, contact the administrators of {site}.\n")


@authcache.invalidates
def lift_ended_suspensions() -> int:
    """The scheduler's task: lift every suspension whose end (`SuspensionEnd.until`) has
    passed - each by deleting its end row first, a conditional DELETE, so two schedulers
    lift it once - audited as `account.suspension_ended`. Returns how many were lifted."""
    now = clock.now()
    due = [row.user_id for row in SuspensionEnd.select(SuspensionEnd.user)
           .where(SuspensionEnd.until <= now)]
    lifted = 0
    for user_id in due:
        with database.atomic():
            claimed = SuspensionEnd.delete().where(SuspensionEnd.user == user_id,
                                                   SuspensionEnd.until <= now).execute()
            changed = claimed and (User.update(status="active", suspended_reason=None,
                                               suspended_at=None, updated_at=now)
                                   .where(User.id == user_id, User.status == "suspended")
                                   .execute())
            if changed == 1:
                audit.record("account.suspension_ended", target_type="user",
                             target_id=user_id)
                lifted += 1
    return lifted


RESEND_LINKS = {"resend_url": "/api/v1/auth/resend-verification",
                "dashboard_resend_url": "/account/resend-verification"}


def verification_required(user: User) -> bool:
    """Whether REQUIRE_VERIFIED_EMAIL holds `user` back (on, and not confirmed yet)."""
    return (user.email_verified_at is None
            and bool(settings.get(config.active(), "REQUIRE_VERIFIED_EMAIL")))


def require_verified(user: User) -> None:
    """While REQUIRE_VERIFIED_EMAIL is on, creating instances, API keys and webhooks needs
    a confirmed email address: 403 `email_not_verified`, with where to ask for a new
    link in `details` (`resend_url`, POST)."""
    if verification_required(user):
        raise Forbidden(f"Confirm your email address first: follow the link mailed to "
                        f"{user.email}, or ask for a new one (POST "
                        f"{RESEND_LINKS['resend_url']}).", code="email_not_verified",
                        details=dict(RESEND_LINKS))


def _throttle_keys(email: str, ip: str) -> list[tuple[str, int]]:
    settings_ = config.active()
    keys = [(f"login:account:{email}", settings_["LOGIN_FAILURES_PER_ACCOUNT"])]
    if ip:
        keys.append((f"login:ip:{ip}", settings_["LOGIN_FAILURES_PER_IP"]))
    return keys


def sign_in(email: str, password: str, ip: str = "") -> SignInResult:
    """Check a password. Failures are counted per account and per address (429 beyond)."""
    try:
        email = normalise_email(email)
    except InvalidRequest:
        email = email.strip().lower()
    keys = _throttle_keys(email, ip)
    for key, limit in keys:
        throttle.check(key, limit, THROTTLE_WINDOW,
                       "Too many failed sign-ins; wait before trying again.")
    user = User.get_or_none(User.email == email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        for key, _ in keys:
            throttle.hit(key, THROTTLE_WINDOW)
        with database.atomic():
            audit.record("auth.sign_in_failed", actor=user, ip=ip, success=False,
                         email=email)
        raise Unauthorized("The email address or password is wrong.",
                           code="invalid_credentials")
    throttle.clear(keys[0][0])
    sessions.require_active(user)
    if passwords.needs_rehash(user.password_hash):
        with database.atomic():
            User.update(password_hash=passwords.hash_password(password)).where(
                User.id == user.id).execute()
    if mfa.is_enabled(user):
        return SignInResult(user, True, sessions.mfa_token(user))
    return SignInResult(user, False)


def _mfa_throttle_keys(user: User, mfa_token: str, ip: str) -> list[tuple[str, int]]:
    """Wrong codes count per account (a budget of its own, which no right password
    clears), per MFA token, and with the address's failed sign-ins."""
    settings_ = config.active()
    keys = [_mfa_key(user), (f"mfa:token:{hash_token(mfa_token)}", MFA_FAILURES_PER_TOKEN)]
    if ip:
        keys.append((f"login:ip:{ip}", settings_["LOGIN_FAILURES_PER_IP"]))
    return keys


def complete_mfa(mfa_token: str, code: str, ip: str = "") -> User:
    """Finish a sign-in with a TOTP or recovery code. Wrong codes are counted per account,
    per MFA token and per address (429 beyond, whatever passwords were right between)."""
    user = sessions.user_from_mfa_token(mfa_token)
    keys = _mfa_throttle_keys(user, mfa_token, ip)
    for key, limit in keys:
        throttle.check(key, limit, THROTTLE_WINDOW,
                       "Too many wrong codes; wait before trying again.")
    try:
        method = mfa.verify(user, code)
    except InvalidRequest:
        for key, _ in keys:
            throttle.hit(key, THROTTLE_WINDOW)
        with database.atomic():
            audit.record("auth.mfa_failed", actor=user, ip=ip, success=False)
        raise
    sessions.require_active(user)
    with database.atomic():
        audit.record("auth.mfa_passed", actor=user, ip=ip, method=method)
    return user


def record_sign_in(user: User, ip: str, kind: str) -> None:
    with database.atomic():
        User.update(last_login_at=clock.now()).where(User.id == user.id).execute()
        audit.record("auth.signed_in", actor=user, ip=ip, kind=kind)


def forgot_password(email: str, ip: str = "") -> None:
    """Mail a reset link when the account exists. Says nothing either way, in the same time."""
    try:
        email = normalise_email(email)
    except InvalidRequest:
        return
    user = User.get_or_none(User.email == email)
    # Hash a password either way so the answer takes the same time with or without account.
    passwords.verify_password(None, "timing")
    if user is None or user.status == "suspended":
        return
    with database.atomic():
        token = _issue_email_token(user, "reset", email, RESET_TTL)
        audit.record("auth.password_reset_requested", actor=user, ip=ip)
    url = mail.link(f"/reset-password?token={token}")
    mail.send(email, f"Reset your password for {config.active()['SITE_NAME']}",
              background=True,
              body=f"Someone asked to reset the password of your account.\n\nChoose a new one "
              f"within an hour at:\n\n{url}\n\nIf it was not you, ignore this message; your "
              f"password stays as it is.\n")


@authcache.invalidates  # it may confirm the address too
def reset_password(token: str, new_password: str, ip: str = "") -> User:
    """Set a new password from a reset link; every session of the account ends."""
    with database.atomic():
        row = _take_email_token(token, "reset")
        user = User.get_by_id(row.user_id)
        passwords.check_rules(new_password, user.email)
        _set_password(user, new_password)
        # The link proves the mailbox, so the address counts as confirmed.
        if user.email_verified_at is None and row.email == user.email:
            user.email_verified_at = clock.now()
            user.save()
        sessions.revoke_all_sessions(user, "password_reset")
        audit.record("auth.password_reset", actor=user, ip=ip)
    authcache.invalidate()  # committed: cached sessions of the account end now
    return user


def _set_password(user: User, new_password: str) -> None:
    now = clock.now()
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = now
    user.updated_at = now
    user.save()


def _require_password(user: User, password: str, field: str = "current_password") -> None:
    if not passwords.verify_password(user.password_hash, password or ""):
        raise InvalidRequest("The current password is wrong.", code="wrong_password",
                             field=field)


def _require_current_password(user: User, password: str,
                              field: str = "current_password") -> None:
    """Re-authentication: wrong passwords count per account (429 beyond, like sign-ins,
    but in a budget of their own that a right sign-in does not clear)."""
    _guarded(_reauth_key(user), lambda: _require_password(user, password, field))


def change_password(principal: Principal, current_password: str, new_password: str) -> int:
    """Change the password; every other session and refresh family ends. Returns how many.
    Wrong current passwords are throttled per account (429 with Retry-After)."""
    user = principal.user
    _require_current_password(user, current_password)
    passwords.check_rules(new_password, user.email, field="new_password")
    with database.atomic():
        _set_password(user, new_password)
        audit.record("auth.password_changed", actor=user, ip=principal.ip)
    return sessions.revoke_other_sessions(principal, "password_changed")


def update_profile(principal: Principal, *, display_name: str | None = None,
                   email: str | None = None,
                   current_password: str | None = None) -> tuple[User, bool]:
    """Change the display name and/or email. A new email needs the password and is only
    taken once confirmed from a link mailed to it. Returns (user, verification_sent).
    Wrong current passwords are throttled per account (429 with Retry-After)."""
    user = principal.user
    new_email = normalise_email(email) if email is not None else None
    if new_email == user.email:
        new_email = None
    if new_email is not None:
        _require_current_password(user, current_password or "")
        if User.select().where(User.email == new_email).exists():
            raise Conflict("An account with this email address exists.", code="email_taken",
                           details={"field": "email"})
    token = None
    with database.atomic():
        if display_name is not None:
            user.display_name = display_name.strip()
            user.updated_at = clock.now()
            user.save()
        if new_email is not None:
            token = _issue_email_token(user, "verify", new_email, VERIFY_TTL)
            audit.record("account.email_change_requested", actor=user, ip=principal.ip,
                         new=new_email)
    if new_email is not None and token is not None:
        _send_verification(user, new_email, token)
    return user, token is not None


def _reauth_key(user: User) -> tuple[str, int]:
    return f"reauth:account:{user.id}", config.active()["LOGIN_FAILURES_PER_ACCOUNT"]


def _mfa_key(user: User) -> tuple[str, int]:
    return f"mfa:account:{user.id}", config.active()["LOGIN_FAILURES_PER_ACCOUNT"]


def _guarded(budget: tuple[str, int], attempt: Callable[[], T]) -> T:
    """Run a password/code check; a failure (InvalidRequest) counts against `budget`, a
    per-account counter that no sign-in clears (429 beyond)."""
    key, limit = budget
    throttle.check(key, limit, THROTTLE_WINDOW,
                   "Too many wrong passwords or codes; wait before trying again.")
    try:
        return attempt()
    except InvalidRequest:
        throttle.hit(key, THROTTLE_WINDOW)
        raise


def disable_mfa(principal: Principal, password: str, code: str) -> None:
    """Turn MFA off: needs the password and a current code (or a recovery code). Wrong
    passwords count as re-authentications, wrong codes with the sign-in codes."""
    user = principal.user
    _require_current_password(user, password, field="password")
    _guarded(_mfa_key(user), lambda: mfa.disable(user, code, ip=principal.ip))


def regenerate_recovery_codes(principal: Principal, code: str) -> list[str]:
    """New recovery codes for a current code; the old ones stop working. Wrong codes count
    with the sign-in codes (429 beyond)."""
    return _guarded(_mfa_key(principal.user),
                    lambda: mfa.regenerate_recovery_codes(principal.user, code, ip=principal.ip))


def create_first_admin(email: str, password: str, display_name: str = "",
                       ip: str = "") -> User:
    """The first-run set-up: only while no user exists at all."""
    with database.atomic():
        if User.select().exists():
            raise Conflict("The appliance is already set up.", code="setup_done")
        user = create_user(email, password, display_name, role="admin", verified=True)
        audit.record("admin.created", actor=user, target_type="user", target_id=user.id,
                     ip=ip, via="setup")
    return user


def create_admin(email: str, password: str, display_name: str = "") -> User:
    """`appliance create-admin`: a trusted shell makes an administrator at any time."""
    with database.atomic():
        user = create_user(email, password, display_name, role="admin", verified=True)
        audit.record("admin.created", actor=user, target_type="user", target_id=user.id,
                     via="cli")
    return user


def get_user(user_id: str) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


def user_count() -> int:
    return User.select().count()
