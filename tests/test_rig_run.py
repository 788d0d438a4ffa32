"""The rig, run end to end: against a virtual box, and down the real-box path without hardware.

The virtual run (:func:`hil.rig.runner.run_virtual`) is the suite's short
version of ``python -m hil.rig run``: a private dummy JACK server, the rig's
player and recorder, the box as a user starts it, every section measured
with very small counts (a few takes, a few changes and switches, 2 s of
dropouts). On the dummy server nothing adds latency: the graph orders
player → plugins → recorder within one cycle, and none of the board's
plugins reports a latency of its own, so the box must read 0 frames, empty
and with 5 plugins.

The real-box path (``run --box ws://… --token … --calibration …``) is run
as a user runs it, as a subprocess, against a box with a token on the same
dummy server, cabled through a :class:`tests.rig.MockInterface` that delays
by :data:`INTERFACE_DELAY` frames as a real interface's converters would::

    rig ─▶ iface-out:playback_1 ─[delay]▶ line_out_1 ─▶ box ─▶ iface-in:line_in_1 ─▶ capture_1 ─▶ rig

Only behaviour is asserted: both files written, every section there (or
skipped with a reason), latencies, no change missed, no gap in the dropout
recording, a clean flat dry path, and no take spoiled by an xrun of the
test's own server (a spoiled take is marked in the report, never retaken;
the runs use the suite's period).
Never wall-clock speed. Each test's docstring says what a person using the
rig would notice if it broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.jack.server import DummySettings, JackServer, unique_server_name
from hil.rig.report import HTML_NAME, JSON_NAME, write_report
from hil.rig.runner import SAVED_BOARD, RunSettings, run_virtual
from hil.rig.setups import Box, RigError
from tests.boxproc import BoxProcess, virtual_config
from tests.conftest import RIG_PERIOD
from tests.rig import MockInterface, Rig, RigProcessError, SpoiledTake, leftovers, sine

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parent.parent
#: Very small counts: the whole run in well under 40 s on this machine (on the suite's period).
SMALL = RunSettings(
    latency_takes=3, changes=5, clients=(1, 20), switches=1, dropout_seconds=2.0, period=RIG_PERIOD
)
#: The same on the command line.
SMALL_ARGS = [
    "--quick",
    "--latency-takes",
    "3",
    "--changes",
    "5",
    "--switches",
    "1",
    "--dropout-seconds",
    "2",
]
#: The report's sections; each holds figures or says in ``skipped`` why not.
SECTIONS = ("latency", "knob_to_sound", "switching", "dropouts", "dry_path")
#: The simulated interface's own round trip, frames (a USB interface's converters).
INTERFACE_DELAY = 37
#: The dry path of a virtual box is a copy: THD+N far below any converter's, dB.
CLEAN_THD_N_DB = -80.0
#: How flat the dry path's response must be, dB.
FLAT_DB = 0.1
#: How long one ``python -m hil.rig`` subprocess may take before it is killed.
COMMAND_TIMEOUT = 100.0
TOKEN = "rig-test-token-7Qx"
#: A stall of the rig's player: longer than any period, so an xrun for the whole server.
STALL = 0.05


@pytest.fixture(params=["jalv", "carla"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """The virtual box's ``engine.kind`` (conftest skips ``carla`` where Carla is absent, saying why)."""
    return str(request.param)


# -- what every report must hold -----------------------------------------------------


def _load(folder: Path) -> dict[str, Any]:
    """report.json of ``folder``, after checking that both files and every PNG are there."""
    assert (folder / JSON_NAME).is_file(), f"no {JSON_NAME} in {folder}"
    assert (folder / HTML_NAME).is_file(), f"no {HTML_NAME} in {folder}"
    data: dict[str, Any] = json.loads((folder / JSON_NAME).read_text())
    page = (folder / HTML_NAME).read_text()
    for plot in data["plots"]:
        assert (folder / plot["file"]).is_file(), plot
        assert f'src="{plot["file"]}"' in page, plot
    return data


