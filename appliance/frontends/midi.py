"""MIDI controllers: foot controllers and expression pedals driving the board as a phone does.

Every MIDI output on the box's JACK server is heard: a USB controller on the
Pi (ALSA's sequencer, bridged to JACK by ``a2jmidid``, which follows
hot-plugging), or any JACK MIDI client (the virtual box, the tests' rig). The
realtime side is a native child, ``jack_midi_dump`` (jackd2's own monitor: a
lock-free ring buffer out of the audio thread), so no Python runs in JACK's
cycle and a crash there never touches the box::

    controller ──JACK MIDI──▶ jack_midi_dump (child) ──stdout──▶ loop: parse (mido), map
                    ▲                                                  │
    patch client (JACK notifications: a port came) ── connect ─────────┘
                                                     requests ──▶ Controller ──▶ engine, phones

A message is either mapped (:mod:`.midimap`) or ignored: nothing a controller
sends reaches what it is not mapped to. Continuous controls are coalesced as a
phone's are: a pedal sweeping at 1 kHz sets each control to its latest value,
one request at a time, and never queues behind itself. Pedalboard and setlist
moves run beside the rest (a bypass pressed meanwhile never waits for a load).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jack  # type: ignore[import-untyped]

from ..control.controller import Controller, Outcome
from ..core.errors import ApplianceError, InvalidValue, StoreError, UnknownMapping
from ..core.protocol import Request
from ..engine.jack.server import jack_environment
from ..engine.processes import Child
from ..store.files import write_atomic
from . import midimap
from .jobs import Jobs
from .midimap import Mapping, MidiEvent

log = logging.getLogger("appliance.frontends.midi")

#: The MIDI file in the data folder.
MIDI_FILE = "midi.json"
#: How long a learn waits for the controller before it gives up, seconds.
LEARN_TIMEOUT = 30.0
#: The longest line read from the monitor (a 64 KB SysEx is 192 KB of hex), bytes.
LINE_LIMIT = 1 << 20
#: How long the monitor may take to show its input port, seconds.
MONITOR_START_TIMEOUT = 10.0
#: How long closing the patch client may take before the box goes on without waiting, seconds.
CLOSE_TIMEOUT = 2.0
#: How long after a port appears the box looks (a device brings its ports together), seconds.
RESCAN_DELAY = 0.05
#: ``  47104: b0 07 64 control change ...``: the frame (``-a``: counted from the monitor's
#: start), then the bytes in hex.
_LINE = re.compile(r"^\s*(\d+):((?:\s[0-9a-f]{2})+)")
#: MIDI's timing clock (24 a beat): followed as the box's tempo, never mapped.
CLOCK = 0xF8


def read_line(text: str) -> tuple[int, bytes] | None:
    """The frame and message on one line of ``jack_midi_dump -a``'s output (its first three
    bytes: a SysEx's rest is of no use here), or None for a line of its own words."""
    found = _LINE.match(text)
    if found is None:
        return None
    return int(found.group(1)), bytes(int(b, 16) for b in found.group(2).split()[:3])


def _free_id(taken: dict[str, Mapping]) -> str:
    """``midi_N``, the first N not taken."""
    n = len(taken) + 1
    while f"midi_{n}" in taken:
        n += 1
    return f"midi_{n}"


