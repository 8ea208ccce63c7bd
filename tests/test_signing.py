"""Webhook signatures: the Standard Webhooks spec's test vector, round trips, refusals,
and agreement with independent implementations (the `standardwebhooks` and `stripe`
packages)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from appliance.services.webhooks import signing
from appliance.services.webhooks.signing import SignatureError

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_700_000_000
BODY = b'{"type": "webhook.test", "timestamp": "2023-11-14T22:13:20Z", "data": {}}'


def signed(secrets: list[str], body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return signing.headers(secrets, "msg_1", timestamp, body)


def test_it_reproduces_the_spec_test_vector():
    signature = signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert signature == VECTOR_SIGNATURE


def test_it_verifies_the_spec_test_vector():
    received = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
                "webhook-signature": VECTOR_SIGNATURE}
    signing.verify(VECTOR_SECRET, received, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_a_generated_secret_holds_32_random_bytes():
    first, second = signing.generate_secret(), signing.generate_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert first != second


def test_a_delivery_carries_the_standard_headers():
    secret = signing.generate_secret()
    sent = signed([secret])
    assert sent["webhook-id"] == "msg_1"
    assert sent["webhook-timestamp"] == str(NOW)
    assert sent["webhook-signature"] == signing.sign(secret, "msg_1", NOW, BODY)
    assert sent["Content-Type"] == "application/json"


def test_a_signed_delivery_verifies():
    secret = signing.generate_secret()
    signing.verify(secret, signed([secret]), BODY, now=NOW)


def test_header_names_match_in_any_case():
    secret = signing.generate_secret()
    shouting = {name.upper(): value for name, value in signed([secret]).items()}
    signing.verify(secret, shouting, BODY, now=NOW)


def test_it_refuses_a_tampered_body():
    secret = signing.generate_secret()
    with pytest.raises(SignatureError, match="no signature matches"):
        signing.verify(secret, signed([secret]), BODY + b" ", now=NOW)


def test_it_refuses_another_secret():
    sent = signed([signing.generate_secret()])
    with pytest.raises(SignatureError, match="no signature matches"):
        signing.verify(signing.generate_secret(), sent, BODY, now=NOW)


def test_it_refuses_a_stale_timestamp():
    secret = signing.generate_secret()
    with pytest.raises(SignatureError, match="too old"):
        signing.verify(secret, signed([secret], timestamp=NOW - 301), BODY, now=NOW)


def test_it_refuses_a_timestamp_from_the_future():
    secret = signing.generate_secret()
    with pytest.raises(SignatureError, match="future"):
        signing.verify(secret, signed([secret], timestamp=NOW + 301), BODY, now=NOW)


def test_it_accepts_a_timestamp_at_the_edge_of_the_tolerance():
    secret = signing.generate_secret()
    signing.verify(secret, signed([secret], timestamp=NOW - 300), BODY, now=NOW)
    signing.verify(secret, signed([secret], timestamp=NOW - 30), BODY, now=NOW, tolerance=60)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_it_refuses_a_missing_header(missing):
    secret = signing.generate_secret()
    sent = signed([secret])
    del sent[missing]
    with pytest.raises(SignatureError, match=f"{missing} header is missing"):
        signing.verify(secret, sent, BODY, now=NOW)


def test_it_refuses_a_timestamp_that_is_not_a_number():
    secret = signing.generate_secret()
    sent = {**signed([secret]), "webhook-timestamp": "1e9"}
    with pytest.raises(SignatureError, match="not a number"):
        signing.verify(secret, sent, BODY, now=NOW)


def test_during_rotation_either_secret_verifies():
    old, new = signing.generate_secret(), signing.generate_secret()
    sent = signed([old, new])
    assert len(sent["webhook-signature"].split(" ")) == 2
    signing.verify(old, sent, BODY, now=NOW)
    signing.verify(new, sent, BODY, now=NOW)
    with pytest.raises(SignatureError):
        signing.verify(signing.generate_secret(), sent, BODY, now=NOW)


def test_it_skips_other_versions_and_garbage_in_the_signature_list():
    secret = signing.generate_secret()
    good = signing.sign(secret, "msg_1", NOW, BODY)
    sent = {**signed([secret]), "webhook-signature": f"v1a,abc v1,%%%% nonsense {good}"}
    signing.verify(secret, sent, BODY, now=NOW)


def test_the_right_bytes_under_another_version_are_not_accepted():
    secret = signing.generate_secret()
    good = signing.sign(secret, "msg_1", NOW, BODY)
    sent = {**signed([secret]), "webhook-signature": good.replace("v1,", "v2,")}
    with pytest.raises(SignatureError):
        signing.verify(secret, sent, BODY, now=NOW)


def test_verify_uses_the_appliance_clock_by_default():
    secret = signing.generate_secret()
    signing.verify(secret, signed([secret], timestamp=int(time.time())), BODY)
    with pytest.raises(SignatureError, match="too old"):
        signing.verify(secret, signed([secret], timestamp=NOW), BODY)


@pytest.mark.parametrize("secret", [
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no whsec_ prefix
    "whsec_not base64!",
    "whsec_" + base64.b64encode(b"x" * 16).decode(),  # shorter than 24 bytes
    "whsec_" + base64.b64encode(b"x" * 65).decode(),  # longer than 64 bytes
])
def test_a_malformed_secret_is_a_programming_error(secret):
    with pytest.raises(ValueError, match="webhook secret"):
        signing.sign(secret, "msg_1", NOW, BODY)


def test_signing_needs_at_least_one_secret():
    with pytest.raises(ValueError, match="at least one secret"):
        signing.signature_header([], "msg_1", NOW, BODY)


def test_the_standardwebhooks_package_accepts_our_deliveries():
    old, new = signing.generate_secret(), signing.generate_secret()
    sent = signed([old, new], timestamp=int(time.time()))
    assert Webhook(old).verify(BODY, sent) == {"type": "webhook.test",
                                               "timestamp": "2023-11-14T22:13:20Z",
                                               "data": {}}
    assert Webhook(new).verify(BODY, sent) is not None
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY + b" ", sent)


def test_we_accept_what_the_standardwebhooks_package_signs():
    secret = signing.generate_secret()
    timestamp = int(time.time())
    signature = Webhook(secret).sign("msg_2", datetime.fromtimestamp(timestamp, UTC), BODY.decode())
    received = {"Webhook-Id": "msg_2", "Webhook-Timestamp": str(timestamp),
                "Webhook-Signature": signature}
    signing.verify(secret, received, BODY)
    assert signature == signing.sign(secret, "msg_2", timestamp, BODY)


# Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`, keyed with
# the endpoint secret as text.

STRIPE_SECRET = "whsec_test_stripe_endpoint_secret"
STRIPE_BODY = b'{"id": "evt_1", "type": "checkout.session.completed"}'


def stripe_header(timestamp: int, body: bytes = STRIPE_BODY,
                  secret: str = STRIPE_SECRET) -> str:
    """Signed as Stripe's documentation describes, independently of the module."""
    payload = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def test_a_stripe_signature_verifies():
    signing.verify_stripe(STRIPE_SECRET, stripe_header(NOW), STRIPE_BODY, now=NOW)


