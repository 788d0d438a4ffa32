"""System updates: the box's side (``POST /update``, the system in the health report) over a
real server on loopback, real bundles made by :func:`update.make` from a folder, GRUB's
environment block as GRUB's own tool reads it, and the check at boot that keeps a new root
or goes back to the old one.

What a player would notice if these broke: an update from the phone that never installs, or
a damaged, truncated or wrong one that the box installs and then does not start; a page from
another site or a phone without the token putting a system on the box; an update that fills
the card the board is saved on; a box that keeps a new system that does not play, or goes
back to the old one when the new one was fine; a phone that cannot tell which system runs
and what came of the last update.

The installer itself (a root filesystem onto the other partition, as root) runs on the
card's twin, not here; what it leaves for the next boot is checked here (``confirm``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect

from appliance import __version__
from appliance import config as config_module
from appliance.app import Box as App
from appliance.app import health_report
from appliance.config import Config, ServerConfig
from appliance.control.updates import MAX_BUNDLE, System, Updates, read_system
from appliance.engine import OwnPlugins, TrackPorts
from appliance.frontends.net import ControlServer
from appliance.store.userfiles import CARD_RESERVE
from appliance.system import update
from tests.boxproc import free_port, virtual_config
from tests.conftest import small_partition
from tests.fakes import ControlStack, FakeCatalog, FakeEngine

TRACK = "track_001"
TOKEN = "sekrit"
REPLY_TIMEOUT = 5.0
ARCH = update.machine_arch()
#: Another machine's architecture, for a bundle this box must refuse.
OTHER_ARCH = "riscv64" if ARCH != "riscv64" else "arm64"


# -- bundles, made as image/card/build makes them -------------------------------------------


def make_bundle(folder: Path, version: str = "2.0", arch: str = ARCH) -> bytes:
    """A real bundle of a tiny root filesystem (a file that does not compress, a link) and a
    kernel and initrd of random bytes, as :func:`update.make` writes it; its bytes."""
    root = folder / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("pedalboard\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "appliance").write_bytes(os.urandom(48 << 10))
    (root / "usr" / "bin" / "box").symlink_to("appliance")
    (folder / "vmlinuz").write_bytes(os.urandom(4096))
    (folder / "initrd.img").write_bytes(os.urandom(2048))
    out = folder / f"pedalboard-{arch}-{version}.update"
    update.make(root, folder / "vmlinuz", folder / "initrd.img", arch, version, out)
    return out.read_bytes()


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of ``members`` in that order (a bundle made by hand)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def members_of(bundle: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        out = []
        for info in archive.getmembers():
            content = archive.extractfile(info)
            assert content is not None
            out.append((info.name, content.read()))
        return out


def manifest_of(members: list[tuple[str, bytes]]) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(dict(members)[update.MANIFEST])
    return manifest


def with_manifest(members: list[tuple[str, bytes]], manifest: object) -> bytes:
    text = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    return tar_of([(update.MANIFEST, text), *[(n, d) for n, d in members if n != update.MANIFEST]])


def flipped(bundle: bytes, member: str) -> bytes:
    """``bundle`` with one byte in the middle of ``member``'s content turned over."""
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        info = archive.getmember(member)
    at = info.offset_data + info.size // 2
    return bundle[:at] + bytes([bundle[at] ^ 0xFF]) + bundle[at + 1 :]


