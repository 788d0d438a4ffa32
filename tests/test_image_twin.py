"""The SD image's twin booted with real systemd: what a player gets from a flashed card.

``image/twin/build`` makes the twin's root filesystem with the same layer as the
Raspberry Pi image (``image/layer/install``), Debian's amd64 packages standing in
for Raspberry Pi OS and a JACK dummy server for the HAT; it is cached outside the
repository (``/var/cache/appliance-twin``), so only the first run builds.
``image/twin/twin.py`` flashes a card (boot and data partitions as folders, the
root as an overlay of the cached image, which is never written) and powers it up
in ``systemd-nspawn --boot``, in a network namespace of its own with only a
loopback interface; the box's port 8000 is carried to a free port of this
machine's loopback.

One card serves the whole module, as one box serves a player: first boot, then
restarts, a hang, a kill, the container killed outright. Times are printed, never asserted.
Skipped, with the reason, where the twin cannot run (not root, no
``systemd-nspawn`` or ``mmdebstrap``: ``./scripts/setup --test`` installs them).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from image.twin import twin as twinlib

#: The first run builds the root filesystem (about a minute or two here); later runs take the cache.
pytestmark = pytest.mark.timeout(twinlib.BUILD_TIMEOUT + 300)

#: How long the box may take from power-up (or a restart) to serving.
READY_TIMEOUT = 60.0
#: How long a change may take to reach board.json on the data partition (the box saves within 0.75 s).
SAVE_TIMEOUT = 10.0
#: How long one WebSocket answer may take.
ANSWER_TIMEOUT = 20.0
#: The watchdog interval the hang test gives the box, to keep the test short (the unit says 10 s).
SHORT_WATCHDOG = "2s"
#: What the player types into appliance.txt on a computer before the first power-up.
HOME_WIFI = {"wifi_ssid": "HomeNet", "wifi_passphrase": "correct horse battery"}
#: journald's message id for "a unit has finished starting up" (systemd's catalog).
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"


class Stage:
    """The card in its box: powers it, waits for the box, talks to it."""

    def __init__(self, card: twinlib.Card, log: Path) -> None:
        self.card = card
        self.log = log
        self.twin: twinlib.Twin | None = None
        self.port = 0

    @property
    def token(self) -> str:
        return (self.card.boot / "appliance-token.txt").read_text().strip()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={self.token}"

    def up(self) -> twinlib.Twin:
        """The running twin, powered up (and the box serving) if it was not."""
        if self.twin is None or not self.twin.is_running:
            self.power_on()
        assert self.twin is not None
        return self.twin

    def power_on(self) -> float:
        """Power up and wait until the box serves; the seconds from power-up to READY=1."""
        self.twin = twinlib.Twin(self.card, self.log)
        self.twin.start()
        self.port = self.twin.forward(8000)
        shown = self.wait_active()
        return float(shown["ActiveEnterTimestampMonotonic"]) / 1e6 - self.twin.powered_on

    def wait_active(self, after: dict[str, str] | None = None) -> dict[str, str]:
        """Wait until the box's unit is active (a new main process when ``after`` is given)."""
        assert self.twin is not None

        def ready(shown: dict[str, str]) -> bool:
            if shown["ActiveState"] == "failed":
                raise twinlib.TwinError(f"the box failed: {self.box_log()}")
            new = after is None or shown["MainPID"] != after["MainPID"]
            return shown["ActiveState"] == "active" and shown["SubState"] == "running" and new

        shown = self.twin.wait_until("appliance.service", ready, READY_TIMEOUT)
        self.wait_healthy()
        return shown

    def wait_healthy(self) -> None:
        """Poll /healthz through the forwarded port until the engine runs."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.port:
                try:
                    if self.get_json("/healthz").get("running"):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise twinlib.TwinError(f"/healthz never said running: {self.box_log()}")

    def get(self, path: str) -> tuple[int, str, str]:
        with urllib.request.urlopen(self.http + path, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()

    def get_json(self, path: str) -> dict[str, Any]:
        return dict(json.loads(self.get(path)[2]))

    def power_cycle(self) -> float:
        """A clean power-off, then power-up; the seconds from power-up to READY=1."""
        assert self.twin is not None
        self.twin.power_off()
        return self.power_on()

    def box_log(self) -> str:
        return self.card.journal("-u", "appliance.service", "-o", "cat", "-n", "40")

    def close(self) -> None:
        if self.twin is not None:
            self.twin.pull_plug()


async def _request(ws_url: str, message: dict[str, Any]) -> dict[str, Any]:
    """Send one request on a new connection; its answer (what the box says first on
    connect, the board replay, is skipped)."""
    async with connect(ws_url, open_timeout=ANSWER_TIMEOUT) as ws:
        await ws.send(json.dumps(message))
        while True:
            answer = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT))
            if answer.get("reply_to") == message["id"]:
                return dict(answer)


def board(stage: Stage) -> list[dict[str, Any]]:
    """The plugins of the board the box plays, as the protocol's BOARD_STATE gives them."""
    state = asyncio.run(_request(stage.ws_url, {"id": "b", "type": "BOARD_GET"}))
    assert state["type"] == "BOARD_STATE", state
    return [plugin for track in state["data"]["tracks"] for plugin in track["plugins"]]


