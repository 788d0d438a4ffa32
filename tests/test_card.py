"""The Debian card (``image/card/build``) booted in QEMU: a real kernel and systemd on the
card's own boot chain (UEFI firmware, GRUB, root A or B), the box on JACK's dummy driver.

What a player gets from the card: first boot (token, name, data partition, read-only
root) and the box playing its demo board, reachable over the protocol; power cuts that
lose nothing acknowledged more than a second before; an update that boots, and a broken
one that goes back to the old system by itself, the player's board untouched; a MIDI
controller heard through the card's own kernel.

Opt-in (``APPLIANCE_CARD_TESTS=1 ./scripts/test tests/test_card.py``): the cards take
minutes to build the first time and the machines are emulated (TCG: these machines have
no working KVM), so each boot takes a minute or more. Skipped, with the reason, otherwise
and where QEMU or root is missing. Times are printed, never asserted (hil/README.md
"The Debian card" keeps them).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from appliance.system.update import GRUBENV, MEMBERS, make, read_env
from image.card.qemu import EMULATED_AUDIO, Machine, MachineError, why_not_here
from tests.killloop import PROMISE
from tests.powercuts import SLOW_ANSWER, board, power_cuts, request

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "image" / "card" / "build"
#: Where the cards are built (the same place as by hand: image/README.md).
OUT = ROOT / "out" / "card"
OPT_IN = "APPLIANCE_CARD_TESTS"
#: How long building a card may take (the first arm64 root, under qemu-user, about 15 minutes).
BUILD_TIMEOUT = 2400.0
#: Cuts in the suite's run (hil/bench_power.py makes 100).
CUTS = 3
#: What the update check gives the box in these tests (appliance.txt's default): a later
#: boot of the emulated card plays in about a minute.
CONFIRM_SECONDS = 180

pytestmark = [
    pytest.mark.timeout(3 * 3600),
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"boots the Debian card in QEMU (minutes per boot): set {OPT_IN}=1 to run",
    ),
]


def build(arch: str) -> Path:
    """The card of ``arch``, built (its root cached by image/twin/build) for this run."""
    if os.geteuid() != 0:
        pytest.skip("building the card needs root (mmdebstrap, chroot)")
    why = why_not_here(arch)
    if why is not None:
        pytest.skip(why)
    started = time.monotonic()
    done = subprocess.run(
        [str(BUILD), "--arch", arch, "--out", str(OUT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"image/card/build --arch {arch} failed: {done.stderr[-3000:]}")
    print(
        f"\ncard {arch}: built in {time.monotonic() - started:.0f} s; {done.stderr.strip().splitlines()[-2:]}"
    )
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="card-test-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def token(machine: Machine) -> str:
    return machine.read_file("appliance-token.txt").strip()


def get(machine: Machine, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(machine.url + path, timeout=30) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


async def plugins_of(machine: Machine) -> list[str]:
    async with connect(
        f"ws://127.0.0.1:{machine.port}/ws?token={token(machine)}", open_timeout=SLOW_ANSWER
    ) as ws:
        return (await board(ws))[0]


def test_the_arm64_card_boots_to_ready_and_plays_its_demo_board(folder: Path) -> None:
    """The Pi's card, booted on an emulated arm64 machine: first boot makes the token and the
    read-only root and grows the data partition, then the box plays its demo board on the
    dummy driver, serves the phone UI and answers a phone with the token (and refuses one
    without). Broken, a player flashes a card that never plays, or plays with nothing a phone
    can reach."""
    image = build("arm64")
    machine = Machine(image, folder / "arm64", EMULATED_AUDIO)
    try:
        machine.power_on()
        first = machine.wait_ready()
        print(f"card arm64: power-up to the box playing {first:.0f} s (first boot and its reboot, emulated)")
        health = machine.healthz()
        assert health is not None and health["running"], health
        assert health["board_plugins"] == 4, health  # config/appliance.yaml's demo board
        status, page = get(machine, "/")
        assert status == 200 and "<html" in page.lower(), page[:200]
        assert len(token(machine)) >= 20
        status, _ = get(machine, "/backup")
        assert status == 401  # no token: nothing of the player's leaves the box
        assert asyncio.run(plugins_of(machine)) == ["gate", "overdrive", "reverb", "delay"]
        console = machine.console_text()
        assert "data partition: grown to the end of the card" in console  # first boot, on the console
        assert "pedalboard login:" in console  # the name first boot gave it (pedalboard.local)
        assert "overlayroot: configured root" in console  # the second boot's root is read-only
        machine.power_cut()
        env = read_env_of(machine)
        assert env["slot"] == "A" and env["overlay"] == "overlayroot=tmpfs:recurse=0", env
        machine.power_on()
        again = machine.wait_ready()
        print(f"card arm64: a later power-up to the box playing {again:.0f} s (emulated)")
        assert asyncio.run(plugins_of(machine)) == ["gate", "overdrive", "reverb", "delay"]
    finally:
        machine.discard()


def read_env_of(machine: Machine) -> dict[str, str]:
    copy = machine.folder / "grubenv"
    copy.write_text(machine.read_file(str(GRUBENV)))
    return read_env(copy)


def test_power_cuts_lose_nothing_acknowledged_a_second_before(folder: Path) -> None:
    """The card (amd64, for speed: the same layer and boot chain) unplugged during bursts of
    knob changes: after each boot the whole board is back and no change acknowledged more
    than a second before the cut is lost. Broken (a board written in place, or without
    fsync), a player loses the sound set before the gig when the power goes."""
    image = build("amd64")
    machine = Machine(image, folder / "cuts", EMULATED_AUDIO)
    try:
        cuts = asyncio.run(power_cuts(machine, CUTS, seed=int(time.time()) % 10**6))
    finally:
        machine.discard()
    assert len(cuts) == CUTS
    assert all(c.verdict.tested for c in cuts), "a cut came before any change was a second old"
    lost = [c for c in cuts if not c.verdict.kept]
    assert not lost, f"changes acknowledged more than {PROMISE} s before a cut were lost: {lost}"


def test_a_midi_interface_the_kernel_drives_is_learned_and_moves_a_knob(folder: Path) -> None:
    """ALSA's path, which the rig (JACK MIDI clients only) never takes: a MIDI interface the
    card's own kernel drives (a serial one: QEMU emulates no USB MIDI device; a USB one
    reaches ALSA's sequencer the same way), bridged to JACK by the card's a2jmidid, heard by
    the box. From the phone, a gain is learned from the interface's first CC and given a
    range; the CC then drives it, running status included, and the same CC on another
    channel changes nothing. Broken, a player's foot controller does nothing on the box
    although every test on the rig passes."""
    image = build("amd64")
    port = folder / "midi.sock"
    machine = Machine(image, folder / "midi", EMULATED_AUDIO, serial_midi=port)
    try:
        machine.power_on()
        print(f"card amd64 with a serial MIDI interface: playing after {machine.wait_ready():.0f} s")
        with socket.socket(socket.AF_UNIX) as midi:
            midi.connect(str(port))
            asyncio.run(learn_and_play(machine, midi))
    finally:
        machine.discard()


async def learn_and_play(machine: Machine, midi: socket.socket) -> None:
    url = f"ws://127.0.0.1:{machine.port}/ws?token={token(machine)}"
    async with connect(url, open_timeout=SLOW_ANSWER) as ws:
        inputs: list[str] = []
        async with asyncio.timeout(SLOW_ANSWER):  # a2jmidid and the box start side by side
            while not any("Serial MIDI" in port for port in inputs):  # the kernel's name for it
                await asyncio.sleep(1)
                inputs = (await request(ws, "MIDI_GET"))["data"]["inputs"]
        print(f"card amd64: the box hears {inputs}")
        added = await request(ws, "PLUGIN_ADD", track_id="track_001", name="gain")
        gain = added["data"]["plugin_id"]
        await request(
            ws, "MIDI_LEARN", mapping={"action": "parameter", "plugin_id": gain, "parameter_id": "gain"}
        )
        midi.sendall(bytes([0xB0, 7, 64]))  # channel 1, CC 7
        learned = (await next_of(ws, "MIDI_LEARNED"))["data"]["mapping"]
        assert (learned["message"], learned["number"], learned["channel"]) == ("cc", 7, 1), learned
        await request(ws, "MIDI_MAP_SET", mapping={**learned, "minimum": -20.0, "maximum": 0.0})
        midi.sendall(bytes([0xB3, 7, 127]))  # channel 4: not what was learned
        await asyncio.sleep(2)  # (were it heard, its change would come first, not be coalesced)
        sent = time.monotonic()
        midi.sendall(bytes([0xB0, 7, 0]))
        heard = await next_of(ws, "PLUGIN_PARAMETER")
        print(f"card amd64: CC to the phone told {1000 * (time.monotonic() - sent):.0f} ms (emulated)")
        assert (heard["data"]["plugin_id"], heard["data"]["parameter_value"]) == (gain, -20.0), heard
        midi.sendall(bytes([0xB0, 7, 127, 7, 64]))  # running status: the second has no status byte
        async with asyncio.timeout(SLOW_ANSWER):
            while (await next_of(ws, "PLUGIN_PARAMETER"))["data"]["parameter_value"] != pytest.approx(
                -20.0 + 20.0 * 64 / 127, abs=0.01
            ):
                pass


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` the box sends."""
    async with asyncio.timeout(SLOW_ANSWER):
        while (message := json.loads(await ws.recv()))["type"] != kind:
            pass
    return dict(message)