class MidiPatch:
    """The box's view of the MIDI outputs on its JACK server: which there are (but the
    engine's), connecting them to the monitor, and a call whenever a port comes or goes.

    One JACK client without a process callback (never in the audio cycle); its blocking calls
    run on one worker thread; JACK's notification thread only hops onto the loop.
    """

    def __init__(
        self, server: str | None, name: str, skip: Callable[[str], bool], changed: Callable[[], None]
    ) -> None:
        self.server = server
        self.name = name
        self.skip = skip
        self.changed = changed
        self._client: Any = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="midi-patch")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(self._open)

    async def close(self) -> None:
        """Close the client; a JACK that does not answer (a dead server) is not waited for long."""
        closing = asyncio.wrap_future(self._worker.submit(self._close))
        try:
            await asyncio.wait_for(asyncio.shield(closing), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "midi: the patch client did not close within %s s; it closes when JACK answers", CLOSE_TIMEOUT
            )
        except jack.JackError as exc:
            log.warning("midi: closing the patch client failed: %s", exc)
        self._worker.shutdown(wait=False)

    async def outputs(self) -> list[str]:
        """The MIDI outputs a controller may be behind (every one but the engine's and ours)."""
        return list(await self._call(self._outputs))

    async def has(self, port: str) -> bool:
        return bool(await self._call(lambda: self._client.get_ports(port)))

    async def connect(self, ports: list[str], sink: str) -> list[str]:
        """Connect ``ports`` to ``sink`` (those not yet); the ones connected now."""
        return list(await self._call(lambda: self._connect(ports, sink)))

    async def _call(self, job: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, job)

    def _open(self) -> None:
        client = jack.Client(self.name, no_start_server=True, servername=self.server)
        try:
            client.set_port_registration_callback(self._registered, only_available=False)
            client.activate()
        except BaseException:
            client.close()
            raise
        self._client = client

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(jack.JackError):
                client.deactivate()
            client.close()

    def _outputs(self) -> list[str]:
        ports = self._client.get_ports(is_midi=True, is_output=True)
        return [p.name for p in ports if not self.skip(p.name.split(":", 1)[0])]

    def _connect(self, ports: list[str], sink: str) -> list[str]:
        connected = []
        for port in ports:
            try:
                if sink not in [p.name for p in self._client.get_all_connections(port)]:
                    self._client.connect(port, sink)
                connected.append(port)
            except jack.JackError as exc:  # gone meanwhile (unplugged)
                log.debug("midi: %s: %s", port, exc)
        return connected

    def _registered(self, port: Any, register: bool) -> None:  # JACK's notification thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.changed)


