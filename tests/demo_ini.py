"""``development.ini`` as shipped, with only its ports changed, for tests that run the demo.

The demo's Redis port is ``[DEFAULT] redis_port`` (6399): tests start their own servers on
free ports, so they write a copy with that line (and the web server's ``listen`` port)
changed. Nothing else differs from the file users run.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "development.ini"
REDIS_PORT_LINE = "redis_port = 6399"
LISTEN_LINE = "listen = 127.0.0.1:6543"


def demo_ini(folder: Path, redis_port: int, web_port: int | None = None) -> Path:
    """``folder/development.ini``: the shipped file on ``redis_port`` (and ``web_port``)."""
    text = SHIPPED.read_text()
    assert text.count(REDIS_PORT_LINE) == 1 and text.count(LISTEN_LINE) == 1
    text = text.replace(REDIS_PORT_LINE, f"redis_port = {redis_port}")
    if web_port is not None:
        text = text.replace(LISTEN_LINE, f"listen = 127.0.0.1:{web_port}")
    path = folder / "development.ini"
    path.write_text(text)
    return path
