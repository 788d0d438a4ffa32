"""The box killed with SIGKILL (a crash, ``kill -9``) and started again at once: it plays its
whole board again, and no acknowledged change is lost.

What a player would notice if this broke: after a crash the box comes back
with an older sound than the one they had set, with no board at all, or
serving the phones but silent (its plugins wired into the killed box's JACK
server, which was still ending). A SIGKILL keeps the page cache, so this is a
crash of the box, not a power cut (not tested yet: that needs a machine that
loses its page cache).

The rounds (:mod:`tests.killloop`) each kill the box at a moment drawn from a
seed, printed in the output; ``KILL_9_SEED=<seed>`` runs the same kill times
again. The 500-round run is ``hil/bench_kill.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_jalv_tools
from tests.killloop import PROMISE, SEED_VARIABLE, rounds, seed_from_environment

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(300)]

ROUNDS = 8


async def test_changes_and_the_board_survive_kill_9_and_a_restart_at_once(tmp_path: Path) -> None:
    """8 kills at moments of a burst drawn from the printed seed, each box started again at
    once: every start is healthy with its whole board, and keeps every change acknowledged
    more than 1 s before the kill (every kill comes after some)."""
    require_jalv_tools()
    seed = seed_from_environment()
    print(f"kill -9 rounds: seed {seed} ({SEED_VARIABLE}={seed} runs the same kill times)")
    judged = await rounds(tmp_path, ROUNDS, seed)
    assert len(judged) == ROUNDS
    for number, (_, verdict) in enumerate(judged):
        where = f"round {number} ({SEED_VARIABLE}={seed})"
        assert verdict.tested, f"{where} was killed before any change was {PROMISE} s old"
        assert verdict.kept, f"{where} lost a change {verdict.lost_age:.2f} s old (promise: {PROMISE} s)"
    print("oldest change lost per kill (s):", [round(v.lost_age, 2) for _, v in judged])
    print("start to healthy (s):", [round(k.back_after, 2) for k, _ in judged])
