"""Accounts over JSON: signup, verification, sign-in with MFA, tokens, passwords, sessions."""

from __future__ import annotations

import datetime as dt

from flask import Response, request
from pydantic import Field

from appliance import config
from appliance.api.principal import USER, USER_OR_KEY, bearer_token, resolve_principal
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.errors import Unauthorized
from appliance.http import client_ip, user_agent
from appliance.models import User
from appliance.services.accounts import mfa, sessions, users
from appliance.services.accounts.sessions import TokenPair
from appliance.services.principal import Principal

bp = ApiBlueprint("auth_api", __name__)
TAGS = ("auth",)
AUTH = USER
REFRESH_COOKIE = "appliance_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"

Email = Field(min_length=3, max_length=254)
Password = Field(min_length=1, max_length=1024)
Code = Field(min_length=6, max_length=32)


class UserOut(Schema):
    id: str
    email: str
    display_name: str
    role: str
    status: str
    email_verified: bool
    mfa_enabled: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, email=user.email, display_name=user.display_name,
                   role=user.role, status=user.status,
                   email_verified=user.email_verified_at is not None,
                   mfa_enabled=mfa.is_enabled(user), created_at=user.created_at,
                   last_login_at=user.last_login_at)


class SignupIn(Schema):
    email: str = Email
    password: str = Password
    display_name: str = Field("", max_length=100)
    invite_code: str | None = Field(None, max_length=200)


class SignupOut(Schema):
    user: UserOut
    verification_sent: bool


class TokenIn(Schema):
    token: str = Field(min_length=1, max_length=200)


class LoginIn(Schema):
    email: str = Email
    password: str = Password


class LoginOut(Schema):
    """Either tokens, or `mfa_required` with an `mfa_token` for /auth/mfa/challenge."""

    mfa_required: bool
    mfa_token: str | None = None
    access_token: str | None = None
    token_type: str | None = None
    expires_in: int | None = None
    refresh_token: str | None = None
    user: UserOut | None = None


class MfaChallengeIn(Schema):
    mfa_token: str = Field(min_length=1, max_length=2000)
    code: str = Code


class RefreshIn(Schema):
    refresh_token: str | None = Field(None, max_length=200)


class Accepted(Schema):
    ok: bool
    message: str


class ForgotIn(Schema):
    email: str = Field(min_length=1, max_length=254)


class ResetIn(Schema):
    token: str = Field(min_length=1, max_length=200)
    password: str = Password


class ChangePasswordIn(Schema):
    current_password: str = Password
    new_password: str = Password


class ChangePasswordOut(Schema):
    ok: bool
    sessions_ended: int


class ProfileIn(Schema):
    display_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, min_length=3, max_length=254)
    current_password: str | None = Field(None, max_length=1024)


class ProfileOut(Schema):
    user: UserOut
    verification_sent: bool


class SessionOut(Schema):
    id: str
    kind: str
    user_agent: str
    ip: str
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    current: bool


class SessionList(Schema):
    data: list[SessionOut]
    page: PageInfo


class RevokedOut(Schema):
    revoked: int


class EnrolmentOut(Schema):
    secret: str
    otpauth_uri: str
    qr_svg: str


class CodeIn(Schema):
    code: str = Code


class DisableMfaIn(Schema):
    password: str = Password
    code: str = Code


class RecoveryCodesOut(Schema):
    recovery_codes: list[str]


def _tokens(user: User) -> Response:
    """Start an API session: tokens in the body, the refresh token also as a cookie."""
    users.record_sign_in(user, client_ip(), "api")
    pair = sessions.start_api_session(user, client_ip(), user_agent())
    return _token_response(pair)


