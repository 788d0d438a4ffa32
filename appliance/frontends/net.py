"""HTTP and WebSocket on one port (aiohttp): ``/ws``, ``/healthz``, the phone UI.

Each WebSocket is a :class:`ClientSession`. What the box sends is written
straight into the connection's transport, one frame encoded once for every
client; what a client has not read waits in that transport's buffer, and a
client too far behind is dropped instead of stalling the others or the
engine. Runs on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hmac
import http
import json
import logging
import mimetypes
import os
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import ClientPayloadError, WSMsgType, web
from websockets.frames import Frame, Opcode

from ..config import RateLimit, ServerConfig
from ..control.backups import Backups
from ..control.controller import Controller, Event
from ..control.playerfiles import PlayerFiles
from ..control.updates import Updates
from ..core import protocol
from ..core.errors import ApplianceError, EngineError, InvalidValue, RateLimited, Stalled, Unauthorized
from ..system.logs import fields
from .readings import METER_RATE

log = logging.getLogger("appliance.frontends.net")

T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "ui" / "static"
#: Close codes (docs/protocol.md "Close codes").
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_SLOW = 1013
CLOSE_REPLACED = 4000
REPLACED = b"replaced by a newer connection from this address"
#: Messages refused in a row for the rate limit before the connection is closed (1008).
RATE_ABUSE_LIMIT = 1000
#: How long a token-mode client has to send AUTH after connecting.
AUTH_TIMEOUT = 10.0
#: How long stopping the server waits for clients' closing handshakes.
SERVER_CLOSE_TIMEOUT = 5.0
#: The HTTP status of each error code an HTTP request may get (anything else: 400).
HTTP_STATUS = {
    "UNAUTHORIZED": http.HTTPStatus.UNAUTHORIZED,
    "NAME_TAKEN": http.HTTPStatus.CONFLICT,
    "BUSY": http.HTTPStatus.CONFLICT,
    "TOO_LARGE": http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "NO_SPACE": http.HTTPStatus.INSUFFICIENT_STORAGE,
    "STALLED": http.HTTPStatus.REQUEST_TIMEOUT,
    "STORE_FAILED": http.HTTPStatus.INTERNAL_SERVER_ERROR,
    "INTERNAL": http.HTTPStatus.INTERNAL_SERVER_ERROR,
}
#: Bytes of a download (a backup, a shared pedalboard) read and sent at a time.
SEND_CHUNK = 1 << 20
#: Seconds between the box's pings; a client that does not answer one within half of it is gone.
HEARTBEAT = 20.0
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

    Messages are written straight into the connection's transport
    (:func:`_write`: one frame build and one write per message, no task per
    client). What a client has not read yet waits in that transport's buffer;
    past ``send_buffer`` bytes the client is too slow and is dropped.
    """

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, config: ServerConfig, authorized: bool
    ) -> None:
        self.ws = ws
        self.transport = request.transport
        self.bucket = TokenBucket(config.rate_limit)
        self.authorized = authorized
        self.dropped = False
        self.closing: asyncio.Task[bool] | None = None
        self.limit = config.send_buffer
        self.refused = 0  # messages refused in a row for the rate limit
        self.pending: dict[tuple[str, str], str] = {}  # parameter changes waiting (coalesce)
        self.flushing: asyncio.TimerHandle | None = None
        self.last_parameter = 0.0  # loop time a parameter change was last sent
        self.meters = False  # sent METERS (METERS_SUBSCRIBE)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.name = f"{peer[0]}:{peer[1]}" if peer else "?"

    def backlog(self) -> int:
        """Bytes written for this client that the network has not taken yet."""
        transport = self.transport
        return 0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()

    def send(self, text: str) -> None:
        """Send one message to this client alone (after the parameter changes waiting for it,
        so that it never sees an older value after a newer event). Loop thread."""
        if not self.dropped:
            self.flush()
            _write((self,), text)
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
            _write((self,), text)
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
                _write((self,), text)

    def check(self) -> None:
        """Drop the client if its unsent backlog is over the limit."""
        if not self.dropped and self.backlog() > self.limit:
            self.dropped = True
            log.warning("client %s is too slow (%d bytes unsent); dropping it", self.name, self.backlog())
            self.closing = asyncio.get_running_loop().create_task(
                self.ws.close(code=CLOSE_TOO_SLOW, message=b"client too slow to keep up")
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
        files: PlayerFiles | None = None,
        backups: Backups | None = None,
        updates: Updates | None = None,
    ) -> None:
        self.config = config
        self.controller = controller
        self.files = files
        self.backups = backups
        self.updates = updates
        self.health = health
        self.token = token
        self.sessions: set[ClientSession] = set()
        #: Every WebSocket let through the handshake and not ended, oldest first, with its address.
        self.admitted: dict[web.WebSocketResponse, str] = {}
        self.runner: web.AppRunner | None = None
        self.static: dict[str, tuple[bytes, str]] = {}
        self._port = 0
        self._structural: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[Any]] = set()
        self._stopping = False
        name = socket.gethostname().lower()
        self.hostnames = {name, f"{name}.local"}
        controller.publishers.append(self.broadcast)

    async def start(self) -> None:
        self.static = await asyncio.to_thread(_load_static, STATIC_DIR)
        app = web.Application()
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._healthz)
        if self.files is not None:
            app.router.add_post("/files", self._upload)
            app.router.add_get("/pedalboards/share", self._share)
            app.router.add_post("/pedalboards/import", self._import)
        if self.backups is not None:
            app.router.add_get("/backup", self._backup)
            app.router.add_post("/restore", self._restore)
        if self.updates is not None:
            app.router.add_post("/update", self._update)
        app.router.add_get("/{page:.*}", self._page)
        app.on_response_prepare.append(_headers)
        # An idle connection (one that never sends its request, or waits between two) is
        # closed after the handshake timeout; a WebSocket or a request under way is not.
        self.runner = web.AppRunner(
            app, handle_signals=False, access_log=None, keepalive_timeout=self.config.handshake_timeout
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        self._port = int(self.runner.addresses[0][1])
        log.info("serving on http://%s:%d (ws at /ws)", self.config.host, self.port)

    @property
    def port(self) -> int:
        assert self.runner is not None, "the server is not started"
        return self._port

    async def stop(self) -> None:
        """Refuse new structural requests, let those under way finish, then close every client."""
        self._stopping = True
        if self._structural:
            await asyncio.wait(self._structural, timeout=SERVER_CLOSE_TIMEOUT)
        if self.runner is None:
            return
        closing = [
            asyncio.ensure_future(ws.close(code=CLOSE_GOING_AWAY, message=b"the box is stopping"))
            for ws in list(self.admitted)
        ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=SERVER_CLOSE_TIMEOUT)
            if late:
                log.warning("%d clients did not close within %.0f s", len(late), SERVER_CLOSE_TIMEOUT)
        await self.runner.cleanup()

    # -- HTTP --------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        await self.controller.refresh_health()
        healthy, report = self.health()
        report["clients"] = len(self.sessions)
        status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        return web.json_response(report, status=status)

    async def _page(self, request: web.Request) -> web.Response:
        page = self.static.get(request.match_info["page"] or "index.html")
        if page is None:
            return _text(http.HTTPStatus.NOT_FOUND, "not found\n")
        body, content_type = page
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _upload(self, request: web.Request) -> web.Response:
        """``POST /files?name=cab.wav[&folder=ir]``: the body is the file (docs/protocol.md
        "Uploads"); 201 with its new names, or the error's status and ``ERROR.data``."""
        assert self.files is not None
        query = request.query
        names = await self._take(
            request, "upload", partial(self.files.upload, query.get("name"), query.get("folder"))
        )
        if isinstance(names, web.Response):
            return names
        return web.json_response({"files": names}, status=http.HTTPStatus.CREATED)

    async def _backup(self, request: web.Request) -> web.StreamResponse:
        """``GET /backup``: one zip of everything the player made (docs/protocol.md "Backups")."""
        assert self.backups is not None
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            archive, _ = await self.backups.make()
        except ApplianceError as exc:
            log.warning("backup for %s failed: %s", request.remote, exc)
            return _error(exc)
        stamp = time.strftime("%Y-%m-%d-%H%M")
        return await _send_zip(request, archive, f"{socket.gethostname()}-backup-{stamp}.zip")

    async def _restore(self, request: web.Request) -> web.Response:
        """``POST /restore``: the body is a backup; 200 once it is checked and committed, then
        the box starts again with it (docs/protocol.md "Backups")."""
        assert self.backups is not None
        summary = await self._take(request, "restore", self.backups.restore)
        if isinstance(summary, web.Response):
            return summary
        response = web.json_response(
            {"restored": {"created": summary.created, **summary.counts}, "restarting": True}
        )
        await response.prepare(request)  # sent before the box stops to start again
        await response.write_eof()
        return response

    async def _update(self, request: web.Request) -> web.Response:
        """``POST /update``: the body is a system update; 202 once it is checked and waits for
        the root installer, which restarts the box (docs/protocol.md "Updates")."""
        assert self.updates is not None
        manifest = await self._take(request, "update", self.updates.receive)
        if isinstance(manifest, web.Response):
            return manifest
        return web.json_response(
            {
                "update": {"version": manifest.version, "arch": manifest.arch},
                "installing": True,
                "restarting": True,
            },
            status=http.HTTPStatus.ACCEPTED,
        )

    async def _share(self, request: web.Request) -> web.StreamResponse:
        """``GET /pedalboards/share?name=Gig``: the pedalboard and the files it loads, one zip
        another box imports (docs/protocol.md "Sharing a pedalboard")."""
        assert self.files is not None
        refused = self._refused(request)
        if refused is not None:
            return refused
        name = request.query.get("name")
        try:
            archive, missing = await self.files.export(name)
        except ApplianceError as exc:
            return _error(exc)
        if missing:
            log.warning("pedalboard %r shared without %s: not on the box", name, ", ".join(missing))
        safe = "".join(c if c.isalnum() or c in " -_()" else "_" for c in str(name))
        return await _send_zip(request, archive, f"{safe}.pedalboard.zip", {"X-Missing-Files": len(missing)})

    async def _import(self, request: web.Request) -> web.Response:
        """``POST /pedalboards/import``: the body is a shared pedalboard; 201 with its name here."""
        assert self.files is not None
        imported = await self._take(request, "pedalboard import", self.files.import_)
        if isinstance(imported, web.Response):
            return imported
        return web.json_response(dataclasses.asdict(imported), status=http.HTTPStatus.CREATED)

    async def _take(
        self,
        request: web.Request,
        what: str,
        take: Callable[[AsyncIterator[bytes], int | None], Awaitable[T]],
    ) -> T | web.Response:
        """Hand a request's body, as it arrives, to ``take`` (with its declared length) under
        the WebSocket's rules (:meth:`_refused`); what ``take`` gave, or the answer that
        refuses the request (nothing of it is kept)."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            return await take(_body(request, self.config.upload_timeout), request.content_length)
        except ApplianceError as exc:
            log.warning("%s from %s refused: %s", what, request.remote, exc)
            return _error(exc)
        except (ClientPayloadError, ConnectionError) as exc:
            log.info("%s from %s cut short: %s", what, request.remote, exc)
            return _error(Stalled(f"the {what} was cut short; nothing was kept"))

    def _refused(self, request: web.Request) -> web.Response | None:
        """The WebSocket's rules for a plain HTTP request that changes something: a page from
        another origin is refused (403) and, with ``auth: token``, so is a request without
        the token (``?token=`` or ``Authorization: Bearer``, 401)."""
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            log.warning("refused %s %s from origin %s", request.method, request.path, origin)
            return _text(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if self.config.auth == "token" and not self._token_ok(self._token_in_request(request)):
            return _error(Unauthorized("a valid token is required (?token= or Authorization: Bearer)"))
        return None

    def _admit(self, ws: web.WebSocketResponse, request: web.Request) -> web.Response | None:
        """Let a WebSocket in unless the box is full (503); an address at its own cap has its
        oldest connection replaced, so that a page reconnecting in a loop locks out nobody else."""
        for old in [c for c in self.admitted if c.closed]:
            del self.admitted[old]
        address = request.remote or "?"
        own = [c for c, a in self.admitted.items() if a == address]
        if len(own) >= self.config.max_per_address:
            oldest = own[0]
            del self.admitted[oldest]
            log.warning("%s opened a connection past its %d: closing its oldest", address, len(own))
            if oldest.prepared:  # one still opening is closed by its own handler (_websocket)
                self._replace(oldest)
        elif len(self.admitted) >= self.config.max_clients:
            return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        self.admitted[ws] = address
        return None

    def _origin_allowed(self, origin: str, request: web.Request) -> bool:
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
        local = request.transport.get_extra_info("sockname") if request.transport else None
        if local:
            own.add(str(local[0]).lower())
        return parsed.hostname.lower() in own

    def _token_in_request(self, request: web.Request) -> str | None:
        """The token a request carries (``?token=`` or ``Authorization: Bearer``), if any."""
        if "token" in request.query:
            return request.query["token"]
        bearer = request.headers.get("Authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[7:].strip()
        return None

    def _token_ok(self, token: str | None) -> bool:
        return token is not None and self.token is not None and hmac.compare_digest(token, self.token)

    # -- WebSocket ---------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """The handshake's checks (upgrade, origin, room), then the client's whole session."""
        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_message_bytes, compress=False, heartbeat=HEARTBEAT
        )
        if not ws.can_prepare(request).ok:
            return _text(http.HTTPStatus.UPGRADE_REQUIRED, "WebSocket endpoint: connect with ws://\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            log.warning("refused a handshake from origin %s", origin)
            return _text(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        refused = self._admit(ws, request)
        if refused is not None:
            return refused
        try:
            await ws.prepare(request)
            if ws not in self.admitted:  # replaced while its handshake was under way
                await ws.close(code=CLOSE_REPLACED, message=REPLACED)
                return ws
            await self._serve(ws, request)
        finally:
            self.admitted.pop(ws, None)
        return ws

    def _replace(self, ws: web.WebSocketResponse) -> None:
        """Close an open connection an address's newer one replaces (4000), beside the stream."""
        task = asyncio.get_running_loop().create_task(ws.close(code=CLOSE_REPLACED, message=REPLACED))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _serve(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        authorized = self.config.auth == "none"
        offered = None if authorized else self._token_in_request(request)
        if offered is not None:
            authorized = self._token_ok(offered)
            if not authorized:
                await self._refuse(ws, None)
                return
        session = ClientSession(ws, request, self.config, authorized)
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
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                await self._on_message(session, message.data)
                await session.catch_up()
        except ConnectionError:
            pass
        finally:
            self.sessions.discard(session)
            log.info(
                "client %s disconnected (%d now)",
                session.name,
                len(self.sessions),
                extra=fields(client=session.name),
            )

    async def _refuse(self, ws: web.WebSocketResponse, reply_to: str | None) -> None:
        error = Unauthorized("a valid token is required (?token=, Authorization: Bearer, or AUTH)")
        with contextlib.suppress(ConnectionError):
            await ws.send_str(protocol.encode("ERROR", protocol.error_data(error), reply_to))
            await ws.close(code=CLOSE_POLICY, message=b"unauthorized")

    async def _await_auth(self, session: ClientSession) -> bool:
        try:
            first = await session.ws.receive(AUTH_TIMEOUT)
            if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return False
            request = protocol.decode(first.data)
        except (TimeoutError, ApplianceError):
            await self._refuse(session.ws, None)
            return False
        if request.type != "AUTH" or not self._token_ok(request.data.get("token")):
            await self._refuse(session.ws, request.id)
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
                    await session.ws.close(code=CLOSE_POLICY, message=b"rate limit exceeded")
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
                await self._refuse(session.ws, request.id)
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
        _write(listeners, protocol.encode(*event))
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
            _write(listeners, text)
        for session in listeners:
            session.check()
            if session.dropped:
                self.sessions.discard(session)


#: The client whose request is being carried out (per task), for :meth:`ControlServer.broadcast`.
_requester: contextvars.ContextVar[ClientSession | None] = contextvars.ContextVar("requester", default=None)


def _write(sessions: Iterable[ClientSession], text: str) -> None:
    """One text frame, encoded once (websockets' sans-I/O framing), written into each client's
    transport at once: nothing waits for a client, a slow one's bytes wait in its own buffer."""
    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    for session in sessions:
        transport = session.transport
        if transport is not None and not transport.is_closing() and not session.ws.closed:
            transport.write(frame)


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


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: no caching of the page (a new box version is seen at once), no sniffing,
    and the box's name instead of the library's version."""
    response.headers["Server"] = "appliance"
    response.headers.setdefault("Cache-Control", "no-cache")
    response.headers["X-Content-Type-Options"] = "nosniff"


async def _send_zip(
    request: web.Request, archive: Path, filename: str, extra: dict[str, int] | None = None
) -> web.StreamResponse:
    """Send the temporary zip ``archive`` as a download named ``filename``; it is gone after."""
    headers = {"Content-Type": "application/zip", "Content-Disposition": f'attachment; filename="{filename}"'}
    response = web.StreamResponse(headers={**headers, **{k: str(v) for k, v in (extra or {}).items()}})
    handle = await asyncio.to_thread(open, archive, "rb")
    try:
        archive.unlink()  # the open file is read to its end; its room is freed when closed
        response.content_length = os.fstat(handle.fileno()).st_size
        await response.prepare(request)
        while chunk := await asyncio.to_thread(handle.read, SEND_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    finally:
        handle.close()
    return response


async def _body(request: web.Request, timeout: float) -> AsyncIterator[bytes]:
    """A request's body as it arrives; :class:`Stalled` when it sends nothing for ``timeout`` s."""
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except TimeoutError:
            stopped = f"the upload sent nothing for {timeout:g} s; nothing was kept"
            raise Stalled(stopped) from None
        if not chunk:
            return
        yield chunk


def _error(exc: ApplianceError) -> web.Response:
    """An HTTP request's failure: its status, and the protocol's ``ERROR.data`` as the body."""
    status = HTTP_STATUS.get(exc.code, http.HTTPStatus.BAD_REQUEST)
    return web.json_response(protocol.error_data(exc), status=status)


def _text(status: http.HTTPStatus, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


def _load_static(folder: Path) -> dict[str, tuple[bytes, str]]:
    """Every UI file, read once at start, with its content type, keyed by its path under the folder."""
    pages: dict[str, tuple[bytes, str]] = {}
    for target in sorted(folder.rglob("*")):
        if not target.is_file():
            continue
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        pages[target.relative_to(folder).as_posix()] = (target.read_bytes(), content_type)
    return pages
