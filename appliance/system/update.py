"""System updates for the Debian card (image/card): a bundle, the other root, and falling back.

The card has two roots, A (partition 2) and B (partition 3), and GRUB picks one at every
boot from its environment block on the boot partition (``image/card/grub.cfg``):
``slot`` is the root that last reached READY with its board, ``trying`` a root to boot
once. An update goes like this::

    phone ──POST /update──▶ box: the bundle on the data partition, checked ──▶ update/ready
    appliance-update.service (root): check again, fill the other root, its kernel on the
        boot partition, trying=<other>, ready and the bundle gone, reboot
    GRUB: boots <other> once (empties trying)
    appliance-update-check.service (root), on the new root: the box READY with its board
        within the limit? slot=<other> : reboot (GRUB boots the old slot again)

Nothing here touches the data partition but ``update/`` in the box's folder: the player's
board, pedalboards and files stay as they are whichever root runs.

A bundle is an uncompressed tar (read as a stream): ``manifest.json`` first, then
``vmlinuz``, ``initrd.img`` and ``root.tar.zst`` (the root filesystem, zstd), each with its
size and SHA-256 in the manifest. Bundles are not signed: whoever has the box's token may
install one (docs: README "Updates").

Standard library only: the build machine runs ``python3 -m appliance.system.update make``
without the box's virtual environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: The bundle format this code reads and writes.
FORMAT = 1
MANIFEST = "manifest.json"
#: The members after the manifest, in this order.
MEMBERS = ("vmlinuz", "initrd.img", "root.tar.zst")
#: The card's disk id: root A is PARTUUID=70656461-02, B -02 + 1 (image/card/build).
DISK_ID = "70656461"
PARTITIONS = {"A": 2, "B": 3}
#: The boot partition, and GRUB's environment block on it.
BOOT = Path("/boot/firmware")
GRUBENV = Path("EFI/BOOT/grubenv")
ENV_SIZE = 1024
ENV_HEADER = "# GRUB Environment Block\n"
#: The update's place in the box's folder (on the data partition).
UPDATE_DIR = "update"
#: The bundle, once the box has it whole and checked; the file that asks for the install.
BUNDLE_NAME = "bundle.update"
READY_NAME = "ready"
#: What the last update came to (the phone shows it).
LAST_NAME = "last.json"
#: What the box's board held before the update (the new root must play the same).
EXPECT_NAME = "expect.json"
HEALTHZ = "http://127.0.0.1:8000/healthz"
#: Seconds between two looks at the box while a tried root is on trial (:func:`confirm`).
CONFIRM_POLL = 1.0
#: The biggest manifest read, bytes.
MANIFEST_LIMIT = 64 * 1024
CHUNK = 1 << 20
#: A root filesystem as it is: owners by number, extended attributes (capabilities).
TAR_OPTIONS = ("--numeric-owner", "--xattrs", "--xattrs-include=*")
#: What makes a root itself and not the card it came from: kept across an update.
IDENTITY = ("etc/machine-id", "etc/hostname", "etc/hosts")
#: First boot, already done on this card: never again on a new root.
FIRSTBOOT_LINK = "etc/systemd/system/multi-user.target.wants/appliance-firstboot.service"


class UpdateError(Exception):
    """A bundle that cannot be installed, said in words for the player."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    version: str
    arch: str
    files: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "arch": self.arch, "files": self.files}


def machine_arch() -> str:
    """Debian's name for this machine's architecture."""
    return {"aarch64": "arm64", "x86_64": "amd64"}.get(platform.machine(), platform.machine())


# -- making and checking bundles ----------------------------------------------------------


def _hashed_copy(source: IO[bytes] | _HashingReader, target: IO[bytes] | None) -> tuple[str, int]:
    digest, count = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
        count += len(chunk)
    return digest.hexdigest(), count


