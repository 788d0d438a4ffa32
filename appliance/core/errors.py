"""The box's error tree and the one table that maps failures to protocol codes.

Every error the box raises on purpose descends from :class:`ApplianceError`.
Adapters translate library errors at their edge (``raise ... from exc``); the
protocol layer turns any of them into an ``ERROR`` message through
:data:`ERROR_CODES` without leaking internals to the phone.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the box raises on purpose."""

    code = "INTERNAL"
    retryable = False
    #: What a client is told instead of the message, when that may carry
    #: internals (process output, library errors); None: the message itself.
    public: str | None = None

    def public_message(self) -> str:
        return self.public or str(self)


class ConfigError(ApplianceError, ValueError):
    """The configuration file is missing, unreadable or invalid.

    Args:
        key: dotted path of the failing key (``tracks[0].inputs``).
        problem: what is wrong with it.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class ProtocolError(ApplianceError):
    """A client message is malformed or asks for something that is not there."""

    code = "INVALID_MESSAGE"

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        # KeyError subclasses would otherwise quote the sentence.
        return self.message


class InvalidMessage(ProtocolError):
    code = "INVALID_MESSAGE"


class UnknownType(ProtocolError):
    code = "UNKNOWN_TYPE"


class UnknownTrack(ProtocolError, KeyError):
    code = "UNKNOWN_TRACK"


class UnknownPlugin(ProtocolError, KeyError):
    code = "UNKNOWN_PLUGIN"


class UnknownParameter(ProtocolError, KeyError):
    code = "UNKNOWN_PARAMETER"


class InvalidValue(ProtocolError, ValueError):
    code = "INVALID_VALUE"


class PluginNotAllowed(ProtocolError):
    code = "PLUGIN_NOT_ALLOWED"


class ChainFull(ProtocolError):
    code = "CHAIN_FULL"


class RateLimited(ProtocolError):
    code = "RATE_LIMITED"
    retryable = True


class Unauthorized(ProtocolError):
    code = "UNAUTHORIZED"


class EngineError(ApplianceError):
    """The plugin host failed or is not running."""

    code = "ENGINE_UNAVAILABLE"
    retryable = True
    public = "the audio engine is not available right now; the box logged why"
    #: The plugin it is about, where the engine knows (a board switch names the one that failed).
    plugin_id: str | None = None


class Unsupported(EngineError):
    """The engine in use cannot do this (jalv cannot set a plugin's file); nothing changed."""

    code = "UNSUPPORTED"
    retryable = False
    public: str | None = None  # type: ignore[assignment]  # its message names no internals


class PluginLoadFailed(EngineError):
    code = "PLUGIN_LOAD_FAILED"
    retryable = False
    public = "the plugin could not be loaded; the box logged why"


class UnknownPreset(ProtocolError, KeyError):
    code = "UNKNOWN_PRESET"


class UnknownPedalboard(ProtocolError, KeyError):
    code = "UNKNOWN_PEDALBOARD"


class UnknownSnapshot(ProtocolError, KeyError):
    code = "UNKNOWN_SNAPSHOT"


class UnknownMapping(ProtocolError, KeyError):
    code = "UNKNOWN_MAPPING"


class NameTaken(ProtocolError):
    code = "NAME_TAKEN"


class TooLarge(ProtocolError):
    """An upload or an archive over the box's size or count limits."""

    code = "TOO_LARGE"


class NoSpace(ProtocolError):
    """The player's folder is at its quota, or the card is too full to take a file."""

    code = "NO_SPACE"


class Stalled(ProtocolError):
    """An upload that stopped sending before its end."""

    code = "STALLED"
    retryable = True


class Busy(ProtocolError):
    """Something done one at a time is under way: an update being sent, or one waiting to be
    installed; nothing changed."""

    code = "BUSY"
    retryable = True


class HardwareError(ApplianceError):
    """GPIO, mixer or sound card trouble, or a part of the box that is not installed (the tuner)."""

    code = "HARDWARE_UNAVAILABLE"


class StoreError(ApplianceError, OSError):
    """A file of the box (the board, a pedalboard) could not be read or written."""

    code = "STORE_FAILED"
    retryable = True
    public = "the box could not save to its card; the box logged why"


#: Every code a client may see in ``ERROR.data.code`` (docs/protocol.md#errors).
ERROR_CODES: frozenset[str] = frozenset(
    {
        "INVALID_MESSAGE",
        "UNKNOWN_TYPE",
        "UNKNOWN_TRACK",
        "UNKNOWN_PLUGIN",
        "UNKNOWN_PARAMETER",
        "INVALID_VALUE",
        "PLUGIN_NOT_ALLOWED",
        "CHAIN_FULL",
        "PLUGIN_LOAD_FAILED",
        "ENGINE_UNAVAILABLE",
        "RATE_LIMITED",
        "UNKNOWN_PRESET",
        "UNKNOWN_PEDALBOARD",
        "UNKNOWN_SNAPSHOT",
        "UNKNOWN_MAPPING",
        "NAME_TAKEN",
        "STORE_FAILED",
        "TOO_LARGE",
        "STALLED",
        "NO_SPACE",
        "HARDWARE_UNAVAILABLE",
        "UNSUPPORTED",
        "BUSY",
        "UNAUTHORIZED",
        "INTERNAL",
    }
)