def broken_bundle(good: Path, out: Path) -> Path:
    """``good``'s system with a box that cannot start (its entry point exits at once)."""
    work = out / "broken-bundle"
    root = work / "root"
    root.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(good), "-C", str(work), *MEMBERS], check=True)
    subprocess.run(["tar", "--zstd", "-xf", str(work / "root.tar.zst"), "-C", str(root)], check=True)
    # What the box runs: the package in its virtual environment (/opt/appliance/appliance
    # is only the source it was installed from).
    (main,) = root.glob("opt/appliance/.venv/lib/python3*/site-packages/appliance/__main__.py")
    main.write_text("raise SystemExit('a broken update: the box cannot start')\n")
    for cached in (main.parent / "__pycache__").glob("__main__*"):
        cached.unlink()
    bundle = out / "broken.update"
    make(root, work / "vmlinuz", work / "initrd.img", "amd64", "broken-for-the-test", bundle)
    shutil.rmtree(work)
    return bundle


def send_update(machine: Machine, bundle: Path) -> dict[str, Any]:
    with open(bundle, "rb") as body:
        request_ = urllib.request.Request(
            f"{machine.url}/update?token={token(machine)}",
            data=body,
            method="POST",
            headers={
                "Content-Length": str(bundle.stat().st_size),
                "Content-Type": "application/octet-stream",
            },
        )
        with urllib.request.urlopen(request_, timeout=1800) as answer:
            return dict(json.loads(answer.read()))


