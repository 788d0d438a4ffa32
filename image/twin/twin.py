"""The SD image's twin, booted: a card flashed from the twin's root filesystem and
powered up in ``systemd-nspawn`` with real systemd as PID 1.

A :class:`Card` stands for the SD card. Its boot and data partitions are folders
the container is given at ``/boot/firmware`` and ``/data`` (any computer can read
them: so can the tests), and its root partition is an overlay over the cached,
pristine root filesystem (``image/twin/build``), which is never written.

A :class:`Twin` is one power-up of a card. Like the Pi's initramfs, it reads the
boot partition's ``cmdline.txt``: with ``overlayroot=tmpfs`` there (first boot
puts it there) the root is mounted read-only under a RAM overlay
(``--volatile=overlay``: writes vanish at power-off). The container has its own
network namespace with only a loopback interface, so nothing it announces (mDNS,
DHCP, the access point) leaves it and its port 8000 never clashes with the
machine's; :meth:`Twin.forward` carries a port of this machine's loopback to the
box's port inside.

Blocking calls throughout (subprocesses, sleeps). Power up from a thread that
outlives the twin (the main thread): systemd-nspawn and the build get SIGTERM
when the thread that started them ends, so that nothing outlives a test run
that was killed. Needs root, ``systemd-nspawn`` (package ``systemd-container``),
``mmdebstrap`` and ``nsenter``.

``python3 image/twin/twin.py`` builds (or takes the cached) root filesystem,
boots a new card and forwards the box to http://127.0.0.1:8000/ until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "image" / "twin" / "build"
#: systemd-nspawn's exit status when the container rebooted (systemd-nspawn(1)).
REBOOT_EXIT = 133
#: How long the root filesystem build may take (first time; cached afterwards).
BUILD_TIMEOUT = 900.0
#: How long systemd in the container may take to come up far enough to answer.
BOOT_TIMEOUT = 60.0
#: How long a clean power-off may take before the plug is pulled.
POWEROFF_TIMEOUT = 30.0
#: How long one command run inside the container may take.
COMMAND_TIMEOUT = 30.0
#: The environment of commands run inside (none of this machine's variables).
INSIDE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""}
_CLONE_NEWNET = 0x40000000
#: Prefix for the processes this module starts: they get SIGTERM if this process dies
#: without ending them (a test run killed on a timeout): nspawn then halts the
#: container, mmdebstrap cleans up.
_FOLLOW_ME = ["setpriv", "--pdeathsig", "SIGTERM", "--"]


class TwinError(Exception):
    """The twin could not be built, booted or reached."""


def why_not_here() -> str | None:
    """Why the twin cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the twin needs root (mmdebstrap's root mode, overlay mounts, systemd-nspawn)"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("nsenter", "util-linux"),
        ("journalctl", "systemd"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package {package}; ./scripts/setup --test installs it)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem"
    return None


def build(log: Path, timeout: float = BUILD_TIMEOUT) -> Path:
    """The twin's root filesystem: built by ``image/twin/build``, or its cached copy.

    The build runs in a process group of its own, killed if this call fails or is
    interrupted. Its output goes to ``log``.

    Raises:
        TwinError: the build failed (the log's tail says why).
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*_FOLLOW_ME, str(BUILD)], stdout=subprocess.PIPE, stderr=out, start_new_session=True
        )
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        _end_group(proc)
    if proc.returncode != 0:
        raise TwinError(f"image/twin/build failed ({proc.returncode}): {_tail(log)}")
    return Path(stdout.decode().strip().splitlines()[-1])


def card_folder(prefix: str = "twin-") -> Path:
    """A new folder for a card, named after this process; first the folders of cards
    whose process is gone (killed before it could eject them) are swept away."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{prefix}*-card-*"):
        owner = stale.name.removeprefix(prefix).split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            for line in Path("/proc/self/mounts").read_text().splitlines():
                mountpoint = line.split()[1]
                if mountpoint.startswith(f"{stale}/"):
                    subprocess.run(
                        ["umount", "-l", mountpoint],
                        capture_output=True,
                        check=False,
                        timeout=COMMAND_TIMEOUT,
                    )
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-card-", dir=base))


