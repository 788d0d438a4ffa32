"""HTTP and WebSocket on one port: ``/ws``, ``/healthz`` and the phone UI.

Each connection is a :class:`ClientSession` with its own bounded outbound
queue and writer task, so a slow or dead phone is dropped instead of stalling
the others or the engine. Runs on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import http
import json
import logging
import mimetypes
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response
from websockets.protocol import State

from ..config import RateLimit, ServerConfig
from ..control.controller import Controller, Event
from ..core import protocol
from ..core.errors import ApplianceError, EngineError, InvalidValue, RateLimited, Unauthorized
from ..system.logs import fields
from .readings import METER_RATE

log = logging.getLogger("appliance.frontends.net")

STATIC_DIR = Path(__file__).parent / "ui" / "static"
#: Close codes (docs/protocol.md "Close codes").
CLOSE_POLICY = 1008
CLOSE_TOO_SLOW = 1013
CLOSE_REPLACED = 4000
#: Messages refused in a row for the rate limit before the connection is closed (1008).
RATE_ABUSE_LIMIT = 1000
#: How long a token-mode client has to send AUTH after connecting.
AUTH_TIMEOUT = 10.0
#: How long stopping the server waits for clients' closing handshakes.
SERVER_CLOSE_TIMEOUT = 5.0
#: Parameter changes a client is sent per second for the changes other clients (and knobs)
#: make: a dragged control's latest value, never a backlog of old ones (docs/protocol.md §7).
PARAMETER_RATE = 30.0
#: How often, and how long at most, a client that reads slowly is waited for.
CATCH_UP_POLL = 0.005
CATCH_UP_TIMEOUT = 10.0


class TokenBucket:
    """Per-connection rate limit: ``rate`` tokens/s, up to ``burst`` saved."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = limit.rate
        self.capacity = float(limit.burst)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def take(self) -> float:
        """Spend one token; returns 0 when allowed, else seconds until one is available."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ClientSession:
    """One WebSocket client: its limits and its place in the broadcasts.

    Messages are written straight into the connection's transport (websockets'
    ``broadcast``: one frame build and one write per message, no task per
    client). What a client has not read yet waits in that transport's buffer;
    past ``send_buffer`` bytes the client is too slow and is dropped.
    """

    def __init__(self, connection: ServerConnection, config: ServerConfig, authorized: bool) -> None:
        self.connection = connection
        self.bucket = TokenBucket(config.rate_limit)
        self.authorized = authorized
        self.dropped = False
        self.closing: asyncio.Task[None] | None = None
        self.limit = config.send_buffer
        self.refused = 0  # messages refused in a row for the rate limit
        self.pending: dict[tuple[str, str], str] = {}  # parameter changes waiting (coalesce)
        self.flushing: asyncio.TimerHandle | None = None
        self.last_parameter = 0.0  # loop time a parameter change was last sent
        self.meters = False  # sent METERS (METERS_SUBSCRIBE)
        address = connection.remote_address
        self.name = f"{address[0]}:{address[1]}" if address else "?"

    def backlog(self) -> int:
        """Bytes written for this client that the network has not taken yet."""
        transport = self.connection.transport
        return 0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()

    def send(self, text: str) -> None:
        """Send one message to this client alone (after the parameter changes waiting for it,
        so that it never sees an older value after a newer event). Loop thread."""
        if not self.dropped:
            self.flush()
            broadcast((self.connection,), text)
            self.check()

    def coalesce(self, key: tuple[str, str], text: str) -> None:
        """A parameter change someone else made: sent at once unless one was sent less than
        1/:data:`PARAMETER_RATE` s ago or this client is behind; then it waits, and a newer
        change of the same control replaces it (the latest value is always sent)."""
        if self.dropped:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        interval = 1.0 / PARAMETER_RATE
        if not self.pending and now - self.last_parameter >= interval and self.backlog() <= self.limit // 2:
            self.last_parameter = now
            broadcast((self.connection,), text)
            self.check()
            return
        self.pending.pop(key, None)
        self.pending[key] = text
        if self.flushing is None:
            self.flushing = loop.call_at(max(now, self.last_parameter + interval), self._flush_due)

    def _flush_due(self) -> None:
        self.flushing = None
        if self.dropped:
            self.pending.clear()
        elif self.backlog() > self.limit // 2:  # behind: keep only the latest values until it catches up
            self.flushing = asyncio.get_running_loop().call_later(1.0 / PARAMETER_RATE, self._flush_due)
        else:
            self.flush()
            self.check()

    def flush(self) -> None:
        """Send the parameter changes waiting for this client now."""
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing = None
        if self.pending:
            frames = list(self.pending.values())
            self.pending.clear()
            self.last_parameter = asyncio.get_running_loop().time()
            for text in frames:
                broadcast((self.connection,), text)

    def check(self) -> None:
        """Drop the client if its unsent backlog is over the limit."""
        if not self.dropped and self.backlog() > self.limit:
            self.dropped = True
            log.warning("client %s is too slow (%d bytes unsent); dropping it", self.name, self.backlog())
            self.closing = asyncio.get_running_loop().create_task(
                self.connection.close(CLOSE_TOO_SLOW, "client too slow to keep up")
            )

    async def catch_up(self) -> None:
        """Wait while this client's own backlog is over half the limit.

        Called between its requests: a client that sends faster than it reads
        is slowed down instead of being dropped for its own replies.
        """
        waited = 0.0
        while not self.dropped and self.backlog() > self.limit // 2:
            if waited > CATCH_UP_TIMEOUT:
                self.check()
                return
            await asyncio.sleep(CATCH_UP_POLL)
            waited += CATCH_UP_POLL


class ControlServer:
    """Serves the protocol; knows the controller, not the engine."""

    def __init__(
        self,
        config: ServerConfig,
        controller: Controller,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        token: str | None = None,
    ) -> None:
        self.config = config
        self.controller = controller
        self.health = health
        self.token = token
        self.sessions: set[ClientSession] = set()
        #: Every WebSocket let through the handshake and not ended, oldest first, with its address.
        self.admitted: dict[ServerConnection, str] = {}
        self.server: Server | None = None
        self.static: dict[str, Response] = {}
        self._structural: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._stopping = False
        name = socket.gethostname().lower()
        self.hostnames = {name, f"{name}.local"}
        controller.publishers.append(self.broadcast)

    async def start(self) -> None:
        self.static = await asyncio.to_thread(_load_static, STATIC_DIR)
        self.server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            open_timeout=self.config.handshake_timeout,
            max_size=self.config.max_message_bytes,
            compression=None,
            server_header="appliance",
        )
        log.info("serving on http://%s:%d (ws at /ws)", self.config.host, self.port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Refuse new structural requests, let those under way finish, then close every client."""
        self._stopping = True
        if self._structural:
            await asyncio.wait(self._structural, timeout=SERVER_CLOSE_TIMEOUT)
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), SERVER_CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("some clients did not close within %.0f s", SERVER_CLOSE_TIMEOUT)

    # -- HTTP --------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        if url.path == "/ws":
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return _text(http.HTTPStatus.UPGRADE_REQUIRED, "WebSocket endpoint: connect with ws://\n")
            origin = request.headers.get("Origin")
            if origin is not None and not self._origin_allowed(origin, connection.local_address):
                log.warning("refused a handshake from origin %s", origin)
                return _text(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            return self._admit(connection)
        if url.path == "/healthz":
            healthy, report = self.health()
            report["clients"] = len(self.sessions)
            status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, json.dumps(report).encode(), "application/json")
        page = self.static.get(url.path.lstrip("/") or "index.html")
        return page if page is not None else _text(http.HTTPStatus.NOT_FOUND, "not found\n")

    def _admit(self, connection: ServerConnection) -> Response | None:
        """Let a WebSocket in unless the box is full (503); an address at its own cap has its
        oldest connection replaced, so that a page reconnecting in a loop locks out nobody else."""
        for old in [c for c in self.admitted if c.transport is None or c.transport.is_closing()]:
            del self.admitted[old]
        address = _address(connection)
        own = [c for c, a in self.admitted.items() if a == address]
        if len(own) >= self.config.max_per_address:
            oldest = own[0]
            del self.admitted[oldest]
            log.warning("%s opened a connection past its %d: closing its oldest", address, len(own))
            if oldest.protocol.state is not State.OPEN:  # still opening: no close frame to send
                oldest.transport.abort()
            else:
                task = asyncio.get_running_loop().create_task(
                    oldest.close(CLOSE_REPLACED, "replaced by a newer connection from this address")
                )
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        elif len(self.admitted) >= self.config.max_clients:
            return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        self.admitted[connection] = address
        return None

    def _origin_allowed(self, origin: str, local: Any) -> bool:
        """Is a browser page from ``origin`` allowed to drive the box?

        Yes when it is on ``allowed_origins``, or when it is the box's own
        page: served from this port, under the box's own address or name
        (``localhost``, the address the connection came in on, the host
        name, ``<hostname>.local``). The ``Host`` header is not trusted: a
        DNS-rebinding page controls it together with its origin.
        """
        if origin in self.config.allowed_origins or "*" in self.config.allowed_origins:
            return True
        parsed = urllib.parse.urlsplit(origin)
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            return False
        if parsed.scheme not in ("http", "https") or port != self.port or parsed.hostname is None:
            return False
        own = {"localhost", "127.0.0.1", "::1", *self.hostnames}
        if local:
            own.add(str(local[0]).lower())
        return parsed.hostname.lower() in own

    # -- WebSocket ---------------------------------------------------------

    def _token_in_handshake(self, connection: ServerConnection) -> str | None:
        assert connection.request is not None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(connection.request.path).query)
        if "token" in query:
            return query["token"][0]
        bearer = connection.request.headers.get("Authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[7:].strip()
        return None

    def _token_ok(self, token: str | None) -> bool:
        return token is not None and self.token is not None and hmac.compare_digest(token, self.token)

    async def _handle(self, connection: ServerConnection) -> None:
        authorized = self.config.auth == "none"
        offered = None if authorized else self._token_in_handshake(connection)
        if offered is not None:
            authorized = self._token_ok(offered)
            if not authorized:
                await self._refuse(connection, None)
                return
        session = ClientSession(connection, self.config, authorized)
        self.sessions.add(session)
        log.info(
            "client %s connected (%d now)",
            session.name,
            len(self.sessions),
            extra=fields(client=session.name),
        )
        try:
            if not authorized:
                if not await self._await_auth(session):
                    return
            else:
                self._welcome(session)
            async for message in connection:
                await self._on_message(session, message)
                await session.catch_up()
        except ConnectionClosed:
            pass
        finally:
            self.sessions.discard(session)
            self.admitted.pop(connection, None)
            log.info(
                "client %s disconnected (%d now)",
                session.name,
                len(self.sessions),
                extra=fields(client=session.name),
            )

    async def _refuse(self, connection: ServerConnection, reply_to: str | None) -> None:
        error = Unauthorized("a valid token is required (?token=, Authorization: Bearer, or AUTH)")
        with contextlib.suppress(ConnectionClosed):
            await connection.send(protocol.encode("ERROR", protocol.error_data(error), reply_to))
            await connection.close(CLOSE_POLICY, "unauthorized")

    async def _await_auth(self, session: ClientSession) -> bool:
        try:
            first = await asyncio.wait_for(session.connection.recv(), AUTH_TIMEOUT)
            request = protocol.decode(first)
        except (TimeoutError, ApplianceError):
            await self._refuse(session.connection, None)
            return False
        if request.type != "AUTH" or not self._token_ok(request.data.get("token")):
            await self._refuse(session.connection, request.id)
            return False
        session.authorized = True
        session.send(protocol.encode("AUTH", {"ok": True}, request.id))
        self._welcome(session)
        return True

    def _welcome(self, session: ClientSession) -> None:
        for kind, data in self.controller.replay():
            session.send(protocol.encode(kind, data))

    async def _on_message(self, session: ClientSession, message: str | bytes) -> None:
        """Check one message and carry it out; a structural request runs beside the stream.

        A client's performance requests (a slider, a bypass) are carried out
        in the order sent and at once; its add, remove or move runs as a task
        of its own (the controller runs those one at a time, in arrival
        order), so a bypass sent after an add is never held up by it.
        """
        try:
            wait = session.bucket.take()
            if wait:
                session.refused += 1
                if session.refused > RATE_ABUSE_LIMIT:
                    log.warning("client %s kept sending past its rate limit; closing it", session.name)
                    await session.connection.close(CLOSE_POLICY, "rate limit exceeded")
                    return
                if session.refused > 1:
                    return  # told once per streak
                raise RateLimited(
                    "too many messages; slow down", {"retry_after_ms": max(1, round(wait * 1000))}
                )
            session.refused = 0
            request = protocol.decode(message)
        except ApplianceError as exc:
            self._send_error(session, exc, None if isinstance(exc, RateLimited) else _peek_id(message))
            return
        if request.type == "AUTH":
            if self.config.auth == "token" and not self._token_ok(request.data.get("token")):
                self.sessions.discard(session)
                await self._refuse(session.connection, request.id)
                return
            session.send(protocol.encode("AUTH", {"ok": True}, request.id))
            return
        if request.type == "METERS_SUBSCRIBE":
            self._subscribe(session, request)
            return
        if request.type in self.controller.structural:
            if self._stopping:
                self._send_error(session, EngineError("the box is stopping"), request.id)
                return
            task = asyncio.get_running_loop().create_task(self._carry_out(session, request))
            self._structural.add(task)
            task.add_done_callback(self._structural.discard)
            return
        await self._carry_out(session, request)

    async def _carry_out(self, session: ClientSession, request: protocol.Request) -> None:
        """Execute a checked request; its replies or its error go to the requester."""
        _requester.set(session)  # this task's own context: what it broadcasts knows who asked
        try:
            outcome = await self.controller.execute(request)
        except ApplianceError as exc:
            self._send_error(session, exc, request.id)
            return
        except Exception:
            log.exception("request from %s failed", session.name)
            session.send(protocol.encode("ERROR", protocol.internal_error_data(), request.id))
            return
        for kind, data in outcome.reply:
            session.send(protocol.encode(kind, data, request.id))

    def _send_error(self, session: ClientSession, exc: ApplianceError, request_id: str | None) -> None:
        if exc.public is not None:
            log.warning("request from %s failed: %s", session.name, exc, extra=fields(client=session.name))
        session.send(protocol.encode("ERROR", protocol.error_data(exc), request_id))

    def _subscribe(self, session: ClientSession, request: protocol.Request) -> None:
        on = request.data.get("on", True)
        if not isinstance(on, bool):
            self._send_error(
                session, InvalidValue("on must be true or false", {"field": "data.on"}), request.id
            )
            return
        session.meters = on
        session.send(protocol.encode("METERS_SUBSCRIBE", {"on": on, "rate": METER_RATE}, request.id))

    def _listeners(self, meters: bool = False) -> list[ClientSession]:
        """The clients the box may send to now (only those subscribed to ``METERS``, if asked)."""
        return [s for s in self.sessions if s.authorized and not s.dropped and (s.meters or not meters)]

    def metering(self) -> bool:
        """True while some client wants ``METERS``."""
        return bool(self._listeners(meters=True))

    def send_meters(self, event: Event) -> None:
        """One event to the clients that subscribed to ``METERS``, encoded once."""
        listeners = self._listeners(meters=True)
        broadcast([s.connection for s in listeners], protocol.encode(*event))
        for session in listeners:
            session.check()

    def broadcast(self, events: list[Event], reply_to: str | None, origin: dict[str, str] | None) -> None:
        """Send events to every authorized client, each encoded once. Loop thread.

        A parameter change goes to the client that asked for it at once (its
        echo) and to the others through :meth:`ClientSession.coalesce`.
        """
        listeners = self._listeners()
        requester = _requester.get()
        for kind, data in events:
            text = protocol.encode(kind, data, reply_to, origin)
            if kind == "PLUGIN_PARAMETER":
                key = (str(data.get("plugin_id")), str(data.get("parameter_id")))
                for session in listeners:
                    if session is requester:
                        session.send(text)
                    else:
                        session.coalesce(key, text)
                continue
            for session in listeners:
                session.flush()
            broadcast([s.connection for s in listeners], text)
        for session in listeners:
            session.check()
            if session.dropped:
                self.sessions.discard(session)


#: The client whose request is being carried out (per task), for :meth:`ControlServer.broadcast`.
_requester: contextvars.ContextVar[ClientSession | None] = contextvars.ContextVar("requester", default=None)


def _address(connection: ServerConnection) -> str:
    """The peer's IP address (its port differs per connection)."""
    remote = connection.remote_address
    return str(remote[0]) if remote else "?"


def _peek_id(message: str | bytes) -> str | None:
    """The id of a message that failed checks, if one can be read, for reply_to."""
    if isinstance(message, bytes) or len(message) > 65536 or protocol.too_deep(message):
        return None
    try:
        value = json.loads(message)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def _load_static(folder: Path) -> dict[str, Response]:
    """Every UI file, read once at start, keyed by its path under the folder."""
    pages: dict[str, Response] = {}
    for target in sorted(folder.rglob("*")):
        if not target.is_file():
            continue
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        pages[target.relative_to(folder).as_posix()] = _response(
            http.HTTPStatus.OK, target.read_bytes(), content_type
        )
    return pages
