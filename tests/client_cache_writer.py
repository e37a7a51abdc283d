"""A writer in another process, for the client cache's oracle and staleness tests.

    python tests/client_cache_writer.py PORT LOG [--keys k1,k2] [--fields f1,f2]
        [--cold c1,c2] [--cold-share 0.02] [--pause S] [--quiet-flag PATH]

Increments random keys (``INCR key``) and fields of the hash ``h`` (``HINCRBY h field
1``) on the server at ``127.0.0.1:PORT`` until killed (``--cold`` keys only once in a
while: ``--cold-share`` of the writes; a cold key's reply stays cached long enough for a
lost invalidation to show), and appends one line per
acknowledged write to ``LOG``: ``<key or h/field> <new value> <time.monotonic()>`` (the
clock is the machine's, shared by every process). A connection error (the server
restarting) is waited out; the write it interrupted may or may not have been applied, and
is not logged. While the file ``--quiet-flag`` exists, only cold keys are written, one
every 0.1 s: no stream of invalidations then hides one that was lost.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import redis


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--keys", default="k0,k1,k2,k3")
    parser.add_argument("--fields", default="f0,f1")
    parser.add_argument("--cold", default="")
    parser.add_argument("--cold-share", type=float, default=0.02)
    parser.add_argument("--pause", type=float, default=0.001)
    parser.add_argument("--quiet-flag", default="")
    args = parser.parse_args(argv)
    keys = args.keys.split(",")
    fields = [field for field in args.fields.split(",") if field]
    client = redis.Redis(port=args.port, socket_timeout=2, socket_connect_timeout=1)
    targets = [(key, None) for key in keys] + [("h", field) for field in fields]
    cold = [(key, None) for key in args.cold.split(",") if key]
    with open(args.log, "a", buffering=1) as log:
        print("ready", file=sys.stderr, flush=True)
        while True:
            quiet = bool(args.quiet_flag) and os.path.exists(args.quiet_flag)
            use_cold = cold and (quiet or random.random() < args.cold_share)
            key, field = random.choice(cold if use_cold else targets)
            try:
                value = client.incr(key) if field is None else client.hincrby(key, field, 1)
                acked = time.monotonic()
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
                continue
            log.write(f"{key if field is None else f'{key}/{field}'} {value} {acked!r}\n")
            if args.pause or quiet:
                time.sleep(0.1 if quiet else args.pause)


if __name__ == "__main__":
    main()