def _token_response(pair: TokenPair) -> Response:
    body = LoginOut(mfa_required=False, access_token=pair.access_token, token_type="Bearer",  # noqa: S106
                    expires_in=pair.expires_in, refresh_token=pair.refresh_token,
                    user=UserOut.of(pair.user))
    response = Response(body.model_dump_json(), mimetype="application/json")
    response.set_cookie(REFRESH_COOKIE, pair.refresh_token, httponly=True, samesite="Strict",
                        secure=request.is_secure, path=REFRESH_COOKIE_PATH,
                        max_age=int(sessions.REFRESH_TOKEN_TTL.total_seconds()))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.operation("/auth/signup", "POST", summary="Create an account", tags=TAGS, body=SignupIn,
              response=SignupOut, status=201, errors=(403, 409, 429),
              ip_limited=True)
def signup(body: SignupIn):
    user = users.signup(body.email, body.password, body.display_name, body.invite_code,
                           ip=client_ip())
    return {"user": UserOut.of(user), "verification_sent": True}


@bp.operation("/auth/verify-email", "POST", summary="Confirm an email address", tags=TAGS,
              body=TokenIn, response=UserOut,
              ip_limited=True)
def verify_email(body: TokenIn):
    return UserOut.of(users.verify_email(body.token, ip=client_ip()))


@bp.operation("/auth/resend-verification", "POST", summary="Mail a new verification link",
              tags=TAGS, response=Accepted, status=202, auth=AUTH, errors=(409,),
              commits_apart=True)  # mails after its commit
def resend_verification(principal: Principal):
    users.resend_verification(principal.user)
    return {"ok": True, "message": f"A new link was sent to {principal.user.email}."}


@bp.operation("/auth/login", "POST", summary="Sign in with email and password", tags=TAGS,
              body=LoginIn, response=LoginOut, errors=(401, 403, 429),
              description="Returns a 15-minute access token and a 30-day refresh token "
                          "(also set as an HttpOnly cookie), or `mfa_required` with an "
                          "`mfa_token` to complete at /auth/mfa/challenge.",
              ip_limited=True)
def login(body: LoginIn):
    result = users.sign_in(body.email, body.password, ip=client_ip())
    if result.mfa_required:
        return {"mfa_required": True, "mfa_token": result.mfa_token}
    return _tokens(result.user)


@bp.operation("/auth/mfa/challenge", "POST", summary="Complete a sign-in with a TOTP or "
              "recovery code", tags=TAGS, body=MfaChallengeIn, response=LoginOut,
              errors=(401, 403, 429),
              ip_limited=True)
def mfa_challenge(body: MfaChallengeIn):
    return _tokens(users.complete_mfa(body.mfa_token, body.code, ip=client_ip()))


@bp.operation("/auth/refresh", "POST", summary="Rotate the refresh token", tags=TAGS,
              body=RefreshIn, response=LoginOut, errors=(401,),
              description="Send the refresh token in the body or the HttpOnly cookie. "
                          "A token that was already rotated revokes its whole family.",
              ip_limited=True)
def refresh(body: RefreshIn):
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("Send the refresh token.", code="invalid_token")
    pair = sessions.refresh(token, ip=client_ip())
    return _token_response(pair)


@bp.operation("/auth/logout", "POST", summary="Sign out (revoke this session)", tags=TAGS,
              status=204, errors=(401,))
def logout():
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if bearer_token():
        sessions.end_session(resolve_principal())
    elif refresh_token:
        sessions.end_session_by_refresh_token(refresh_token, ip=client_ip())
    else:
        raise Unauthorized("Send the access token or the refresh cookie.")
    response = Response(status=204)
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH)
    return response


@bp.operation("/auth/me", summary="The signed-in user (or the owner of the API key)", tags=TAGS,
              response=UserOut, auth=USER_OR_KEY)
def me(principal: Principal):
    return UserOut.of(principal.user)


@bp.operation("/auth/me", "PATCH", summary="Change display name or email", tags=TAGS,
              body=ProfileIn, response=ProfileOut, auth=AUTH, errors=(409,),
              description="A new email needs `current_password` and takes effect once "
                          "confirmed from the link mailed to it.")
def update_me(principal: Principal, body: ProfileIn):
    user, sent = users.update_profile(principal, display_name=body.display_name,
                                         email=body.email,
                                         current_password=body.current_password)
    return {"user": UserOut.of(user), "verification_sent": sent}


