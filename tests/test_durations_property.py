"""The duration grammar, as properties (hypothesis): every span it documents converts, in
any case and spacing; what it refuses says what it accepts, and that hint's own examples
convert; each key's cap holds (a day for the client's waits, a year for cache lifetimes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyramid_redisx import http_cache
from pyramid_redisx.settings import _UNITS, CLIENT_KEYS, MAX_SECONDS, duration

DAY, WEEK = 86_400.0, 604_800.0
CLIENT_DURATIONS = {
    name: setting.convert
    for name, setting in CLIENT_KEYS.items()
    if name in ("pool_timeout", "socket_connect_timeout", "socket_timeout",
                "health_check_interval", "retry_backoff_cap", "startup_check_timeout")
}  # fmt: skip
CACHE_DURATIONS: dict[str, Callable[[object], float]] = {
    "expire_after": http_cache._expire_after,
    "ttl_offset": http_cache._whole_seconds,
}
ALL = {**CLIENT_DURATIONS, **CACHE_DURATIONS}

numbers = st.builds(
    lambda whole, fraction: (
        (f"{whole}" if whole is not None else "") + (f".{fraction}" if fraction is not None else "")
    ),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.one_of(st.none(), st.from_regex(r"\A[0-9]{1,6}\Z")),
).filter(bool)
units = st.sampled_from(sorted(_UNITS))
spaces = st.sampled_from(["", " ", "  ", "\t"])


def cased(word: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if flip else c for c, flip in zip(word, flips + [False] * 20, strict=False)
    )


@given(numbers, units, spaces, spaces, spaces, st.lists(st.booleans(), max_size=12))
def test_every_unit_converts_in_any_case_and_spacing(
    number: str, unit: str, before: str, between: str, after: str, flips: list[bool]
) -> None:
    text = f"{before}{number}{between}{cased(unit, flips)}{after}"
    expected = float(Decimal(number)) * _UNITS[unit]
    convert = duration(limit=(math.inf, "any"))
    assert convert(text) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(st.floats(0, 30 * DAY, allow_nan=False))
def test_numbers_and_timedeltas_are_seconds(seconds: float) -> None:
    convert = duration(limit=(math.inf, "any"))
    assert convert(seconds) == seconds
    assert convert(timedelta(seconds=seconds)) == pytest.approx(seconds, abs=1e-6)


@given(
    st.one_of(
        st.text(alphabet="abcxyz-+*/?!e ", min_size=1),  # words, signs, exponents
        st.builds(
            lambda n, u: f"{n} {u}",
            st.integers(1, 99),
            st.sampled_from(["years", "fortnights", "parsecs", "msec.", "hours ago", "1"]),
        ),
        st.builds(lambda n: f"-{n}", st.integers(1, 10**6)),
        st.sampled_from([math.nan, -1.0, -0.001, True, None, [], "1e3", "1,5"]),
    )
)
def test_what_is_refused_says_what_is_accepted(value: object) -> None:
    for name, convert in ALL.items():
        if name == "expire_after" and value in ("-1", -1.0):
            continue  # -1 is requests-cache's "never"
        with pytest.raises((ValueError, TypeError)) as raised:
            convert(value)
        if isinstance(raised.value, ValueError):
            assert str(raised.value).startswith("expected a duration"), (name, raised.value)


def _examples(message: str) -> list[str]:
    """The values a hint gives as examples: ``seconds (0.2) or a span (200 ms, 3 s)``."""
    groups = re.findall(r"\(([^)]*)\)", message.split(":", 1)[1])
    assert groups, message
    return [example.strip() for group in groups for example in group.split(",")]


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_hint_never_contradicts_itself(name: str) -> None:
    """Each example a refusal gives is accepted by that very key (``1 hour`` was not)."""
    convert = ALL[name]
    with pytest.raises(ValueError) as raised:
        convert("soon")
    examples = _examples(str(raised.value))
    assert len(examples) >= 3, examples
    for example in examples:
        convert(example)
    if "never" in str(raised.value):
        assert convert("never") == -1


@given(st.floats(0, 365 * DAY))
def test_cache_lifetimes_accept_up_to_a_year(seconds: float) -> None:
    assert http_cache._expire_after(seconds) == seconds
    assert http_cache._whole_seconds(seconds) == math.ceil(seconds)


@given(st.floats(365 * DAY, 10**12, exclude_min=True))
def test_past_a_year_is_refused_with_the_cap_named(seconds: float) -> None:
    for convert in CACHE_DURATIONS.values():
        with pytest.raises(ValueError, match=re.escape("at most 31536000 seconds (365 days)")):
            convert(seconds)


@given(st.floats(DAY, 10**12, exclude_min=True), st.sampled_from(sorted(CLIENT_DURATIONS)))
def test_client_waits_keep_their_one_day_cap(seconds: float, name: str) -> None:
    assert MAX_SECONDS == DAY
    with pytest.raises(ValueError, match=re.escape("at most 86400 seconds (one day)")):
        CLIENT_DURATIONS[name](seconds)
    CLIENT_DURATIONS[name](DAY)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1 hour", 3600), ("2 hours", 7200), ("1.5h", 5400), ("1 day", DAY), ("2 days", 2 * DAY),
     ("1 week", WEEK), ("2 weeks", 2 * WEEK), ("604800", WEEK)],
)  # fmt: skip
def test_the_spans_the_issue_names(text: str, seconds: float) -> None:
    assert http_cache._whole_seconds(text) == seconds
    assert http_cache._expire_after(text) == seconds