def _assert_complete(data: dict[str, Any]) -> None:
    """Every section has figures or a reason; power cuts say why they were skipped."""
    for section in SECTIONS:
        assert data[section] or data["skipped"].get(section), f"{section}: no figures and no reason"
        assert section in data["methods"], section
    assert data["skipped"].get("recovery"), "the power-cut step must say why it was skipped"
    assert "switching" not in data["skipped"], data["skipped"]  # this box has pedalboards
    assert not data["box"]["healthz"].get("error"), data["box"]["healthz"]
    assert data["box"]["version"]
    assert data["spoiled_takes"] == [], (
        f"takes the test server's own xruns spoiled: {data['spoiled_takes']}; "
        f"what it said of its late cycles: {data['server_xruns']}"
    )


def _assert_box_figures(
    data: dict[str, Any], settings: RunSettings, interface: int = 0, pedal: bool = False
) -> None:
    """The figures a virtual box must show, whichever way the rig reached it (``pedal``: and a
    MIDI pedal's CC, timed as the knob's, where the rig shares the box's JACK server)."""
    latency = {entry["board"]: entry for entry in data["latency"]}
    assert set(latency) == {"empty", "5 plugins"}
    for entry in latency.values():
        assert entry["frames"] == 0, entry  # the dummy graph adds none, the plugins report none
        assert entry["takes"] == [0] * settings.latency_takes, entry
        assert entry["measured_frames"] == interface, entry
        assert entry["interface_frames"] == interface, entry
        assert entry["host_added_frames"] == 0, entry
    series = {entry["name"]: entry for entry in data["knob_to_sound"]}
    kinds = ("gain", "bypass", "cc") if pedal else ("gain", "bypass")
    assert set(series) == {
        f"{kind}, {count} client{'s' if count != 1 else ''}" for kind in kinds for count in settings.clients
    }
    for entry in series.values():
        assert entry["missed"] == 0, entry
        assert entry["ms"]["count"] == settings.changes, entry
        assert entry["ms"]["min"] >= 0 and entry["ms"]["max"] > 0, entry
        assert entry["ms"]["p50"] is not None and entry["ms"]["p99"] >= entry["ms"]["p50"], entry
    switching = {s["name"]: s for s in data["switching"]}
    switches = ["snapshot recall", "pedalboard switch", "setlist step (warm standby)"]
    switches += ["program change (warm standby)"] if pedal else []
    assert switching.keys() == {*switches, "pedalboard switch, tail"}
    for name in switches:
        switch = switching[name]
        assert switch["count"] == settings.switches, switch
        assert switch["to_new_sound_ms"]["count"] == settings.switches, switch  # every switch heard
        assert switch["to_new_sound_ms"]["min"] >= 0, switch
    # The boxes here ring the old board's delay on after a switch (spillover: 3 s).
    tail = switching["pedalboard switch, tail"]
    assert tail["count"] == settings.switches and tail["tails_continued"] == settings.switches, tail
    dropouts = data["dropouts"]
    assert dropouts["seconds"] > 0.9 * settings.dropout_seconds, dropouts
    assert dropouts["clients"] == 20 and isinstance(dropouts["box_xruns"], int), dropouts
    assert dropouts["rig_xruns"] == 0, dropouts
    assert dropouts["gaps"] == 0, f"the tone dropped out while 20 clients swept a control: {dropouts['events']}"
    dry = data["dry_path"]
    assert dry["thd_n_db"] < CLEAN_THD_N_DB, dry
    assert -FLAT_DB < dry["response_min_db"] <= dry["response_max_db"] < FLAT_DB, dry


# -- a virtual box --------------------------------------------------------------------


@pytest.mark.quiet  # spoiled a take in about one run in five beside the other worker
async def test_virtual_run_reports_every_section(engine_kind: str, tmp_path: Path) -> None:
    """A short run against a virtual box writes report.json and report.html with every section:
    0 frames of latency empty and with 5 plugins, knob and footswitch times for 1 and 20 clients
    with no change missed, every switch heard, and a clean flat dry path.

    Broken, `python -m hil.rig run` would hand a reader a report with a section missing or
    figures that are not the box's (a latency the dummy graph cannot have, a change never heard).
    """
    settings = dataclasses.replace(SMALL, engine=engine_kind)
    run = await run_virtual(settings, tmp_path / "work", log=lambda line: print(f"rig: {line}"))
    report = tmp_path / "report"
    await asyncio.to_thread(write_report, run, report)
    data = _load(report)
    _assert_complete(data)
    _assert_box_figures(data, settings, pedal=True)
    assert data["settings"]["box"] == "virtual" and data["settings"]["engine"] == engine_kind
    assert data["box"]["healthz"]["engine"] == engine_kind
    assert data["calibration"] is None
    assert data["box"]["board_saved_as"] is None  # a fresh virtual box has no board to keep
    titles = " ".join(plot["title"] for plot in data["plots"])
    for plot in ("Impulse response", "Latency per take", "Knob-to-sound", "Frequency response"):
        assert plot in titles, titles
    # one excerpt per switch of each kind: recall, switch, setlist step, program change, tail
    assert sum(plot["section"] == "switching" for plot in data["plots"]) == 5 * settings.switches