@bp.operation("/auth/password/forgot", "POST", summary="Mail a password reset link",
              tags=TAGS, body=ForgotIn, response=Accepted, errors=(429,),
              description="Always answers 200, whether or not the account exists.",
              ip_limited=True)
def forgot_password(body: ForgotIn):
    users.forgot_password(body.email, ip=client_ip())
    return {"ok": True, "message": "If an account has this address, a reset link is on its way."}


@bp.operation("/auth/password/reset", "POST", summary="Set a new password from a reset link",
              tags=TAGS, body=ResetIn, response=UserOut,
              ip_limited=True)
def reset_password(body: ResetIn):
    return UserOut.of(users.reset_password(body.token, body.password, ip=client_ip()))


@bp.operation("/auth/password/change", "POST", summary="Change the password", tags=TAGS,
              body=ChangePasswordIn, response=ChangePasswordOut, auth=AUTH,
              description="Ends every other session and refresh-token family.")
def change_password(principal: Principal, body: ChangePasswordIn):
    ended = users.change_password(principal, body.current_password, body.new_password)
    return {"ok": True, "sessions_ended": ended}


@bp.operation("/auth/sessions", summary="List your sessions", tags=TAGS,
              query=ListQuery, response=SessionList, auth=AUTH)
def list_sessions(principal: Principal, query: ListQuery):
    rows, next_cursor = sessions.list_sessions(principal, query.limit, query.cursor)
    return page_body([SessionOut(id=s.id, kind=s.kind, user_agent=s.user_agent, ip=s.ip,
                                 created_at=s.created_at, last_used_at=s.last_used_at,
                                 expires_at=s.expires_at, current=s.id == principal.session_id)
                      for s in rows], query.limit, next_cursor)


@bp.operation("/auth/sessions/<session_id>", "DELETE", summary="Revoke one session",
              tags=TAGS, status=204, auth=AUTH, errors=(404,))
def revoke_session(principal: Principal, session_id: str):
    sessions.revoke_session(principal, session_id)


@bp.operation("/auth/sessions/revoke-others", "POST", summary="Revoke every other session",
              tags=TAGS, response=RevokedOut, auth=AUTH)
def revoke_other_sessions(principal: Principal):
    return {"revoked": sessions.revoke_other_sessions(principal)}


@bp.operation("/auth/mfa/enroll", "POST", summary="Start TOTP enrolment", tags=TAGS,
              response=EnrolmentOut, auth=AUTH, errors=(409,))
def mfa_enroll(principal: Principal):
    enrolment = mfa.begin_enrolment(principal.user, config.active()["SITE_NAME"])
    return {"secret": enrolment.secret, "otpauth_uri": enrolment.otpauth_uri,
            "qr_svg": enrolment.qr_svg}


@bp.operation("/auth/mfa/confirm", "POST", summary="Confirm TOTP with a first code",
              tags=TAGS, body=CodeIn, response=RecoveryCodesOut, auth=AUTH, errors=(409,),
              description="Returns 10 recovery codes, shown only this once.")
def mfa_confirm(principal: Principal, body: CodeIn):
    return {"recovery_codes": mfa.confirm_enrolment(principal.user, body.code, ip=client_ip())}


@bp.operation("/auth/mfa/disable", "POST", summary="Turn TOTP off", tags=TAGS,
              body=DisableMfaIn, status=204, auth=AUTH, errors=(409,))
def mfa_disable(principal: Principal, body: DisableMfaIn):
    users.disable_mfa(principal, body.password, body.code)


@bp.operation("/auth/mfa/recovery-codes", "POST", summary="Replace the recovery codes",
              tags=TAGS, body=CodeIn, response=RecoveryCodesOut, auth=AUTH, errors=(409,))
def mfa_recovery_codes(principal: Principal, body: CodeIn):
    return {"recovery_codes": users.regenerate_recovery_codes(principal, body.code)}