def wait_for_update(machine: Machine, outcome: str, slot: str, timeout: float) -> dict[str, Any]:
    """The box's /healthz once it plays from root ``slot`` after an update came to ``outcome``
    (the reboots in between, and the failed root's own, are waited out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        system = (machine.healthz() or {}).get("system") or {}
        last = system.get("last_update") or {}
        if system.get("slot") == slot and last.get("outcome") == outcome:
            return system
        time.sleep(2)
    raise MachineError(
        f"no update {outcome} on root {slot} in {timeout:.0f} s: {machine.console_text()[-3000:]}"
    )


def updated_card(folder: Path, name: str) -> tuple[Machine, Path, list[str]]:
    """The amd64 card powered up and playing, a gain added to its demo board (the board an
    update must keep); the card's own update bundle; the board's plugins."""
    image = build("amd64")
    good = next(OUT.glob("pedalboard-amd64-*.update"))
    settings = {**EMULATED_AUDIO, "update_confirm_seconds": str(CONFIRM_SECONDS)}
    machine = Machine(image, folder / name, settings)
    machine.power_on()
    machine.wait_ready()

    async def turn() -> list[str]:
        url = f"ws://127.0.0.1:{machine.port}/ws?token={token(machine)}"
        async with connect(url, open_timeout=SLOW_ANSWER) as ws:
            plugins, _, _ = await board(ws)
            await request(ws, "PLUGIN_ADD", track_id="track_001", name="gain")
            return [*plugins, "gain"]

    return machine, good, asyncio.run(turn())


def test_a_good_update_boots_and_is_kept(folder: Path) -> None:
    """An update sent as the phone sends it is installed to the other root while the box
    plays, booted, and kept once the box plays its board there. Broken, a player's box
    never takes a new system, or takes it and loses the board."""
    machine, good, playing = updated_card(folder, "good")
    try:
        started = time.monotonic()
        answer = send_update(machine, good)
        assert answer["installing"] is True, answer
        system = wait_for_update(machine, "installed", "B", timeout=3600)
        print(f"card amd64: a good update, sent to playing from root B: {time.monotonic() - started:.0f} s")
        assert system["version"] == answer["update"]["version"], system  # the new root's stamp
        assert asyncio.run(plugins_of(machine)) == playing
    finally:
        machine.discard()


def test_a_broken_update_falls_back_by_itself(folder: Path) -> None:
    """An update whose box cannot start (its package exits at once) is installed to the
    other root and tried once; when the box is not playing within update_confirm_seconds,
    the card goes back to the system it had by itself, the player's board untouched, and
    the phone is told why. Broken, one bad update bricks a player's box on stage."""
    machine, good, playing = updated_card(folder, "broken")
    try:
        broken = broken_bundle(good, folder)
        started = time.monotonic()
        answer = send_update(machine, broken)
        assert answer["update"]["version"] == "broken-for-the-test", answer
        system = wait_for_update(machine, "fell back", "A", timeout=CONFIRM_SECONDS + 3600)
        print(
            f"card amd64: a broken update, sent to playing again from root A: {time.monotonic() - started:.0f} s"
        )
        assert "broken-for-the-test" in system["last_update"]["version"], system
        assert "READY" in system["last_update"]["why"], system  # in words, for the phone
        assert "root B (broken-for-the-test) is on trial" in machine.console_text()  # it was tried
        assert asyncio.run(plugins_of(machine)) == playing
    finally:
        machine.discard()
