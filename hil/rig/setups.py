"""How the rig reaches a box: over the protocol (:class:`Box`) and through audio (:class:`Setup`).

The measuring code (:mod:`hil.rig.runner`) is the same for every box; what
differs is how the rig's player and recorder reach the box's audio ports:

* **virtual** (:func:`virtual_setup`): on this machine, a private dummy JACK
  server, the rig's clients on it and a virtual box
  (``python -m appliance run``) whose track's input is the rig's player and
  whose output is the rig's recorder: the box's config does the wiring.
* **interface** (:func:`interface_setup`): on a rig computer, its own JACK
  server with an audio interface; the rig connects its player to the
  interface's output (cabled into the box's input) and its recorder to the
  interface's input (from the box's output). The box is somewhere on the
  network, reached only at its WebSocket URL and ``/healthz``.
  :func:`open_interface` alone is what the loopback calibration uses.

Everything here runs on one asyncio loop's thread; blocking work (JACK port
look-ups, the box's start and stop, ``/healthz``) goes to worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import jack

import appliance
from appliance.engine.jack.server import DummySettings, JackServer
from hil.wsprobe import ProbeClient
from tests.boxproc import BoxProcess, virtual_config
from tests.rig import Rig

ROOT = Path(__file__).resolve().parents[2]
#: How long ``/healthz`` may take.
HEALTH_TIMEOUT = 5.0
#: How long looking up the rig computer's JACK ports may take.
PORTS_TIMEOUT = 10.0
#: The rig computer's interface ports when none are given (the first channel each way).
DEFAULT_PLAYBACK = "system:playback_1"
DEFAULT_CAPTURE = "system:capture_1"

P = TypeVar("P", bound=ProbeClient)


class RigError(Exception):
    """The rig cannot measure: a bad box URL, a refused token, a missing port, an unfit calibration.

    The message is for the person at the rig computer: what is wrong and what to do.
    """


# -- the box, over the protocol -----------------------------------------------------


@dataclass(frozen=True)
class Box:
    """Where a box is and how to get in: its WebSocket URL and token.

    Attributes:
        url: ``ws://host:port/path``, without a query (the token is never in it,
            so the URL can go into a report).
        token: the box's token (mode ``token``) or ``None`` (mode ``none``).
    """

    url: str
    token: str | None = None

    @classmethod
    def parse(cls, url: str, token: str | None = None) -> Box:
        """A box from its URL (``ws://pedalboard.local:8000/ws``) and token.

        A ``?token=`` already in the URL is used when ``token`` is not given.

        Raises:
            RigError: not a ``ws://`` URL with a host.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "wss":
            raise RigError(f"{url}: wss:// is not supported; the box serves ws:// on the LAN")
        if parts.scheme != "ws" or not parts.hostname:
            raise RigError(f"{url}: expected a box's WebSocket URL, like ws://pedalboard.local:8000/ws")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError as exc:
            raise RigError(f"{url}: {exc}") from exc
        if token is None:
            token = urllib.parse.parse_qs(parts.query).get("token", [None])[0]
        bare = urllib.parse.urlunsplit(("ws", parts.netloc, parts.path or "/ws", "", ""))
        return cls(bare, token or None)

    @property
    def host(self) -> str:
        host = urllib.parse.urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 80

    @property
    def request_path(self) -> str:
        """The handshake's path, with ``?token=`` when there is a token (protocol.md §3, "Auth modes")."""
        path = urllib.parse.urlsplit(self.url).path
        if self.token is None:
            return path
        return f"{path}?token={urllib.parse.quote(self.token, safe='')}"

    @property
    def http_base(self) -> str:
        """``http://host:port``: where ``/healthz`` is (protocol.md §2)."""
        parts = urllib.parse.urlsplit(self.url)
        return f"http://{parts.netloc}"

    def healthz(self) -> dict[str, Any]:
        """``GET /healthz`` (blocking: a worker thread's call); ``{"error": ...}`` when unreachable.

        A 503 (the engine not running) still carries the body, and it is returned.
        """
        try:
            with urllib.request.urlopen(self.http_base + "/healthz", timeout=HEALTH_TIMEOUT) as response:
                data: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                data = json.loads(exc.read())
            except (OSError, ValueError):
                return {"error": str(exc)}
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}
        return data

    async def connect(self, kind: type[P]) -> P:
        """One more client connection (a :class:`~hil.wsprobe.ProbeClient` of ``kind``), token included."""
        client = await kind.open(self.host, self.port, self.request_path)
        assert isinstance(client, kind)
        return client


# -- the rig's audio, wired to the box -----------------------------------------------


@dataclass
class Setup:
    """A box the rig can reach, and the rig's player and recorder wired to it.

    Attributes:
        box: the box, over the protocol.
        rig: the player and recorder, open, their ports reaching the box's input and output.
        settings: how the rig reaches the box, for the report (never the token).
        version: the box's version, as far as the rig can tell.
        server: the JACK server the rig started for a virtual box (its late cycles go in the
            report), or None.
    """

    box: Box
    rig: Rig
    settings: dict[str, Any]
    version: str
    server: JackServer | None = None

    @property
    def midi_server(self) -> str | None:
        """The JACK server where a MIDI controller of the rig's is heard by the box (a virtual
        box's), or None: no CC-to-sound figures."""
        return self.server.name if self.server is not None else None