# -- the real-box path, without hardware ---------------------------------------------


async def _hil_rig(*args: str | Path) -> tuple[int, str]:
    """``python -m hil.rig ARGS`` as a user runs it; (exit code, stdout and stderr). Killed if it hangs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil.rig",
        *map(str, args),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    print(text)
    assert proc.returncode is not None
    return proc.returncode, text


@contextlib.asynccontextmanager
async def _interface(server: JackServer, delay: int) -> AsyncIterator[MockInterface]:
    """A :class:`MockInterface` open on ``server``; closed on the way out."""
    interface = MockInterface(server.name, delay)
    await interface.open()
    try:
        yield interface
    finally:
        await interface.close()


def _ports(server: JackServer, interface: MockInterface) -> list[str]:
    return [
        "--jack-server",
        server.name,
        "--play-port",
        interface.playback,
        "--record-port",
        interface.capture,
    ]


async def test_calibrate_straight_cable_reads_zero(jack_server: JackServer, tmp_path: Path) -> None:
    """`calibrate` with a straight JACK connection as the loopback cable reads 0 frames, a clean
    flat path, and writes its file and report; with nothing plugged in it refuses with a sentence.

    Broken, the rig would take a wrong interface latency out of every real box's figures, or
    save a calibration of silence when the cable is not plugged in.
    """
    async with _interface(jack_server, delay=0) as interface:
        unplugged, text = await _hil_rig(
            "calibrate", *_ports(jack_server, interface), "--out", tmp_path / "x.json"
        )
        assert unplugged == 2 and "nothing came back" in text
        assert not (tmp_path / "x.json").exists()
        await interface.loopback()
        out = tmp_path / "calibration.json"
        code, text = await _hil_rig(
            "calibrate",
            *_ports(jack_server, interface),
            "--latency-takes",
            "3",
            "--out",
            out,
            "--report",
            tmp_path / "r",
        )
    assert code == 0, text
    figures = json.loads(out.read_text())["figures"]
    assert figures["latency_frames"] == 0 and figures["latency_takes"] == [0, 0, 0], figures
    assert figures["thd_n_db"] is None or figures["thd_n_db"] < CLEAN_THD_N_DB, figures
    assert -FLAT_DB < figures["response_min_db"] <= figures["response_max_db"] < FLAT_DB, figures
    assert (figures["playback"], figures["capture"]) == (interface.playback, interface.capture)
    data = _load(tmp_path / "r")
    assert data["latency"][0]["board"] == "loopback cable" and data["latency"][0]["frames"] == 0
    assert data["skipped"]["knob_to_sound"] and data["skipped"]["recovery"]


async def test_real_box_path_takes_out_the_interface(jack_server: JackServer, tmp_path: Path) -> None:
    """`run --box ws://… --token … --calibration …` through an interface with 37 frames of its own:
    the calibration reads 37, the box 0 (37 measured), every section is there, the token stays out
    of the report, a wrong token is refused with a sentence, and the box's own board is back after.

    Broken, a real box's report would blame the rig's interface on the box, leak the box's token,
    hang or crash on a wrong token, or leave the player's board wiped.
    """
    calibration = tmp_path / "calibration.json"
    report = tmp_path / "report"
    async with _interface(jack_server, delay=INTERFACE_DELAY) as interface:
        await interface.loopback()
        code, text = await _hil_rig("calibrate", *_ports(jack_server, interface), "--out", calibration)
        assert code == 0, text
        await interface.unplug()
        (tmp_path / "token").write_text(TOKEN + "\n")
        config = virtual_config(
            tmp_path,
            jack_server=jack_server.name,
            dummy=False,
            engine="jalv",
            tracks=[{"id": "track_001", "inputs": [interface.line_out], "outputs": [interface.line_in]}],
            demo=[{"plugin": "overdrive", "values": {"drive": 1.0}}],  # a player's board, loud and distorted
            data_dir=tmp_path / "data",
            auth="token",
            token_file=str(tmp_path / "token"),
        )
        box = BoxProcess(config)
        await asyncio.to_thread(box.start)
        try:
            refused, text = await _hil_rig(
                "run",
                "--box",
                box.ws_url,
                "--token",
                "wrong",
                *_ports(jack_server, interface),
                "--report",
                report,
            )
            assert refused == 2 and "refused the rig (check --token)" in text, text
            assert not report.exists()
            code, text = await _hil_rig(
                "run",
                "--box",
                box.ws_url,
                "--token",
                TOKEN,
                "--calibration",
                calibration,
                *_ports(jack_server, interface),
                *SMALL_ARGS,
                "--report",
                report,
            )
            assert code == 0, text
            after = await asyncio.to_thread(Box.parse(box.ws_url).healthz)
        finally:
            await asyncio.to_thread(box.stop)
    assert json.loads(calibration.read_text())["figures"]["latency_frames"] == INTERFACE_DELAY
    data = _load(report)
    _assert_complete(data)
    _assert_box_figures(data, SMALL, interface=INTERFACE_DELAY)
    assert data["calibration"]["latency_frames"] == INTERFACE_DELAY and data["calibration"]["notes"] == []
    assert data["dry_path"]["interface_taken_out"] is True
    assert data["settings"]["box"] == box.ws_url and data["settings"]["auth"] == "token"
    assert data["settings"]["playback"] == interface.playback
    for name in (JSON_NAME, HTML_NAME):
        assert TOKEN not in (report / name).read_text(), f"the token leaked into {name}"
    assert data["box"]["board_saved_as"] == SAVED_BOARD and data["box"]["board_restored"] is True
    assert after["board_plugins"] == 1, after  # the overdrive is back
    left = sorted(path.name for path in (tmp_path / "data" / "pedalboards").glob("*.json"))
    assert left == [], f"the run left its pedalboards in the player's library: {left}"


#: A process that opens and closes the rig's clients while another Python thread keeps the GIL
#: busy; it exits 3 if libjack is loaded in it (the clients must live in their own process).
BUSY_CLOSE = """
import asyncio, sys, threading
from tests.rig import MockInterface, Rig

