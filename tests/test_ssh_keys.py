"""SSH public keys on the account: formats, fingerprints as ssh-keygen prints them."""

from __future__ import annotations

import base64

import pytest

from tests import sshkeys
from tests.factories import api, bearer, login, make_user


@pytest.mark.parametrize("case", [
    (*sshkeys.ED25519, "ssh-ed25519", 256),
    (*sshkeys.RSA_2048, "ssh-rsa", 2048),
    (*sshkeys.ECDSA_P256, "ecdsa-sha2-nistp256", 256),
], ids=["ed25519", "rsa", "ecdsa"])
def test_it_accepts_openssh_keys_with_ssh_keygens_fingerprint(client, owner, case):
    key, fingerprint, key_type, bits = case
    response = api(client, "POST", "/account/ssh-keys", owner, json={"public_key": key})
    assert response.status_code == 201, response.get_json()
    added = response.get_json()
    assert (added["fingerprint"], added["key_type"], added["bits"]) == (fingerprint, key_type,
                                                                         bits)
    assert added["public_key"] == " ".join(key.split()[:2])
    comment = key.split(None, 2)[2] if len(key.split()) > 2 else key_type
    assert added["name"] == comment


def test_a_duplicate_is_refused(client, owner):
    key = sshkeys.ED25519[0]
    assert api(client, "POST", "/account/ssh-keys", owner,
               json={"public_key": key, "name": "laptop"}).status_code == 201
    again = api(client, "POST", "/account/ssh-keys", owner,
                json={"public_key": key.rsplit(" ", 1)[0] + " other comment"})
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "ssh_key_exists"


def _blob(key: str) -> bytes:
    return base64.b64decode(key.split()[1])


@pytest.mark.parametrize("text", [
    "",
    "ssh-ed25519",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    "ssh-ed25519 not*base64",
    "ssh-ed25519 " + base64.b64encode(_blob(sshkeys.ED25519[0])[:-3]).decode(),
    "ssh-rsa " + sshkeys.ED25519[0].split()[1],  # type and data disagree
    sshkeys.RSA_1024[0],  # too short
    sshkeys.ED25519[0] + "\n" + sshkeys.RSA_2048[0],  # two keys
    "-----BEGIN OPENSSH PRIVATE KEY-----",
])
def test_malformed_keys_are_400_naming_the_field(client, owner, text):
    response = api(client, "POST", "/account/ssh-keys", owner, json={"public_key": text})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "public_key"


def test_keys_are_listed_and_deleted_only_by_their_owner(app, client, owner):
    added = api(client, "POST", "/account/ssh-keys", owner,
                json={"public_key": sshkeys.RSA_2048[0], "name": "<b>work</b>"}).get_json()
    listed = api(client, "GET", "/account/ssh-keys", owner).get_json()
    assert [k["id"] for k in listed["data"]] == [added["id"]]
    assert listed["data"][0]["name"] == "<b>work</b>"  # JSON carries it as text
    make_user(app, "other@example.test")
    other = bearer(login(client, "other@example.test"))
    assert api(client, "GET", "/account/ssh-keys", other).get_json()["data"] == []
    assert api(client, "DELETE", f"/account/ssh-keys/{added['id']}", other).status_code == 404
    assert api(client, "DELETE", f"/account/ssh-keys/{added['id']}", owner).status_code == 204
    assert api(client, "GET", f"/account/ssh-keys/{added['id']}", owner).status_code == 404