class Card:
    """An SD card flashed with the twin's image, as folders under ``folder``.

    ``boot/`` and ``data/`` are the boot and data partitions; ``root/`` is the
    root partition, an overlay (``upper/`` over the pristine ``image``) mounted
    by :meth:`flash` and unmounted by :meth:`eject`.
    """

    def __init__(self, image: Path, folder: Path) -> None:
        self.image = image
        self.folder = folder
        self.boot = folder / "boot"
        self.data = folder / "data"
        self.upper = folder / "upper"
        self.root = folder / "root"
        self._work = folder / "work"
        self.flashed = False

    def flash(self) -> None:
        """Write the image to the card: the boot partition's files, an empty data
        partition (first boot makes its folders, as it makes the Pi's partition),
        and the root partition."""
        for part in (self.data, self.upper, self._work, self.root):
            part.mkdir(parents=True)
        shutil.copytree(self.image / "boot" / "firmware", self.boot)
        lower, upper, work = self.image, self.upper, self._work
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}",
                str(self.root),
            ],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        self.flashed = True

    def eject(self) -> None:
        """Unmount the root partition; twice is fine."""
        if self.flashed:
            subprocess.run(
                ["umount", "-l", str(self.root)], check=False, capture_output=True, timeout=COMMAND_TIMEOUT
            )
            self.flashed = False

    @property
    def is_read_only(self) -> bool:
        """Whether the boot partition's cmdline.txt asks for the read-only root."""
        cmdline = self.boot / "cmdline.txt"
        return cmdline.exists() and "overlayroot=tmpfs" in cmdline.read_text()

    def journal_files(self) -> list[Path]:
        """Every journal file: first boot's on the root partition, the rest on the data partition."""
        return sorted(self.upper.glob("var/log/journal/*/*.journal")) + sorted(
            self.data.glob("journal/*/*.journal")
        )

    def journal(self, *args: str) -> str:
        """``journalctl`` over every boot of this card (``args``: filters and options)."""
        files = [f"--file={path}" for path in self.journal_files()]
        if not files:
            return ""
        done = subprocess.run(
            ["journalctl", "--no-pager", *files, *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return done.stdout


class Twin:
    """One power-up of ``card`` in a container, until :meth:`power_off` or
    :meth:`pull_plug`. A reboot from inside (first boot ends with one) is
    followed by the next power-up, as on the Pi.

    Attributes:
        powered_on: this machine's ``time.monotonic()`` at the last power-up,
            on the clock of the container's own monotonic timestamps.
    """

    def __init__(self, card: Card, log: Path) -> None:
        self.card = card
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.powered_on = 0.0
        self.boots = 0
        self._forwards: list[_Forward] = []

    def power_on(self) -> None:
        """Boot the card: returns once systemd in the container answers."""
        argv = [
            *_FOLLOW_ME,
            "systemd-nspawn",
            "-q",
            "--register=no",
            "--keep-unit",
            "--boot",
            "--console=pipe",
            "--private-network",
            f"--machine=twin-{os.getpid()}-{self.boots}",
            "-D",
            str(self.card.root),
            f"--bind={self.card.boot}:/boot/firmware",
            f"--bind={self.card.data}:/data",
        ]
        if self.card.is_read_only:
            argv.append("--volatile=overlay")
        with open(self.log, "ab") as out:
            out.write(f"\n--- power on ({' '.join(argv)})\n".encode())
            out.flush()
            self.powered_on = time.monotonic()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.boots += 1
        try:
            self.leader = self._find_leader()
            self._wait_for_systemd()
        except BaseException:
            self.pull_plug()
            raise

    def start(self) -> None:
        """Power on; on a new card, power on again when first boot has rebooted.
        Returns once systemd of the boot that starts the box answers.

        Raises:
            TwinError: first boot failed or did not end in a reboot.
        """
        self.power_on()
        if self.unit("appliance-firstboot.service", "UnitFileState").get("UnitFileState") != "enabled":
            return
        assert self.proc is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            # Failed? While the container reboots, systemd may not answer at all.
            with contextlib.suppress(subprocess.TimeoutExpired):
                failed = "appliance-firstboot.service"
                if (
                    self.run("systemctl", "is-failed", "--quiet", failed, check=False, timeout=2).returncode
                    == 0
                ):
                    break
            time.sleep(0.05)
        code = self.proc.poll()
        if code != REBOOT_EXIT:
            self.pull_plug()
            failed = self.card.journal("-u", "appliance-firstboot.service", "-o", "cat")
            raise TwinError(f"first boot did not end in a reboot ({code}): {failed[-2000:]}")
        self.pull_plug()
        self.power_on()

    def _find_leader(self) -> int:
        """The container's PID 1, as this machine sees it."""
        assert self.proc is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TwinError(f"systemd-nspawn exited ({self.proc.returncode}): {_tail(self.log)}")
            for pid in _children(self.proc.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
            time.sleep(0.02)
        raise TwinError(f"no systemd in the container after {BOOT_TIMEOUT} s: {_tail(self.log)}")

    def _wait_for_systemd(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.run("systemctl", "show", "-p", "Version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise TwinError(f"systemd in the container does not answer: {_tail(self.log)}")

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run(
        self, *argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a program of the container, inside all its namespaces, as root.

        Raises:
            TwinError: with ``check``, the program failed (its output is in the message).
        """
        if self.leader is None:
            raise TwinError("the twin is not powered on")
        done = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.leader),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-r",
                "-w",
                "/usr/bin/env",
                "-i",
                *(f"{k}={v}" for k, v in INSIDE_ENV.items()),
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise TwinError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def unit(self, name: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` of a unit (or of the manager, for ``name`` ""), as a dict."""
        argv = ["systemctl", "show", *(f"--property={p}" for p in properties)]
        if name:
            argv.append(name)
        shown = self.run(*argv).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def wait_until(
        self, name: str, condition: Callable[[dict[str, str]], bool], timeout: float
    ) -> dict[str, str]:
        """Poll unit ``name`` until ``condition(properties)`` holds; its properties then.

        Raises:
            TwinError: it did not within ``timeout`` seconds, or the container ended.
        """
        properties = (
            "ActiveState",
            "SubState",
            "Result",
            "MainPID",
            "NRestarts",
            "ActiveEnterTimestampMonotonic",
            "ExecMainStartTimestampMonotonic",
        )
        deadline = time.monotonic() + timeout
        shown: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                shown = self.unit(name, *properties)
            except TwinError:
                if self.is_running:
                    raise
                code = self.proc.returncode if self.proc is not None else None
                raise TwinError(
                    f"the container ended ({code}) while waiting for {name}: {_tail(self.log)}"
                ) from None
            if condition(shown):
                return shown
            time.sleep(0.05)
        raise TwinError(f"{name} did not get there in {timeout} s: {shown}")

    def forward(self, port: int) -> int:
        """Carry a free port of this machine's loopback to ``port`` inside; returns it."""
        if self.leader is None:
            raise TwinError("the twin is not powered on")
        forward = _Forward(self.leader, port)
        self._forwards.append(forward)
        return forward.port

    def power_off(self, timeout: float = POWEROFF_TIMEOUT) -> int | None:
        """A clean shutdown (systemd-nspawn's SIGTERM halts the container); the plug is
        pulled if it takes longer than ``timeout``. Returns nspawn's exit status."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        return self.pull_plug()

    def pull_plug(self) -> int | None:
        """SIGKILL to the container's PID 1 (which ends everything in it), then to what is
        left of systemd-nspawn's group: the plug of the container, not of the machine (its
        page cache keeps every write; image/card/qemu.py cuts a VM's power). Returns
        nspawn's exit status."""
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        if self.leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGKILL)
            self.leader = None
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(POWEROFF_TIMEOUT)
        _end_group(self.proc)
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        """Wait for the container to end by itself (a reboot or power-off from inside)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TwinError(f"the container did not end in {timeout} s") from exc
        self.pull_plug()
        return code


class _Forward:
    """A loopback port of this machine, each connection carried to ``port`` in the
    network namespace of process ``pid``. One thread: it enters that namespace
    (setns(2) acts on the calling thread only) after the listening socket was made
    in this machine's."""

    def __init__(self, pid: int, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._target = port
        self._namespace = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"twin-forward-{port}", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(self._namespace, _CLONE_NEWNET) != 0:
            self._ready.set()
            return
        self._ready.set()
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        self._accept(selector, peers)
                        continue
                    if sock not in peers:
                        continue  # closed with its peer earlier in this round
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        chunk = b""
                    if chunk:
                        with contextlib.suppress(OSError):
                            peers[sock].sendall(chunk)
                    else:
                        other = peers.pop(sock)
                        del peers[other]
                        for end in (sock, other):
                            with contextlib.suppress(KeyError, ValueError):
                                selector.unregister(end)
                            end.close()
        finally:
            for sock in list(peers):
                sock.close()
            selector.close()
            self.listener.close()

    def _accept(self, selector: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]) -> None:
        client, _ = self.listener.accept()
        try:
            inside = socket.create_connection(("127.0.0.1", self._target), timeout=5)
        except OSError:
            client.close()  # nothing listening inside (yet): the client sees the connection closed
            return
        inside.settimeout(None)
        peers[client], peers[inside] = inside, client
        selector.register(client, selectors.EVENT_READ)
        selector.register(inside, selectors.EVENT_READ)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self._namespace)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left in the process group ``proc`` leads, and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(POWEROFF_TIMEOUT)


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def main() -> None:
    """Boot a new card and forward the box to http://127.0.0.1:8000/ until Ctrl-C."""
    reason = why_not_here()
    if reason:
        raise SystemExit(f"twin: {reason}")
    folder = card_folder()
    image = build(folder / "build.log")
    card = Card(image, folder / "card")
    card.flash()
    twin = Twin(card, folder / "nspawn.log")
    try:
        twin.start()
        twin.wait_until("appliance.service", lambda s: s["ActiveState"] == "active", BOOT_TIMEOUT)
        token = (card.boot / "appliance-token.txt").read_text().strip()
        port = twin.forward(8000)
        print(f"twin: the box is up: http://127.0.0.1:{port}/?token={token}  (Ctrl-C stops it)")
        print(f"twin: card in {folder}; journal: journalctl --file '{card.data}/journal/*/*.journal'")
        with contextlib.suppress(KeyboardInterrupt):
            while twin.is_running:
                time.sleep(0.5)
        twin.power_off()
    finally:
        twin.pull_plug()
        card.eject()


if __name__ == "__main__":
    main()
