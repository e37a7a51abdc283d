"""Redaction of secrets in URLs and values: the one place that knows what a secret is."""

from __future__ import annotations

import difflib
import re

MASK = "***"

_QUERY_ARGUMENT = re.compile(r"([?&])([^=&#]*)=([^&#]*)")
# Characters that end a URL's userinfo early when left unencoded in a password.
USERINFO_BREAKERS = "/?#"

SECRET_KEYS = frozenset({"password", "sentinel_password"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password as ***, whether the URL parses or not.

    The userinfo runs to the *last* ``@`` (a password may hold one): a well-formed one
    keeps its user name (``user:***@``); one holding ``/ ? #`` cannot be split reliably
    and is hidden whole (``***@``). A query argument named like a secret hides its value
    and everything after it (an unencoded ``&`` or ``#`` would cut the password). When
    such an argument comes before the last ``@``, either may hold the other: all of the
    URL after the scheme is hidden.
    """
    head, sep, rest = url.partition("//")
    if not sep:
        head, sep, rest = url.partition(":")
    at = rest.rfind("@")
    secret = _secret_value_start(rest)
    if secret is not None and secret <= at:  # (== : the value starts with the '@')
        return head + sep + MASK
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        broken = any(ch in userinfo for ch in USERINFO_BREAKERS)
        head += sep + (MASK if broken else user + (":" + MASK if colon else "")) + "@"
        sep = ""
        secret = _secret_value_start(rest)
    if secret is not None:
        rest = rest[:secret] + MASK
    return head + sep + rest


def _secret_value_start(text: str) -> int | None:
    """Where the value of the first query argument named like a secret starts."""
    for match in _QUERY_ARGUMENT.finditer(text):
        if looks_secret(match.group(2)):
            return match.start(3)
    return None


def looks_secret(option: str) -> bool:
    """True for our secret keys and for anything named like one (``pasword``, ``token``)."""
    lowered = option.lower()
    return (
        option in SECRET_KEYS
        or any(word in lowered for word in ("pass", "pwd", "secret", "token", "auth", "cred"))
        or bool(difflib.get_close_matches(lowered, SECRET_KEYS, n=1, cutoff=0.7))
    )


def redact_value(option: str, value: object) -> object:
    """The value of ``option`` as it may be shown to a user."""
    if looks_secret(option):
        return MASK if value not in (None, "") else value
    if option == "url" and isinstance(value, str):
        return redact_url(value)
    return value