def ensure_plugin(stage: Stage) -> dict[str, Any]:
    """The board's gain plugin, added first if the board has none."""
    for plugin in board(stage):
        if plugin["plugin"] == "gain":
            return plugin
    added = asyncio.run(
        _request(
            stage.ws_url, {"id": "a", "type": "PLUGIN_ADD", "data": {"track_id": "track_001", "name": "gain"}}
        )
    )
    assert added["type"] == "PLUGIN_ADD", added
    return dict(added["data"])


def set_gain(stage: Stage, plugin_id: str, value: float) -> None:
    """Turn the gain plugin's knob and wait until board.json on the data partition has it."""
    changed = asyncio.run(
        _request(
            stage.ws_url,
            {
                "id": "p",
                "type": "PLUGIN_PARAMETER",
                "data": {
                    "track_id": "track_001",
                    "plugin_id": plugin_id,
                    "parameter_id": "gain",
                    "parameter_value": value,
                },
            },
        )
    )
    assert changed["type"] == "PLUGIN_PARAMETER", changed
    saved = stage.card.data / "appliance" / "board.json"
    deadline = time.monotonic() + SAVE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            chains = json.loads(saved.read_text())["tracks"]
        except (OSError, ValueError, KeyError):
            chains = []
        values = [p["values"].get("gain") for track in chains for p in track["chain"] if p["id"] == plugin_id]
        if values == [value]:
            return
        time.sleep(0.05)
    raise AssertionError(f"board.json never held gain {value} for {plugin_id}")


def shape(plugins: list[dict[str, Any]]) -> list[tuple[str, str, bool, dict[str, float]]]:
    """What a player would call the same board: the chain's plugins, their values and bypass."""
    return [(p["plugin_id"], p["plugin"], p["bypass"], p["parameters"]) for p in plugins]


def messages(stage: Stage, *args: str) -> list[str]:
    return stage.card.journal("-o", "cat", *args).splitlines()


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    """A new card, flashed, the home Wi-Fi typed into its settings, powered up once."""
    reason = twinlib.why_not_here()
    if reason:
        print(f"\nSKIPPED the image twin: {reason}")
        pytest.skip(reason)
    folder = twinlib.card_folder("image-twin-")
    stage: Stage | None = None
    try:
        started = time.monotonic()
        image = twinlib.build(folder / "build.log")
        print(
            f"\nimage twin: root filesystem {image} ready in {time.monotonic() - started:.1f} s "
            f"({(image.parent / 'built').read_text().strip()})"
        )
        stage = Stage(twinlib.Card(image, folder / "card"), folder / "nspawn.log")
        stage.card.flash()
        settings = stage.card.boot / "appliance.txt"
        text = settings.read_text()
        for key, value in HOME_WIFI.items():
            text = text.replace(f"\n{key}=\n", f"\n{key}={value}\n")
        settings.write_text(text)
        to_ready = stage.power_on()
        print(
            f"image twin: new card: first boot, its reboot and the box READY in {to_ready:.2f} s "
            f"from the second power-up ({stage.twin.boots if stage.twin else 0} boots)"
        )
        yield stage
    finally:
        if stage is not None:
            stage.close()
            stage.card.eject()
        shutil.rmtree(folder, ignore_errors=True)


