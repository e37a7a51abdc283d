"""The add-on's own errors as a user reads them, and the one rule that tells an error
reply from a lost connection (``errors.is_error_reply``), on the errors redis-py and the
socket raise (mutation testing found both unpinned)."""

from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyramid_redisx.errors import DEMOTED_MASTER, RedisCircuitOpen, is_error_reply


@pytest.mark.parametrize(
    ("error", "reply"),
    [
        (ResponseError("WRONGTYPE", status_code="WRONGTYPE"), True),
        (BusyLoadingError("loading", status_code="LOADING"), True),
        (RedisConnectionError(DEMOTED_MASTER), True),
        (RedisConnectionError("Connection closed by server."), False),
        (RedisTimeoutError("Timeout reading from socket"), False),
        # what a socket raises before redis-py wraps it (asyncio's loops see these)
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (TimeoutError("timed out"), False),
        (OSError("Network is unreachable"), False),
    ],
)
def test_is_error_reply(error: BaseException, reply: bool) -> None:
    assert is_error_reply(error) is reply


def test_circuit_open_message_while_a_probe_is_running() -> None:
    error = RedisCircuitOpen("default", "redis://127.0.0.1:6399/0", "Error 111", 2.5, 0.0)
    assert str(error) == (
        "redis client default at redis://127.0.0.1:6399/0: circuit open for 2.50 s, "
        "commands fail at once (a probe is running); last failure: Error 111"
    )
    assert isinstance(error, RedisConnectionError)  # handled where connection errors are


@pytest.mark.parametrize(("seconds", "shown"), [(0.004, "0.00"), (0.5, "0.50"), (1.25, "1.25")])
def test_circuit_open_message_names_the_next_probe(seconds: float, shown: str) -> None:
    error = RedisCircuitOpen("a b", "redis://h:1/2", "cause", 0.75, seconds)
    assert f"(next probe in {shown} s)" in str(error)
    assert (error.client, error.url, error.cause) == ("a b", "redis://h:1/2", "cause")
    assert (error.open_seconds, error.next_probe_seconds) == (0.75, seconds)
