"""A minimal WebSocket client for measurements: RFC 6455 framing by hand, little else.

The benchmarks drive the server under test with many of these at once from one
process, so the client's own cost per message has to stay far below the
server's: a client built on ``websockets.asyncio.client`` spends about as much
CPU per received message as the server spends sending it, and on a small
machine the two share the cores. :class:`ProbeClient` is one
:class:`asyncio.Protocol` that does the opening handshake (RFC 6455 §4.1),
masks what it sends (§5.3), answers pings (§5.5.2) and closes (§5.5.1); it
counts ``PLUGIN_PARAMETER`` text frames as they arrive, with the arrival time
taken once per read, and hands nothing to a queue or a task per message.

Everything here runs on the asyncio loop's thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import cast

try:  # the C version when websockets was built with it, as websockets itself does
    from websockets.speedups import apply_mask
except ImportError:
    from websockets.utils import apply_mask

#: RFC 6455 §1.3: the GUID appended to the key for Sec-WebSocket-Accept.
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: How long the TCP connect plus opening handshake may take.
OPEN_TIMEOUT = 5.0
#: How long the closing handshake may take before the socket is just closed.
CLOSE_TIMEOUT = 1.0
#: Longest response head accepted before the handshake is declared broken.
MAX_HEAD = 16384

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: What marks a parameter change, in the box's echo and in the request itself
#: (both are encoded with ``separators=(",", ":")``).
PARAMETER_MARK = b'"type":"PLUGIN_PARAMETER"'
ERROR_MARK = b'"type":"ERROR"'


class ProbeError(Exception):
    """The server broke the protocol, refused the handshake or went away."""


def text_frame(payload: bytes) -> bytes:
    """One masked, final text frame (RFC 6455 §5.2), as a client must send it."""
    return _frame(OP_TEXT, payload)


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = random.randbytes(4)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


class ProbeClient(asyncio.Protocol):
    """One client connection; counts parameter echoes and times the awaited one.

    Attributes:
        parameters: ``PLUGIN_PARAMETER`` frames received since the last reset.
        last_parameter: the payload of the newest of them.
        last_arrival_ns: ``perf_counter_ns`` of the read that brought it.
        errors: ``ERROR`` frames received (the box refusing a request).
        last_error: the newest ERROR payload.
    """

    def __init__(self, key: bytes, on_progress: Callable[[], None] | None = None) -> None:
        self.key = key
        self.on_progress = on_progress
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.is_open = False
        self.is_closed = False
        self.parameters = 0
        self.last_parameter = b""
        self.last_arrival_ns = 0
        self.errors = 0
        self.last_error = b""
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._awaited: bytes | None = None
        self._echo: asyncio.Future[int] | None = None

    # -- opening and closing -------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str = "/ws",
        on_progress: Callable[[], None] | None = None,
        timeout: float = OPEN_TIMEOUT,
    ) -> ProbeClient:
        """Connect and complete the opening handshake.

        Raises:
            ProbeError: the server refused the upgrade or closed.
            TimeoutError: no answer within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16))
        _, client = await asyncio.wait_for(
            loop.create_connection(lambda: cls(key, on_progress), host, port), timeout
        )
        assert client.transport is not None
        client.transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path.encode(), host.encode(), port, key)
        )
        try:
            await asyncio.wait_for(asyncio.shield(client.opened), timeout)
        except BaseException:
            client.abort()
            raise
        return client

    async def close(self) -> None:
        """Send a close frame (1000), wait briefly for the server's, then drop the socket."""
        if self.transport is None or self.is_closed:
            return
        if self.is_open:
            self.transport.write(_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- sending -------------------------------------------------------------

    def send_texts(self, payloads: Iterable[bytes]) -> None:
        """Write text frames back to back in one write (a pipelined burst)."""
        if self.transport is None or self.is_closed:
            raise ProbeError("connection is closed")
        self.transport.write(b"".join(_frame(OP_TEXT, p) for p in payloads))

    def expect(self, marker: bytes) -> asyncio.Future[int]:
        """A future for the arrival time of the next parameter frame containing ``marker``.

        ``marker`` is the quoted request id, which the box carries as
        ``reply_to`` and the bare server as the echoed ``id``. An ERROR frame
        containing it fails the future instead.
        """
        self._awaited = marker
        self._echo = asyncio.get_running_loop().create_future()
        return self._echo

    def reset(self) -> None:
        """Zero the counters (between measurements, once everything is drained)."""
        self.parameters = 0
        self.errors = 0
        self.last_parameter = b""
        self.last_arrival_ns = 0

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        gone = ProbeError(f"connection lost ({exc})" if exc else "connection closed")
        for future in (self.opened, self._echo):
            if future is not None and not future.done():
                future.set_exception(gone)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buffer = self.buffer
        buffer += data
        if not self.is_open and not self._read_head():
            return
        size = len(buffer)
        pos = 0
        progressed = False
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            if second & 0x80 or not first & 0x80:
                self._fail("masked or fragmented frame from the server")
                return
            payload = bytes(buffer[pos + head : end])
            pos = end
            opcode = first & 0x0F
            if opcode == OP_TEXT:
                progressed |= self._on_text(payload, now)
            elif opcode == OP_PING:
                assert self.transport is not None
                self.transport.write(_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                if self.transport is not None and not self.is_closed:
                    self.transport.write(_frame(OP_CLOSE, payload[:2]))
                    self.transport.close()
                self.is_open = False
                del buffer[:]
                return
            elif opcode != OP_PONG:
                self._fail(f"unexpected opcode {opcode:#x}")
                return
        del buffer[:pos]
        if progressed and self.on_progress is not None:
            self.on_progress()

    def _on_text(self, payload: bytes, now: int) -> bool:
        if PARAMETER_MARK in payload:
            self.parameters += 1
            self.last_parameter = payload
            self.last_arrival_ns = now
            echo = self._echo
            if echo is not None and self._awaited is not None and self._awaited in payload:
                self._echo = self._awaited = None
                if not echo.done():
                    echo.set_result(now)
            return True
        if ERROR_MARK in payload:
            self.errors += 1
            self.last_error = payload
            echo = self._echo
            if echo is not None and self._awaited is not None and self._awaited in payload:
                self._echo = self._awaited = None
                if not echo.done():
                    echo.set_exception(ProbeError(f"server refused: {payload[:200]!r}"))
        return False

    def _read_head(self) -> bool:
        """Consume the handshake response; True once the connection is open."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._fail("handshake response too long")
            return False
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        lines = head.split("\r\n")
        accept = base64.b64encode(hashlib.sha1(self.key + ACCEPT_GUID).digest()).decode()
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(f"handshake refused: {lines[0]}")
            return False
        if headers.get("sec-websocket-accept") != accept:
            self._fail("handshake: wrong Sec-WebSocket-Accept")
            return False
        self.is_open = True
        if not self.opened.done():
            self.opened.set_result(None)
        return True

    def _fail(self, why: str) -> None:
        error = ProbeError(why)
        for future in (self.opened, self._echo):
            if future is not None and not future.done():
                future.set_exception(error)
        self.is_open = False
        self.abort()
