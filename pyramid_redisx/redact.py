"""Redaction of secrets in URLs and values: the one place that knows what a secret is."""

from __future__ import annotations

import re

MASK = "***"

# userinfo password (``//user:secret@`` or ``//:secret@``) and query ``password=``.
_USERINFO_PASSWORD = re.compile(r"(//[^:/@?#]*:)[^@/?#]*(@)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|sentinel_password)=)[^&#]*", re.I)

SECRET_KEYS = frozenset({"password", "sentinel_password"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password (userinfo or query argument) replaced by ***."""
    url = _USERINFO_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(2), url)
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, url)


def redact_value(option: str, value: object) -> object:
    """The value of ``option`` as it may be shown to a user."""
    if option in SECRET_KEYS:
        return MASK if value not in (None, "") else value
    if option == "url" and isinstance(value, str):
        return redact_url(value)
    return value
