"""The line protocol between the box and its Carla host process.

One JSON object per line, over a Unix stream socket whose other end the host
process gets as an inherited file descriptor (``--fd``; its stdout and stderr
are Carla's and the plugins' chatter, which the box logs). Pure: no I/O here.

Box → host::

    {"op": "add", "id": 7, ...}      a request: answered once, by
    {"id": 7, "ok": <result>}        or {"id": 7, "error": {"kind": "PluginLoadFailed", "message": "..."}}
    {"op": "set", ...}               no id: a performance message, never answered;
                                     the host applies messages in the order sent

Host → box (no id)::

    {"event": "ready", "sample_rate": 48000, "buffer_size": 128, "inputs": [...], "outputs": [...]}
    {"event": "info", "load": 3.2, "xruns": 0}          every HEARTBEAT_INTERVAL: it is alive
    {"event": "parameter", "plugin": "plugin_3", "values": {"gain": -6.0}}
    {"event": "plugin-died", "plugin": "plugin_3", "message": "..."}
    {"event": "stopped", "message": "..."}              Carla's engine stopped; the host exits

Requests: ``add``, ``remove``, ``move``, ``activate``, ``controls``, ``values``, ``reset``, ``ping``
(and ``bypass`` for a plugin bypassed out of the rack). Messages: ``set``, ``bypass``,
``drywet``, ``readings``, ``quit``.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from ...core.errors import ApplianceError, EngineError, PluginLoadFailed, UnknownPlugin

#: How often the host says it is alive (with DSP load and xruns).
HEARTBEAT_INTERVAL = 0.5

#: Error kinds that cross the pipe, by name; anything else arrives as EngineError.
ERRORS: dict[str, type[ApplianceError]] = {
    "PluginLoadFailed": PluginLoadFailed,
    "UnknownPlugin": UnknownPlugin,
    "EngineError": EngineError,
}


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message.

    Raises:
        ValueError: not a JSON object.
    """
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def error_reply(request_id: object, exc: BaseException) -> dict[str, Any]:
    """The answer to a request that failed."""
    kind = next((name for name, cls in ERRORS.items() if type(exc) is cls), "EngineError")
    return {"id": request_id, "error": {"kind": kind, "message": str(exc) or repr(exc)}}


def raise_error(error: object) -> NoReturn:
    """Raise the box's own exception for an ``error`` answer."""
    if not isinstance(error, dict):
        raise EngineError(f"the Carla host answered with a malformed error: {error!r}")
    cls = ERRORS.get(str(error.get("kind")), EngineError)
    message = str(error.get("message", "the Carla host failed"))
    if cls is UnknownPlugin:
        raise UnknownPlugin(message)
    raise cls(message)
