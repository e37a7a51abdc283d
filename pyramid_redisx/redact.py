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

    The userinfo runs to the *last* ``@`` (a password may hold one). A well-formed one
    keeps its user name (``user:***@``); one holding ``/ ? #`` cannot be split reliably
    and is hidden whole (``***@``). A query argument named like a secret hides its value
    and everything after it (an unencoded ``&`` or ``#`` would cut the password).
    """
    head, sep, rest = url.partition("//")
    if not sep:
        head, sep, rest = url.partition(":")
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        broken = any(ch in userinfo for ch in USERINFO_BREAKERS)
        rest = (MASK if broken else user + (":" + MASK if colon else "")) + "@" + rest
    match = next((m for m in _QUERY_ARGUMENT.finditer(rest) if looks_secret(m.group(2))), None)
    if match is not None:
        rest = rest[: match.start(3)] + MASK
    return head + sep + rest


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