def test_our_stripe_header_helper_signs_as_stripe_documents():
    assert signing.stripe_signature_header(STRIPE_SECRET, NOW, STRIPE_BODY) == \
        stripe_header(NOW)


def test_a_stripe_header_may_carry_several_signatures_and_other_schemes():
    other = stripe_header(NOW, secret="whsec_rolled_away").split(",")[1]
    good = stripe_header(NOW).split(",")[1]
    header = f"t={NOW},{other},v0=deadbeef,{good}"
    signing.verify_stripe(STRIPE_SECRET, header, STRIPE_BODY, now=NOW)


def test_it_refuses_a_tampered_stripe_body():
    with pytest.raises(SignatureError, match="no Stripe signature matches"):
        signing.verify_stripe(STRIPE_SECRET, stripe_header(NOW), STRIPE_BODY + b" ", now=NOW)


def test_it_refuses_a_stripe_signature_under_another_secret():
    with pytest.raises(SignatureError, match="no Stripe signature matches"):
        signing.verify_stripe("whsec_other", stripe_header(NOW), STRIPE_BODY, now=NOW)


def test_it_refuses_a_stale_stripe_timestamp():
    with pytest.raises(SignatureError, match="too old"):
        signing.verify_stripe(STRIPE_SECRET, stripe_header(NOW - 301), STRIPE_BODY, now=NOW)


@pytest.mark.parametrize(("header", "reason"), [
    ("", "missing"),
    (f"v1={'0' * 64}", "no single timestamp"),
    (f"t={NOW},t={NOW},v1={'0' * 64}", "no single timestamp"),
    (f"t={NOW},v0=abc", "no v1 signature"),
    (f"t=soon,v1={'0' * 64}", "not a number"),
])
def test_it_refuses_a_malformed_stripe_header(header, reason):
    with pytest.raises(SignatureError, match=reason):
        signing.verify_stripe(STRIPE_SECRET, header, STRIPE_BODY, now=NOW)


def test_it_refuses_stripe_requests_when_no_secret_is_configured():
    with pytest.raises(SignatureError, match="no Stripe webhook secret"):
        signing.verify_stripe("", stripe_header(NOW), STRIPE_BODY, now=NOW)


def test_the_stripe_package_agrees_with_us():
    import stripe  # a test extra (setup.cfg)
    timestamp = int(time.time())
    ours = signing.stripe_signature_header(STRIPE_SECRET, timestamp, STRIPE_BODY)
    assert stripe.WebhookSignature.verify_header(STRIPE_BODY, ours, STRIPE_SECRET, 300)
    theirs = stripe.WebhookSignature.generate_signature_header(
        STRIPE_BODY.decode(), STRIPE_SECRET, timestamp)
    signing.verify_stripe(STRIPE_SECRET, theirs, STRIPE_BODY)
