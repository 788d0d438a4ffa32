"""The composition root: the only place that picks the engine, notifier and files.

``run(config)`` brings the box up in order (catalog, engine, board, server,
systemd), serves until SIGTERM/SIGINT, and brings it down in reverse, saving
the board last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import Config
from .control.backups import Backups
from .control.controller import Controller
from .control.library import Library
from .control.playerfiles import PlayerFiles
from .control.updates import System, Updates, read_system
from .core.board import Board
from .core.controls import PluginType
from .core.errors import ApplianceError, ConfigError, EngineError, StoreError
from .engine import NO_OWN_PLUGINS, Engine, EngineEvent, OwnPlugins, TrackPorts
from .engine.faders import FADER_URI
from .engine.meters import METER_URI, TUNER_URI
from .frontends import gpio, gpiomap
from .frontends.midi import MIDI_FILE, MidiService
from .frontends.mixer import Mixer, MixerService
from .frontends.net import ControlServer
from .frontends.readings import MeterFeed, Tuner
from .frontends.tempo import TempoService
from .plugins.catalog import Catalog
from .store.backup import recover_restore
from .store.boards import BoardStore, DebouncedSaver
from .store.files import write_atomic
from .store.pedalboards import PedalboardStore
from .store.userfiles import UserFiles, remove_incoming
from .system.logs import fields
from .system.watchdog import LoopLag, SystemdNotifier, watchdog_loop

log = logging.getLogger("appliance.app")

#: How long each shutdown step (server, save, engine) may take.
STOP_STEP_TIMEOUT = 20.0
#: How long each step of a start may take before systemd gives up on it, seconds (the
#: unit's own 90 s is for the first one; the LV2 scan of a first start on a slow card, or
#: loading a big board, takes longer, and a step that hangs is still caught).
START_STEPS = {"scan": 300.0, "engine": 120.0, "board": 300.0, "serve": 120.0}
#: How often the box tries to start its engine again on a JACK server that went away.
ENGINE_RETRY_INTERVAL = 0.5


def make_engine(config: Config, on_event: Any, own: OwnPlugins = NO_OWN_PLUGINS) -> Engine:
    """Choose the engine adapter as ``engine.kind`` says, and log which and why; it puts the
    tempo on JACK's transport when ``transport_master`` says so.

    ``own``: the plugins the engine hosts for the box (faders, meters, tuner).
    """
    engine = _chosen_engine(config, on_event, own)
    if config.transport_master:
        engine.follow_tempo()
    return engine


def _chosen_engine(config: Config, on_event: Any, own: OwnPlugins) -> Engine:
    tracks = [TrackPorts(t.id, t.inputs, t.outputs) for t in config.tracks]
    jack = dataclasses.replace(config.engine.jack, server=jack_server_name(config))
    kind = config.engine.kind
    if kind in ("auto", "carla"):
        reason = carla_unavailable(config)
        if reason is None:
            from .engine.carla.engine import CarlaEngine

            why = "configured" if kind == "carla" else "found by auto"
            log.info("engine: Carla (%s)", why, extra=fields(engine="carla"))
            if jack.dummy is not None:  # the rack's own period on the virtual box
                rack = dataclasses.replace(jack.dummy, period=jack.dummy.period_for("carla"))
                jack = dataclasses.replace(jack, dummy=rack)
            return CarlaEngine(tracks, config.engine.carla, jack, on_event=on_event, own=own)
        if kind == "carla":
            raise EngineError(f"engine.kind is carla but Carla cannot be used: {reason}")
        log.info("engine: jalv (Carla not used: %s)", reason, extra=fields(engine="jalv"))
    else:
        log.info("engine: jalv (configured)", extra=fields(engine="jalv"))
    from .engine.jack.server import DummySettings
    from .engine.jalv.engine import JalvEngine

    dummy = jack.dummy
    settings = DummySettings(dummy.rate, dummy.period_for("jalv"), dummy.realtime) if dummy else None
    return JalvEngine(tracks, jack.server, on_event=on_event, dummy_server=settings, own=own)


#: The box's own plugins (all in ``x42-plugins``): what each one missing costs.
OWN_PLUGINS = {
    "fader": (FADER_URI, "board switches will cut, not fade"),
    "meter": (METER_URI, "the phones show no level meters"),
    "tuner": (TUNER_URI, "there is no tuner"),
}


def own_plugins(catalog: Catalog) -> OwnPlugins:
    """The plugins the engine hosts for the box, from the scan; each missing one logged once."""
    found: dict[str, PluginType | None] = {}
    for role, (uri, cost) in OWN_PLUGINS.items():
        found[role] = catalog.lookup(uri)
        if found[role] is None:
            log.warning("%s (x42-plugins) is missing: %s", uri, cost)
    return OwnPlugins(**found)


def jack_server_name(config: Config) -> str | None:
    """The JACK server the box plays on: the configured one, the virtual box's own, or
    (None) JACK's default."""
    jack = config.engine.jack
    if jack.dummy is not None and jack.server is None:
        return private_server_name(config.data_dir)
    return jack.server


