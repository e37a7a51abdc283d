"""Redaction of secrets in URLs and values: the one place that knows what a secret is."""

from __future__ import annotations

import difflib
import re

MASK = "***"

# userinfo password (``//user:secret@`` or ``//:secret@``) and query ``password=``.
_USERINFO_PASSWORD = re.compile(r"(//[^:/@?#]*:)[^@/?#]*(@)")
_QUERY_ARGUMENT = re.compile(r"([?&])([^=&#]*)=([^&#]*)")

SECRET_KEYS = frozenset({"password", "sentinel_password"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password (userinfo, or a query argument named like one) as ***."""
    url = _USERINFO_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(2), url)
    return _QUERY_ARGUMENT.sub(
        lambda m: f"{m.group(1)}{m.group(2)}={MASK if looks_secret(m.group(2)) else m.group(3)}",
        url,
    )


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
