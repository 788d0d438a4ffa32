"""``python -m appliance run|token|pair|gpio-test --config PATH``: start the box, make its
pairing token, print the address (and QR code) a phone pairs with, or print what the
encoders and footswitches wired to it do.

Exit codes: 0 stopped cleanly; 1 the box failed (engine, files); 2 bad
configuration (config file, plugin catalog, token file), found before
anything touches audio where possible. Every failure is one line, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import socket
import sys
import urllib.parse
from pathlib import Path

from . import config as config_module
from .app import default_config_path, pin_factory, read_token, run
from .core.errors import ApplianceError, ConfigError
from .system import logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance", description="The pedalboard box.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start the box")
    run_parser.add_argument("--config", type=Path, default=default_config_path(), help="YAML config file")
    run_parser.add_argument("--host", help="address to listen on (overrides server.host)")
    run_parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    run_parser.add_argument("--data-dir", type=Path, help="where the board is saved (overrides data_dir)")
    run_parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING…")
    token_parser = commands.add_parser(
        "token", help="make the pairing token if there is none (as root, before the box starts)"
    )
    token_parser.add_argument("--config", type=Path, default=default_config_path(), help="YAML config file")
    token_parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING…")
    pair_parser = commands.add_parser(
        "pair", help="print the address a phone opens to pair, and its QR code"
    )
    pair_parser.add_argument("--config", type=Path, default=default_config_path(), help="YAML config file")
    pair_parser.add_argument("--host", help="the box's name on the network (default: <hostname>.local)")
    pair_parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING…")
    gpio_parser = commands.add_parser(
        "gpio-test", help="print every turn and press of the GPIO map's hardware"
    )
    gpio_parser.add_argument("--config", type=Path, default=default_config_path(), help="YAML config file")
    gpio_parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING…")
    args = parser.parse_args(argv)

    logs.configure(args.log_level)
    try:
        config = config_module.load(args.config)
    except ConfigError as exc:
        return _bad_config(args.config, exc)
    if args.command == "token":
        return _token(args.config, config)
    if args.command == "gpio-test":
        return _gpio_test(args.config, config)
    if args.command == "pair":
        return _pair(args.config, config, args.host)
    try:
        server = config.server
        if args.host is not None:
            server = dataclasses.replace(server, host=args.host)
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise ConfigError("--port", f"must be 0..65535, got {args.port}")
            server = dataclasses.replace(server, port=args.port)
        config = dataclasses.replace(config, server=server)
        if args.data_dir is not None:
            config = dataclasses.replace(config, data_dir=args.data_dir)
    except ConfigError as exc:
        return _bad_config(args.config, exc)
    try:
        asyncio.run(run(config))
    except ConfigError as exc:  # found at start: the catalog, the token file
        return _bad_config(args.config, exc)
    except ApplianceError as exc:
        logging.getLogger("appliance").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _bad_config(path: Path, exc: ConfigError) -> int:
    print(f"appliance: bad config {path}: {exc}", file=sys.stderr)
    return 2


def _token(path: Path, config: config_module.Config) -> int:
    """``appliance token``: make the pairing token unless there is one; print where it is."""
    if config.server.auth != "token" or config.server.token_file is None:
        print(f"appliance: {path} does not use token auth; no token needed")
        return 0
    try:
        read_token(config)
    except ConfigError as exc:
        return _bad_config(path, exc)
    print(f"appliance: pairing token in {config.server.token_file}")
    return 0


def _pair(path: Path, config: config_module.Config, host: str | None) -> int:
    """``appliance pair``: the pairing address, and a QR code of it a phone's camera opens."""
    import segno  # only here: the running box never needs it

    try:
        token = read_token(config)
    except ConfigError as exc:
        return _bad_config(path, exc)
    name = host or f"{socket.gethostname().lower()}.local"
    query = f"?token={urllib.parse.quote(token)}" if token else ""
    url = f"http://{name}:{config.server.port}/{query}"
    print(f"Open {url} on the phone (same network), or point its camera at this:\n")
    segno.make(url, error="m").terminal(compact=True)
    return 0


def _gpio_test(path: Path, config: config_module.Config) -> int:
    """``appliance gpio-test``: the GPIO map's devices on the real pins, every event printed."""
    from .frontends import gpio, gpiomap

    if config.gpio is None:
        print(f"appliance: {path} names no GPIO map (gpio:)")
        return 2
    try:
        gpio_map = gpiomap.load(config.gpio)
    except ConfigError as exc:
        return _bad_config(path, exc)
    factory = pin_factory()
    if factory is None:
        print("appliance: no GPIO on this machine")
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(gpio.watch(gpio_map, factory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
