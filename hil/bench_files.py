"""The player's files while a board plays: upload throughput and xruns, backup and restore times.

Run ``python -m hil.bench_files [--engine jalv|carla] [--seconds 20] [--files 10] [--mb 20]
[--pedalboards 100]``.

A virtual box (its own realtime JACK dummy server at 128 frames, config/virtual.yaml's
demo board: gate, overdrive, reverb, delay) runs as a user runs it. Then:

1. **Idle**: the box's own xrun count (``/healthz`` ``xruns``) over ``--seconds``.
2. **Uploads**: for ``--seconds``, files of ``--mb`` MB sent one after another over
   ``POST /files`` (as the phone's "Add files" does; each deleted again over the protocol,
   so the quota is never reached), each timed from the first byte to the box's answer
   (the file whole on the card, fsynced); the xruns counted meanwhile. The floor,
   measured in the same run: the same bytes written and fsynced into the same folder by
   this process (the card's own speed; the box cannot beat it). Then ``--files`` more are
   kept for the backup.
3. **Backup**: ``--pedalboards`` pedalboards saved (the demo board under as many names),
   then ``GET /backup`` timed to its last byte (the board saved, the zip made and sent).
4. **Restore**: that backup sent back over ``POST /restore``: the time to the box's
   answer (received, checked whole, unpacked, committed), and to the box running again
   with it (it starts again by itself and swaps the backup in at its start). The floor:
   reading the archive and writing its bytes, fsynced, into a folder beside the data.

A measurement, not a test: it prints the figures and exits 0 whatever they are. Loopback
only; the box is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.boxproc import BoxProcess, virtual_config

#: How long the box may take to come back after a restore.
BACK_TIMEOUT = 120.0
CHUNK = 1 << 20


def _http(base: str, path: str, body: bytes | None = None, timeout: float = 300.0) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _xruns(base: str) -> int:
    status, body = _http(base, "/healthz", timeout=10)
    return int(json.loads(body)["xruns"]) if status == 200 else -1


def _floor_write(folder: Path, data: bytes) -> float:
    """Seconds to write and fsync ``data`` into ``folder`` (then removed)."""
    path = folder / ".bench-floor"
    started = time.perf_counter()
    with open(path, "wb") as out:
        for offset in range(0, len(data), CHUNK):
            out.write(data[offset : offset + CHUNK])
        out.flush()
        os.fsync(out.fileno())
    took = time.perf_counter() - started
    path.unlink()
    return took


async def _upload(base: str, name: str, payload: bytes) -> float:
    """Seconds from the first byte of ``payload`` sent as ``name`` to the box's answer."""
    started = time.perf_counter()
    status, body = await asyncio.to_thread(_http, base, f"/files?name={name}", payload)
    if status != 201:
        raise RuntimeError(f"upload refused: {status} {body[:200]!r}")
    return time.perf_counter() - started


async def _ask(ws: Any, kind: str, data: dict[str, Any]) -> None:
    mark = f"{kind}_{time.monotonic_ns()}"
    await ws.send(json.dumps({"id": mark, "type": kind, "data": data}))
    while (message := json.loads(await ws.recv())).get("reply_to") != mark:
        pass
    if message["type"] == "ERROR":
        raise RuntimeError(f"the box refused {kind}: {message}")


async def _save_pedalboards(url: str, count: int) -> None:
    async with connect(url, open_timeout=10, max_size=None) as ws:
        for n in range(count):
            await _ask(ws, "PEDALBOARD_SAVE", {"name": f"Board {n:03d}"})


async def _running(base: str, since: float) -> float:
    """Seconds from ``since`` until the box answers /healthz running again."""
    deadline = time.monotonic() + BACK_TIMEOUT
    while time.monotonic() < deadline:
        try:
            status, body = await asyncio.to_thread(_http, base, "/healthz", None, 2.0)
            if status == 200 and json.loads(body).get("running"):
                return time.perf_counter() - since
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the box did not come back after the restore")