class MidiService:
    """The mappings, learn, and the inputs; ``MIDI_*`` requests through the controller.

    Args:
        controller: where mapped messages go, as requests (user ``midi``).
        path: ``midi.json``, the mappings kept across starts.
        server: the box's JACK server name (None: JACK's default).
        own_clients: the engine's JACK client name prefix; its MIDI outputs are not inputs.
    """

    def __init__(self, controller: Controller, path: Path, server: str | None, own_clients: str = "") -> None:
        self.controller = controller
        self.path = path
        self.server = server
        self.own_clients = own_clients
        self.mappings: dict[str, Mapping] = {}
        self.learning: tuple[Mapping, bool, asyncio.TimerHandle] | None = None
        self.name = "appliance-midi"
        self.monitor: Child | None = None
        self.patch: MidiPatch | None = None
        #: The controllers' ports connected to the monitor.
        self.inputs: list[str] = []
        #: Messages heard that no mapping can use (SysEx, clock, malformed bytes).
        self.ignored = 0
        #: Called after the mappings of the board's plugins changed (the library keeps them
        #: with the pedalboard playing: :meth:`appliance.control.library.Library.attach`).
        self.board_kept: Callable[[], Awaitable[None]] | None = None
        #: Gets each MIDI clock's frame (the box's tempo follows it).
        self.on_clock: Callable[[int], None] = lambda frame: None
        #: Gets the frame of each press mapped to ``tap_tempo`` (taps are timed by their frames:
        #: a busy box reads a controller's messages in bursts).
        self.on_tap: Callable[[int], None] = lambda frame: None
        self._rescan: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[Mapping, int]] = {}
        self._wake = asyncio.Event()
        self._jobs = Jobs(log)
        self._sweeper: asyncio.Task[None] | None = None
        self._file_lock = asyncio.Lock()
        controller.register("MIDI_GET", self._get)
        controller.register("MIDI_MAP_SET", self._set)
        controller.register("MIDI_MAP_DELETE", self._delete)
        controller.register("MIDI_LEARN", self._learn)
        controller.register("MIDI_LEARN_CANCEL", self._cancel)
        controller.greeters.append(lambda: [("MIDI_STATE", self.state())])

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Read the mappings, then listen."""
        self.mappings = await asyncio.to_thread(self._read)
        self._sweeper = asyncio.create_task(self._sweep())
        self._jobs.start()
        await self.listen()

    async def listen(self) -> None:
        """(Again) watch the server's MIDI outputs; the monitor starts with the first controller,
        so that a box without one has no MIDI client in its audio cycle. A server the box cannot
        reach is logged and the box plays on without MIDI."""
        await self._unlisten()
        self.name = f"appliance-midi-{secrets.token_hex(2)}"
        patch = MidiPatch(self.server, f"{self.name}-patch", self._skip, self._changed)
        try:
            await patch.open()
        except jack.JackError as exc:
            log.warning("midi: no MIDI input (%s); the box plays on without", exc)
            await patch.close()
            return
        self.patch = patch
        await self.rescan()
        log.info("midi: %d mapping(s), %d input(s)", len(self.mappings), len(self.inputs))

    async def rescan(self) -> None:
        """Connect every controller on the server, starting the monitor for the first one."""
        patch = self.patch
        if patch is None:
            return
        found = await patch.outputs()
        if found and (self.monitor is None or not self.monitor.is_running):
            await self._start_monitor(patch)
        connected = await patch.connect(found, f"{self.name}:input") if self.monitor is not None else []
        for port in sorted(set(connected) - set(self.inputs)):
            log.info("midi: listening to %s", port)
        for port in sorted(set(self.inputs) - set(connected)):
            log.info("midi: %s is gone", port)
        self.inputs = connected

    async def _start_monitor(self, patch: MidiPatch) -> None:
        if self.monitor is not None:
            await self.monitor.end(None, 2.0)
            self.monitor = None
        monitor = Child(
            ["jack_midi_dump", "-a", self.name],
            "midi",
            jack_environment(self.server),
            on_line=self._line,
            line_limit=LINE_LIMIT,
            logger=log,
        )
        try:
            await monitor.start()
            async with asyncio.timeout(MONITOR_START_TIMEOUT):
                while not await patch.has(f"{self.name}:input"):
                    if not monitor.is_running:
                        raise OSError(f"it ended ({monitor.exit_reason()})")
                    await asyncio.sleep(0.02)
        except (OSError, TimeoutError) as exc:
            log.error("midi: jack_midi_dump did not start (%s): %s", exc or "timed out", monitor.last_words())
            await monitor.end(None, 2.0)
            return
        self.monitor = monitor

    def _changed(self) -> None:
        """A port came or went: look again (once for a burst: a device brings its ports together)."""
        if self._rescan is None or self._rescan.done():
            self._rescan = asyncio.ensure_future(self._quietly_rescan())

    async def _quietly_rescan(self) -> None:
        await asyncio.sleep(RESCAN_DELAY)
        try:
            await self.rescan()
        except Exception as exc:
            log.warning("midi: cannot connect the controllers: %s", exc)

    async def pause(self) -> None:
        """Let go of the JACK server (it went away): :meth:`listen` again once it is back."""
        await self._unlisten()

    async def _unlisten(self) -> None:
        if self._rescan is not None:
            self._rescan.cancel()
            await asyncio.gather(self._rescan, return_exceptions=True)
            self._rescan = None
        patch, self.patch = self.patch, None
        if patch is not None:
            await patch.close()
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.end(None, 2.0)
        self.inputs = []

    async def stop(self) -> None:
        if self.learning is not None:
            self.learning[2].cancel()
            self.learning = None
        await self._unlisten()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self._jobs.stop()

    async def settled(self) -> None:
        """Wait until every message handled so far has been carried out (tests)."""
        while self._pending or self._wake.is_set():
            await asyncio.sleep(0.005)
        await self._jobs.settled()

    def state(self) -> dict[str, Any]:
        """``MIDI_STATE``: every mapping, the inputs heard, and the learn under way."""
        learning = self.learning[0].to_dict() if self.learning is not None else None
        if learning is not None:
            del learning["id"], learning["message"], learning["number"]
        return {
            "present": self.patch is not None,
            "inputs": list(self.inputs),
            "mappings": [m.to_dict() for m in self.mappings.values()],
            "learning": learning,
        }

    # -- messages in ---------------------------------------------------------------

    def _line(self, text: str) -> bool:
        """The monitor's output: a message is handled (and kept out of the log), the monitor's
        own words are kept for the log."""
        read = read_line(text)
        if read is None:
            return False
        frame, data = read
        if data[:1] == bytes([CLOCK]):
            self.on_clock(frame)
            return True
        event = midimap.parse(data)
        if event is None:
            self.ignored += 1
        else:
            self.handle(event, frame)
        return True

    def handle(self, event: MidiEvent, frame: int | None = None) -> None:
        """One message from a controller (heard at JACK frame ``frame``, counted from the
        monitor's start): completes a learn, or drives what it is mapped to."""
        if self.learning is not None:
            self._learned(event)
            return
        for mapping in self.mappings.values():
            if mapping.matches(event):
                self._dispatch(mapping, event, frame)

    def _dispatch(self, mapping: Mapping, event: MidiEvent, frame: int | None) -> None:
        if mapping.action in midimap.CONTINUOUS and event.message != "pc":
            self._pending[mapping.id] = (mapping, event.value)  # the latest value wins
            self._wake.set()
            return
        if mapping.action == "bypass" and mapping.momentary:
            self._jobs.put(lambda: self._bypass(mapping, on=event.pressed))
            return
        if event.message != "pc" and not event.pressed:
            return  # a release: the press acted
        action = mapping.action
        if action == "bypass":
            self._jobs.put(lambda: self._bypass(mapping, on=None))
        elif action == "snapshot":
            self._jobs.put(lambda: self._execute("SNAPSHOT_RECALL", {"name": mapping.name}))
        elif action == "tuner":
            on = not self.controller.engine.is_tuning
            self._jobs.beside(self._execute("TUNER_SET", {"on": on}))
        elif action == "pedalboard":
            self._jobs.beside(self._execute("PEDALBOARD_LOAD", {"name": mapping.name}))
        elif action == "setlist_go":
            position = mapping.position if mapping.position is not None else event.number
            self._jobs.beside(self._execute("SETLIST_GO", {"position": position}))
        elif action in ("setlist_next", "setlist_previous"):
            self._jobs.beside(self._execute(action.upper(), {}))
        elif action == "tap_tempo" and frame is not None:
            self.on_tap(frame)

    async def _sweep(self) -> None:
        """Carries out continuous changes, each control's latest value, one at a time."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                mapping_id = next(iter(self._pending))
                mapping, value = self._pending.pop(mapping_id)
                try:
                    await self._continuous(mapping, value)
                except Exception:
                    log.exception("midi: %s failed", mapping.id)

    async def _continuous(self, mapping: Mapping, value: int) -> None:
        if mapping.action == "mixer":
            await self._execute(
                "MIXER_SET", {"control": mapping.control, "value": mapping.scaled(value, 0, 100)}
            )
            return
        found = self._find(mapping.plugin_id)
        if found is None:
            return
        instance = self.controller.board.plugin(*found)
        try:
            parameter = instance.type.canonical(str(mapping.parameter_id))
        except ApplianceError:
            log.info("midi %s: %s has no %r", mapping.id, instance.name, mapping.parameter_id)
            return
        target = mapping.scaled(value, parameter.minimum, parameter.maximum)
        data = {"track_id": found[0], "plugin_id": found[1], "parameter_id": parameter.id}
        await self._execute("PLUGIN_PARAMETER", {**data, "parameter_value": target})

    async def _bypass(self, mapping: Mapping, on: bool | None) -> None:
        found = self._find(mapping.plugin_id)
        if found is None:
            return
        instance = self.controller.board.plugin(*found)
        bypass = (not instance.bypass) if on is None else not on
        await self._execute("PLUGIN_BYPASS", {"track_id": found[0], "plugin_id": found[1], "bypass": bypass})

    def _find(self, plugin_id: str | None) -> tuple[str, str] | None:
        for track in self.controller.board.tracks.values():
            if any(p.id == plugin_id for p in track.chain):
                return track.id, str(plugin_id)
        return None

    async def _execute(self, kind: str, data: dict[str, Any]) -> None:
        try:
            await self.controller.execute(Request(kind, data, user_id="midi", session_id="midi"))
        except ApplianceError as exc:
            log.info("midi: %s refused: %s", kind, exc)

    # -- learn -----------------------------------------------------------------------

    def _learned(self, event: MidiEvent) -> None:
        assert self.learning is not None
        partial, omni, timer = self.learning
        if partial.channel is not None and partial.channel != event.channel:
            return
        if partial.action not in midimap.CONTINUOUS and event.message != "pc" and not event.pressed:
            return  # a footswitch's release after its press was learned
        timer.cancel()
        self.learning = None
        mapping = midimap.learned(partial, event, partial.id or self._new_id(), omni)
        self._jobs.beside(self._commit(mapping, learned=event))

    def _learn_expired(self) -> None:
        if self.learning is not None:
            self.learning = None
            self.controller.publish([("MIDI_STATE", self.state())], None, {"user_id": "midi"})

    async def _commit(self, mapping: Mapping, learned: MidiEvent) -> None:
        """A learned mapping: kept in the file, then told to every phone (a card that cannot be
        written keeps the mappings as they were, and the phones see the learn end without it)."""
        events: list[tuple[str, dict[str, Any]]] = []
        try:
            await self._write({**self.mappings, mapping.id: mapping})
        except StoreError as exc:
            log.error("midi: the learned mapping is not kept: %s", exc)
        else:
            self.mappings = {**self.mappings, mapping.id: mapping}
            events.append(("MIDI_LEARNED", {"mapping": mapping.to_dict(), "event": learned.describe()}))
            await self._keep_with_board(mapping)
        self.controller.publish([*events, ("MIDI_STATE", self.state())], None, {"user_id": "midi"})

    def _new_id(self) -> str:
        return _free_id(self.mappings)

    # -- requests ------------------------------------------------------------------------

    def _check_room(self, mapping_id: str) -> None:
        if mapping_id not in self.mappings and len(self.mappings) >= midimap.MAX_MAPPINGS:
            raise InvalidValue(
                f"this box keeps at most {midimap.MAX_MAPPINGS} mappings", {"field": "mapping"}
            )

    async def _get(self, request: Request) -> Outcome:
        return Outcome(reply=[("MIDI_STATE", self.state())])

    async def _set(self, request: Request) -> Outcome:
        mapping = midimap.from_dict(request.data.get("mapping"))
        if not mapping.id:
            mapping = dataclasses.replace(mapping, id=self._new_id())
        self._check_room(mapping.id)
        old = self.mappings.get(mapping.id)
        await self._write({**self.mappings, mapping.id: mapping})
        self.mappings = {**self.mappings, mapping.id: mapping}
        await self._keep_with_board(mapping, old)
        return Outcome(broadcast=[("MIDI_STATE", self.state())])

    async def _delete(self, request: Request) -> Outcome:
        mapping_id = request.data.get("id")
        if mapping_id not in self.mappings:
            raise UnknownMapping(f"no MIDI mapping {mapping_id!r}", {"id": mapping_id})
        rest = {k: v for k, v in self.mappings.items() if k != mapping_id}
        gone = self.mappings[mapping_id]
        await self._write(rest)
        self.mappings = rest
        await self._keep_with_board(gone)
        return Outcome(broadcast=[("MIDI_STATE", self.state())])

    async def _learn(self, request: Request) -> Outcome:
        partial = midimap.from_dict(request.data.get("mapping"), learning=True)
        self._check_room(partial.id)
        omni = request.data.get("omni", False) is True
        if self.learning is not None:
            self.learning[2].cancel()
        timer = asyncio.get_running_loop().call_later(LEARN_TIMEOUT, self._learn_expired)
        self.learning = (partial, omni, timer)
        return Outcome(broadcast=[("MIDI_STATE", self.state())])

    async def _cancel(self, request: Request) -> Outcome:
        if self.learning is not None:
            self.learning[2].cancel()
            self.learning = None
        return Outcome(broadcast=[("MIDI_STATE", self.state())])

    # -- with each pedalboard (appliance.control.library.BoardPart) --------------------

    async def _keep_with_board(self, *changed: Mapping | None) -> None:
        """The pedalboard playing keeps its plugins' mappings at once, when one of them changed."""
        if self.board_kept is None or not any(m is not None and m.plugin_id is not None for m in changed):
            return
        try:
            await self.board_kept()
        except (OSError, ApplianceError) as exc:
            log.error("midi: the pedalboard playing does not keep the change: %s", exc)

    key = "midi"

    def kept(self, ids: dict[str, str]) -> list[dict[str, Any]]:
        """What a pedalboard keeps: the mappings of its plugins (knobs and bypasses), aimed at
        the ids the plugins have in its saved board (``ids``: playing id → saved id)."""
        return [
            dataclasses.replace(m, plugin_id=ids[m.plugin_id]).to_dict()
            for m in self.mappings.values()
            if m.plugin_id is not None and m.plugin_id in ids
        ]

    async def switched(self, kept: Any, ids: dict[str, str]) -> None:
        """A pedalboard now plays: its plugins' mappings (aimed at the ids they play under now)
        replace the last board's (none when it was saved without them); the box's own
        (setlist, tuner, mixer, pedalboards) stay."""
        mappings = {k: m for k, m in self.mappings.items() if m.plugin_id is None}
        for entry in kept if isinstance(kept, list) else []:
            try:
                mapping = midimap.from_dict(entry)
            except InvalidValue as exc:
                log.error("midi: a mapping of the pedalboard is left out: %s", exc)
                continue
            if mapping.plugin_id not in ids:
                log.warning("midi: %s aims at %s, not on the pedalboard", mapping.id, mapping.plugin_id)
                continue
            mapping = dataclasses.replace(mapping, plugin_id=ids[mapping.plugin_id])
            if not mapping.id or mapping.id in mappings:  # one of the box's took its id meanwhile
                mapping = dataclasses.replace(mapping, id=_free_id(mappings))
            mappings[mapping.id] = mapping
        if mappings == self.mappings:
            return
        try:
            await self._write(mappings)
        except StoreError as exc:
            log.error("midi: the pedalboard's mappings are used but not kept: %s", exc)
        self.mappings = mappings
        self.controller.publish([("MIDI_STATE", self.state())], None, {"user_id": "midi"})

    # -- the file --------------------------------------------------------------------

    def _read(self) -> dict[str, Mapping]:
        """The kept mappings; a mapping the box cannot use is logged and left out, never fatal."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("midi: %s is unreadable (%s); no mappings", self.path, exc)
            return {}
        found: dict[str, Mapping] = {}
        for entry in data.get("mappings", []) if isinstance(data, dict) else []:
            try:
                mapping = midimap.from_dict(entry)
            except InvalidValue as exc:
                log.error("midi: a mapping in %s is left out: %s", self.path, exc)
                continue
            if mapping.id:
                found[mapping.id] = mapping
        return found

    async def _write(self, mappings: dict[str, Mapping]) -> None:
        text = json.dumps({"mappings": [m.to_dict() for m in mappings.values()]}, indent=1) + "\n"
        async with self._file_lock:
            try:
                await asyncio.to_thread(write_atomic, self.path, text)
            except OSError as exc:
                raise StoreError(f"cannot save the MIDI mappings to {self.path}: {exc.strerror}") from exc

    # -- JACK ------------------------------------------------------------------------

    def _skip(self, client: str) -> bool:
        """Not an input: the engine's own clients, and this service's."""
        return client.startswith(self.name) or bool(self.own_clients and client.startswith(self.own_clients))
