"""The chain walk both engine adapters share: which connections a track wants.

Pure: no JACK, no Carla, no asyncio. A port is whatever gets wired (a JACK
port name, for both engines); :mod:`appliance.engine.jack.wiring` turns the chains
into :class:`Stage` lists, asks :func:`chain_connections` for the connections
it wants and :func:`connection_changes` for what to do about the ones it has::

    track inputs ─▶ stage ─▶ (bypassed stage: skipped) ─▶ stage ─▶ track outputs
                                                           │
                                            a pure sink (a meter) only taps

Any thread may call these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparisonT as C

P = TypeVar("P")


@dataclass(frozen=True)
class Stage(Generic[P]):
    """One plugin of a chain, as the wiring sees it.

    Attributes:
        inputs: its audio input ports, in port order.
        outputs: its audio output ports; none for a pure sink (a meter).
        in_path: False when the signal goes around it (a rerouting bypass,
            or its process is down): the previous stage feeds the next one.
    """

    inputs: Sequence[P]
    outputs: Sequence[P]
    in_path: bool = True


def wire_pairs(sources: Sequence[P], destinations: Sequence[P]) -> list[tuple[P, P]]:
    """Connections between two stages of a chain with possibly different widths.

    Equal widths connect pairwise; a mono source feeds every destination;
    a wider source feeds a narrower destination channel by channel and its
    extra channels are dropped (no summing, so levels stay as they are).
    """
    if not sources:
        return []
    return [(sources[min(i, len(sources) - 1)], dst) for i, dst in enumerate(destinations)]


def chain_connections(
    inputs: Sequence[P], stages: Iterable[Stage[P]], outputs: Sequence[P]
) -> set[tuple[P, P]]:
    """Every connection one track's chain wants, source → destination.

    Stages not in the path are skipped, so the stage before them feeds the
    one after (a dry pass-through, never a mute); a stage without outputs
    taps the signal without ending it; the last stage feeds the outputs.
    """
    wanted: set[tuple[P, P]] = set()
    previous = inputs
    for stage in stages:
        if not stage.in_path:
            continue
        wanted.update(wire_pairs(previous, stage.inputs))
        if stage.outputs:
            previous = stage.outputs
    wanted.update(wire_pairs(previous, outputs))
    return wanted


def connection_changes(current: Set[C], wanted: Set[C]) -> tuple[list[C], list[C]]:
    """What to connect and then what to disconnect, each sorted.

    Connecting first means the signal is never cut while the graph changes.

    Returns:
        ``(connect, disconnect)``: wanted but missing; present but unwanted.
    """
    return sorted(wanted - current), sorted(current - wanted)