@dataclass(frozen=True)
class InterfacePorts:
    """The rig computer's JACK server and the ports of its audio interface the rig uses.

    Attributes:
        jack_server: the JACK server's name (``None``: the default server).
        playback: the port the rig plays into: the interface's output, cabled
            into the box's input (or, calibrating, into the interface's input).
        capture: the port the rig records from: the interface's input, cabled
            from the box's output.
    """

    jack_server: str | None = None
    playback: str = DEFAULT_PLAYBACK
    capture: str = DEFAULT_CAPTURE

    def as_dict(self) -> dict[str, Any]:
        """For the report and the calibration file."""
        return {**asdict(self), "jack_server": self.jack_server or "default"}


def _check_ports(ports: InterfacePorts) -> None:
    """Raise :class:`RigError` unless both ports exist and point the right way (blocking)."""
    server = ports.jack_server or "default"
    try:
        client = jack.Client(
            f"rig-ports-{secrets.token_hex(2)}", servername=ports.jack_server, no_start_server=True
        )
    except jack.JackError as exc:
        raise RigError(
            f"no JACK server {server!r} is running here: start JACK on the audio interface first "
            f"(jackd -d alsa -d hw:…) or name the server with --jack-server ({exc})"
        ) from exc
    try:
        for name, want_input, what in (
            (ports.playback, True, "a playback port (the interface's output: an input port in JACK)"),
            (ports.capture, False, "a capture port (the interface's input: an output port in JACK)"),
        ):
            try:
                port = client.get_port_by_name(name)
            except jack.JackError:
                port = None
            if port is None or port.is_input != want_input or not port.is_audio:
                found = [p.name for p in client.get_ports(is_audio=True, is_input=want_input)]
                raise RigError(
                    f"{name!r} on JACK server {server!r} is not {what}; the ones there: "
                    f"{', '.join(found) or 'none'}"
                )
    finally:
        client.close()


@contextlib.asynccontextmanager
async def open_interface(ports: InterfacePorts) -> AsyncIterator[Rig]:
    """The rig's player and recorder on the rig computer's JACK server, connected to the interface.

    Raises:
        RigError: no such server, or a port missing or pointing the wrong way.
    """
    await asyncio.wait_for(asyncio.to_thread(_check_ports, ports), PORTS_TIMEOUT)
    rig = Rig(ports.jack_server, play_to=(ports.playback,), record_from=(ports.capture,))
    await rig.open()
    try:
        yield rig
    finally:
        with contextlib.suppress(Exception):
            await rig.close()


@contextlib.asynccontextmanager
async def interface_setup(
    box: Box, ports: InterfacePorts, version: str | None = None, log: Callable[[str], None] = print
) -> AsyncIterator[Setup]:
    """A real box: the rig computer's interface cabled to it, the box on the network.

    Args:
        box: where the box is and its token.
        ports: the rig computer's JACK server and interface ports.
        version: the box's version when the person running the rig knows it
            (neither ``/healthz`` nor the protocol says).
        log: where progress lines go.

    Raises:
        RigError: the box does not answer ``/healthz``, or the interface cannot be used.
    """
    health = await asyncio.to_thread(box.healthz)
    if "error" in health:
        raise RigError(f"{box.http_base}/healthz does not answer: {health['error']}")
    log(f"box at {box.url}: {health.get('engine')} engine, {health.get('sample_rate')} Hz")
    async with open_interface(ports) as rig:
        log(
            f"rig on JACK server {ports.jack_server or 'default'}: plays into {ports.playback}, "
            f"records {ports.capture} ({rig.samplerate} Hz, {rig.blocksize} frames)"
        )
        settings = {
            "box": box.url,
            "engine": health.get("engine"),
            "auth": "token" if box.token else "none",
            **ports.as_dict(),
        }
        yield Setup(box, rig, settings, version or "not reported (neither /healthz nor the protocol says)")


def box_version() -> str:
    """The virtual box's version: the package's, and the checkout's commit when there is one."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{appliance.__version__} ({commit})" if commit else appliance.__version__


@contextlib.asynccontextmanager
async def virtual_setup(
    engine: str,
    rate: int,
    period: int,
    workdir: Path,
    track: str = "track_001",
    log: Callable[[str], None] = print,
) -> AsyncIterator[Setup]:
    """A virtual box on a private dummy JACK server, its one track from the rig's player to its recorder.

    Everything started here (the server, the rig's clients, the box and its
    plugin hosts) is stopped on the way out, whatever happened.

    Args:
        engine: the box's engine (``jalv`` or ``carla``).
        rate: the server's sample rate, Hz.
        period: its period, frames.
        workdir: a folder for the box's config, data and log (made if missing).
        track: the id of the box's one track.
        log: where progress lines go.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    server = JackServer(f"rig-{secrets.token_hex(3)}", DummySettings(rate, period, realtime=True))
    await server.start()
    rig = Rig(server.name)
    process: BoxProcess | None = None
    try:
        await rig.open()
        tracks = [{"id": track, "inputs": list(rig.play_ports), "outputs": list(rig.rec_ports)}]
        config = virtual_config(
            workdir,
            jack_server=server.name,
            dummy=False,
            engine=engine,
            tracks=tracks,
            demo=[],
            data_dir=workdir / "data",
        )
        process = BoxProcess(config)
        log(f"starting a virtual {engine} box on JACK server {server.name}")
        await asyncio.to_thread(process.start)
        settings = {
            "box": "virtual",
            "engine": engine,
            "jack_server": server.name,
            "realtime": server.is_realtime,
        }
        yield Setup(Box.parse(process.ws_url), rig, settings, box_version(), server)
    finally:
        if process is not None:
            await asyncio.to_thread(process.stop)
        with contextlib.suppress(Exception):
            await rig.close()
        await server.stop()