def spin():
    while True:
        sum(range(1000))

threading.Thread(target=spin, daemon=True).start()

async def main():
    for _ in range(int(sys.argv[2])):
        for rig in (Rig(sys.argv[1]), MockInterface(sys.argv[1])):
            await rig.open()
            await asyncio.sleep(0.05)
            if "libjack" in open("/proc/self/maps").read():
                sys.exit(3)
            await rig.close()

asyncio.run(main())
"""
#: Open-and-close rounds; each closes four clients.
BUSY_CLOSE_ROUNDS = 10
#: How long those rounds may take (about 3 s here) before the process counts as frozen.
BUSY_CLOSE_TIMEOUT = 60.0


async def test_closing_the_rig_while_python_is_busy_never_deadlocks(jack_server: JackServer) -> None:
    """The rig's clients, opened and closed while another thread of the test process holds the
    GIL, let the process go on; and that process has no JACK client of its own (libjack is not
    even loaded): the clients' Python audio callbacks run in a child process of their own.

    Broken (the clients in the test process), JACK may cancel an audio thread that waits for
    the GIL and the process freezes for good with every thread waiting for it, and no timeout
    inside it can fire: a whole suite or rig run hangs until something outside kills it.
    Before that, every period the audio thread waits for the GIL makes the rig miss cycles.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BUSY_CLOSE, jack_server.name, str(BUSY_CLOSE_ROUNDS), cwd=ROOT
    )
    try:
        code = await asyncio.wait_for(proc.wait(), BUSY_CLOSE_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"the process froze closing the rig's clients (no exit within {BUSY_CLOSE_TIMEOUT} s)")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code != 3, "the test process loaded libjack: the rig's JACK clients are not in a process of their own"
    assert code == 0


