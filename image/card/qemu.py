"""The Debian card (image/card/build), powered up in QEMU: a real kernel, real systemd, the
card's own boot chain (UEFI firmware, GRUB, the chosen root) and its own partitions.

A :class:`Machine` is one card in one virtual machine. The card is a copy-on-write layer
over the built image (``qemu-img create -b``: the image itself is never written), made
bigger than the image so that first boot grows the data partition as on a real SD card.
:meth:`Machine.power_on` starts QEMU (TCG: these machines have no working KVM);
:meth:`Machine.power_cut` kills it: the guest's page cache and every write that had not
reached the virtual disk are gone, as when a player pulls the plug. The box's port 8000
is forwarded to a port of this machine's loopback (QEMU's user network: nothing else
leaves the guest). The serial console is written to ``console.log`` beside the card.

Blocking calls (subprocesses, sleeps). ``python3 image/card/qemu.py out/card/pedalboard-arm64.img``
boots a card and prints the time to READY, then forwards the box until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: What each card's architecture boots on: QEMU, its machine, CPU and UEFI firmware.
MACHINES: dict[str, dict[str, Any]] = {
    "arm64": {
        "qemu": "qemu-system-aarch64",
        "args": ["-M", "virt", "-cpu", "cortex-a72"],
        "firmware": "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
        "packages": "qemu-system-arm qemu-efi-aarch64 qemu-utils",
    },
    "amd64": {
        "qemu": "qemu-system-x86_64",
        "args": ["-M", "q35", "-cpu", "max"],
        "firmware": "/usr/share/ovmf/OVMF.fd",
        "packages": "qemu-system-x86 ovmf qemu-utils",
    },
}
#: The card as a player's SD card: bigger than the image (first boot grows the data partition).
CARD_SIZE = "8G"
#: How long a boot to READY may take under TCG (a first boot reboots once), seconds.
READY_TIMEOUT = 900.0
#: appliance.txt for a card in an emulated machine: no sound card (JACK's dummy driver), and
#: a cycle an emulated CPU keeps up with. At 48 kHz and 1024 frames the demo board kept the
#: CPU of an emulated amd64 card at 99 % DSP: thousands of xruns a boot, the box's loop late
#: by up to 1.3 s, and an installer starved of CPU.
EMULATED_AUDIO = {"audio_device": "dummy", "audio_period": "1024", "audio_rate": "16000"}
#: GRUB's environment block on the boot partition (image/card/grub.cfg reads it).
GRUBENV = "EFI/BOOT/grubenv"
#: A MIDI interface the card's kernel drives, for an amd64 machine (``Machine(serial_midi=)``).
#: QEMU emulates no USB MIDI device, but its 16550 UART is a serial MIDI port to ALSA's
#: ``snd-serial-u16550`` ("generic" adaptor) at COM2; the kernel's own serial driver is kept to
#: COM1 (the console) so that it leaves COM2 to ALSA: one port, from the legacy table (with
#: ACPI's list of ports, ttyS0 went to COM2 and the console with it). From the driver on, the
#: path is a USB controller's: ALSA's sequencer, a2jmidid, the box's JACK MIDI input.
SERIAL_MIDI_KERNEL = (
    "pnpacpi=off 8250.nr_uarts=1 modules_load=snd_serial_u16550"
    " snd_serial_u16550.port=0x2f8 snd_serial_u16550.irq=3 snd_serial_u16550.adaptor=4"
)
#: Prefix for QEMU: it gets SIGKILL if the process that started it dies (a killed test run).
_FOLLOW_ME = ["setpriv", "--pdeathsig", "SIGKILL", "--"]


class MachineError(Exception):
    """The card could not be booted or reached."""


def arch_of(image: Path) -> str:
    """``arm64`` or ``amd64``, from the card's name (``pedalboard-ARCH.img``)."""
    for arch in MACHINES:
        if arch in image.name:
            return arch
    raise MachineError(
        f"{image.name}: not a card of image/card/build (pedalboard-arm64.img, pedalboard-amd64.img)"
    )


