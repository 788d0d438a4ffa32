"""The Carla engine: each track's chain in one Carla host process (rack mode), wired by JACK.

* :mod:`.install`: finding an installation (no Carla needed to import this).
* :mod:`.pipe`: the line protocol between the box and its Carla host process.
* :mod:`.ownerloop`: one thread serving that pipe and an idle tick (no Carla).
* :mod:`.host`: the host process itself, ``python -m appliance.engine.carla.host``.
* :mod:`.process`: the box's handle on one host process (spawn, requests, death).
* :mod:`.engine`: :class:`~.engine.CarlaEngine`, the engine port.
"""

from .install import HIDE_CARLA_ENV, CarlaPaths, find_carla, unavailable

__all__ = ["HIDE_CARLA_ENV", "CarlaPaths", "find_carla", "unavailable"]