def test_first_boot_makes_the_token_the_name_and_the_keys_once(stage: Stage) -> None:
    """First boot leaves a pairing token on the boot partition (readable on any computer),
    names the box pedalboard (announced as pedalboard.local), makes its own SSH host keys
    and access-point passphrase, turns on the read-only root, and reboots; a later boot
    redoes none of it. Broken, a player has no token to pair with, no box at
    pedalboard.local, or a new token (and SSH key) at every power-up."""
    twin = stage.up()
    token = stage.token
    token_file = stage.card.boot / "appliance-token.txt"
    assert len(token) >= 32 and token_file.stat().st_mode & 0o777 == 0o644
    assert twin.run("hostname").stdout.strip() == "pedalboard"
    assert any(
        "Host name is pedalboard.local" in line for line in messages(stage, "-b", "-u", "avahi-daemon")
    )
    key = twin.run("ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    assert not list((stage.card.image / "etc" / "ssh").glob("ssh_host_*")), "the image itself holds host keys"
    assert "overlayroot=tmpfs:recurse=0" in (stage.card.boot / "cmdline.txt").read_text()
    passphrase = [
        line
        for line in (stage.card.boot / "appliance.txt").read_text().splitlines()
        if line.startswith("hotspot_passphrase=")
    ]
    assert len(passphrase) == 1 and len(passphrase[0].split("=", 1)[1]) >= 8

    stage.power_cycle()
    twin = stage.up()
    assert stage.token == token
    assert twin.run("hostname").stdout.strip() == "pedalboard"
    assert twin.run("ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] == key
    assert twin.unit("appliance-firstboot.service", "UnitFileState")["UnitFileState"] == "disabled"
    firstboots = [
        line for line in messages(stage, "-u", "appliance-firstboot") if "rebooting into the box" in line
    ]
    boots = [line for line in stage.card.journal("--list-boots").splitlines() if line.split()[:1] != ["IDX"]]
    print(f"first boot ran {len(firstboots)} time(s) in {len(boots)} boots")
    assert len(firstboots) == 1 and len(boots) >= 3


def test_the_box_is_active_only_once_ready_and_serves_the_phone(stage: Stage) -> None:
    """systemd calls the box started only when it says READY=1, after it serves; then it
    serves the phone UI, /healthz and /ws on port 8000, and lets a client in with the token
    from the boot partition, not without. Broken, a phone opening the box right after boot
    finds nothing there, or anyone on the network may play with the box."""
    twin = stage.up()
    shown = twin.unit("appliance.service", "Type", "ActiveState")
    serving = [
        json.loads(line)
        for line in stage.card.journal("-b", "-o", "json", "_SYSTEMD_UNIT=appliance.service").splitlines()
    ]
    serving = [entry for entry in serving if str(entry.get("MESSAGE", "")).startswith("serving on")]
    started = [
        json.loads(line)
        for line in stage.card.journal(
            "-b", "-o", "json", f"MESSAGE_ID={UNIT_STARTED}", "UNIT=appliance.service"
        ).splitlines()
    ]
    assert serving and started, "no 'serving on' line from the box or no 'Started' from systemd in this boot"
    assert int(serving[-1]["__MONOTONIC_TIMESTAMP"]) <= int(started[-1]["__MONOTONIC_TIMESTAMP"])
    assert shown["Type"] == "notify" and shown["ActiveState"] == "active"
    print(
        f"READY=1 {(int(started[-1]['__MONOTONIC_TIMESTAMP']) - int(serving[-1]['__MONOTONIC_TIMESTAMP'])) / 1000:.1f} ms "
        "after the box logged it serves"
    )

    status, kind, page = stage.get("/")
    assert status == 200 and kind.startswith("text/html") and "<html" in page.lower()
    health = stage.get_json("/healthz")
    assert health["running"] and health["engine"] == "jalv"
    added = ensure_plugin(stage)  # a board with a plugin on it, so that the phone has something to see
    playing = board(stage)
    health = stage.get_json("/healthz")
    assert added["plugin_id"] in [plugin["plugin_id"] for plugin in playing], playing
    assert len(playing) == health["board_plugins"], (
        f"/ws gives {len(playing)} plugins, /healthz counts {health['board_plugins']}: {playing}"
    )

    async def without_token() -> dict[str, Any]:
        async with connect(f"ws://127.0.0.1:{stage.port}/ws", open_timeout=ANSWER_TIMEOUT) as ws:
            await ws.send(json.dumps({"id": "x", "type": "BOARD_GET"}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)
            assert ws.close_code == 1008
            return dict(refused)

    refused = asyncio.run(without_token())
    assert refused["type"] == "ERROR" and refused["data"]["code"] == "UNAUTHORIZED"


def test_wifi_settings_from_the_boot_partition_become_network_profiles(stage: Stage) -> None:
    """The home Wi-Fi typed into appliance.txt on a computer, and the box's own access
    point, are NetworkManager profiles after boot; the twin has no Wi-Fi device, so the
    box says it is reachable over Ethernet only. Broken, a box that cannot see the home
    network has no access point for the phone, or never joins the home network."""
    twin = stage.up()
    twin.wait_until(
        "appliance-network.service", lambda s: s["ActiveState"] in ("active", "failed"), READY_TIMEOUT
    )
    profiles = twin.run("nmcli", "-t", "-f", "NAME,TYPE", "connection", "show").stdout.split()
    assert {"appliance-home:802-11-wireless", "appliance-hotspot:802-11-wireless"} <= set(profiles), profiles
    ap = twin.run(
        "nmcli",
        "-g",
        "802-11-wireless.mode,802-11-wireless.ssid,ipv4.method",
        "connection",
        "show",
        "appliance-hotspot",
    ).stdout.split()
    assert ap == ["ap", "pedalboard", "shared"], ap
    home = twin.run(
        "nmcli", "-g", "802-11-wireless.ssid", "connection", "show", "appliance-home"
    ).stdout.strip()
    assert home == HOME_WIFI["wifi_ssid"]
    assert any("no Wi-Fi device here" in line for line in messages(stage, "-b", "-u", "appliance-network"))


def test_the_root_is_read_only_and_the_data_partition_writable(stage: Stage) -> None:
    """The root is the image under a RAM overlay (overlayroot): what is written there is
    gone at the next boot and the root partition never changes, while the box's folder is
    the data partition, written as the box's user and kept. Broken, a power cut can damage
    the system, or the board is lost at every boot."""
    twin = stage.up()
    assert twin.run("findmnt", "-no", "FSTYPE", "/").stdout.strip() == "overlay"
    before = sorted(str(p.relative_to(stage.card.upper)) for p in stage.card.upper.rglob("*"))
    twin.run("sh", "-c", "echo gone > /etc/written-after-first-boot")
    twin.run(
        "runuser", "-u", "appliance", "--", "sh", "-c", "echo kept > /var/lib/appliance/written-by-the-box"
    )
    refused = twin.run(
        "runuser", "-u", "appliance", "--", "sh", "-c", "echo x > /opt/appliance/x", check=False
    )
    assert refused.returncode != 0, "the box's user may write the system"
    assert (stage.card.data / "appliance" / "written-by-the-box").read_text() == "kept\n"
    stage.power_cycle()
    twin = stage.up()
    assert twin.run("sh", "-c", "test ! -e /etc/written-after-first-boot", check=False).returncode == 0
    assert twin.run("cat", "/var/lib/appliance/written-by-the-box").stdout == "kept\n"
    after = sorted(str(p.relative_to(stage.card.upper)) for p in stage.card.upper.rglob("*"))
    assert after == before, "the root partition was written after first boot"


def _restarted_with_its_board(stage: Stage, signal: str, said: str) -> None:
    """Send the box's main process ``signal``; systemd must have it serving again after exactly
    one restart, with the board it played. The time it took is printed through ``said``."""
    twin = stage.up()
    playing = shape(board(stage))
    before = twin.unit("appliance.service", "MainPID", "NRestarts")
    sent = time.monotonic()
    twin.run("systemctl", "kill", "--kill-whom=main", f"--signal={signal}", "appliance.service")
    after = stage.wait_active(before)
    print(said.format(time.monotonic() - sent), f"(restarts {before['NRestarts']} -> {after['NRestarts']})")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert shape(board(stage)) == playing


def test_kill_9_of_the_box_brings_it_back_with_the_same_board(stage: Stage) -> None:
    """kill -9 of the box: systemd starts it again and it serves the same board. Broken,
    a crash leaves the player with no box, or with an empty board, until a power cycle."""
    stage.up()
    plugin = ensure_plugin(stage)
    set_gain(stage, plugin["plugin_id"], -7.5)
    _restarted_with_its_board(stage, "SIGKILL", "kill -9: the box serving again {:.2f} s after the kill")


def test_the_watchdog_restarts_a_hung_box_with_its_board(stage: Stage) -> None:
    """A box that hangs (SIGSTOP: it stops petting the watchdog) is killed by systemd's
    watchdog and started again with its board (the watchdog is shortened to 2 s here by a
    runtime drop-in; the unit says 10 s). Broken, a hung box stays silent on stage."""
    twin = stage.up()
    dropin = Path("/run/systemd/system/appliance.service.d/zz-twin-watchdog.conf")
    twin.run(
        "sh",
        "-c",
        f"mkdir -p {dropin.parent} && printf '[Service]\\nWatchdogSec={SHORT_WATCHDOG}\\n' > {dropin}",
    )
    try:
        twin.run("systemctl", "daemon-reload")
        before = twin.unit("appliance.service", "MainPID")
        twin.run("systemctl", "restart", "appliance.service")
        stage.wait_active(before)
        assert twin.unit("appliance.service", "WatchdogUSec")["WatchdogUSec"] == SHORT_WATCHDOG
        plugin = ensure_plugin(stage)
        set_gain(stage, plugin["plugin_id"], -4.0)
        _restarted_with_its_board(
            stage,
            "SIGSTOP",
            f"watchdog: a hung box serving again {{:.2f}} s after it hung "
            f"(watchdog {SHORT_WATCHDOG}, RestartSec 200 ms)",
        )
        assert any("Watchdog timeout" in line for line in messages(stage, "-b", "-u", "appliance"))
    finally:
        twin.run("rm", "-f", str(dropin), check=False)
        twin.run("systemctl", "daemon-reload", check=False)


def test_a_board_saved_before_the_container_is_killed_is_there_after_the_next_boot(stage: Stage) -> None:
    """A knob turned and saved, then the container killed (its PID 1 killed, nothing
    shut down; the machine's page cache keeps what it wrote, so this is a crash of the whole
    box, not a power cut: tests/test_card.py cuts the power of a VM): the next boot plays
    the same board. Boot-to-READY is printed. Broken, a player loses the sound set at every
    crash."""
    twin = stage.up()
    plugin = ensure_plugin(stage)
    set_gain(stage, plugin["plugin_id"], -3.25)
    playing = shape(board(stage))
    twin.pull_plug()
    to_ready = stage.power_on()
    print(
        f"container killed: the next boot READY {to_ready:.2f} s after power-up (systemd, JACK, the box, its board)"
    )
    assert shape(board(stage)) == playing
    assert not list((stage.card.data / "appliance").glob("*.tmp*")), "a half-written file was left behind"
