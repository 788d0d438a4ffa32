"""The Carla engine: plugins hosted by Carla in a child process, chained by JACK.

The host process (:mod:`.host`, driven through :class:`.process.CarlaHostProcess`)
runs Carla in JACK's multiple-clients mode, so every plugin is a JACK client
and the chains are JACK connections made by the same wiring as the jalv
engine's (:mod:`appliance.engine.jackengine`). What is Carla's here:

* **Bypass** is the plugin's own enable control, else Carla's dry/wet at 0
  (both inside the host, no rewiring), else the chain routes around it.
* **A new plugin pre-rolls** unconnected for :data:`PLUGIN_PREROLL`, so that
  it enters the chain with its controls settled (Carla sets values after
  activation and many plugins smooth from there).
* **A crashed or wedged host** (a segfault in Carla or a plugin, no heartbeat
  for ``hang_timeout``, a request not answered) is killed if need be and
  reported (``engine-died``); every track plays dry meanwhile; a new host is
  started and every plugin reloaded with its values and bypass; then
  ``engine-restored`` says how long the gap was. The box's control plane
  never stops serving: the crash is in another process.

Loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...config import CarlaConfig, JackConfig
from ...controls import Control, Kind
from ...errors import EngineError, PluginLoadFailed, UnknownPlugin
from .. import (
    NO_OWN_PLUGINS,
    PLUGIN_START_TIMEOUT,
    EngineEvent,
    EngineInfo,
    EventSink,
    OwnPlugins,
    TrackPorts,
)
from ..jackengine import JackChainEngine, Slot, safe_name
from ..jackserver import DummySettings
from ..respawn import DEFAULT_RESPAWN, RespawnPolicy, RespawnSettings
from ..wiring import JACK_CALL_TIMEOUT, Changer, Connection
from .install import BRIDGE_BINARY, CarlaPaths, find_carla
from .process import CarlaHostProcess

log = logging.getLogger("appliance.engine.carla")

#: How long a new plugin runs unconnected before it joins its chain (control smoothing).
PLUGIN_PREROLL = 0.3
#: How long a quick request to the host (remove, read values) may take.
CARLA_CALL_TIMEOUT = 5.0
#: A host silent for this long (no heartbeat) is wedged and is killed.
HOST_HANG_TIMEOUT = 5.0
#: How often the heartbeat is checked.
HANG_CHECK_INTERVAL = 1.0
#: How long a new plugin's JACK ports may take to show, once Carla has added it.
PORTS_TIMEOUT = 5.0
#: Carla keeps plugin names (its JACK client names here) this short.
CARLA_NAME_MAX = 57


class CarlaEngine(JackChainEngine):
    """Hosts the plugins in a Carla host process and wires the chains with JACK.

    Args:
        tracks: the tracks and their fixed JACK endpoints.
        carla: the installation prefix and whether plugins run bridged.
        jack: the JACK server (``server``), or a dummy server to start
            (``dummy``, the virtual box).
        on_event: receives :class:`EngineEvent` on the loop's thread.
        client_prefix: prefix of every JACK client name; unique by default.
        respawn: when to restart a crashed host.
        hang_timeout: seconds without a heartbeat before the host is killed.
        preroll, graph_fault, jack_timeout: see :class:`JackChainEngine`.
    """

    name = "carla"

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        carla: CarlaConfig,
        jack: JackConfig,
        on_event: EventSink | None = None,
        client_prefix: str | None = None,
        respawn: RespawnSettings = DEFAULT_RESPAWN,
        hang_timeout: float = HOST_HANG_TIMEOUT,
        preroll: float = PLUGIN_PREROLL,
        graph_fault: Callable[[], None] | None = None,
        jack_timeout: float = JACK_CALL_TIMEOUT,
        own: OwnPlugins = NO_OWN_PLUGINS,
    ) -> None:
        dummy = jack.dummy
        settings = DummySettings(dummy.rate, dummy.period, dummy.realtime) if dummy else None
        super().__init__(
            tracks,
            jack.server,
            on_event,
            settings,
            client_prefix,
            preroll=preroll,
            graph_fault=graph_fault,
            jack_timeout=jack_timeout,
            own=own,
        )
        self.carla = carla
        self.hang_timeout = hang_timeout
        self._respawn = respawn
        self._paths: CarlaPaths | None = None
        self._host: CarlaHostProcess | None = None
        self._hosted_by: dict[str, CarlaHostProcess] = {}
        self._generation = 0
        self._names = itertools.count(1)
        self._policy: RespawnPolicy | None = None
        self._plugin_policies: dict[str, RespawnPolicy] = {}  # plugins that died in a running host
        self._host_load = 0.0
        self._restarts = 0
        self._last_gap: float | None = None
        self._down_since: float | None = None  # loop time the host went away, until all is back
        self._reconciling = asyncio.Lock()
        # The host takes requests one at a time (process.py): each step of a start
        # has its own timeout from when the host begins it, not one around the queue.
        self.start_timeout = None

    # -- diagnostics -----------------------------------------------------------------

    @property
    def host_pid(self) -> int | None:
        """The host process's id, or None while there is none (tests play crashes with it)."""
        host = self._host
        return host.pid if host is not None and host.is_running else None

    def bridge_pids(self) -> set[int]:
        """The host's bridge processes now (tests and ``hil/`` play crashes with them)."""
        host = self.host_pid
        found: set[int] = set()
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == host and BRIDGE_BINARY.encode() in (proc / "cmdline").read_bytes():
                    found.add(int(proc.name))
        return found

    def kill_host(self, sig: Any) -> None:
        """Send a signal to the host process (tests and ``hil/`` play crashes with it)."""
        if self._host is not None:
            self._host.kill(sig)

    async def controls(self, plugin_id: str) -> tuple[Control, ...]:
        """The plugin's input controls as Carla itself describes them.

        What a plugin format without LV2 data (VST, CLAP) would be described by.

        Raises:
            UnknownPlugin: no such plugin.
        """
        described = await self._ask("controls", plugin_id)
        controls = []
        for c in described:
            kind: Kind = c["kind"]
            labels = tuple((float(v), str(label)) for v, label in c["labels"])
            controls.append(
                Control(
                    symbol=c["symbol"],
                    name=c["name"],
                    minimum=c["minimum"],
                    maximum=c["maximum"],
                    default=c["default"],
                    unit=c["unit"],
                    kind=kind,
                    labels=labels,
                    logarithmic=c["logarithmic"],
                )
            )
        return tuple(controls)

    async def values(self, plugin_id: str) -> dict[str, float]:
        """Every input control's current value, read back from Carla, by symbol."""
        values: dict[str, float] = await self._ask("values", plugin_id)
        return values

    async def reset_parameters(self, plugin_id: str) -> None:
        """Carla resets the plugin's controls to their defaults; the changes come back as events."""
        await self._ask("reset", plugin_id)

    def info(self) -> EngineInfo:
        """As :meth:`JackChainEngine.info`; not running while the host is down."""
        info = super().info()
        if info.running and (self._host is None or not self._host.is_running):
            return dataclasses.replace(info, running=False, dsp_load=0.0)
        return info

    # -- hosting hooks ---------------------------------------------------------------

    async def _start_host(self) -> None:
        self._paths = find_carla(self.carla.prefix)
        self._policy = RespawnPolicy(asyncio.get_running_loop().time, self._respawn)
        await self._spawn_host()
        self._background(self._watch_heartbeat())

    async def _stop_host(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.stop()

    async def _instantiate(self, slot: Slot) -> None:
        host = self._require_host()
        client = f"{self.prefix}-{safe_name(slot.id)}.{next(self._names)}"[:CARLA_NAME_MAX]
        enable = None
        if slot.type.enable_symbol is not None:
            enable = {
                "symbol": slot.type.enable_symbol,
                "on": slot.type.enable_value(bypass=False),
                "off": slot.type.enable_value(bypass=True),
            }
        self._hosted_by[slot.id] = host  # from now on a release removes it (the pipe keeps order)
        try:
            reply = await self._request(
                host,
                "add",
                PLUGIN_START_TIMEOUT,
                plugin=slot.id,
                uri=slot.type.uri,
                client=client,
                values=slot.values,
                bypass=slot.bypass,
                enable=enable,
            )
            wanted_in, wanted_out = int(reply["inputs"]), int(reply["outputs"])

            def still_starting() -> None:
                if not host.is_running:
                    raise EngineError("the Carla host ended while the plugin started")
                if slot.retired:
                    raise EngineError(f"{slot.id} was removed while it started")

            try:
                inputs, outputs = await asyncio.wait_for(
                    self._wait_ports(
                        str(reply["client"]),
                        lambda ins, outs: len(ins) >= wanted_in and len(outs) >= wanted_out,
                        still_starting,
                    ),
                    PORTS_TIMEOUT,
                )
            except TimeoutError:
                raise PluginLoadFailed(f"{slot.type.uri}: its JACK ports did not appear") from None
        except BaseException:
            await self._release(slot)
            raise
        main = len(slot.type.audio_inputs)
        slot.client_name = str(reply["client"])
        slot.inputs = inputs[:main] if 0 < main < len(inputs) else inputs  # side-chains stay unwired
        slot.outputs = outputs
        slot.hosted_bypass = reply["bypass"] != "reroute"

    async def _release(self, slot: Slot) -> None:
        host = self._hosted_by.pop(slot.id, None)
        if host is None or host is not self._host or not host.is_running:
            return  # its host has ended: so has the plugin
        with contextlib.suppress(UnknownPlugin):
            await self._request(host, "remove", CARLA_CALL_TIMEOUT, plugin=slot.id)

    def _deliver_values(self, slot: Slot, values: Mapping[str, float]) -> None:
        """One message to the host."""
        host = self._hosted_by.get(slot.id)
        if host is not None:
            host.send("set", plugin=slot.id, values=values)

    def _poll_readings(self, slots: list[Slot]) -> None:
        """One ``readings`` message for all of them."""
        host = self._host
        if host is not None and host.is_running:
            host.send("readings", plugins=[slot.id for slot in slots])

    def _take_readings(self, values: object) -> None:
        if not isinstance(values, dict):
            return
        slots = {slot.id: slot for slot in (*self._plugins.values(), *self._own_slots())}
        for plugin_id, readings in values.items():
            slot = slots.get(plugin_id)
            if slot is not None and isinstance(readings, dict):
                slot.readings.update((str(k), float(v)) for k, v in readings.items())

    def _send_bypass(self, slot: Slot, bypass: bool) -> None:
        host = self._hosted_by.get(slot.id)
        if host is not None:
            self._flush_values(slot)  # values sent before the bypass land before it
            host.send("bypass", plugin=slot.id, bypass=bypass)

    def _host_lost(self, exc: BaseException) -> bool:
        """A start that failed because the host died (a crash, a kill): the slot is kept."""
        host = self._host
        return type(exc) is EngineError and self._started and (host is None or not host.is_running)

    def _joined_down(self, slot: Slot) -> None:
        if self._host is not None and self._host.is_running:
            self._background(self._reconcile())
        # else: the restart under way reconciles every chain once it has a host

    def _changer(self) -> Changer | None:
        """The host makes the connections while it runs (see ``CarlaHost._wire``)."""
        host = self._host
        if host is None or not host.is_running:
            return None  # no Carla process: the box's own wiring client is safe

        async def change(connect: list[Connection], disconnect: list[Connection]) -> list[str]:
            wire = {"connect": connect, "disconnect": disconnect}
            failures = await self._request(host, "wire", CARLA_CALL_TIMEOUT, **wire)
            return [str(failure) for failure in failures]

        return change

    def _details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "bridges": self.carla.bridges,
            "host": "up" if self._host is not None and self._host.is_running else "down",
            "host_load": round(self._host_load, 2),
            "restarts": self._restarts,
        }
        if self._last_gap is not None:
            details["last_gap_ms"] = round(self._last_gap * 1000)
        return details

    # -- the host process ------------------------------------------------------------

    def _require_host(self) -> CarlaHostProcess:
        host = self._host
        if host is None or not host.is_running:
            raise EngineError("the Carla host is not running")
        return host

    async def _ask(self, op: str, plugin_id: str) -> Any:
        slot = self._slot(plugin_id)
        host = self._hosted_by.get(slot.id)
        if host is None:
            raise EngineError(f"plugin {plugin_id} is not running")
        return await self._request(host, op, CARLA_CALL_TIMEOUT, plugin=slot.id)

    async def _request(self, host: CarlaHostProcess, op: str, timeout: float, **fields: Any) -> Any:
        """A request to the host, behind every value still waiting for its loop turn."""
        for plugin_id in list(self._unsent):
            slot = self._plugins.get(plugin_id) or self._loading.get(plugin_id)
            if slot is not None:
                self._flush_values(slot)
        return await host.request(op, timeout, **fields)

    async def _spawn_host(self) -> None:
        assert self._paths is not None
        self._generation += 1
        host = CarlaHostProcess(
            self._paths,
            self.server_name,
            f"{self.prefix}-g{self._generation}",
            self.carla.bridges,
            self._host_event,
            functools.partial(self._host_ended, self._generation),
        )
        ready = await host.start()
        self._host = host
        log.info(
            "carla host %d up (pid %s, %s Hz, %s frames%s)",
            self._generation,
            host.pid,
            ready.get("sample_rate"),
            ready.get("buffer_size"),
            ", bridges" if self.carla.bridges else "",
        )

    def _host_event(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        plugin_id = message.get("plugin")
        if event == "info":
            self._host_load = float(message.get("load", 0.0))
        elif event == "parameter" and isinstance(plugin_id, str) and plugin_id in self._plugins:
            values = {str(k): float(v) for k, v in dict(message.get("values", {})).items()}
            self._emit(EngineEvent("parameter", plugin_id, values=values))
        elif event == "readings":
            self._take_readings(message.get("values"))
        elif event == "plugin-died" and isinstance(plugin_id, str):
            why = str(message.get("message", ""))
            self._emit(EngineEvent("plugin-died", plugin_id, why))
            slot = self._plugins.get(plugin_id)
            if slot is not None and slot.state == "up" and not slot.retired:
                log.warning("plugin %s died in the Carla host: %s", plugin_id, why)
                self._set_down([slot])
                self._background(self._revive(slot))
        elif event == "stopped":
            log.error("carla host: %s", message.get("message"))

    async def _revive(self, slot: Slot) -> None:
        """One plugin died inside a running host (its bridge crashed): the track passes it
        dry while it is removed and loaded again with its values; given up after too many."""
        host = self._host
        for gone in self._plugin_policies.keys() - self._plugins.keys():
            del self._plugin_policies[gone]  # removed since: a new plugin by that id starts afresh
        policy = self._plugin_policies.get(slot.id)
        if policy is None:
            policy = self._plugin_policies[slot.id] = RespawnPolicy(
                asyncio.get_running_loop().time, self._respawn
            )
        delays = policy.died()
        if not delays:
            why = f"died {policy.recent} times within {self._respawn.window:.0f} s"
            log.error("plugin %s stays down (%s); its track passes dry there", slot.id, why)
            self._emit(EngineEvent("plugin-died", slot.id, f"not restarted: {why}"))
            return
        for delay in delays:
            await asyncio.sleep(delay)
            if slot.retired or not self._started or self._host is not host:
                return  # removed, stopping, or a new host reconciles every plugin
            await self._release_quietly(slot)
            try:
                await self._bring_up(slot)
            except EngineError as exc:
                log.warning("reloading %s failed: %s", slot.id, exc)
                continue
            await self._set_up(slot)
            log.info("plugin %s reloaded with its values", slot.id)
            self._emit(EngineEvent("plugin-restored", slot.id, "reloaded with its values"))
            return
        self._emit(EngineEvent("plugin-died", slot.id, "not restarted: reloading failed"))

    def _host_ended(self, generation: int, why: str) -> None:
        """The host process ended on its own (a crash, a kill). Loop thread."""
        if generation != self._generation or not self._started:
            return
        self._host = None
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
        self._emit(EngineEvent("engine-died", None, why))
        self._set_down([*self._hosted_slots(), *self._loading.values()])
        self._background(self._restart())

    async def _restart(self) -> None:
        """Start a new host, then bring every plugin back with its values (:meth:`_reconcile`)."""
        assert self._policy is not None
        delays = self._policy.died()
        if not delays:
            why = f"the Carla host died {self._policy.recent} times within {self._respawn.window:.0f} s"
            log.error("%s; it stays down and every track plays dry", why)
            self._emit(EngineEvent("engine-died", None, f"not restarted: {why}"))
            return
        for delay in delays:
            await asyncio.sleep(delay)
            if not self._started:
                return
            try:
                await self._spawn_host()
            except EngineError as exc:
                log.error("restarting the Carla host failed: %s", exc)
                continue
            if not self._started:  # stop() came meanwhile: this host is nobody's
                await self._stop_host()
                return
            await self._reconcile()
            return
        self._emit(EngineEvent("engine-died", None, "not restarted: the Carla host did not start"))

    async def _reconcile(self) -> None:
        """Bring every plugin that is down back up on the current host; report once all are.

        One at a time (a lock); a plugin that joins down meanwhile is taken in
        the next round. A plugin that cannot come back stays down (dry there)
        and is reported, not retried without end.
        """
        async with self._reconciling:
            tried: set[str] = set()
            while True:
                host = self._host
                if host is None or not host.is_running or not self._started:
                    return  # the host died again: the next restart reconciles
                down = [
                    slot
                    for slot in self._hosted_slots()
                    if slot.state == "down" and not slot.retired and slot.id not in tried
                ]
                if not down:
                    break
                tried.update(slot.id for slot in down)
                results = await asyncio.gather(*(self._bring_up(s) for s in down), return_exceptions=True)
                if host is not self._host or not host.is_running:
                    return
                for slot, result in zip(down, results, strict=True):
                    if isinstance(result, BaseException) and not slot.retired:
                        slot.state = "down"
                        log.error("plugin %s did not come back: %s", slot.id, result)
                        self._emit(EngineEvent("plugin-died", slot.id, f"not restarted: {result}"))
                if self.preroll:
                    await asyncio.sleep(self.preroll)
                async with self._lock:
                    if not self._started:
                        return
                    try:
                        await self._rewire()
                    except EngineError as exc:
                        log.error("rewiring after the restart failed: %s; retrying", exc)
                        self._request_rewire()
            self._report_restored()

    def _report_restored(self) -> None:
        if self._down_since is None:
            return
        gap = asyncio.get_running_loop().time() - self._down_since
        self._down_since = None
        self._restarts += 1
        self._last_gap = gap
        log.warning("carla host restarted: every track was dry for %.0f ms", gap * 1000)
        self._emit(EngineEvent("engine-restored", None, f"back after {gap * 1000:.0f} ms"))

    async def _watch_heartbeat(self) -> None:
        """Kill a host that has gone silent; its end restarts it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HANG_CHECK_INTERVAL)
            host = self._host
            if host is None or not host.is_running or host.busy:
                continue  # a request in flight has its own timeout
            if loop.time() - host.last_heard > self.hang_timeout:
                log.error("the Carla host sent nothing for %.1f s; killing it", self.hang_timeout)
                host.kill()
