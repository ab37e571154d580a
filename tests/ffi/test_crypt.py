"""libcrypt through every backend, checked against OpenSSL's password hashing."""

from __future__ import annotations

import subprocess

from looming.ffi import LinkedLibrary


def openssl_sha512_crypt(phrase: str, salt: str) -> str:
    done = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, phrase],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_sha512_crypt_matches_openssl(cr: LinkedLibrary) -> None:
    for phrase, salt in [("secret", "saltsalt"), ("pässwörd with spaces", "abcdefghijklmnop")]:
        ours = cr.crypt(phrase, f"$6${salt}$")
        assert ours == openssl_sha512_crypt(phrase, salt)
        assert cr.crypt(phrase, ours) == ours  # verifying a password: hash with the hash as setting


def test_gensalt_is_deterministic_given_the_random_bytes(cr: LinkedLibrary) -> None:
    setting = cr.crypt_gensalt("$6$", 0, b"0123456789abcdef", 16)
    assert setting.startswith("$6$")
    assert setting == cr.crypt_gensalt("$6$", 0, b"0123456789abcdef", 16)
    hashed = cr.crypt("pw", setting)
    assert hashed.startswith(setting)


def test_an_invalid_setting_fails(cr: LinkedLibrary) -> None:
    # libxcrypt answers an unusable setting with a failure token, never a hash.
    result = cr.crypt("pw", "$unknown$xx")
    assert result is not None and result.startswith("*")
    assert cr.last_errno != 0
