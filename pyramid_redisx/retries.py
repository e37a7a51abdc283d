"""The retry policy and the write-safe rule: what may be sent again after a failure.

A connection error while connecting (refused, reset during the handshake, a failed
health-check PING) is retried up to ``retries`` times with backoff. Once a command was
sent, the server may have run it: it is sent again only if it cannot change data
(``reads_only``: redis-py's own ``READ_COMMANDS``); a write, a pipeline or a MULTI/EXEC
that may have been applied raises ``CommandMayHaveBeenApplied`` instead
(``may_have_been_applied``), which ``WriteSafeRetry`` never retries. ``retry_writes``
opts out. The clients (``client``, ``cluster``, ``aio``) apply the rule where they send;
this module says what it is. docs/retries.rst has the whole story.
"""

from __future__ import annotations

from time import sleep
from typing import Any

from redis.backoff import ExponentialWithJitterBackoff
from redis.commands import READ_COMMANDS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .breaker import CLOSED, NO_BREAKER, NoBreaker, new_breaker
from .errors import CommandMayHaveBeenApplied, TimeoutNotRetried, is_error_reply
from .settings import RedisOptions

RETRY_BACKOFF_BASE = 0.008  # seconds: first pause before jitter (redis-py's own base)


# Commands outside READ_COMMANDS that change no data either: sending one again after a
# lost connection is as safe as a read (a WATCH lost with its connection is set again
# on the new one, which is what redis-py's own retry of WATCH does).
SAFE_TO_SEND_AGAIN = READ_COMMANDS | {
    "PING", "ECHO", "WATCH", "UNWATCH", "TIME", "ROLE", "INFO", "LASTSAVE",
    "CLIENT ID", "CLIENT GETNAME", "CLIENT INFO", "CLIENT LIST", "CONFIG GET",
}  # fmt: skip
_READS: dict[Any, bool] = {}  # command name → reads_only, for the few names an app uses


def reads_only(name: Any) -> bool:
    """True for a command that cannot change data (redis-py's own ``READ_COMMANDS``,
    the set its cluster client sends to replicas, and ``SAFE_TO_SEND_AGAIN``'s few
    more): safe to send again after a failure. Any case: ``get`` is ``GET``."""
    answer = _READS.get(name)
    if answer is None:
        text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        answer = text.upper() in SAFE_TO_SEND_AGAIN
        if len(_READS) < 1000 and isinstance(name, str | bytes):
            _READS[name] = answer
    return answer


def may_have_been_applied(what: str, error: Exception) -> CommandMayHaveBeenApplied:
    return CommandMayHaveBeenApplied(
        f"{what} may have been applied: the connection failed after it was sent ({error}); "
        "not retried, since it can change data (redis.retry_writes = true retries it)"
    )


def pipeline_sent_again(retry_writes: bool, error: Exception, commands: Any) -> bool:
    """Whether a pipeline of ``commands`` (redis-py's ``(args, options)`` pairs) that
    failed with ``error`` once sent may go out again: writes retried by setting, an
    error reply (the server answered), or nothing in it that writes."""
    return retry_writes or is_error_reply(error) or all(reads_only(args[0]) for args, _ in commands)


def pipeline_may_have_been_applied(
    what: str, commands: Any, error: Exception
) -> CommandMayHaveBeenApplied:
    return may_have_been_applied(f"{what} of {len(commands)} commands with writes", error)


def retryable(error: Exception) -> bool:
    return not isinstance(error, CommandMayHaveBeenApplied | TimeoutNotRetried)


def connects_only(do: Any) -> bool:
    """True when a retried call is redis-py's bare socket connect, which
    ``connect_check_health`` gates apart from the handshake when a connection reconnects
    inside a command (``self._connect``; ``lambda: self._connect()`` in asyncio): its
    success is not the server's answer (``breaker.Breaker.connected_only``)."""
    name = getattr(do, "__name__", "")
    if name == "_connect":
        return True
    return name == "<lambda>" and do.__code__.co_names == ("_connect",)


class WriteSafeRetry(Retry):
    """redis-py's ``Retry``, except that it never retries ``CommandMayHaveBeenApplied``
    (nor the Cluster client's ``TimeoutNotRetried``), and that it is the circuit
    breaker's gate (``breaker``): every connect, command and pipeline passes here.

    The clients raise that error for a connection error after a command that can change
    data was sent (``client``, ``cluster``, ``aio``); every place redis-py retries through the connection's
    policy (commands, pipelines, WATCH) then lets it through instead of sending again.
    """

    breaker: NoBreaker = NO_BREAKER  # the pool's (each connection's copy shares it)

    def call_with_retry(
        self,
        do: Any,
        fail: Any,
        is_retryable: Any = None,
        with_failure_count: bool = False,
    ) -> Any:
        # redis-py's loop (redis.retry.Retry.call_with_retry), run here rather than
        # through it: on the common path, one try that succeeds, this is one frame and
        # no closure per command, and the backoff is reset only once a try has failed.
        # The circuit breaker (breaker.py) costs two attribute reads on that path.
        breaker = self.breaker
        probe = breaker.dirty and breaker.enter()  # breaker: RedisCircuitOpen while open
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if (
                    probe  # breaker: the half-open probe is tried once
                    or not retryable(error)
                    or (is_retryable is not None and not is_retryable(error))
                ):
                    breaker.failed(error, probe)  # breaker: counts failures to reach
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if (self._retries >= 0 and failures > self._retries) or (
                    breaker.dirty and breaker.state != CLOSED  # breaker: open, or probing
                ):
                    breaker.failed(error)  # breaker: and stops retrying once open
                    raise error
                if failures == 1:
                    self._backoff.reset()
                pause = self._backoff.compute(failures)
                if pause > 0:
                    sleep(pause)
            except BaseException as error:
                breaker.failed(error, probe)  # breaker: a timeout not retried counts too
                raise
            else:
                if breaker.dirty:  # breaker: closes, or clears the count
                    if connects_only(do):
                        breaker.connected_only(probe)  # not yet an answer
                    else:
                        breaker.succeeded(probe)
                return result


def retry_arguments(options: RedisOptions) -> dict[str, Any]:
    """Backoff, retries and retried errors for ``options`` (the sync and the asyncio
    clients' policies are built from these): connection errors; timeouts only if asked."""
    errors: tuple[type[Exception], ...] = (RedisConnectionError,)
    if options.retry_on_timeout:
        errors += (RedisTimeoutError,)
    backoff = ExponentialWithJitterBackoff(
        cap=options.retry_backoff_cap, base=min(RETRY_BACKOFF_BASE, options.retry_backoff_cap)
    )
    return {"backoff": backoff, "retries": options.retries, "supported_errors": errors}


def retry_policy(options: RedisOptions) -> Retry:
    """Retries after connection errors; after timeouts only if asked (may apply twice).

    A connection error after a command that can change data was sent is not retried
    unless ``retry_writes`` (the clients raise ``CommandMayHaveBeenApplied`` instead).
    """
    policy = WriteSafeRetry(**retry_arguments(options))
    policy.breaker = new_breaker(options)  # breaker: one per pool built from options
    return policy


def retry_pauses(options: RedisOptions) -> float:
    """Longest total of the pauses between the tries of one retried call."""
    base = min(RETRY_BACKOFF_BASE, options.retry_backoff_cap)
    return float(
        sum(min(options.retry_backoff_cap, base * 2**k) for k in range(1, options.retries + 1))
    )
