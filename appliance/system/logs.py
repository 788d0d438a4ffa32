"""Where the box's log goes: the journal under systemd, with fields to search by; stdout elsewhere.

Under systemd (stdout is the journal stream ``JOURNAL_STREAM`` names, as
``systemd.exec(5)`` says to check) every record goes to the journal through
``systemd.journal.JournalHandler``, with the priority of its level and the
fields a log call passes through :func:`fields`. So
``journalctl -u appliance PLUGIN_ID=plugin_3`` finds a plugin's story, and
``journalctl -u appliance ENGINE=carla`` an engine's. Outside systemd the
box logs lines to stdout, as before.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
IDENTIFIER = "appliance"


def fields(
    *,
    plugin_id: str | None = None,
    track_id: str | None = None,
    client: str | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """Journal fields for a log call's ``extra`` (None values are left out)."""
    named = {"PLUGIN_ID": plugin_id, "TRACK_ID": track_id, "CLIENT_ADDRESS": client, "ENGINE": engine}
    return {key: value for key, value in named.items() if value is not None}


def under_systemd(environ: Mapping[str, str] = os.environ, fd: int | None = None) -> bool:
    """True when ``fd`` (stdout) is the journal stream systemd gave the service.

    A variable inherited by a process whose stdout was redirected (a test
    harness, a pipe) does not count.
    """
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(sys.stdout.fileno() if fd is None else fd)
    except (OSError, ValueError):
        return False
    return stream == f"{status.st_dev}:{status.st_ino}"


def handler(journal: bool, sender: Callable[..., object] | None = None) -> logging.Handler:
    """The journal's handler, or lines on stdout.

    ``sender`` replaces ``systemd.journal.send`` (a test reads the records it gets).
    """
    if journal:
        from systemd.journal import JournalHandler, send

        to_journal: logging.Handler = JournalHandler(
            sender_function=sender or send, SYSLOG_IDENTIFIER=IDENTIFIER
        )
        return to_journal
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter(FORMAT))
    return stream


def configure(level: str, environ: Mapping[str, str] = os.environ) -> None:
    """The box's logging: one handler on the root logger, aiohttp's chatter above INFO."""
    root = logging.getLogger()
    root.handlers[:] = [handler(under_systemd(environ))]
    root.setLevel(level.upper())
    # aiohttp logs every HTTP request and some client mistakes at INFO; the box logs its own.
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, root.level))
