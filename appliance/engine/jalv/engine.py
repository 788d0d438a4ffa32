"""The JACK/jalv engine: each plugin a ``jalv`` process, wired in series by JACK.

Debian's packages only: ``jackd2``, ``jalv`` and the LV2 plugins. Every plugin
runs in its own process (:mod:`appliance.engine.jalv.process`), so a crashing
plugin takes nothing else down: the engine notices, routes the track around it
(dry), respawns it with its last values as :mod:`appliance.engine.respawn`
allows, and puts it back in the chain. Bypass is the plugin's own enable
control where it has one (``set`` on its stdin: heard at its next cycle),
else the chain routes around the plugin. Chains, wiring and the two speeds
of change are :mod:`appliance.engine.jalv.chains`'s.

Loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence

from ...core.errors import EngineError, PluginLoadFailed
from ...system.logs import fields
from .. import NO_OWN_PLUGINS, EngineEvent, EventSink, OwnPlugins, TrackPorts
from ..jack.server import DummySettings
from ..jack.wiring import JACK_CALL_TIMEOUT
from ..respawn import DEFAULT_RESPAWN, RespawnPolicy, RespawnSettings
from .chains import CLIENT_NAME_MAX, JackChainEngine, Slot, safe_name
from .process import JalvProcess, jalv_argv

log = logging.getLogger("appliance.engine.jalv.engine")

#: How long a dead plugin's JACK client may take to vanish before its respawn.
CLIENT_GONE_TIMEOUT = 5.0


class JalvEngine(JackChainEngine):
    """Hosts each plugin in a ``jalv`` process and wires the chains with JACK.

    Args:
        tracks, server_name, on_event, dummy_server, client_prefix, preroll,
            graph_fault, jack_timeout, own: see :class:`JackChainEngine`.
        jalv: the jalv executable.
        respawn: when to bring a crashed plugin back.
    """

    name = "jalv"

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        server_name: str | None = None,
        on_event: EventSink | None = None,
        dummy_server: DummySettings | None = None,
        client_prefix: str | None = None,
        jalv: str = "jalv",
        respawn: RespawnSettings = DEFAULT_RESPAWN,
        preroll: float = 0.0,
        graph_fault: Callable[[], None] | None = None,
        jack_timeout: float = JACK_CALL_TIMEOUT,
        own: OwnPlugins = NO_OWN_PLUGINS,
    ) -> None:
        super().__init__(
            tracks,
            server_name,
            on_event,
            dummy_server,
            client_prefix,
            preroll=preroll,
            graph_fault=graph_fault,
            jack_timeout=jack_timeout,
            own=own,
        )
        self._jalv = jalv
        self._respawn = respawn
        self._procs: dict[str, JalvProcess] = {}
        self._policies: dict[str, RespawnPolicy] = {}
        self._client_names: set[str] = set()

    def plugin_pid(self, plugin_id: str) -> int | None:
        """The process id of a plugin's jalv, or None while it is down (for tests).

        Raises:
            UnknownPlugin: no such plugin.
        """
        slot = self._slot(plugin_id)
        proc = self._procs.get(slot.id)
        return proc.pid if proc is not None and proc.is_running else None

    # -- hosting hooks ---------------------------------------------------------------

    async def _instantiate(self, slot: Slot) -> None:
        if not slot.client_name:
            slot.client_name = self._client_name_for(slot.id)
        start = self._start_values(slot)
        proc = JalvProcess(
            jalv_argv(self._jalv, slot.client_name, slot.type.uri, start),
            self.server_name,
            slot.client_name,
            on_reading=slot.readings.__setitem__,
            monitors=slot.type.monitors,
        )
        await proc.start()
        self._procs[slot.id] = proc
        inputs = tuple(f"{slot.client_name}:{s}" for s in slot.type.audio_inputs)
        outputs = tuple(f"{slot.client_name}:{s}" for s in slot.type.audio_outputs)

        def still_starting() -> None:
            if not proc.is_running:
                raise PluginLoadFailed(f"{slot.type.uri}: {proc.exit_reason()}")
            if slot.retired:
                raise EngineError(f"{slot.id} was removed while it started")

        try:
            await self._wait_ports(
                slot.client_name, lambda ins, outs: set(inputs + outputs) <= set(ins + outs), still_starting
            )
        except BaseException:
            await proc.terminate()
            if self._procs.get(slot.id) is proc:
                del self._procs[slot.id]
            raise
        slot.inputs, slot.outputs = inputs, outputs
        slot.hosted_bypass = slot.type.enable_value(bypass=True) is not None
        self._background(self._watch(slot, proc))

    async def _release(self, slot: Slot) -> None:
        self._unsent.pop(slot.id, None)
        self._policies.pop(slot.id, None)
        proc = self._procs.pop(slot.id, None)
        if proc is not None:
            await proc.terminate()
        self._client_names.discard(slot.client_name)

    def _deliver_values(self, slot: Slot, values: Mapping[str, float]) -> None:
        """One stdin write."""
        proc = self._procs.get(slot.id)
        if proc is not None and slot.state == "up":
            proc.write(values)

    def _send_bypass(self, slot: Slot, bypass: bool) -> None:
        """The plugin's own enable control, on its stdin: heard at its next cycle."""
        proc = self._procs.get(slot.id)
        value = slot.type.enable_value(bypass)
        if proc is not None and slot.type.enable_symbol is not None and value is not None:
            self._flush_values(slot)  # values sent before the bypass land before it
            proc.write({slot.type.enable_symbol: value})

    def _details(self) -> dict[str, object]:
        return {"restarts": sum(p.recent for p in self._policies.values())}

    def _poll_readings(self, slots: list[Slot]) -> None:
        """One ``monitors`` command to each."""
        for slot in slots:
            proc = self._procs.get(slot.id)
            if proc is not None:
                proc.ask_readings()

    # -- respawn ---------------------------------------------------------------------

    def _start_values(self, slot: Slot) -> dict[str, float]:
        """Values for ``-c``: the plugin's own enable control as its bypass says, its tempo
        control at the box's tempo, then the slot's."""
        start: dict[str, float] = {}
        enable = slot.type.enable_value(bypass=slot.bypass)
        if slot.type.enable_symbol is not None and enable is not None:
            start[slot.type.enable_symbol] = enable
        tempo = slot.type.tempo_value(self.tempo)
        if slot.type.tempo_symbol is not None and tempo is not None:
            start[slot.type.tempo_symbol] = tempo
        start.update(slot.values)
        return start

    def set_tempo(self, bpm: float) -> None:
        """Also a tempo control (``time:beatsPerMinute``) of each plugin: jalv gives such a
        port nothing itself (Carla sets it from its transport)."""
        super().set_tempo(bpm)
        for slot in (*self._plugins.values(), *self._loading.values()):
            tempo = slot.type.tempo_value(bpm)
            if slot.type.tempo_symbol is not None and tempo is not None:
                self._deliver_values(slot, {slot.type.tempo_symbol: tempo})

    async def _watch(self, slot: Slot, proc: JalvProcess) -> None:
        """Notice a jalv that dies on its own and bring the plugin back."""
        await proc.wait()
        if slot.retired or self._procs.get(slot.id) is not proc or not self._running:
            return
        del self._procs[slot.id]
        why = proc.exit_reason()
        log.warning("plugin %s died: %s", slot.id, why, extra=fields(plugin_id=slot.id, engine=self.name))
        self._emit_event("plugin-died", slot, why)
        self._set_down([slot])
        policy = self._policies.get(slot.id)
        if policy is None:
            policy = self._policies[slot.id] = RespawnPolicy(asyncio.get_running_loop().time, self._respawn)
        delays = policy.died()
        if not delays:
            self._give_up(slot, f"died {policy.recent} times within {self._respawn.window:.0f} s")
            return
        if not await self._client_gone(slot.client_name, CLIENT_GONE_TIMEOUT):
            if slot.retired or not self._running:
                return
            self._rename(slot)
        for delay in delays:
            await asyncio.sleep(delay)
            if slot.retired or not self._running:
                return
            try:
                await self._bring_up(slot)
            except EngineError as exc:  # PluginLoadFailed included
                if slot.retired or not self._running:  # removed or stopping meanwhile
                    await self._release_quietly(slot)
                    return
                log.warning("respawn of %s failed: %s", slot.id, exc)  # it stopped what it started
                continue
            await self._set_up(slot)
            log.info("plugin %s restored", slot.id, extra=fields(plugin_id=slot.id, engine=self.name))
            self._emit_event("plugin-restored", slot, "respawned with its values")
            return
        self._give_up(slot, "respawn failed")

    def _rename(self, slot: Slot) -> None:
        """A fresh client name for the respawn; the old ports stay ours until they go."""
        old = slot.client_name
        self._graph.stale_ports.update(slot.ports)
        self._client_names.discard(old)
        slot.client_name = self._client_name_for(f"{slot.id}.{secrets.token_hex(2)}")
        log.warning("client %s lingers in JACK; respawning as %s", old, slot.client_name)

    def _give_up(self, slot: Slot, why: str) -> None:
        log.error(
            "plugin %s stays down (%s); its track passes dry there",
            slot.id,
            why,
            extra=fields(plugin_id=slot.id, engine=self.name),
        )
        self._emit_event("plugin-died", slot, f"not restarted: {why}")

    def _emit_event(self, kind: str, slot: Slot, message: str) -> None:
        self._emit(EngineEvent(kind, slot.id, message))

    def _client_name_for(self, plugin_id: str) -> str:
        base = f"{self.prefix}-{safe_name(plugin_id)}"[:CLIENT_NAME_MAX]
        name, n = base, 1
        while name in self._client_names:
            n += 1
            name = f"{base[: CLIENT_NAME_MAX - 4]}~{n}"
        self._client_names.add(name)
        return name
