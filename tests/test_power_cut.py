"""Power cuts while saving, on the real virtual box: what a player changed is never lost.

What a player would notice if this broke: after a power cut (or a crash) the
box comes back with an older sound than the one they had set, or with no
board at all. Each round kills the box with SIGKILL at a random moment during
a burst of knob changes (:mod:`tests.killloop`); the 500-round run is
``hil/bench_kill.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_jalv_tools
from tests.killloop import PROMISE, rounds

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(240)]

ROUNDS = 8


async def test_a_power_cut_during_changes_never_loses_an_acknowledged_one(tmp_path: Path) -> None:
    """8 kills at random moments of a burst: every start finds a complete board, with every
    change acknowledged more than 1 s before the cut."""
    require_jalv_tools()
    judged = await rounds(tmp_path, ROUNDS)
    assert len(judged) == ROUNDS
    for number, (cut, verdict) in enumerate(judged):
        assert cut.acked, f"round {number} acknowledged nothing before the cut"
        assert verdict.kept, (
            f"round {number} lost a change {verdict.lost_age:.2f} s old (promise: {PROMISE} s)"
        )
    print("oldest change lost per cut (s):", [round(v.lost_age, 2) for _, v in judged])
