"""The integrations' public names, from the package; the core import loads none of their libraries."""

from __future__ import annotations

import subprocess
import sys

import pyramid_redisx


def test_integration_names_are_exported() -> None:
    from pyramid_redisx.aio import get_async_redis
    from pyramid_redisx.http_cache import http_cache_backend, http_cache_session
    from pyramid_redisx.queue import MessageQueue, QueueEmpty

    assert pyramid_redisx.MessageQueue is MessageQueue
    assert pyramid_redisx.QueueEmpty is QueueEmpty
    assert pyramid_redisx.http_cache_backend is http_cache_backend
    assert pyramid_redisx.http_cache_session is http_cache_session
    assert pyramid_redisx.get_async_redis is get_async_redis
    assert set(pyramid_redisx.__all__) <= set(dir(pyramid_redisx)) | set(pyramid_redisx._LAZY)


def test_core_import_loads_no_integration_library() -> None:
    code = (
        "import sys, pyramid_redisx; "
        "print(sorted(m for m in ('requests_cache', 'dogpile', 'transaction', "
        "'pyramid_session_redis', 'pyramid_tm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