def private_server_name(data_dir: Path) -> str:
    """The virtual box's own JACK server: one name per data folder, the same at every start,
    so that a server a crash left behind is replaced, not added to JACK's eight slots."""
    digest = hashlib.sha1(str(data_dir.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"appliance-{digest[:8]}"


def pin_factory() -> Any:
    """gpiozero's lgpio pin factory (the only one that works on a Pi 5), or None, said once
    in the log, on a machine without GPIO. The only place a pin factory is chosen."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as exc:  # no lgpio module, no /dev/gpiochip*: not a Pi
        log.info("no GPIO on this machine (%s): knobs and footswitches are off, the rest runs", exc)
        return None


def carla_unavailable(config: Config) -> str | None:
    """Why Carla cannot be used here, or None when it can."""
    from .engine import carla

    return carla.unavailable(config.engine.carla.prefix)


#: Mode of a pairing token file this box makes (readable by the service user; on
#: the SD card it lives on the boot partition, which any computer can read anyway).
TOKEN_MODE = 0o644


def read_token(config: Config) -> str | None:
    """The pairing token (auth: token): read it, or make one on first start.

    On the box the token file is made before the box starts, by ``appliance
    token`` run as root (systemd ``ExecStartPre=+``), because the service
    user may not write where the token belongs (the boot partition).

    Raises:
        ConfigError: the file cannot be read, or is missing and cannot be
            made here; one sentence saying which and why.
    """
    if config.server.auth != "token":
        return None
    path = config.server.token_file
    assert path is not None
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError("server.token_file", f"cannot read {path}: {exc.strerror}") from exc
    return make_token(path)


def make_token(path: Path) -> str:
    """Write a new random pairing token to ``path`` (atomically); the token.

    Raises:
        ConfigError: the file cannot be written (the sentence says how the box makes it).
    """
    token = secrets.token_urlsafe(24)
    try:
        write_atomic(path, token + "\n")
        path.chmod(TOKEN_MODE)
    except OSError as exc:
        raise ConfigError(
            "server.token_file",
            f"cannot write {path}: {exc.strerror}; on the box `appliance token` makes it as root "
            "before the box starts (systemd/appliance.service, ExecStartPre)",
        ) from exc
    log.info("made a new pairing token in %s", path)
    return token


def health_report(engine: Engine | None, board: Board | None, uptime: float) -> tuple[bool, dict[str, Any]]:
    """Whether the box is healthy, and the report ``/healthz`` and ``HEALTH_GET`` give.

    Healthy while the engine runs (its JACK graph is moving, its plugin host
    is up). The report is the engine's info, the uptime and how many plugins
    the board holds.
    """
    report: dict[str, Any] = engine.info().as_dict() if engine is not None else {"running": False}
    report["uptime"] = round(uptime, 1)
    if board is not None:
        report["board_plugins"] = sum(1 for _ in board.instances())
    return bool(report.get("running")), report


def status_line(report: dict[str, Any], clients: int, pedalboard: str | None, modified: bool) -> str:
    """``carla 48000 Hz/128, DSP 9 %, 0 xruns, 4 plugins, 2 clients, pedalboard Verse*``."""
    playing = pedalboard if pedalboard is not None else "(unsaved)"
    engine = report.get("engine", "no engine")
    return (
        f"{engine} {report.get('sample_rate', 0)} Hz/{report.get('buffer_size', 0)}, "
        f"DSP {report.get('dsp_load', 0.0):.0f} %, {report.get('xruns', 0)} xruns, "
        f"{report.get('board_plugins', 0)} plugins, {clients} clients, "
        f"pedalboard {playing}{'*' if modified else ''}"
        f"{'' if report.get('saving', 'ok') == 'ok' else ', NOT SAVING (see the log)'}"
    )


#: Makes the engine for a config: ``(config, on_event, own) -> Engine`` (:func:`make_engine`).
EngineMaker = Callable[[Config, Callable[[EngineEvent], None], OwnPlugins], Engine]


class Box:
    """The running box: every part, wired together.

    Args:
        config: what to run.
        engine_maker: picks and makes the engine (tests of the box's own
            lifecycle give an in-memory stand-in).
        system: reads which system this boot runs (blocking; called once, off the loop):
            on the Debian card, its root and version (tests give their own boot folder and
            kernel command line).
    """

    def __init__(
        self,
        config: Config,
        engine_maker: EngineMaker = make_engine,
        system: Callable[[], System] = read_system,
    ) -> None:
        self.config = config
        self.engine_maker = engine_maker
        self.read_system = system
        self.started = time.monotonic()
        self.notifier = SystemdNotifier()
        self.engine: Engine | None = None
        self.server: ControlServer | None = None
        self.saver: DebouncedSaver | None = None
        self.controller: Controller | None = None
        self.catalog: Catalog | None = None
        self.library: Library | None = None
        self.hardware: gpio.Hardware | None = None
        self.mixer: MixerService | None = None
        self.midi: MidiService | None = None
        self.updates: Updates | None = None
        self.tempo: TempoService | None = None
        self.meters: asyncio.Task[None] | None = None
        self.restarting: asyncio.Task[None] | None = None
        #: The engine said it must be started again, and has not been yet.
        self.engine_lost = False
        self.lag = LoopLag()
        self.lagging: asyncio.Task[None] | None = None
        #: Set when the box must start again (a restored backup is swapped in at start).
        self.restart = asyncio.Event()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The box plays on while it cannot save: that is reported, not called unhealthy."""
        board = self.controller.board if self.controller is not None else None
        healthy, report = health_report(self.engine, board, time.monotonic() - self.started)
        if self.saver is not None:
            failing = self.saver.last_error
            report["saving"] = "ok" if failing is None else f"failing, retrying: {failing}"
        report["loop_lag_ms"] = self.lag.report()
        if self.updates is not None:
            report["system"] = self.updates.report()
        return healthy, report

    def _saved_board(self) -> dict[str, Any]:
        """What ``board.json`` holds: the board, and which pedalboard and snapshot it is."""
        assert self.controller is not None
        data = self.controller.board.to_dict()
        if self.library is not None:
            data["library"] = self.library.saved_state()
        if self.mixer is not None:
            data["mixer"] = self.mixer.saved_state()
        if self.tempo is not None:
            data["tempo"] = self.tempo.saved_state()
        return data

    def _board_changed(self) -> None:
        if self.saver is not None:
            self.saver.changed()
        if self.library is not None:
            self.library.board_changed()

    def _on_engine_event(self, event: EngineEvent) -> None:
        if event.needs_restart:
            self.engine_lost = True  # even before the controller exists: start() looks
        if self.controller is None:
            return
        self.controller.engine_event(event)
        if event.needs_restart and self.restarting is None:
            self.restarting = asyncio.create_task(self._restart_engine())

    async def _restart_engine(self, fresh: bool = False) -> None:
        """The engine lost its JACK server, or could not reach it at the start: start it again
        with the board once the server answers (again, if it is lost again meanwhile).

        Meanwhile ``/healthz`` says 503 and the watchdog is not petted, so if
        JACK stays away, systemd restarts the box (``WatchdogSec``). ``fresh``:
        the box has no saved board, and the demo board is loaded once the engine runs.
        """
        assert self.controller is not None
        controller = self.controller
        lost = time.monotonic()
        if self.midi is not None:  # its JACK clients close before the engine's open on the new server
            await self.midi.pause()
        try:
            while True:
                self.engine_lost = False
                if not await controller.restart_engine(lambda: self._load_engine(controller.board)):
                    await asyncio.sleep(ENGINE_RETRY_INTERVAL)
                elif not self.engine_lost:
                    break
        finally:
            self.restarting = None
        back = f"back on the JACK server after {time.monotonic() - lost:.1f} s"
        controller.engine_event(EngineEvent("engine-restored", None, back))
        if self.midi is not None:  # its monitor and patch client went with the old server
            await self.midi.listen()
        if fresh:
            await self._load_demo()

    async def start(self) -> None:
        config = self.config
        self.lagging = asyncio.create_task(self.lag.run())
        try:
            recovered = await asyncio.to_thread(recover_restore, config.data_dir)
        except StoreError as exc:  # nothing is lost: the next start tries again
            log.error("backup: %s; the box starts with the data as it is", exc)
        else:
            if recovered:
                log.warning("backup: %s", recovered)
        left = await asyncio.to_thread(remove_incoming, config.data_dir)
        if left:
            names = ", ".join(p.name for p in left)
            log.warning("removed %d temporary file(s) a stop cut short: %s", len(left), names)
        token = await asyncio.to_thread(read_token, config)
        self.notifier.starting("reading the LV2 plugins", START_STEPS["scan"])
        self.catalog = await asyncio.to_thread(
            Catalog.load, config.catalog, cache=config.data_dir / "lv2-scan.json"
        )
        board = Board(t.id for t in config.tracks)
        store = BoardStore(config.data_dir)
        saved = await asyncio.to_thread(store.load)
        if saved is not None:
            try:
                for problem in board.restore(saved, self.catalog):
                    log.warning("board: %s", problem)
            except (ValueError, TypeError, AttributeError) as exc:
                aside = await asyncio.to_thread(store.set_aside, "unusable")
                log.error("saved board is not usable (%s); moved it to %s and started empty", exc, aside)
                board = Board(t.id for t in config.tracks)
        self.notifier.starting("starting the engine", START_STEPS["engine"])
        self.engine = self.engine_maker(config, self._on_engine_event, own_plugins(self.catalog))
        waiting = False
        try:
            await self.engine.start()
        except EngineError as exc:
            if config.engine.jack.dummy is not None:
                raise  # the box's own JACK server did not start: nothing to wait for
            log.error("engine: %s; the box serves meanwhile and starts it once JACK answers", exc)
            waiting = True
        self.saver = DebouncedSaver(store, self._saved_board, config.save_delay)
        self.controller = Controller(
            board, self.catalog, self.engine, self._board_changed, lambda: self.health()[1]
        )
        user_files = self.controller.user_files = UserFiles(config.data_dir / "files", config.files)
        self.library = Library(
            self.controller,
            PedalboardStore(config.data_dir),
            config.spillover,
            self.saver.changed,
            config.switch_ceiling,
        )
        player_files = PlayerFiles(self.controller, self.library, user_files)
        backups = Backups(config.data_dir, config.files, self.saver.flush, self._restart)
        self.updates = Updates(config.data_dir, await asyncio.to_thread(self.read_system))
        await self.updates.refresh()
        self.controller.health_readers.append(self.updates.refresh)
        self.tempo = TempoService(self.controller, asyncio.get_running_loop().time, self.saver.changed)
        self.tempo.start(saved.get("tempo") if saved else None)  # before any plugin that follows it loads
        self.library.attach(self.tempo)  # kept on PEDALBOARD_SAVE only (not at each tap)
        if waiting or self.engine_lost:  # not started, or lost its server as it started
            self.restarting = asyncio.create_task(self._restart_engine(fresh=saved is None))
        else:
            self.notifier.starting("loading the board", START_STEPS["board"])
            await self.controller.exclusively(lambda: self._load_engine(board))
            if saved is None:
                await self._load_demo()
        self.notifier.starting("starting the library, GPIO, MIDI and the server", START_STEPS["serve"])
        await self.library.start(saved.get("library") if saved else None)
        await self._start_mixer(saved.get("mixer") if saved else None)
        Tuner(self.controller)
        await self._start_gpio(board)
        await self._start_midi()
        self.server = ControlServer(
            config.server, self.controller, self.health, token, player_files, backups, self.updates
        )
        await self.server.start()
        feed = MeterFeed(self.engine, self.server.metering, self.server.send_meters)
        self.meters = asyncio.create_task(feed.run())
        self.notifier.notify("READY=1", f"STATUS=serving on port {self.server.port}")

    async def _start_mixer(self, saved: dict[str, Any] | None) -> None:
        """The HAT's mixer on the protocol, its saved levels put back; absent without a card."""
        assert self.controller is not None and self.saver is not None
        found = None
        if self.config.mixer is not None:
            found = await asyncio.to_thread(Mixer.open, self.config.mixer)
        self.mixer = MixerService(self.controller, found, self.saver.changed)
        await self.mixer.start(saved)

    async def _start_gpio(self, board: Board) -> None:
        """The encoders and footswitches of the GPIO map, on the Pi's pins (lgpio).

        A bad map stops the start (ConfigError, exit 2); a map that does not fit
        the board (a position holding another plugin) never does. A machine
        without GPIO runs without them, said once in the log.
        """
        if self.config.gpio is None:
            return
        gpio_map = await asyncio.to_thread(gpiomap.load, self.config.gpio)
        mixer = self.config.mixer.controls if self.config.mixer is not None else {}
        for idle in gpiomap.check_controls(gpio_map, board, mixer):
            log.info("gpio: %s; the encoder drives nothing there until the board has it", idle)
        factory = await asyncio.to_thread(pin_factory)
        if factory is None:
            return
        assert self.controller is not None
        self.hardware = gpio.Hardware(gpio_map, self.controller, factory)
        await self.hardware.start()

    async def _start_midi(self) -> None:
        """MIDI controllers on the box's JACK server (``midi: false`` turns them off)."""
        if not self.config.midi:
            return
        assert self.controller is not None and self.engine is not None
        server = jack_server_name(self.config)
        own = str(getattr(self.engine, "prefix", ""))
        self.midi = MidiService(self.controller, self.config.data_dir / MIDI_FILE, server, own)
        if self.tempo is not None:
            self.midi.on_clock = self.tempo.clock_tick
            self.midi.on_tap = self.tempo.midi_tap
        if self.library is not None:
            self.midi.board_kept = self.library.attach(self.midi)
        await self.midi.start()

    async def _load_engine(self, board: Board) -> None:
        """Put the board into the engine (no structural change may run meanwhile).

        A plugin that could not be loaded is kept in the saved board, dormant,
        unless the engine itself was lost meanwhile: then the restart that
        follows loads the whole board again.
        """
        assert self.engine is not None
        assert self.controller is not None
        saved = [self.controller.saved(t.id, p) for t, p in board.instances()]
        failed = await self.engine.load_board(saved)
        if failed and self.engine_lost:
            log.error(
                "board: %d plugin(s) not loaded: the engine lost its JACK server; loading them again "
                "once it is back",
                len(failed),
            )
            return
        for plugin in saved:
            if plugin.plugin_id in failed:
                board.make_dormant(plugin.track_id, plugin.plugin_id)
                why = failed[plugin.plugin_id]
                log.error(
                    "board: %s could not be loaded (%s); kept in the saved board", plugin.plugin_id, why
                )
        log.info("board loaded: %d plugins", sum(1 for _ in board.instances()))

    async def _load_demo(self) -> None:
        """A fresh box (nothing saved) plays the config's demo board."""
        assert self.controller is not None and self.catalog is not None
        for demo in self.config.demo:
            plugin_type = self.catalog.lookup(demo.plugin)
            if plugin_type is None:
                log.warning("demo: plugin %s is not installed", demo.plugin)
                continue
            try:
                await self.controller.add(
                    demo.track, plugin_type, plugin_type.name, None, demo.values, demo.bypass
                )
            except ApplianceError as exc:
                log.error("demo: %s could not be loaded (%s)", demo.plugin, exc)
        log.info("demo board loaded: %d plugins", sum(1 for _ in self.controller.board.instances()))

    def _restart(self, reason: str) -> None:
        log.info("starting again: %s", reason)
        self.restart.set()

    async def stop(self, restarting: bool = False) -> None:
        """Stop serving, save the board, stop the engine: each step even if one before failed.
        ``restarting``: systemd is told the box reloads, not that it stops."""
        self.notifier.notify("RELOADING=1" if restarting else "STOPPING=1")
        for task in (self.meters, self.restarting, self.lagging):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        steps: list[tuple[str, Callable[[], Awaitable[object]] | None]] = [
            ("gpio", self.hardware.stop if self.hardware else None),
            ("midi", self.midi.stop if self.midi else None),
            ("server", self.server.stop if self.server else None),
            ("save", self.saver.flush if self.saver else None),
            ("engine", self.engine.stop if self.engine else None),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await asyncio.wait_for(step(), STOP_STEP_TIMEOUT)
            except Exception:
                log.exception("stopping: the %s step failed", name)

    def status(self) -> tuple[bool, str]:
        """Whether the box is healthy, and systemd's one-line STATUS (``systemctl status appliance``)."""
        healthy, report = self.health()
        clients = len(self.server.sessions) if self.server is not None else 0
        state = self.library.state() if self.library is not None else {}
        return healthy, status_line(report, clients, state.get("pedalboard"), bool(state.get("modified")))


async def run(config: Config) -> None:
    """Run the box until SIGTERM or SIGINT, starting it again whenever it asks (a restore)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        box = Box(config)
        try:
            await box.start()
            log.info("box is up: http://%s:%d/", config.server.host, box.server.port if box.server else 0)
            dog = asyncio.create_task(watchdog_loop(box.notifier, box.status))
            stopping = asyncio.create_task(stop.wait())
            restarting = asyncio.create_task(box.restart.wait())
            await asyncio.wait((stopping, restarting), return_when=asyncio.FIRST_COMPLETED)
            for task in (dog, stopping, restarting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("stopping" if stop.is_set() else "stopping to start again")
        finally:
            await box.stop(restarting=box.restart.is_set() and not stop.is_set())


def default_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "appliance.yaml"
