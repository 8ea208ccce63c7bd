"""TOTP second factor: enrolment, sign-in codes, replay, drift, recovery codes, disabling."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest
from appliance.models import AuditLog, MfaFactor, RecoveryCode, User
from appliance.services import clock, ids
from appliance.services.accounts import mfa

# 10 s into a 30-second step, so "one step back" is unambiguous.
START = dt.datetime(2030, 5, 17, 9, 0, 10, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=30)


@pytest.fixture
def ctx(app):
    clock.freeze(START)
    with app.app_context():
        yield


def make_user(email: str = "ada@example.com") -> User:
    now = clock.now()
    return User.create(id=ids.new_id("usr"), email=email, password_hash="x",
                       password_changed_at=now, created_at=now, updated_at=now)


@pytest.fixture
def user(ctx) -> User:
    return make_user()


def code_at(secret: str, when: dt.datetime | None = None) -> str:
    return pyotp.TOTP(secret).at(when or clock.now())


def enable(user: User) -> tuple[str, list[str]]:
    """Enrol and confirm, then move on a few minutes so the confirming step is long past."""
    enrolment = mfa.begin_enrolment(user, "Appliance")
    codes = mfa.confirm_enrolment(user, code_at(enrolment.secret))
    clock.advance(dt.timedelta(minutes=5))
    return enrolment.secret, codes


def assert_code_invalid(excinfo: pytest.ExceptionInfo) -> None:
    assert excinfo.value.code == "mfa_code_invalid"
    assert excinfo.value.details == {"field": "code"}


def audit_actions(user: User) -> list[str]:
    return [row.action for row in
            AuditLog.select().where(AuditLog.actor == user.id).order_by(AuditLog.created_at)]


# Enrolment

def test_enrolment_gives_a_secret_an_otpauth_uri_and_an_svg_qr_code(user):
    enrolment = mfa.begin_enrolment(user, "My Cloud")

    assert re.fullmatch(r"[A-Z2-7]{32}", enrolment.secret)  # 160 bits of base32
    parsed = pyotp.parse_uri(enrolment.otpauth_uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == enrolment.secret
    assert parsed.name == "ada@example.com"
    assert parsed.issuer == "My Cloud"
    assert parsed.interval == 30 and parsed.digits == 6
    uri = urlparse(enrolment.otpauth_uri)
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert parse_qs(uri.query)["issuer"] == ["My Cloud"]

    svg = enrolment.qr_svg
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg
    # sized by the page's CSS through its viewBox, drawn at about 200 units
    width = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    assert 160 <= width <= 260
    assert 'stroke="#000"' in svg and 'fill="#fff"' in svg
    assert enrolment.secret not in repr(enrolment)


def test_a_begun_enrolment_is_pending_not_enabled(user):
    enrolment = mfa.begin_enrolment(user, "Appliance")

    factor = MfaFactor.get(MfaFactor.user == user.id)
    assert factor.secret == enrolment.secret
    assert factor.confirmed_at is None
    assert mfa.is_enabled(user) is False
    with pytest.raises(Conflict) as excinfo:
        mfa.verify(user, code_at(enrolment.secret))
    assert excinfo.value.code == "mfa_not_enabled"


def test_beginning_again_replaces_the_pending_secret(user):
    first = mfa.begin_enrolment(user, "Appliance")
    second = mfa.begin_enrolment(user, "Appliance")

    assert first.secret != second.secret
    assert [f.secret for f in MfaFactor.select().where(MfaFactor.user == user.id)] == [
        second.secret]
    stale = code_at(first.secret)
    if stale != code_at(second.secret):  # the two codes collide once in a million
        with pytest.raises(InvalidRequest):
            mfa.confirm_enrolment(user, stale)


def test_confirm_refuses_a_wrong_code_and_leaves_mfa_off(user):
    enrolment = mfa.begin_enrolment(user, "Appliance")
    right = code_at(enrolment.secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    for bad in (wrong, "", "abcdef", "12345", code_at(enrolment.secret, START - 2 * STEP)):
        with pytest.raises(InvalidRequest) as excinfo:
            mfa.confirm_enrolment(user, bad)
        assert_code_invalid(excinfo)

    assert mfa.is_enabled(user) is False
    assert RecoveryCode.select().count() == 0
    assert "mfa.enabled" not in audit_actions(user)


def test_confirm_with_the_right_code_returns_ten_distinct_codes_and_stores_only_hashes(user):
    enrolment = mfa.begin_enrolment(user, "Appliance")

    codes = mfa.confirm_enrolment(user, code_at(enrolment.secret))

    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", code)
    stored = {row.code_hash for row in RecoveryCode.select().where(RecoveryCode.user == user.id)}
    assert stored == {ids.hash_token(code.replace("-", "")) for code in codes}
    for code in codes:
        assert not any(code in value or code.replace("-", "") in value for value in stored)
    assert mfa.is_enabled(user) is True
    assert mfa.remaining_recovery_codes(user) == 10
    assert MfaFactor.get(MfaFactor.user == user.id).confirmed_at == START
    row = AuditLog.get(AuditLog.action == "mfa.enabled")
    assert row.actor_id == user.id and row.success


def test_confirm_without_a_begun_enrolment_is_refused(user):
    with pytest.raises(Conflict) as excinfo:
        mfa.confirm_enrolment(user, "123456")
    assert excinfo.value.code == "mfa_not_pending"


def test_confirm_again_after_enabling_is_refused(user):
    secret, _ = enable(user)
    with pytest.raises(Conflict) as excinfo:
        mfa.confirm_enrolment(user, code_at(secret))
    assert excinfo.value.code == "mfa_already_enabled"


def test_begin_enrolment_is_refused_once_mfa_is_enabled(user):
    secret, _ = enable(user)

    with pytest.raises(Conflict) as excinfo:
        mfa.begin_enrolment(user, "Appliance")

    assert excinfo.value.code == "mfa_already_enabled"
    assert MfaFactor.get(MfaFactor.user == user.id).secret == secret


# Verifying codes at sign-in

def test_verify_accepts_the_current_code_once_and_refuses_its_replay(user):
    secret, _ = enable(user)
    code = code_at(secret)

    assert mfa.verify(user, code) == "totp"
    with pytest.raises(InvalidRequest) as excinfo:
        mfa.verify(user, code)
    assert_code_invalid(excinfo)
    clock.advance(dt.timedelta(seconds=15))  # same code, still inside the drift window
    with pytest.raises(InvalidRequest):
        mfa.verify(user, code)


def test_the_code_that_confirmed_enrolment_cannot_sign_in(user):
    enrolment = mfa.begin_enrolment(user, "Appliance")
    code = code_at(enrolment.secret)
    mfa.confirm_enrolment(user, code)

    with pytest.raises(InvalidRequest):
        mfa.verify(user, code)


def test_verify_accepts_the_previous_steps_code_but_not_two_steps_back(user):
    secret, _ = enable(user)
    now = clock.now()

    with pytest.raises(InvalidRequest):
        mfa.verify(user, code_at(secret, now - 2 * STEP))
    assert mfa.verify(user, code_at(secret, now - STEP)) == "totp"


def test_verify_accepts_the_next_steps_code_but_not_two_steps_ahead(user):
    secret, _ = enable(user)
    now = clock.now()

    with pytest.raises(InvalidRequest):
        mfa.verify(user, code_at(secret, now + 2 * STEP))
    assert mfa.verify(user, code_at(secret, now + STEP)) == "totp"


def test_after_a_code_was_used_an_older_step_is_refused(user):
    secret, _ = enable(user)
    now = clock.now()
    previous = code_at(secret, now - STEP)

    assert mfa.verify(user, code_at(secret, now)) == "totp"
    with pytest.raises(InvalidRequest):
        mfa.verify(user, previous)
    clock.advance(STEP)
    assert mfa.verify(user, code_at(secret)) == "totp"


def test_verify_stores_the_accepted_time_step(user):
    secret, _ = enable(user)
    mfa.verify(user, code_at(secret))
    expected = int(clock.now().timestamp()) // 30
    assert MfaFactor.get(MfaFactor.user == user.id).last_used_step == expected


def test_verify_allows_spaces_in_a_code(user):
    secret, _ = enable(user)
    code = code_at(secret)
    assert mfa.verify(user, f" {code[:3]} {code[3:]} ") == "totp"


def test_verify_refuses_codes_that_are_not_codes(user):
    enable(user)
    for bad in ("", "   ", "12345", "1234567", "abcdef", "\u0661\u0662\u0663\u0664\u0665\u0666",
                "0000-0000-0000"):
        with pytest.raises(InvalidRequest) as excinfo:
            mfa.verify(user, bad)
        assert_code_invalid(excinfo)


def test_verify_without_mfa_is_refused_as_not_enabled(user):
    with pytest.raises(Conflict) as excinfo:
        mfa.verify(user, "123456")
    assert excinfo.value.code == "mfa_not_enabled"


def test_a_recovery_code_works_once(user):
    _, codes = enable(user)

    assert mfa.verify(user, codes[0]) == "recovery"
    assert mfa.remaining_recovery_codes(user) == 9
    with pytest.raises(InvalidRequest) as excinfo:
        mfa.verify(user, codes[0])
    assert_code_invalid(excinfo)
    assert mfa.remaining_recovery_codes(user) == 9


def test_a_recovery_code_ignores_case_dashes_and_spaces(user):
    _, codes = enable(user)
    typed = " " + codes[3].upper().replace("-", " ") + " "
    assert mfa.verify(user, typed) == "recovery"


def test_one_users_recovery_code_does_not_work_for_another(ctx):
    ada, bob = make_user("ada@example.com"), make_user("bob@example.com")
    _, ada_codes = enable(ada)
    enable(bob)

    with pytest.raises(InvalidRequest):
        mfa.verify(bob, ada_codes[0])
    assert mfa.remaining_recovery_codes(ada) == 10


def test_two_concurrent_verifications_of_one_code_let_exactly_one_through(user):
    secret, _ = enable(user)
    code = code_at(secret)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def sign_in() -> None:
        with database.connection_context():
            barrier.wait()
            try:
                outcomes.append(mfa.verify(user, code))
            except InvalidRequest as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=sign_in) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["mfa_code_invalid", "totp"]


def test_a_code_read_as_unused_by_a_stale_request_is_still_refused(user, monkeypatch):
    """The claim is a conditional UPDATE, not the earlier read: a request that read the
    factor before another used the code (as under READ COMMITTED) still cannot reuse it."""
    secret, _ = enable(user)
    code = code_at(secret)
    stale = MfaFactor.get(MfaFactor.user == user.id)
    assert mfa.verify(user, code) == "totp"

    monkeypatch.setattr(mfa, "_confirmed_factor", lambda _user: stale)
    with pytest.raises(InvalidRequest) as excinfo:
        mfa.verify(user, code)
    assert_code_invalid(excinfo)


def test_two_concurrent_uses_of_one_recovery_code_let_exactly_one_through(user):
    _, codes = enable(user)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def sign_in() -> None:
        with database.connection_context():
            barrier.wait()
            try:
                outcomes.append(mfa.verify(user, codes[0]))
            except InvalidRequest as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=sign_in) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["mfa_code_invalid", "recovery"]


# Turning off, renewing recovery codes

def test_disable_needs_a_valid_code_and_removes_everything(user):
    secret, codes = enable(user)
    right = code_at(secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    with pytest.raises(InvalidRequest):
        mfa.disable(user, wrong)
    assert mfa.is_enabled(user) is True
    assert mfa.remaining_recovery_codes(user) == 10

    mfa.disable(user, right)

    assert mfa.is_enabled(user) is False
    assert MfaFactor.select().where(MfaFactor.user == user.id).count() == 0
    assert RecoveryCode.select().where(RecoveryCode.user == user.id).count() == 0
    row = AuditLog.get(AuditLog.action == "mfa.disabled")
    assert row.actor_id == user.id and json.loads(row.details)["method"] == "totp"
    with pytest.raises(Conflict) as excinfo:
        mfa.verify(user, codes[1])
    assert excinfo.value.code == "mfa_not_enabled"


def test_disable_accepts_a_recovery_code(user):
    _, codes = enable(user)
    mfa.disable(user, codes[0])
    assert mfa.is_enabled(user) is False


def test_disable_without_mfa_is_refused_as_not_enabled(user):
    with pytest.raises(Conflict) as excinfo:
        mfa.disable(user, "123456")
    assert excinfo.value.code == "mfa_not_enabled"


def test_mfa_can_be_enrolled_again_after_disabling(user):
    secret, _ = enable(user)
    mfa.disable(user, code_at(secret))
    clock.advance(STEP)

    enrolment = mfa.begin_enrolment(user, "Appliance")
    assert enrolment.secret != secret
    assert len(mfa.confirm_enrolment(user, code_at(enrolment.secret))) == 10
    assert audit_actions(user) == ["mfa.enabled", "mfa.disabled", "mfa.enabled"]


def test_regenerating_recovery_codes_replaces_the_old_ones(user):
    secret, old = enable(user)
    mfa.verify(user, old[0])

    new = mfa.regenerate_recovery_codes(user, code_at(secret))

    assert len(set(new)) == 10 and not set(new) & set(old)
    assert mfa.remaining_recovery_codes(user) == 10
    with pytest.raises(InvalidRequest):
        mfa.verify(user, old[1])
    assert mfa.verify(user, new[0]) == "recovery"
    assert "mfa.recovery_codes_regenerated" in audit_actions(user)


def test_regenerating_recovery_codes_needs_a_valid_code(user):
    secret, old = enable(user)
    with pytest.raises(InvalidRequest):
        mfa.regenerate_recovery_codes(user, code_at(secret, clock.now() - 3 * STEP))
    assert mfa.verify(user, old[0]) == "recovery"