def _mbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:.0f} MB/s"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_files", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("jalv", "carla"), default="jalv")
    parser.add_argument("--seconds", type=float, default=20.0, help="each of the idle and upload windows")
    parser.add_argument("--files", type=int, default=10, help="files kept for the backup")
    parser.add_argument("--mb", type=int, default=20, help="size of each file, MB")
    parser.add_argument("--pedalboards", type=int, default=100)
    args = parser.parse_args(argv)
    payload = os.urandom(args.mb * 1_000_000)  # incompressible, as a WAV nearly is
    with tempfile.TemporaryDirectory(prefix="bench-files-") as folder:
        config = virtual_config(Path(folder), engine=args.engine)
        data = Path(folder) / "data"
        box = BoxProcess(config)
        await asyncio.to_thread(box.start)
        try:
            base = box.base
            report: dict[str, Any] = {}
            before = await asyncio.to_thread(_xruns, base)
            await asyncio.sleep(args.seconds)
            report["idle_xruns"] = await asyncio.to_thread(_xruns, base) - before
            before = await asyncio.to_thread(_xruns, base)
            took: list[float] = []
            started = time.perf_counter()
            async with connect(box.ws_url, open_timeout=10, max_size=None) as ws:
                while time.perf_counter() - started < args.seconds:
                    took.append(await _upload(base, f"take{len(took):03d}.wav", payload))
                    await _ask(ws, "FILE_DELETE", {"file": f"ir/take{len(took) - 1:03d}.wav"})
            upload_window = time.perf_counter() - started
            report["upload_xruns"] = await asyncio.to_thread(_xruns, base) - before
            floors = [await asyncio.to_thread(_floor_write, data / "files" / "ir", payload) for _ in range(3)]
            for n in range(args.files):
                await _upload(base, f"kept{n:02d}.wav", payload)

            await _save_pedalboards(box.ws_url, args.pedalboards)
            t0 = time.perf_counter()
            status, archive = await asyncio.to_thread(_http, base, "/backup")
            backup_s = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"backup refused: {status} {archive[:200]!r}")
            async with connect(box.ws_url, open_timeout=10, max_size=None) as watching:
                t0 = time.perf_counter()
                status, body = await asyncio.to_thread(_http, base, "/restore", archive)
                replied_s = time.perf_counter() - t0
                if status != 200:
                    raise RuntimeError(f"restore refused: {status} {body[:200]!r}")
                with contextlib.suppress(ConnectionClosed):  # the box stops to start again
                    async with asyncio.timeout(BACK_TIMEOUT):
                        while True:
                            await watching.recv()
            back_s = await _running(base, t0)
            restore_floor = await asyncio.to_thread(_floor_write, data, archive)
        finally:
            await asyncio.to_thread(box.stop)

    size = len(payload)
    took.sort()
    print(
        f"virtual box ({args.engine}, realtime dummy JACK 48 kHz/128, demo board playing); "
        f"{len(took)} uploads of {args.mb} MB in {upload_window:.0f} s; {args.pedalboards} pedalboards"
    )
    print(
        f"upload, one file: median {took[len(took) // 2]:.2f} s ({_mbps(size, took[len(took) // 2])}), "
        f"slowest {took[-1]:.2f} s; floor (this process writing and fsyncing the same bytes): "
        f"{min(floors):.2f} s ({_mbps(size, min(floors))})"
    )
    print(
        f"xruns: {report['upload_xruns']} during the uploads ({upload_window:.1f} s), "
        f"{report['idle_xruns']} idle ({args.seconds:.0f} s) just before"
    )
    print(
        f"backup of {len(archive) / 1e6:.0f} MB ({args.files} files, {args.pedalboards} pedalboards): "
        f"{backup_s:.1f} s to its last byte"
    )
    print(
        f"restore: {replied_s:.1f} s to the answer (received, checked, unpacked, committed), "
        f"{back_s:.1f} s to the box running again with it; floor (writing the archive's bytes once): "
        f"{restore_floor:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