def cut_in(bundle: bytes, member: str) -> bytes:
    """``bundle`` cut short in the middle of ``member``'s content."""
    with tarfile.open(fileobj=io.BytesIO(bundle)) as archive:
        info = archive.getmember(member)
    return bundle[: info.offset_data + info.size // 2]


def refusals(good: bytes, wrong_arch: bytes) -> dict[str, tuple[bytes, str]]:
    """Bundles the box must refuse, each with words its refusal says."""
    members = members_of(good)
    manifest = manifest_of(members)
    return {
        "wrong arch": (wrong_arch, f"for {OTHER_ARCH} boxes"),
        "damaged kernel": (flipped(good, "vmlinuz"), "vmlinuz does not match its checksum"),
        "damaged initrd": (flipped(good, "initrd.img"), "initrd.img does not match its checksum"),
        "damaged root": (flipped(good, "root.tar.zst"), "root.tar.zst does not match its checksum"),
        "cut short": (cut_in(good, "root.tar.zst"), "cut short"),
        "extra member": (tar_of([*members, ("postinst", b"#!/bin/sh\nrm -rf /\n")]), "extra members"),
        "not a tar": (b"PK\x03\x04" + os.urandom(4096), "not an update for the box"),
        "empty": (b"", "not an update for the box"),
        "manifest not first": (tar_of(members[1:] + members[:1]), "no manifest first"),
        "manifest not JSON": (with_manifest(members, b"{version: 2"), "manifest is not one this box reads"),
        "another format": (with_manifest(members, {**manifest, "format": 2}), "format 2"),
        "a member unlisted": (
            with_manifest(members, {**manifest, "files": {"vmlinuz": manifest["files"]["vmlinuz"]}}),
            "manifest is not one this box reads",
        ),
        "a size that lies": (
            with_manifest(
                members, {**manifest, "files": {**manifest["files"], "vmlinuz": {"size": 1, "sha256": "0"}}}
            ),
            "vmlinuz is 4096 bytes, not 1",
        ),
        "a member missing": (tar_of(members[:-1]), "root.tar.zst is missing"),
    }


# -- a box on loopback -------------------------------------------------------------------


@dataclasses.dataclass
class Box:
    server: ControlServer
    data: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def waiting(self) -> Path:
        return self.data / update.UPDATE_DIR

    def tree(self) -> dict[str, bytes]:
        """Every file under the data folder, hidden ones included, with its bytes."""
        return {
            p.relative_to(self.data).as_posix(): p.read_bytes() for p in self.data.rglob("*") if p.is_file()
        }


async def make_box(tmp_path: Path, slot: str | None = "A", **server: Any) -> Box:
    """The box's server with its updates, on a data folder, as started from root ``slot`` of
    the card (None: not from the card); ``auth: token`` unless ``server`` says otherwise."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    stack = ControlStack(FakeCatalog(), data, TRACK)
    await stack.engine.start()
    updates = Updates(data, System("1.0", slot))
    config = ServerConfig(host="127.0.0.1", port=0, **{"auth": "token", **server})
    started = time.monotonic()
    net = ControlServer(
        config,
        stack.controller,
        lambda: health_report(stack.engine, stack.board, time.monotonic() - started),
        token=TOKEN,
        updates=updates,
    )
    await net.start()
    return Box(net, data)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    made = await make_box(tmp_path)
    yield made
    await made.server.stop()


async def post(
    box: Box, body: Any, headers: dict[str, str] | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, Any]]:
    """POST /update; the status and the JSON answer (a refused handshake's text)."""
    params = {"token": token} if token is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{box.url}/update", params=params, data=body, headers=headers) as response,
    ):
        if response.content_type != "application/json":
            return response.status, {"text": await response.text()}
        return response.status, await response.json()


async def test_a_good_update_is_kept_whole_and_asks_for_the_install(box: Box, tmp_path: Path) -> None:
    """An update sent from the phone is answered 202 with its version and machine, lies in the
    data folder byte for byte as ``update/bundle.update`` (in place of one a power cut left
    before it was asked for), and ``update/ready`` asks the root installer for it; nothing
    else is left (no temporary). Broken, an update sent from the phone never installs."""
    bundle = make_bundle(tmp_path / "made", version="2.0")
    box.waiting.mkdir()
    (box.waiting / update.BUNDLE_NAME).write_bytes(b"half of an older update")
    status, answer = await post(box, bundle)
    assert (status, answer) == (
        202,
        {"update": {"version": "2.0", "arch": ARCH}, "installing": True, "restarting": True},
    )
    tree = box.tree()
    assert sorted(tree) == ["update/bundle.update", "update/ready"]
    assert tree["update/bundle.update"] == bundle
    assert json.loads(tree["update/ready"])["version"] == "2.0"
    assert update.check(box.waiting / update.BUNDLE_NAME, ARCH).version == "2.0"


@pytest.mark.parametrize(
    "case",
    [
        "wrong arch",
        "damaged kernel",
        "damaged initrd",
        "damaged root",
        "cut short",
        "extra member",
        "not a tar",
        "empty",
        "manifest not first",
        "manifest not JSON",
        "another format",
        "a member unlisted",
        "a size that lies",
        "a member missing",
    ],
)
async def test_a_bad_update_is_refused_and_nothing_is_left(box: Box, tmp_path: Path, case: str) -> None:
    """An update for another machine, with a byte turned over in any member, cut short, with
    more than a system in it, not a bundle at all, or with a manifest the box cannot trust:
    INVALID_VALUE saying why in words, nothing in the data folder and no ``ready`` (the
    installer never sees it). The same box then takes a good one. Broken, the box would
    install a system that does not start, or one the player cannot tell what is wrong with."""
    good = make_bundle(tmp_path / "good")
    body, words = refusals(good, make_bundle(tmp_path / "other", arch=OTHER_ARCH))[case]
    status, answer = await post(box, body)
    assert (status, answer.get("code"), answer.get("retryable")) == (400, "INVALID_VALUE", False), answer
    assert words in answer["error"], answer
    assert box.tree() == {}
    assert not (box.waiting / update.READY_NAME).exists()
    assert (await post(box, good))[0] == 202


async def test_an_update_needs_the_token_and_the_boxs_own_page(box: Box, tmp_path: Path) -> None:
    """Bundles are not signed: the token is what guards them. Without it: 401; with it, from a
    page of another site (a player's browser on a hostile page): 403; nothing kept either
    way. The box's own page with the token (as a header) is let in. Broken, anyone on the
    Wi-Fi, or any web page a player opens, could put a system on the box."""
    bundle = make_bundle(tmp_path / "made")
    status, answer = await post(box, bundle, token=None)
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    status, answer = await post(box, bundle, token="wrong")
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    status, answer = await post(box, bundle, {"Origin": "http://evil.example"})
    assert (status, answer) == (403, {"text": "origin not allowed\n"})
    assert box.tree() == {}
    own = {"Origin": box.url, "Authorization": f"Bearer {TOKEN}"}
    assert (await post(box, bundle, own, token=None))[0] == 202


async def test_a_box_not_started_from_the_card_refuses_updates(tmp_path: Path) -> None:
    """A box that does not run from a card with two roots (a Pi OS image, a laptop) cannot
    fall back, so it takes no update: UNSUPPORTED saying the Debian card is needed, before
    the body is read, and nothing written. Broken, a player would wait for an upload that
    can never install."""
    made = await make_box(tmp_path, slot=None)
    try:
        status, answer = await post(made, make_bundle(tmp_path / "made"))
        assert (status, answer.get("code")) == (400, "UNSUPPORTED"), answer
        assert "Debian card" in answer["error"]
        assert made.tree() == {}
    finally:
        await made.server.stop()


async def test_a_second_update_is_refused_while_one_is_sent_or_waits(box: Box, tmp_path: Path) -> None:
    """While one phone sends an update a second one's is refused at once (BUSY); the first
    phone walking out of Wi-Fi midway leaves nothing. Once an update waits for the installer
    another is refused (BUSY) and the waiting one stays byte for byte. Broken, two phones'
    updates could mix, or one could replace the bundle being installed."""
    first, second = make_bundle(tmp_path / "first", "2.0"), make_bundle(tmp_path / "second", "3.0")
    _, writer = await asyncio.open_connection("127.0.0.1", box.server.port)
    writer.write(
        f"POST /update?token={TOKEN} HTTP/1.1\r\nHost: box\r\nContent-Length: {len(first)}\r\n\r\n".encode()
        + first[: len(first) // 2]
    )
    await writer.drain()
    async with asyncio.timeout(REPLY_TIMEOUT):
        while not box.tree():
            await asyncio.sleep(0.01)  # the box has started writing it
    status, answer = await asyncio.wait_for(post(box, second), REPLY_TIMEOUT)  # at once, not after
    assert (status, answer.get("code"), answer.get("retryable")) == (409, "BUSY", True), answer
    writer.close()
    async with asyncio.timeout(REPLY_TIMEOUT):
        while box.tree():
            await asyncio.sleep(0.01)
    assert (await post(box, first))[0] == 202
    status, answer = await post(box, second)
    assert (status, answer.get("code")) == (409, "BUSY"), answer
    assert "waits to be installed" in answer["error"]
    assert box.tree()["update/bundle.update"] == first


async def test_an_update_larger_than_the_card_or_the_cap_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """A bundle said to be 5 GiB is refused before a byte of it is read: TOO_LARGE (413) past
    the 4 GiB cap, or NO_SPACE (507) on a card with less room than that. Broken, a phone
    would send gigabytes before hearing no."""
    made = await make_box(tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.server.port)
        writer.write(
            f"POST /update?token={TOKEN} HTTP/1.1\r\nHost: box\r\nContent-Length: {5 << 30}\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        writer.close()
        await writer.wait_closed()
        roomy = shutil.disk_usage(made.data).free - CARD_RESERVE >= MAX_BUNDLE
        assert status.startswith(b"HTTP/1.1 413" if roomy else b"HTTP/1.1 507"), status
        assert made.tree() == {}
    finally:
        await made.server.stop()


async def test_a_card_too_full_for_an_update_refuses_it_cleanly(tmp_path: Path) -> None:
    """On a card with 16 MB free beyond the 64 MB kept for the boards: an update of 20 MB is
    refused with NO_SPACE (507), up front when its length is said and as it passes the room
    when not, and nothing of it is left; a small one still goes in. Broken, an update would
    fill the card the board is saved on, and the box would stop saving."""
    with small_partition(tmp_path / "data", "80m"):
        made = await make_box(tmp_path)
        try:
            status, answer = await post(made, b"\x00" * (20 << 20))
            assert (status, answer["code"]) == (507, "NO_SPACE"), answer
            assert "room" in answer["error"]

            async def streamed() -> AsyncIterator[bytes]:  # chunked: no length said
                for _ in range(20 * 16):
                    yield b"\x00" * 65536

            status, answer = await post(made, streamed())
            assert (status, answer["code"]) == (507, "NO_SPACE"), answer
            assert made.tree() == {}
            assert (await post(made, make_bundle(tmp_path / "made")))[0] == 202
        finally:
            await made.server.stop()


# -- the system in the health report, on the whole box -----------------------------------


def card_boot(
    folder: Path, slot: str = "A", trying: str = "", versions: dict[str, str] | None = None
) -> Path:
    """A card's boot partition as image/card/build makes it: GRUB's environment block (made by
    grub-editenv) and each root's version beside its kernel."""
    editenv = shutil.which("grub-editenv")
    assert editenv is not None, "grub-editenv is missing (scripts/setup --test installs grub-common)"
    env = folder / update.GRUBENV
    env.parent.mkdir(parents=True)
    subprocess.run([editenv, str(env), "create"], check=True)
    subprocess.run([editenv, str(env), "set", f"slot={slot}", f"trying={trying}"], check=True)
    for root, version in (versions or {"A": "1.0"}).items():
        (folder / root).mkdir()
        (folder / root / "version").write_text(version + "\n")
    return folder


def fake_engine_maker(config: Config, on_event: Any, own: OwnPlugins) -> FakeEngine:
    return FakeEngine([TrackPorts(t.id, t.inputs, t.outputs) for t in config.tracks], on_event)


async def _health(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as response:
        report: dict[str, Any] = await response.json()
        return report


async def _health_over_ws(base: str) -> dict[str, Any]:
    async with connect(base.replace("http", "ws") + "/ws") as phone:
        await phone.send(json.dumps({"id": "h1", "type": "HEALTH_GET", "data": {}}))
        async with asyncio.timeout(REPLY_TIMEOUT):
            while (message := json.loads(await phone.recv())).get("reply_to") != "h1":
                pass
    assert message["type"] == "HEALTH"
    data: dict[str, Any] = message["data"]
    return data


async def test_the_box_says_which_system_it_runs_and_what_came_of_the_last_update(tmp_path: Path) -> None:
    """The whole box started from root B of the card: ``/healthz`` and HEALTH say version 2.0
    (stamped beside B's kernel), root B, no update yet; the check at boot keeps B while the
    box runs, and the next ask says "installed" with no restart of the box. A box not from
    the card says its package's version and no root. Broken, the phone could not tell which
    system plays or what became of the update."""
    loaded: Config = config_module.load(virtual_config(tmp_path, demo=[], midi=False))
    loaded = dataclasses.replace(loaded, server=dataclasses.replace(loaded.server, port=free_port()))
    boot = card_boot(tmp_path / "boot", slot="A", versions={"A": "1.0", "B": "2.0"})
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=PARTUUID=70656461-03 ro appliance.slot=B quiet\n")
    app = App(loaded, engine_maker=fake_engine_maker, system=lambda: read_system(boot, cmdline))
    try:
        await app.start()
        base = f"http://127.0.0.1:{loaded.server.port}"
        expected = {"version": "2.0", "slot": "B", "last_update": None}
        assert (await _health(base))["system"] == expected
        assert (await _health_over_ws(base))["system"] == expected
        state = loaded.data_dir / update.UPDATE_DIR
        kept = await asyncio.to_thread(
            update.confirm, state, 5.0, boot, lambda: None, lambda line: None, "appliance.slot=B"
        )
        assert kept
        for report in (await _health(base), await _health_over_ws(base)):
            last = report["system"]["last_update"]
            assert last is not None, "the phone is not told what came of the update"
            assert {k: last[k] for k in ("outcome", "version", "slot")} == {
                "outcome": "installed",
                "version": "2.0",
                "slot": "B",
            }
            assert isinstance(last["at"], str)
    finally:
        await app.stop()
    cmdline.write_text("root=/dev/mmcblk0p2 ro quiet\n")
    assert read_system(boot, cmdline) == System(__version__, None)
    cmdline.write_text("appliance.slot=A\n")
    (boot / "A" / "version").unlink()
    assert read_system(boot, cmdline) == System(__version__, "A"), "a root without its stamp"


# -- GRUB's environment block ------------------------------------------------------------


def test_the_environment_block_stays_grubs(tmp_path: Path) -> None:
    """The block the box writes is exactly 1024 bytes in GRUB's format (grub-editenv, which
    reads it as GRUB does, lists what was written), and what grub-editenv writes reads back
    the same; a block too full to take the values is refused and left as it was. Broken,
    GRUB would boot neither root, or the wrong one."""
    boot = card_boot(tmp_path, slot="A")
    env = boot / update.GRUBENV
    assert update.read_env(env) == {"slot": "A", "trying": ""}
    update.write_env(env, {"slot": "A", "trying": "B", "overlay": "overlayroot=tmpfs"})
    data = env.read_bytes()
    assert len(data) == update.ENV_SIZE
    assert data.startswith(update.ENV_HEADER.encode()) and data.endswith(b"#" * 900)
    listed = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines() == ["slot=A", "trying=B", "overlay=overlayroot=tmpfs"]
    subprocess.run(["grub-editenv", str(env), "set", "trying=", "extra=quiet splash"], check=True)
    values = update.read_env(env)
    assert values == {"slot": "A", "trying": "", "overlay": "overlayroot=tmpfs", "extra": "quiet splash"}
    update.write_env(env, values)
    assert update.read_env(env) == values and len(env.read_bytes()) == update.ENV_SIZE
    before = env.read_bytes()
    with pytest.raises(update.UpdateError, match="full"):
        update.write_env(env, {**values, "extra": "x" * update.ENV_SIZE})
    assert env.read_bytes() == before


# -- the check at boot: keep the new root, or go back ------------------------------------


def trial(tmp_path: Path) -> tuple[Path, Path]:
    """A card that has just installed 2.0 to root B and boots it once (GRUB emptied
    ``trying``; ``slot`` is still A): its boot folder, and the box's update folder as the
    installer left it."""
    boot = card_boot(tmp_path / "boot", slot="A", versions={"A": "1.0", "B": "2.0"})
    state = tmp_path / "data" / update.UPDATE_DIR
    state.mkdir(parents=True)
    (state / update.EXPECT_NAME).write_text('{"board_plugins": 3}\n')
    return boot, state


def test_a_new_root_that_plays_is_kept(tmp_path: Path) -> None:
    """Root B boots on trial and the box is READY with its board on the third look: B becomes
    the box's system (``slot=B``, nothing to try), and the phone reads "installed" 2.0 on B.
    Broken, the next boot would go back to the old system, or try B again and again."""
    boot, state = trial(tmp_path)
    looks = iter(["the box did not become READY", "the box does not play (/healthz)", None])
    kept = update.confirm(state, 10.0, boot, lambda: next(looks), lambda line: None, "appliance.slot=B", 0.01)
    assert kept is True
    assert update.read_env(boot / update.GRUBENV) == {"slot": "B", "trying": ""}
    last = update.last_outcome(state)
    assert last is not None and isinstance(last.pop("at"), str)
    assert last == {"outcome": "installed", "version": "2.0", "slot": "B"}
    assert sorted(p.name for p in state.iterdir()) == [update.LAST_NAME]


def test_a_new_root_that_never_plays_goes_back_to_the_old_one(tmp_path: Path) -> None:
    """Root B boots on trial and the box never plays its board within the limit: the check
    gives up after the limit (False: the caller reboots), GRUB's next boot is root A again
    (``slot`` still A, nothing to try), and the phone reads "fell back" with why. Broken, a
    box with a bad update would stay silent on stage."""
    boot, state = trial(tmp_path)
    why = "the box plays 1 plugin(s) where its board had 3"
    started = time.monotonic()
    kept = update.confirm(state, 0.3, boot, lambda: why, lambda line: None, "appliance.slot=B", 0.05)
    took = time.monotonic() - started
    assert kept is False
    assert 0.3 <= took < 2.0, took
    assert update.read_env(boot / update.GRUBENV) == {"slot": "A", "trying": ""}
    last = update.last_outcome(state)
    assert last is not None and isinstance(last.pop("at"), str)
    assert last == {"outcome": "fell back", "version": "2.0", "slot": "A", "why": why}


@pytest.mark.parametrize("cmdline", ["appliance.slot=A quiet", "root=/dev/mmcblk0p2 quiet"])
def test_a_boot_that_is_not_on_trial_goes_on_at_once(tmp_path: Path, cmdline: str) -> None:
    """An ordinary boot of the kept root (or of a card without two roots) goes on at once and
    changes nothing: not GRUB's block, not the last update's outcome. Broken, every boot would
    wait, or undo the last update."""
    boot, state = trial(tmp_path)
    (state / update.LAST_NAME).write_text('{"outcome": "installed", "version": "1.0", "slot": "A"}\n')
    env_before = (boot / update.GRUBENV).read_bytes()
    listing = sorted(p.name for p in state.iterdir())

    def never() -> str | None:
        raise AssertionError("the box was checked on a boot that is not on trial")

    started = time.monotonic()
    assert update.confirm(state, 60.0, boot, never, lambda line: None, cmdline) is True
    assert time.monotonic() - started < 1.0
    assert (boot / update.GRUBENV).read_bytes() == env_before
    assert sorted(p.name for p in state.iterdir()) == listing
    assert update.last_outcome(state) == {"outcome": "installed", "version": "1.0", "slot": "A"}


@pytest.mark.parametrize(
    ("cmdline", "words"),
    [("root=/dev/sda2 ro", "two roots"), ("appliance.slot=B ro", "root B is on trial")],
)
def test_a_refused_install_is_asked_for_once(tmp_path: Path, cmdline: str, words: str) -> None:
    """The installer refuses a waiting update on a box not started from the card, and on a
    root that is on trial (installing would overwrite the old root it must be able to go
    back to); it says why in ``last.json`` for the phone, changes nothing in GRUB's block,
    and takes ``ready`` and the bundle away, so that systemd's path unit does not start it
    again and again. Broken, the box would try to install forever, or wipe the old system
    that a bad new one must be able to go back to."""
    boot, state = trial(tmp_path)
    env_before = (boot / update.GRUBENV).read_bytes()
    make_bundle(tmp_path / "made")
    shutil.copy(next((tmp_path / "made").glob("*.update")), state / update.BUNDLE_NAME)
    (state / update.READY_NAME).write_text("{}\n")
    with pytest.raises(update.UpdateError, match=words):
        update.install_waiting(state, boot, lambda line: None, cmdline)
    assert sorted(p.name for p in state.iterdir()) == [update.EXPECT_NAME, update.LAST_NAME]
    last = update.last_outcome(state)
    assert last is not None and last["outcome"] == "refused" and words in last["why"], last
    assert (boot / update.GRUBENV).read_bytes() == env_before