async def test_a_take_with_an_xrun_is_spoiled_and_says_so(rig: Rig) -> None:
    """A take during which the server had an xrun (here the rig's player stalls a cycle) fails
    :meth:`Rig.require_clean` with the xruns named, and a level probe refuses it; an xrun JACK
    tells of only after the take's last frame still counts for it; a clean take passes.

    Broken, a recording with a cycle dropped by the server (the box's plugins included) would
    be measured as the box's sound, or quietly taken again until it passed."""
    probe = sine(frames=4800)
    await rig.play_and_record(probe)
    rig.require_clean("a take on a quiet server")

    async def stall() -> None:
        rig.stall(STALL)

    await rig.record_during(sine(frames=4 * 4800), stall, lead_frames=4800)
    assert rig.last_take_xruns >= 1 and len(rig.last_take_xrun_frames) == rig.last_take_xruns
    with pytest.raises(SpoiledTake, match=r"the stalled take: the JACK server had \d+ xrun"):
        rig.require_clean("the stalled take")
    # The stall lands on the cycle after the take's last one: JACK tells of it after the end.
    await rig.record_during(probe, stall, lead_frames=len(probe) - rig.blocksize // 2)
    assert rig.last_take_xruns >= 1, "an xrun told of just after the take's end was not counted"
    assert min(rig.last_take_xrun_frames) >= len(probe) - rig.blocksize, rig.last_take_xrun_frames
    rig.stall(STALL)
    with pytest.raises(SpoiledTake):
        await rig.measure_gain(probe)
    await rig.play_and_record(probe)
    rig.require_clean("a take after the stalls")


@pytest.mark.quiet  # a 256-frame take: the other worker's process starts spoiled it
async def test_the_rig_s_garbage_collections_never_cost_its_audio_a_cycle() -> None:
    """Full garbage collections in the rig's process, during a 0.3 s take at 256 frames (5.3 ms):
    the take stays clean. A collection holds the GIL throughout, and the rig's audio
    callbacks need it; one that went through every object of the imports held them 9.4 ms.
    Broken, the rig's own process spoils the box's takes now and then (jackd: "rig-rec was
    not finished"), and the box is blamed."""
    server = JackServer(unique_server_name("gc"), DummySettings(48000, 256, realtime=True))
    await server.start()
    rig = Rig(server.name)
    try:
        await rig.open()
        await rig.play_and_record(sine(frames=4800))
        rig.require_clean("a take on a quiet server")

        async def collect() -> None:
            rig.collect_garbage(20)

        await rig.record_during(sine(frames=14400), collect, lead_frames=4800)  # 0.3 s: they end by 0.2 s
        rig.require_clean("the take during 20 full collections")
    finally:
        await rig.close()
        await server.stop()


async def test_a_rig_process_that_hangs_on_close_is_killed(
    jack_server: JackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rig whose process hangs closing its clients (here: stopped) is killed after
    ``RIG_CLOSE_TIMEOUT`` and the close fails saying so; nothing of it is left running.

    Broken, a wedged rig process would hold the test (and the run) for good, or outlive it
    with its JACK clients on a server that is being stopped."""
    monkeypatch.setattr("tests.rig.RIG_CLOSE_TIMEOUT", 1.0)
    rig = Rig(jack_server.name)
    await rig.open()
    pid = rig.pid
    assert pid is not None and pid in leftovers()
    os.kill(pid, signal.SIGSTOP)
    with pytest.raises(RigProcessError, match="hung closing"):
        await rig.close()
    assert pid not in leftovers()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_box_url_gives_healthz_and_token_path() -> None:
    """A box's ws:// URL gives its /healthz base and a handshake path carrying the token.

    Broken, `run --box` would ask the wrong host for /healthz or be refused by a box with a token.
    """
    box = Box.parse("ws://pedalboard.local:8000/ws", "a b&c")
    assert (box.host, box.port, box.http_base) == ("pedalboard.local", 8000, "http://pedalboard.local:8000")
    assert box.request_path == "/ws?token=a%20b%26c"
    assert Box.parse("ws://box.local:8000/ws?token=t1").token == "t1"
    assert Box.parse("ws://box.local:8000/ws?token=t1", "t2").url == "ws://box.local:8000/ws"
    assert Box.parse("ws://box.local:8000").request_path == "/ws"
    for bad in ("http://box.local:8000/ws", "wss://box.local/ws", "ws://:8000/ws", "ws://box:port/ws"):
        with pytest.raises(RigError):
            Box.parse(bad)
