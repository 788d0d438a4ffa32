"""The engine adapters as the tests make them: one factory per engine, and the fault hook.

Used by the contract suite and by the tests of the stage path. A test
parametrised with the engine name ``carla`` is skipped, with the reason,
where Carla is absent (conftest).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from appliance.config import CarlaConfig, DummyServer, JackConfig
from appliance.core.errors import EngineError
from appliance.engine import Engine, EventSink, TrackPorts
from tests.conftest import require_jalv_tools


class EngineFactory(Protocol):
    def __call__(
        self, tracks: Sequence[TrackPorts], on_event: EventSink, **options: Any
    ) -> Engine: ...


class GraphFault:
    """The engines' ``graph_fault`` hook: once armed, the next graph change raises.

    It runs on the JACK wiring's worker thread, before anything is connected,
    as a JACK that stops answering would fail.
    """

    def __init__(self) -> None:
        self.armed = False
        self.fired = 0
        self.block: threading.Event | None = None

    def arm(self) -> None:
        self.armed = True

    def __call__(self) -> None:
        if self.block is not None:
            self.block.wait()
        if self.armed:
            self.armed = False
            self.fired += 1
            raise EngineError("injected: JACK did not answer")


# -- the adapters ---------------------------------------------------------------------


def _jalv_factory(server: str | None) -> EngineFactory:
    require_jalv_tools()
    from appliance.engine.jalv.engine import JalvEngine

    def make(tracks: Sequence[TrackPorts], on_event: EventSink, **options: Any) -> Engine:
        return JalvEngine(tracks, server_name=server, on_event=on_event, **options)

    return make


def _carla_factory(server: str | None) -> EngineFactory:
    from appliance.engine.carla.engine import CarlaEngine

    def make(tracks: Sequence[TrackPorts], on_event: EventSink, **options: Any) -> Engine:
        dummy = options.pop("dummy_server", None)
        jack = JackConfig(server=server, dummy=DummyServer(dummy.sample_rate, dummy.period) if dummy else None)
        return CarlaEngine(
            tracks, CarlaConfig(), jack, on_event=on_event, client_prefix=f"carla-{secrets.token_hex(2)}", **options
        )

    return make


#: Engine name → factory on a JACK server (None: a server the engine starts itself).
ENGINE_ADAPTERS: dict[str, Callable[[str | None], EngineFactory]] = {
    "jalv": _jalv_factory,
    "carla": _carla_factory,
}
