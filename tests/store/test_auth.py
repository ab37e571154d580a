"""looming.store.auth: only the exact token gets in, whatever the header."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from looming.store.auth import AccessPolicy, parse_rules

TOKEN = b"the-only-right-token-42"
POLICY = AccessPolicy(TOKEN)


def header(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


@given(user=st.binary().filter(lambda u: b":" not in u), password=st.binary())
def test_only_the_token_authenticates(user: bytes, password: bytes) -> None:
    client = POLICY.identify(header(user, password))
    if password == TOKEN:
        assert client is not None and client.authenticated
    else:
        assert client is None


@given(raw=st.binary(max_size=200))
def test_arbitrary_headers_never_authenticate(raw: bytes) -> None:
    client = POLICY.identify(raw)
    assert client is None or not client.authenticated


@given(password=st.binary())
def test_without_a_token_nobody_authenticates(password: bytes) -> None:
    assert AccessPolicy(None).identify(header(b"u", password)) is None


def test_first_matching_rule_decides() -> None:
    rules, anonymous = parse_rules(
        """
        anonymous_read = true
        [[rule]]
        branch = "release/*"
        anonymous = []
        token = ["read"]
        [[rule]]
        branch = "*"
        token = ["read", "write", "delete"]
        """
    )
    policy = AccessPolicy(TOKEN, rules, anonymous)
    user = policy.identify(header(b"u", TOKEN))
    assert user is not None
    anonymous_client = policy.identify(None)
    assert anonymous_client is not None
    assert policy.permissions(user, "release/1") == {"read"}
    assert policy.permissions(anonymous_client, "release/1") == set()
    assert policy.permissions(user, "main") == {"read", "write", "delete"}
    assert policy.permissions(anonymous_client, "main") == {"read"}
    assert policy.allows_all(anonymous_client, ["main"], "read")
    assert not policy.allows_all(anonymous_client, ["main", "release/1"], "read")
    assert AccessPolicy(None, rules, anonymous).permissions(user, "main") == {"read"}