def make(root: Path, kernel: Path, initrd: Path, arch: str, version: str, out: Path) -> Manifest:
    """Write the bundle of a root filesystem and its kernel to ``out``."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".bundle-") as work:
        packed = Path(work) / "root.tar.zst"
        with open(packed, "wb") as sink:
            tar = subprocess.Popen(
                ["tar", "-C", str(root), *TAR_OPTIONS, "-cf", "-", "."], stdout=subprocess.PIPE
            )
            zstd = subprocess.run(["zstd", "-q", "-T0", "-6"], stdin=tar.stdout, stdout=sink, check=False)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or zstd.returncode != 0:
                raise UpdateError(f"packing {root} failed (tar {tar.returncode}, zstd {zstd.returncode})")
        sources = {"vmlinuz": kernel, "initrd.img": initrd, "root.tar.zst": packed}
        files = {}
        for name, path in sources.items():
            with open(path, "rb") as f:
                digest, size = _hashed_copy(f, None)
            files[name] = {"size": size, "sha256": digest}
        manifest = Manifest(version, arch, files)
        text = json.dumps(manifest.to_json(), indent=1).encode()
        partial = out.with_name(f".{out.name}.part")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as bundle:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(text), int(time.time())
            bundle.addfile(info, _BytesReader(text))
            for name in MEMBERS:
                bundle.add(sources[name], arcname=name, recursive=False)
        os.replace(partial, out)
    return manifest


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at : end], min(end, len(self._data))
        return chunk


def _manifest(data: bytes) -> Manifest:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else '?'}, not {FORMAT}")
        files = raw["files"]
        version, arch = str(raw["version"]), str(raw["arch"])
        if set(files) != set(MEMBERS):
            raise ValueError(f"it lists {sorted(files)}")
        for entry in files.values():
            if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
                raise ValueError("a size or hash is missing")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UpdateError(f"the update's manifest is not one this box reads: {exc}") from None
    return Manifest(version, arch, files)


def members(bundle: IO[bytes], arch: str | None) -> Iterator[tuple[Manifest, str, _HashingReader]]:
    """The bundle's members in order, each as (manifest, name, its content as a stream), after
    checking the manifest; a member's hash is checked when the next one is asked for.

    Raises:
        UpdateError: not a bundle, another machine's, a member missing, extra or damaged.
    """
    try:
        archive = tarfile.open(fileobj=bundle, mode="r|")  # noqa: SIM115 (a stream; the caller's file)
        first = archive.next()
        if first is None or first.name != MANIFEST or not first.isfile() or first.size > MANIFEST_LIMIT:
            raise UpdateError("this is not an update for the box (no manifest first)")
        stream = archive.extractfile(first)
        assert stream is not None
        manifest = _manifest(stream.read())
        if arch is not None and manifest.arch != arch:
            raise UpdateError(f"this update is for {manifest.arch} boxes; this box is {arch}")
        for name in MEMBERS:
            info = archive.next()
            if info is None or info.name != name or not info.isfile():
                raise UpdateError(f"the update is damaged: {name} is missing where it belongs")
            expected = manifest.files[name]
            if info.size != expected["size"]:
                raise UpdateError(
                    f"the update is damaged: {name} is {info.size} bytes, not {expected['size']}"
                )
            content = archive.extractfile(info)
            assert content is not None
            hashing = _HashingReader(content)
            yield manifest, name, hashing
            hashing.drain()
            if hashing.hexdigest() != expected["sha256"]:
                raise UpdateError(f"the update is damaged: {name} does not match its checksum")
        if archive.next() is not None:
            raise UpdateError("the update holds more than a system (extra members)")
    except tarfile.TarError as exc:
        raise UpdateError(f"this is not an update for the box, or it is cut short ({exc})") from None


class _HashingReader:
    def __init__(self, source: IO[bytes]) -> None:
        self._source, self._digest = source, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._digest.update(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def check(path: Path, arch: str | None = None) -> Manifest:
    """Read the whole bundle at ``path`` and check it (see :func:`members`)."""
    found = None
    with open(path, "rb") as f:
        for found, _, _ in members(f, arch):  # noqa: B007 (the last one is the answer)
            pass
    assert found is not None
    return found


# -- GRUB's environment block -----------------------------------------------------------


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def write_env(path: Path, values: dict[str, str]) -> None:
    """Write the block in place (GRUB writes it in place too: it must keep its blocks)."""
    text = ENV_HEADER + "".join(f"{k}={v}\n" for k, v in values.items())
    data = text.encode()
    if len(data) > ENV_SIZE:
        raise UpdateError("GRUB's environment block is full")
    with open(path, "r+b") as f:
        f.write(data + b"#" * (ENV_SIZE - len(data)))
        f.flush()
        os.fsync(f.fileno())


def booted_slot(cmdline: str | None = None) -> str | None:
    """The root this boot runs (``appliance.slot=`` on the kernel's command line)."""
    text = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
    for word in text.split():
        if word.startswith("appliance.slot="):
            return word.split("=", 1)[1]
    return None


def last_outcome(state: Path) -> dict[str, Any] | None:
    """What the last update came to (``last.json`` in the box's update folder ``state``), or
    None when there was none (or its record cannot be read)."""
    try:
        outcome = json.loads((state / LAST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(outcome, dict):
        return None
    return {k: outcome[k] for k in ("outcome", "version", "slot", "why", "at") if k in outcome}


def other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def partition(slot: str) -> Path:
    return Path(f"/dev/disk/by-partuuid/{DISK_ID}-{PARTITIONS[slot]:02d}")


# -- installing (root) ------------------------------------------------------------------


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UpdateError(f"{command[0]} failed: {(done.stderr or done.stdout).strip()[-400:]}")


def install(
    bundle: Path, boot: Path = BOOT, log: Callable[[str], None] = print, cmdline: str | None = None
) -> tuple[str, Manifest]:
    """Install ``bundle`` to the root this boot does not run, and have GRUB try it once.
    Returns the slot and the manifest; the caller reboots. ``cmdline``: the kernel's command
    line (None: this boot's).

    Raises:
        UpdateError: the bundle is bad, this is not a card with two roots, or this root is on
            trial (the other one is what the box goes back to).
    """
    running = booted_slot(cmdline)
    if running not in PARTITIONS:
        raise UpdateError("this box was not started from a card with two roots (no appliance.slot=)")
    env_path = boot / GRUBENV
    env = read_env(env_path)
    if running != env.get("slot", "A"):
        # The other root is the one to go back to, should this one fail its trial.
        raise UpdateError(
            f"root {running} is on trial after an update: send the update again once it is kept"
        )
    target = other(running)
    device = partition(target)
    if not device.exists():
        raise UpdateError(f"root {target} ({device}) is not on this card")
    kernel_dir = boot / target
    (bundle.parent / EXPECT_NAME).unlink(missing_ok=True)  # an earlier install's
    report = health()
    if report is not None and isinstance(report.get("board_plugins"), int):
        expect = {"board_plugins": report["board_plugins"]}
        (bundle.parent / EXPECT_NAME).write_text(json.dumps(expect) + "\n")
    log(f"installing to root {target} ({device}); this boot runs root {running}")
    # Nobody boots the target until it is whole: it is not `trying` now, and not `slot`.
    if env.get("trying"):
        env["trying"] = ""
        write_env(env_path, env)
    _run("mkfs.ext4", "-q", "-F", "-L", f"root{target}", str(device))
    with tempfile.TemporaryDirectory(prefix="appliance-update-") as mount:
        _run("mount", "-t", "ext4", str(device), mount)
        try:
            shutil.rmtree(kernel_dir, ignore_errors=True)
            kernel_dir.mkdir()
            with open(bundle, "rb") as f:
                for manifest, name, content in members(f, machine_arch()):
                    log(f"  {name}: {manifest.files[name]['size'] // (1 << 20)} MiB")
                    if name == "root.tar.zst":
                        _unpack(content, Path(mount))
                    else:
                        with open(kernel_dir / name, "wb") as out:
                            _hashed_copy(content, out)
                            os.fsync(out.fileno())
            (kernel_dir / "version").write_text(manifest.version + "\n")
            _carry_identity(Path(mount))
            os.sync()
        finally:
            subprocess.run(["umount", mount], check=False)
    env["trying"] = target
    write_env(env_path, env)
    log(f"root {target} holds {manifest.version}; the next boot tries it once")
    return target, manifest


def install_waiting(
    state: Path, boot: Path = BOOT, log: Callable[[str], None] = print, cmdline: str | None = None
) -> tuple[str, Manifest]:
    """Install the bundle the box left in ``state``, the box's update folder
    (appliance-update.service); see :func:`install`. It is asked for once: once installed,
    ``ready`` and the bundle go before the reboot, or the new root's boot would install it
    again, over the root it falls back to. A refused bundle goes too, and the outcome is
    written for the phone (``last.json``); a power cut midway leaves ``ready``, and the
    next boot (the old root: ``trying`` is empty until the end) installs it again.

    Raises:
        UpdateError: refused; ``last.json`` says why.
    """
    try:
        installed = install(state / BUNDLE_NAME, boot, log, cmdline)
    except (UpdateError, OSError) as exc:
        why = str(exc) if isinstance(exc, UpdateError) else f"the card refused it ({exc})"
        _record(state, {"outcome": "refused", "why": why}, (BUNDLE_NAME, READY_NAME))  # not a trial's
        raise UpdateError(why) from exc
    for name in (READY_NAME, BUNDLE_NAME):
        (state / name).unlink(missing_ok=True)
    os.sync()
    return installed


def _unpack(content: _HashingReader, root: Path) -> None:
    with tempfile.TemporaryFile() as errors:  # never a pipe: tar's warnings must not block it
        tar = subprocess.Popen(
            ["tar", "--zstd", "-x", "-C", str(root), *TAR_OPTIONS, "-f", "-"],
            stdin=subprocess.PIPE,
            stderr=errors,
        )
        assert tar.stdin is not None
        try:
            _hashed_copy(content, tar.stdin)
        finally:
            tar.stdin.close()
        if tar.wait() != 0:
            errors.seek(0)
            raise UpdateError(
                f"unpacking the root failed: {errors.read().decode(errors='replace').strip()[-400:]}"
            )


def _carry_identity(root: Path) -> None:
    """The new root is this box: its name, machine id and SSH host keys, and first boot done."""
    for name in IDENTITY:
        if Path("/", name).is_file():
            shutil.copy2(Path("/", name), root / name)
    for key in Path("/etc/ssh").glob("ssh_host_*"):
        shutil.copy2(key, root / "etc/ssh" / key.name)
    (root / FIRSTBOOT_LINK).unlink(missing_ok=True)


# -- after the reboot: keep the new root, or go back (root) -------------------------------


def confirm(
    state: Path,
    limit: float,
    boot: Path = BOOT,
    ready: Callable[[], str | None] | None = None,
    log: Callable[[str], None] = print,
    cmdline: str | None = None,
    poll: float = CONFIRM_POLL,
) -> bool:
    """On a boot of a root that GRUB is trying: wait up to ``limit`` seconds for the box to
    be READY with its board; then keep this root (``slot``), or have the old one boot again.
    Returns whether this boot may go on (False: the caller reboots). ``state``: the box's
    update folder, where the outcome is written for the phone; ``ready``: what is wrong with
    the box, or None once it plays (default :func:`box_ready`); ``cmdline``: the kernel's
    command line (None: this boot's)."""
    running = booted_slot(cmdline)
    env_path = boot / GRUBENV
    env = read_env(env_path)
    if running is None or running == env.get("slot", "A"):
        return True
    stamp = boot / running / "version"
    version = stamp.read_text().strip() if stamp.is_file() else "?"
    log(f"root {running} ({version}) is on trial: the box must be READY with its board within {limit:.0f} s")
    expect = state / EXPECT_NAME
    try:
        expected = json.loads(expect.read_text()).get("board_plugins") if expect.is_file() else None
    except (OSError, ValueError, AttributeError):
        expected = None  # unreadable (cut short): the box must still be READY and playing
    check = ready or (lambda: box_ready(expected))
    deadline = time.monotonic() + limit
    why = "it did not start"
    while time.monotonic() < deadline:
        problem = check()
        if problem is None:
            env["slot"], env["trying"] = running, ""
            write_env(env_path, env)
            _record(state, {"outcome": "installed", "version": version, "slot": running})
            log(f"root {running} ({version}) reached READY with its board: it is the box's system now")
            return True
        why = problem
        time.sleep(poll)
    env["trying"] = ""
    write_env(env_path, env)
    _record(state, {"outcome": "fell back", "version": version, "slot": env.get("slot", "A"), "why": why})
    log(f"root {running} ({version}) failed ({why}); rebooting into root {env.get('slot', 'A')}")
    return False


def _record(
    state: Path, outcome: dict[str, Any], done: tuple[str, ...] = (BUNDLE_NAME, READY_NAME, EXPECT_NAME)
) -> None:
    """Write what came of an update for the phone (``last.json``), and remove the files of
    ``state`` it is done with."""
    state.mkdir(parents=True, exist_ok=True)
    outcome["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    partial = state / f".{LAST_NAME}.part"
    partial.write_text(json.dumps(outcome) + "\n")
    os.replace(partial, state / LAST_NAME)
    for name in done:
        (state / name).unlink(missing_ok=True)
    os.sync()


def health(url: str = HEALTHZ) -> dict[str, Any] | None:
    """The box's /healthz report while it plays (HTTP 200), or None."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            report = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def box_ready(expected_plugins: int | None) -> str | None:
    """None when the box's unit is active (it sent READY), it plays (/healthz) and its board
    holds the plugins the board held before the update; what is wrong otherwise."""
    active = subprocess.run(["systemctl", "is-active", "--quiet", "appliance.service"], check=False)
    if active.returncode != 0:
        return "the box did not become READY"
    report = health()
    if report is None:
        return "the box does not play (/healthz)"
    plugins = report.get("board_plugins")
    if expected_plugins is not None and plugins != expected_plugins:
        return f"the box plays {plugins} plugin(s) where its board had {expected_plugins}"
    return None


# -- command line -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m appliance.system.update", description="System updates")
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("make", help="write a bundle (image/card/build)")
    made.add_argument("--root", type=Path, required=True)
    made.add_argument("--kernel", type=Path, required=True)
    made.add_argument("--initrd", type=Path, required=True)
    made.add_argument("--arch", required=True)
    made.add_argument("--version", required=True)
    made.add_argument("--out", type=Path, required=True)
    checked = commands.add_parser("check", help="check a bundle")
    checked.add_argument("bundle", type=Path)
    installed = commands.add_parser("install", help="install the waiting bundle (appliance-update.service)")
    installed.add_argument("--state", type=Path, required=True, help="the box's update folder")
    confirmed = commands.add_parser("confirm", help="keep a tried root or go back (appliance-update-check)")
    confirmed.add_argument("--state", type=Path, required=True)
    confirmed.add_argument("--limit", type=float, default=180.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "make":
            manifest = make(args.root, args.kernel, args.initrd, args.arch, args.version, args.out)
            print(f"{args.out}: {manifest.version} for {manifest.arch}")
        elif args.command == "check":
            manifest = check(args.bundle)
            print(f"{args.bundle}: {manifest.version} for {manifest.arch}, whole")
        elif args.command == "install":
            install_waiting(args.state)
        else:
            return 0 if confirm(args.state, args.limit) else 3
    except UpdateError as exc:
        print(f"update: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
