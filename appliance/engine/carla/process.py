"""The box's handle on one Carla host process (:mod:`.host`): start, talk, notice its end.

Loop thread only. Requests (``add``, ``remove``...) go to the host one at a
time, each awaited with a timeout that starts when the host gets it (the host
works through them in turn on one thread); performance messages (``set``,
``bypass``) are written at once and never waited for, so a knob's echo never
waits for the host (the host applies them as soon as it is between calls). The host answers in the
order it was written to, and the box treats a host that stops answering, stops
reading, or stops sending its heartbeat as wedged: it is killed, and its end
reported like a crash (:class:`~.engine.CarlaEngine` restarts it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from ...core.errors import EngineError
from ..jack.server import jack_environment
from ..processes import Child, describe_exit
from . import pipe
from .install import CarlaPaths

log = logging.getLogger("appliance.engine.carla")

#: How long the host may take to start Carla's engine and say it is ready.
HOST_START_TIMEOUT = 15.0
#: How long the host may take to exit after ``quit``, and again after SIGTERM.
HOST_STOP_TIMEOUT = 5.0
#: Unsent bytes the host may leave in its pipe before it is called wedged.
PIPE_BACKLOG_LIMIT = 1 << 20
#: Longest line the host may send (a plugin's control descriptions).
LINE_LIMIT = 1 << 22
#: Lines of the host's own output kept for the log when it ends.
OUTPUT_LINES = 40


class CarlaHostProcess:
    """One running host process.

    Args:
        paths: the Carla installation.
        server_name: the JACK server (None: the default one).
        client_name: the engine's own JACK client name.
        bridges: run each plugin in a Carla bridge process.
        on_event: host events (``parameter``, ``plugin-died``, ``info``...).
        on_exit: called once with a sentence when the process has ended,
            unless :meth:`stop` ended it.
    """

    def __init__(
        self,
        paths: CarlaPaths,
        server_name: str | None,
        client_name: str,
        bridges: bool,
        on_event: Callable[[dict[str, Any]], None],
        on_exit: Callable[[str], None],
        jack_transport: bool = False,
    ) -> None:
        self.paths = paths
        self.server_name = server_name
        self.client_name = client_name
        self.bridges = bridges
        self.jack_transport = jack_transport
        self.on_event = on_event
        self.on_exit = on_exit
        #: Loop time of the last message from the host (its heartbeat).
        self.last_heard = 0.0
        self._child: Child | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ended = False
        self._killed = False
        self._requests = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def is_running(self) -> bool:
        """True until the process has ended or has been told to die."""
        child = self._child
        return child is not None and child.is_running and not (self._ended or self._killed)

    @property
    def busy(self) -> bool:
        """A request is with the host now (it answers that, not its heartbeat, meanwhile)."""
        return self._requests.locked()

    async def start(self) -> dict[str, Any]:
        """Run the host and wait until Carla's engine is up.

        Returns:
            ``{"sample_rate": ..., "buffer_size": ...}``.

        Raises:
            EngineError: it did not start (Carla's reason in the message).
        """
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            sys.executable,
            "-m",
            "appliance.engine.carla.host",
            "--lib-dir",
            str(self.paths.lib_dir),
            "--share-dir",
            str(self.paths.share_dir),
            "--client",
            self.client_name,
            "--fd",
            str(theirs.fileno()),
            "--log-level",
            logging.getLevelName(log.getEffectiveLevel()),
        ]
        if self.bridges:
            argv.append("--bridges")
        if self.jack_transport:
            argv.append("--jack-transport")
        child = self._child = Child(
            argv,
            f"carla host {self.client_name}",
            jack_environment(self.server_name),
            tail=OUTPUT_LINES,
            pass_fds=(theirs.fileno(),),
            logger=log,
        )
        try:
            await child.start()
        except OSError as exc:
            ours.close()
            raise EngineError(f"cannot run the Carla host: {exc}") from exc
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        self._ready = loop.create_future()
        self.last_heard = loop.time()
        self._tasks = [
            asyncio.create_task(self._read(reader)),
            asyncio.create_task(self._wait_exit(child)),
        ]
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), HOST_START_TIMEOUT)
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, TimeoutError):
                raise EngineError(f"the Carla host did not start within {HOST_START_TIMEOUT} s") from None
            raise

    async def request(self, op: str, timeout: float, **fields: Any) -> Any:
        """Send a request and await its answer.

        Raises:
            PluginLoadFailed, UnknownPlugin, EngineError: as the host answered.
            EngineError: the host has ended, or did not answer within
                ``timeout``; then it is wedged and is killed.
        """
        async with self._requests:
            writer = self._require_writer()
            request_id = next(self._ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            writer.write(pipe.encode({"op": op, "id": request_id, **fields}))
            try:
                # Not wait_for: in Python 3.11 it returns the answer when the caller is cancelled
                # just as the answer comes, and a cancelled add went on as if never cancelled.
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                log.error("the Carla host did not answer %s within %s s; killing it", op, timeout)
                self.kill()
                raise EngineError(f"the Carla host did not answer within {timeout} s") from None
            finally:
                self._pending.pop(request_id, None)

    def send(self, op: str, **fields: Any) -> None:
        """Write a performance message; never waits. A host that stops reading is killed."""
        writer = self._writer
        if writer is None or self._ended:
            return
        writer.write(pipe.encode({"op": op, **fields}))
        backlog = writer.transport.get_write_buffer_size()
        if backlog > PIPE_BACKLOG_LIMIT:
            log.error("the Carla host stopped reading (%d bytes wait); killing it", backlog)
            self.kill()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the host (tests play crashes with it); SIGKILL counts it gone at once."""
        child = self._child
        if child is not None and child.is_running:
            self._killed = self._killed or sig == signal.SIGKILL
            child.signal(sig)

    async def stop(self) -> None:
        """Ask the host to quit, then SIGTERM, then SIGKILL. Safe to call twice."""
        self._stopping = True
        child, writer = self._child, self._writer
        if child is not None:
            quit_ = (lambda: writer.write(pipe.encode({"op": "quit"}))) if writer is not None else None
            await child.end(quit_, HOST_STOP_TIMEOUT)
        if self._writer is not None:
            self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_pending("the Carla host was stopped")

    def output_tail(self) -> str:
        return self._child.last_words() if self._child is not None else ""

    # -- reading ---------------------------------------------------------------------

    def _require_writer(self) -> asyncio.StreamWriter:
        if self._writer is None or not self.is_running:
            raise EngineError("the Carla host is not running")
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ConnectionError:  # it died: its exit is reported by _wait_exit
                return
            except ValueError as exc:  # a line over the limit
                log.error("the Carla host's pipe failed: %s; killing it", exc)
                self.kill()
                return
            if not line:
                return
            try:
                message = pipe.decode(line)
            except ValueError:
                log.error("the Carla host sent a malformed line: %r", line[:200])
                continue
            self.last_heard = asyncio.get_running_loop().time()
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is not None:
            future = self._pending.get(request_id) if isinstance(request_id, int) else None
            if future is None or future.done():
                return  # a request the box gave up on
            if "error" in message:
                try:
                    pipe.raise_error(message["error"])
                except Exception as exc:
                    future.set_exception(exc)
            else:
                future.set_result(message.get("ok"))
            return
        event = message.get("event")
        ready = self._ready
        if event == "ready" and ready is not None and not ready.done():
            ready.set_result({k: v for k, v in message.items() if k != "event"})
        elif event == "stopped" and ready is not None and not ready.done():
            ready.set_exception(EngineError(str(message.get("message", "the Carla host stopped"))))
        else:
            self.on_event(message)

    async def _wait_exit(self, child: Child) -> None:
        await child.exited()
        self._ended = True  # gone: no request is sent to it from now on
        code = await child.wait()  # its last words (Carla's and the plugins' chatter), for the log
        why = f"the Carla host exited with {describe_exit(code)}"
        self._fail_pending(why)
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_exception(EngineError(f"{why}: {self.output_tail()}"))
            return
        if not self._stopping:
            log.error("%s; its last output: %s", why, self.output_tail())
            self.on_exit(why)

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineError(why))
        self._pending.clear()
