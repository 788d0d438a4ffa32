"""``python -m appliance run --config PATH``: start the box."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from . import config as config_module
from .app import default_config_path, run
from .errors import ApplianceError, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance", description="The pedalboard box.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start the box")
    run_parser.add_argument("--config", type=Path, default=default_config_path(), help="YAML config file")
    run_parser.add_argument("--host", help="address to listen on (overrides server.host)")
    run_parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    run_parser.add_argument("--data-dir", type=Path, help="where the board is saved (overrides data_dir)")
    run_parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING…")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # websockets logs every connection and HTTP request at INFO; the box logs its own.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = config_module.load(args.config)
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
        print(f"appliance: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(config))
    except ApplianceError as exc:
        logging.getLogger("appliance").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