def why_not_here(arch: str) -> str | None:
    """Why a card of ``arch`` cannot boot on this machine, or None when it can."""
    spec = MACHINES[arch]
    for tool in (spec["qemu"], "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages {spec['packages']})"
    if not Path(spec["firmware"]).is_file():
        return f"no UEFI firmware at {spec['firmware']} (Debian packages {spec['packages']})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Machine:
    """One card (a copy-on-write layer over ``image`` in ``folder``) in one virtual machine.

    Args:
        image: the built card (image/card/build).
        folder: where the card's layer and the console log go (kept until :meth:`discard`).
        settings: lines to put in the card's appliance.txt before its first power-up
            (:data:`EMULATED_AUDIO`: no sound card in the machine).
        cpus, memory_mb: the machine's size.
        serial_midi: amd64 only: a MIDI interface on the machine's second serial port
            (:data:`SERIAL_MIDI_KERNEL`), fed with the bytes written to the Unix socket QEMU
            serves at this path.
    """

    def __init__(
        self,
        image: Path,
        folder: Path,
        settings: dict[str, str] | None = None,
        cpus: int = 2,
        memory_mb: int = 2048,
        serial_midi: Path | None = None,
    ) -> None:
        self.image = image.resolve()
        self.arch = arch_of(image)
        self.folder = folder
        self.card = folder / "card.qcow2"
        self.console = folder / "console.log"
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.serial_midi = serial_midi
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.powered_at = 0.0
        self.boots = 0
        folder.mkdir(parents=True, exist_ok=True)
        layer = ["-f", "qcow2", "-F", "raw", "-b", str(self.image)]
        _run("qemu-img", "create", "-q", *layer, str(self.card), CARD_SIZE)
        if settings:
            self.write_settings(settings)
        if serial_midi is not None:
            if self.arch != "amd64":
                raise MachineError("a serial MIDI interface needs an amd64 machine (a PC's COM2)")
            self.add_kernel_arguments(SERIAL_MIDI_KERNEL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the card, while the power is off --------------------------------------------

    def _boot_partition(self) -> tuple[int, int]:
        """The boot partition's offset and size on the card, bytes."""
        listing = json.loads(_run("sfdisk", "--json", str(self.image)))
        first = listing["partitiontable"]["partitions"][0]
        return int(first["start"]) * 512, int(first["size"]) * 512

    def _with_boot_partition(self, edit: bool, work: Callable[[str], str]) -> str:
        """Run ``work`` on a copy of the boot partition (mtools' ``-i FILE``); write it back if
        ``edit`` (the machine must be off for that)."""
        if edit and self.process is not None:
            raise MachineError("the machine is on: power it off before editing the card")
        offset, size = self._boot_partition()
        shared = ["-U"] if self.process is not None else []  # read beside the running machine
        copy = self.folder / "boot.vfat"
        mib = 1 << 20
        _run("qemu-img", "dd", *shared, "-f", "qcow2", "-O", "raw", f"bs={mib}", f"skip={offset // mib}",
             f"count={size // mib}", f"if={self.card}", f"of={copy}")  # fmt: skip
        try:
            answer = work(str(copy))
            if edit:
                _run("qemu-io", "-f", "qcow2", "-c", f"write -s {copy} {offset} {size}", str(self.card))
            return answer
        finally:
            copy.unlink(missing_ok=True)

    def write_settings(self, settings: dict[str, str]) -> None:
        """Add ``key=value`` lines to the card's appliance.txt, as a player does on a computer."""

        def edit(fat: str) -> str:
            text = _run("mtype", "-i", fat, "::appliance.txt")
            local = self.folder / "appliance.txt"
            local.write_text(text + "".join(f"{key}={value}\n" for key, value in settings.items()))
            return _run("mcopy", "-o", "-i", fat, str(local), "::appliance.txt")

        self._with_boot_partition(True, edit)

    def add_kernel_arguments(self, arguments: str) -> None:
        """Start the kernel of every later boot with ``arguments`` too (GRUB's ``extra``:
        image/card/grub.cfg)."""

        def edit(fat: str) -> str:
            local = self.folder / "grubenv"
            _run("mcopy", "-o", "-i", fat, f"::{GRUBENV}", str(local))
            listed = _run("grub-editenv", str(local), "list").splitlines()
            extra = [line.split("=", 1)[1] for line in listed if line.startswith("extra=")]
            _run("grub-editenv", str(local), "set", "extra=" + " ".join([*extra, arguments]).strip())
            return _run("mcopy", "-o", "-i", fat, str(local), f"::{GRUBENV}")

        self._with_boot_partition(True, edit)

    def read_file(self, path: str) -> str:
        """A file on the card's boot partition (``appliance-token.txt``, ``EFI/BOOT/grubenv``): what
        the machine has written to the card so far."""
        return self._with_boot_partition(False, lambda fat: _run("mtype", "-i", fat, f"::{path}"))

    # -- power --------------------------------------------------------------------------

    def command(self) -> list[str]:
        spec = MACHINES[self.arch]
        return [
            *_FOLLOW_ME,
            spec["qemu"],
            *spec["args"],
            "-smp", str(self.cpus),
            "-m", str(self.memory_mb),
            "-bios", spec["firmware"],
            "-drive", f"if=none,id=card,file={self.card},format=qcow2,cache=writeback",
            "-device", "virtio-blk-pci,drive=card",
            "-netdev", f"user,id=net,hostfwd=tcp:127.0.0.1:{self.port}-:8000",
            "-device", "virtio-net-pci,netdev=net",
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{self.console}.{self.boots}",
            *self._serial_midi(),
        ]  # fmt: skip

    def _serial_midi(self) -> list[str]:
        if self.serial_midi is None:
            return []
        return [
            "-chardev", f"socket,id=midi,path={self.serial_midi},server=on,wait=off",
            "-device", "isa-serial,chardev=midi,iobase=0x2f8,irq=3",
        ]  # fmt: skip

    def power_on(self) -> None:
        if self.process is not None:
            raise MachineError("the machine is already on")
        self.boots += 1
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.powered_at = time.monotonic()

    def power_cut(self) -> None:
        """Pull the plug: QEMU is killed, nothing the guest had not written reaches the card."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def is_on(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def console_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.folder.glob("console.log.*")) if p.is_file()
        )

    # -- the box ------------------------------------------------------------------------

    def healthz(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as answer:
                report = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from power-up until the box plays (/healthz answers 200).

        Raises:
            MachineError: QEMU ended, or the box did not play within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_on():
                raise MachineError(f"QEMU ended: {self._last_words()}")
            if self.healthz() is not None:
                return time.monotonic() - self.powered_at
            time.sleep(0.5)
        raise MachineError(
            f"the box did not play within {timeout:.0f} s; console: {self.console_text()[-2000:]}"
        )

    def _last_words(self) -> str:
        if self.process is not None and self.process.stderr is not None and self.process.poll() is not None:
            return self.process.stderr.read().decode(errors="replace")[-1000:]
        return self.console_text()[-1000:]

    def discard(self) -> None:
        self.power_cut()
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise MachineError(f"{command[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Boot a card of image/card/build in QEMU")
    parser.add_argument("image", type=Path)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=2048, help="MiB")
    args = parser.parse_args(argv)
    arch = arch_of(args.image)
    why = why_not_here(arch)
    if why is not None:
        print(f"qemu: {why}", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix=f"card-{os.getpid()}-"))
    machine = Machine(args.image, folder, EMULATED_AUDIO, args.cpus, args.memory)
    try:
        machine.power_on()
        seconds = machine.wait_ready()
        print(f"the box plays after {seconds:.1f} s (emulated {arch}, first boot included): {machine.url}/")
        print(f"console log: {folder}/console.log.*; Ctrl-C powers it off")
        while machine.is_on():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except MachineError as exc:
        print(f"qemu: {exc}", file=sys.stderr)
        return 1
    finally:
        machine.discard()
    return 0


if __name__ == "__main__":
    sys.exit(main())
