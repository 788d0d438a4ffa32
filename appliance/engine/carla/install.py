"""Finding a Carla installation, and importing its Python host module.

Carla is not in Debian's archive: it comes from the KXStudio repositories
(``/usr/lib/carla`` + ``/usr/share/carla``), a ``make install``
(``/usr/local/...``), or a configured prefix. A headless build installs no
Python host modules; the adapter needs ``carla_backend.py`` and its helper
package ``common/`` next to the libraries' share folder (README "Carla").

:data:`HIDE_CARLA_ENV` makes every installation look absent, so the box and
the suite can be run as on a machine without Carla. Any thread; cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import EngineError

#: Set to a non-empty value, this environment variable hides every Carla installation:
#: the box and the suite then behave as on a machine without Carla (README "Carla").
HIDE_CARLA_ENV = "APPLIANCE_NO_CARLA"

#: Shared library, Python host module and its helper package a usable Carla has.
STANDALONE_LIBRARY = "libcarla_standalone2.so"
HOST_MODULE = "carla_backend.py"
HELPER_PACKAGE = "common/__init__.py"
BRIDGE_BINARY = "carla-bridge-native"

#: Where Carla is looked for when no prefix is configured: (libraries, Python modules).
SEARCH_PATHS: tuple[tuple[Path, Path], ...] = (
    (Path("/usr/lib/carla"), Path("/usr/share/carla")),  # KXStudio / distribution packages
    (Path("/usr/local/lib/carla"), Path("/usr/local/share/carla")),  # make install
)


@dataclass(frozen=True)
class CarlaPaths:
    """Where one Carla installation keeps what the host process loads.

    Attributes:
        lib_dir: the libraries and binaries (``libcarla_standalone2.so``,
            ``carla-bridge-native``); Carla's ``ENGINE_OPTION_PATH_BINARIES``.
        share_dir: the Python host modules (``carla_backend.py``, ``common/``).
    """

    lib_dir: Path
    share_dir: Path

    @property
    def library(self) -> Path:
        return self.lib_dir / STANDALONE_LIBRARY

    @property
    def resources(self) -> Path:
        return self.share_dir / "resources"

    def missing(self) -> str | None:
        """A sentence naming the first missing file, or None when complete."""
        if not self.library.is_file():
            return f"no {STANDALONE_LIBRARY} in {self.lib_dir}"
        if not (self.share_dir / HOST_MODULE).is_file():
            return (
                f"no {HOST_MODULE} in {self.share_dir}: a headless build installs no Python host "
                "modules; copy source/frontend/carla_backend.py, carla_utils.py and common/ there"
            )
        if not (self.share_dir / HELPER_PACKAGE).is_file():
            return (
                f"no {HELPER_PACKAGE} in {self.share_dir}: carla_backend.py imports it; "
                "copy source/frontend/common/ there"
            )
        return None


def candidates(prefix: Path | None) -> tuple[CarlaPaths, ...]:
    """The installations to try: only the prefix when one is configured.

    A configured prefix that is wrong is reported rather than papered over
    by whatever else happens to be installed.
    """
    if prefix is not None:
        return (CarlaPaths(prefix / "lib" / "carla", prefix / "share" / "carla"),)
    return tuple(CarlaPaths(lib, share) for lib, share in SEARCH_PATHS)


def find_carla(prefix: Path | None, environ: Mapping[str, str] = os.environ) -> CarlaPaths:
    """The first complete Carla installation (file checks only, no import).

    Args:
        prefix: the configured install prefix (``engine.carla.prefix``) or None.
        environ: where :data:`HIDE_CARLA_ENV` is looked up.

    Raises:
        EngineError: none is complete, or Carla is hidden; the message says which file
            is missing, or that it is hidden.
    """
    if environ.get(HIDE_CARLA_ENV):
        raise EngineError(f"Carla is hidden by {HIDE_CARLA_ENV}={environ[HIDE_CARLA_ENV]}")
    tried = candidates(prefix)
    for paths in tried:
        if paths.missing() is None:
            return paths
    # Report the installation that got furthest: one with the library first.
    for paths in tried:
        if paths.library.is_file():
            raise EngineError(str(paths.missing()))
    dirs = " or ".join(str(p.lib_dir) for p in tried)
    raise EngineError(f"Carla is not installed: no {STANDALONE_LIBRARY} in {dirs}")


def unavailable(prefix: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why Carla cannot be used here, or None when it can.

    Args:
        prefix: the configured install prefix (``engine.carla.prefix``) or None.
        environ: where :data:`HIDE_CARLA_ENV` is looked up.
    """
    try:
        find_carla(prefix, environ)
    except EngineError as exc:
        return str(exc)
    return None


def load_backend(paths: CarlaPaths) -> Any:
    """Import ``carla_backend`` from ``paths.share_dir`` (in the host process).

    The directory is on ``sys.path`` only for the import (Carla's helper
    package is called ``common``).

    Raises:
        EngineError: the module does not import.
    """
    share = str(paths.share_dir)
    added = share not in sys.path
    if added:
        sys.path.insert(0, share)
    try:
        return importlib.import_module("carla_backend")
    except Exception as exc:  # a broken copy raises anything at import
        raise EngineError(f"cannot import carla_backend from {share}: {exc}") from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(share)
