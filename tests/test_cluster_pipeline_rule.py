"""When a Cluster pipeline may be sent again whole (issue 25's blind spot: a pipeline
whose INCR ran and whose GET found nothing, hit by an unmarked error, was sent again).

The rule reads what redis-py stored in each ``PipelineCommand``: a command still
unanswered (redis-py 8.2's ``_UNANSWERED``; ``None`` on 8.1, which has no marker) never
went out, and a pipeline may go again only if *all* its commands are unanswered. Real
``PipelineCommand`` objects, on the redis-py version installed (``make test-matrix``
runs this file on 8.1 and 8.2); the client is only the two settings the rule reads.
"""

from __future__ import annotations

from types import SimpleNamespace

from redis.cluster import PipelineCommand
from redis.exceptions import ConnectionError as RedisConnectionError

from pyramid_redisx import cluster
from pyramid_redisx.errors import CommandMayHaveBeenApplied

CLIENT = SimpleNamespace(_redisx_retry_writes=False, _redisx_retry_on_timeout=False)


def stack(*results: object) -> list[PipelineCommand]:
    commands = [
        PipelineCommand(("INCR", "n"), position=0),
        PipelineCommand(("GET", "k"), position=1),
    ]
    for command, result in zip(commands, results, strict=True):
        command.result = result
    return commands


def test_a_pipeline_none_of_which_was_answered_is_sent_again() -> None:
    unanswered = cluster._UNANSWERED
    assert (
        cluster.pipeline_not_sent_again(
            CLIENT, stack(unanswered, unanswered), RedisConnectionError("x")
        )
        is None
    )


def test_a_pipeline_whose_incr_ran_is_not_sent_again() -> None:
    """INCR answered 1, the GET unanswered: the INCR ran, so the whole is not sent again."""
    instead = cluster.pipeline_not_sent_again(
        CLIENT, stack(1, cluster._UNANSWERED), RedisConnectionError("x")
    )
    assert isinstance(instead, CommandMayHaveBeenApplied), instead


def test_a_pipeline_whose_incr_ran_and_get_found_nothing_is_not_sent_again() -> None:
    """The issue's case: INCR answered 1 and GET answered nil (``None``, which on 8.1 is
    also what an unanswered command holds)."""
    instead = cluster.pipeline_not_sent_again(CLIENT, stack(1, None), RedisConnectionError("x"))
    assert isinstance(instead, CommandMayHaveBeenApplied), instead
