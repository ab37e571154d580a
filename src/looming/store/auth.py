"""Who may read and write a store served over the network.

A served store knows at most one secret, the *token* (from ``--token-file``
or the ``LOOMING_STORE_TOKEN`` environment variable). A client proves it
holds the token with HTTP Basic authentication, the token as the password
(any user name): what ``git``'s credential helpers, a URL such as
``http://user:TOKEN@host/`` and ``curl -u user:TOKEN`` send. The password
is compared in constant time.

What each kind of client may do is decided per branch by an *access file*
(TOML, ``--access FILE``). Rules are tried in order; the first whose
``branch`` pattern (shell-style, ``*`` matches ``/`` too) matches decides::

    anonymous_read = false            # read for anonymous clients, unless a rule says

    [[rule]]
    branch = "main"
    anonymous = []                    # what clients without the token may do
    token = ["read", "write"]         # what clients with the token may do

    [[rule]]
    branch = "scratch/*"
    token = ["read", "write", "force-push", "delete"]

The permissions are ``read``, ``write`` (create a branch or move it
forward), ``force-push`` (move it to a commit that does not contain its
head) and ``delete``. A branch no rule matches gives the token ``read`` and
``write``; anonymous clients get ``read`` where no rule's ``anonymous``
says otherwise, and only when ``anonymous_read`` is true (or
``serve --anonymous-read``). Without a token nobody can write.
This module decides; :mod:`looming.store.http` asks it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from looming.store.errors import StoreError

TOKEN_ENV = "LOOMING_STORE_TOKEN"
PERMISSIONS = ("read", "write", "force-push", "delete")
TOKEN_DEFAULT = frozenset({"read", "write"})

NO_TOKEN = b"\0" * 32
ANY_OTHER_BRANCH = "\0"  # matched by a "*" rule, and by no rule naming branches
ENABLE_WRITES = (
    "this store takes no writes: no credentials are configured. Start it with "
    f"--token-file FILE (or set {TOKEN_ENV}) and send that token as the HTTP Basic "
    "password (git: a credential helper or http://user:TOKEN@host/; curl: -u user:TOKEN)"
)


class AccessConfigError(StoreError):
    """The token file or access file cannot be used; the message says why."""


@dataclass(frozen=True)
class Rule:
    """Permissions for branches matching ``branch``."""

    branch: str
    anonymous: frozenset[str] | None  # None: read when anonymous_read, else nothing
    token: frozenset[str]

    def matches(self, branch: str) -> bool:
        return fnmatch.fnmatchcase(branch, self.branch)


@dataclass(frozen=True)
class Client:
    """Who sent a request: ``authenticated`` when it carried the token."""

    authenticated: bool
    user: str = ""


ANONYMOUS = Client(False)


@dataclass(frozen=True)
class AccessPolicy:
    """The token (None: writes refused everywhere) and the per-branch rules."""

    token: bytes | None = None
    rules: tuple[Rule, ...] = ()
    anonymous_read: bool = False
    realm: str = "looming store"
    failures: list[int] = field(default_factory=lambda: [0], compare=False)

    # -------------------------------------------------------------- who

    def identify(self, authorization: bytes | None) -> Client | None:
        """The client an ``Authorization`` header names; None when it
        carries credentials that are wrong (or malformed)."""
        if authorization is None:
            return ANONYMOUS
        scheme, _, encoded = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            self.failures[0] += 1
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.failures[0] += 1
            return None
        user, colon, password = decoded.partition(b":")
        # Compared even when no token is configured (against one that never
        # matches, as the check after it says), so the work is the same.
        expected = self.token if self.token is not None else NO_TOKEN
        if not colon or not hmac.compare_digest(password, expected) or self.token is None:
            self.failures[0] += 1
            return None
        return Client(True, user.decode("utf-8", "replace"))

    # -------------------------------------------------------------- what

    def permissions(self, client: Client, branch: str) -> frozenset[str]:
        for rule in self.rules:
            if rule.matches(branch):
                if client.authenticated:
                    granted = rule.token
                elif rule.anonymous is not None:
                    granted = rule.anonymous
                else:
                    granted = frozenset({"read"}) if self.anonymous_read else frozenset()
                break
        else:
            if client.authenticated:
                granted = TOKEN_DEFAULT
            else:
                granted = frozenset({"read"}) if self.anonymous_read else frozenset()
        if self.token is None:
            granted = granted & {"read"}
        return granted

    def allows(self, client: Client, branch: str, permission: str) -> bool:
        return permission in self.permissions(client, branch)

    def allows_all(self, client: Client, branches: Iterable[str], permission: str) -> bool:
        """``permission`` on every branch given, and on one created later
        (:data:`ANY_OTHER_BRANCH`, a name no branch can have)."""
        return all(self.allows(client, b, permission) for b in [*branches, ANY_OTHER_BRANCH])

    def refusal(self, client: Client, branch: str, permission: str) -> str:
        """Why ``client`` may not do ``permission`` on ``branch`` (for a 401/403 body)."""
        if self.token is None and permission != "read":
            return ENABLE_WRITES
        if not client.authenticated:
            if self.token is None:
                return (
                    f"reading {branch!r} needs credentials, and none are configured: "
                    "serve with --anonymous-read, or with --token-file FILE and send the token"
                )
            return f"{permission} on branch {branch!r} needs credentials: send the token as the HTTP Basic password"
        return f"the token may not {permission} branch {branch!r} (see the access file's rules)"


# ------------------------------------------------------------------ loading


def read_token(path: str | None, environ: dict[str, str] | None = None) -> bytes | None:
    """The token from ``path`` (its first line), else from ``LOOMING_STORE_TOKEN``."""
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            with open(path, "rb") as file:
                text = file.read()
        except OSError as error:
            raise AccessConfigError(f"cannot read token file {path}: {error.strerror}") from None
        token = text.splitlines()[0].strip() if text.strip() else b""
        source = f"token file {path}"
    elif env.get(TOKEN_ENV):
        token = env[TOKEN_ENV].strip().encode()
        source = TOKEN_ENV
    else:
        return None
    if len(token) < 16:
        raise AccessConfigError(
            f"the {source} holds {len(token)} characters; use a token of at least 16 "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def _permissions(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AccessConfigError(f'{where} must be a list of permissions, such as ["read"]')
    unknown = [v for v in value if v not in PERMISSIONS]
    if unknown:
        raise AccessConfigError(
            f"{where}: unknown permission {unknown[0]!r}; use {', '.join(PERMISSIONS)}"
        )
    return frozenset(value)


def parse_rules(text: str, source: str = "the access file") -> tuple[tuple[Rule, ...], bool]:
    """The rules and ``anonymous_read`` of an access file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AccessConfigError(f"{source} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - {"anonymous_read", "rule"})
    if unknown:
        raise AccessConfigError(f"{source}: unknown setting {unknown[0]!r}")
    anonymous_read = data.get("anonymous_read", False)
    if not isinstance(anonymous_read, bool):
        raise AccessConfigError(f"{source}: anonymous_read must be true or false")
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise AccessConfigError(f"{source}: write rules as [[rule]] tables")
    rules: list[Rule] = []
    for index, entry in enumerate(entries, 1):
        where = f"{source}, rule {index}"
        extra = sorted(set(entry) - {"branch", "anonymous", "token"})
        if extra:
            raise AccessConfigError(f"{where}: unknown setting {extra[0]!r}")
        branch = entry.get("branch")
        if not isinstance(branch, str) or not branch:
            raise AccessConfigError(f'{where} needs branch = "PATTERN"')
        rules.append(
            Rule(
                branch,
                None
                if "anonymous" not in entry
                else _permissions(entry["anonymous"], f"{where}: anonymous"),
                _permissions(entry.get("token", sorted(TOKEN_DEFAULT)), f"{where}: token"),
            )
        )
    return tuple(rules), anonymous_read


def load_policy(
    *,
    token_file: str | None = None,
    access_file: str | None = None,
    anonymous_read: bool = False,
    environ: dict[str, str] | None = None,
) -> AccessPolicy:
    """The policy ``serve`` runs with, from its options."""
    token = read_token(token_file, environ)
    rules: Sequence[Rule] = ()
    if access_file is not None:
        try:
            with open(access_file, encoding="utf-8") as file:
                text = file.read()
        except OSError as error:
            raise AccessConfigError(
                f"cannot read access file {access_file}: {error.strerror}"
            ) from None
        rules, file_anonymous = parse_rules(text, access_file)
        anonymous_read = anonymous_read or file_anonymous
    return AccessPolicy(token, tuple(rules), anonymous_read)


def describe(policy: AccessPolicy) -> str:
    """One line for start-up: what this server lets in."""
    reads = "anyone may read" if policy.anonymous_read else "reads need the token"
    if policy.token is None:
        return (
            ("anyone may read; " if policy.anonymous_read else "nobody may read or write; ")
            + ENABLE_WRITES
            + ("" if policy.anonymous_read else "; --anonymous-read lets anyone read")
        )
    rules = f", {len(policy.rules)} branch rules" if policy.rules else ""
    return f"writes need the token; {reads}{rules}"
