"""The box's configuration: YAML in, validated frozen objects out.

Read once at start. A bad file raises :class:`ConfigError` naming the failing
key (``engine.jack.dummy.rate``); ``python -m appliance`` turns that into a
one-line message and a non-zero exit before anything touches audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .core.errors import ConfigError

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class RateLimit:
    """Token bucket per connection: ``rate`` messages/s, bursts of ``burst``."""

    rate: float = 2000.0
    burst: int = 4000


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    auth: str = "none"
    token_file: Path | None = None
    allowed_origins: tuple[str, ...] = ()
    rate_limit: RateLimit = RateLimit()
    max_message_bytes: int = 65536
    max_clients: int = 64
    max_per_address: int = 8
    handshake_timeout: float = 10.0
    send_buffer: int = 1 << 20
    #: How long an upload may send nothing before it is given up (STALLED).
    upload_timeout: float = 30.0


@dataclass(frozen=True)
class DummyServer:
    """A JACK server the box starts itself on the dummy backend (the virtual box).

    ``period`` is one number for every engine, or ``periods`` says it per
    engine (``{carla: 128, jalv: 256}``): a chain of one JACK client per
    plugin needs a longer period than a Carla rack to run without dropouts.
    """

    rate: int = 48000
    period: int = 128
    realtime: bool = False
    periods: tuple[tuple[str, int], ...] = ()

    def period_for(self, engine: str) -> int:
        """The period the engine ``engine`` (``carla``, ``jalv``) runs at."""
        return dict(self.periods).get(engine, self.period)


@dataclass(frozen=True)
class JackConfig:
    server: str | None = None
    dummy: DummyServer | None = None


@dataclass(frozen=True)
class CarlaConfig:
    """Carla runs on the JACK server of ``engine.jack``, one JACK client per track (rack mode)."""

    prefix: Path | None = None
    bridges: bool = False


#: Keys of the Carla ALSA driver, gone since Carla runs on JACK: named in the error.
_CARLA_ALSA_KEYS = ("driver", "device", "sample_rate", "buffer_size", "periods")


@dataclass(frozen=True)
class EngineConfig:
    kind: str = "auto"
    jack: JackConfig = JackConfig()
    carla: CarlaConfig = CarlaConfig()


@dataclass(frozen=True)
class TrackConfig:
    id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class DemoPlugin:
    track: str
    plugin: str
    values: Mapping[str, float] = field(default_factory=dict)
    bypass: bool = False


@dataclass(frozen=True)
class MixerConfig:
    """The HAT's mixer: an ALSA control device, and the box's name for each control shown."""

    device: str
    controls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FilesConfig:
    """Limits on the player's uploads (their IRs, amp models, archives of them, backups)."""

    #: The largest file (or archive) one upload may send.
    max_file_mb: int = 256
    #: The most the player's folder may hold in all.
    quota_mb: int = 2048

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb << 20

    @property
    def quota_bytes(self) -> int:
        return self.quota_mb << 20


@dataclass(frozen=True)
class Config:
    """Everything the composition root needs, checked."""

    path: Path
    server: ServerConfig
    engine: EngineConfig
    tracks: tuple[TrackConfig, ...]
    data_dir: Path
    catalog: Path
    demo: tuple[DemoPlugin, ...] = ()
    save_delay: float = 0.5
    #: Seconds an old pedalboard's delay and reverb tails ring on after a switch.
    spillover: float = 3.0
    #: DSP load (%) that two boards ringing together must stay under; above it a
    #: switch cuts the old board's tails after the crossfade.
    switch_ceiling: float = 80.0
    #: The GPIO map (encoders, footswitches), or None for a box without any.
    gpio: Path | None = None
    #: The HAT's mixer, or None.
    mixer: MixerConfig | None = None
    #: Listen to MIDI controllers on the box's JACK server (appliance.frontends.midi).
    midi: bool = True
    #: Put the box's tempo on JACK's transport (appliance.engine.jack.tempo), so that plugins
    #: under jalv that follow their host's tempo follow it (Carla's racks have it on their own
    #: transport either way). Off by default: it is one more JACK client woken every cycle, and
    #: a first short measurement (hil/README.md) is not enough to turn it on.
    transport_master: bool = False
    files: FilesConfig = FilesConfig()


class _Reader:
    """Reads one mapping, remembering the key path for error messages."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", "must be a mapping")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(self.key(name), f"must be {names}, got {value!r}")
        return value

    def child(self, name: str) -> _Reader:
        self.seen.add(name)
        return _Reader(self.data.get(name), self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.key(str(unknown[0])), "unknown key")


def _choice(reader: _Reader, name: str, choices: tuple[str, ...], default: str) -> str:
    value: str = reader.get(name, str, default)
    if value not in choices:
        raise ConfigError(reader.key(name), f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _positive(reader: _Reader, name: str, kind: type, default: Any) -> Any:
    value = reader.get(name, kind, default)
    if value <= 0:
        raise ConfigError(reader.key(name), f"must be positive, got {value!r}")
    return value


def _ports(reader: _Reader, name: str) -> tuple[str, ...]:
    value = reader.get(name, list, None)
    if not value or not all(isinstance(p, str) and ":" in p for p in value):
        raise ConfigError(reader.key(name), "must be a non-empty list of JACK port names (client:port)")
    return tuple(value)


def parse(data: object, path: Path) -> Config:
    """Validate parsed YAML into a :class:`Config`.

    Raises:
        ConfigError: names the first failing key.
    """
    top = _Reader(data, "")
    base = path.parent

    s = top.child("server")
    limit = s.child("rate_limit")
    rate_limit = RateLimit(_positive(limit, "rate", float, 2000.0), _positive(limit, "burst", int, 4000))
    limit.done()
    auth = _choice(s, "auth", ("none", "token"), "none")
    token_file = s.get("token_file", str, None)
    if auth == "token" and not token_file:
        raise ConfigError(s.key("token_file"), "is required when auth is token")
    origins = s.get("allowed_origins", list, [])
    if not all(isinstance(o, str) for o in origins):
        raise ConfigError(s.key("allowed_origins"), "must be a list of origins like http://host:port")
    port = s.get("port", int, DEFAULT_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(s.key("port"), f"must be 0..65535, got {port}")
    server = ServerConfig(
        host=s.get("host", str, "0.0.0.0"),
        port=port,
        auth=auth,
        token_file=_resolve(base, token_file),
        allowed_origins=tuple(origins),
        rate_limit=rate_limit,
        max_message_bytes=_positive(s, "max_message_bytes", int, 65536),
        max_clients=_positive(s, "max_clients", int, 64),
        max_per_address=_positive(s, "max_per_address", int, 8),
        handshake_timeout=_positive(s, "handshake_timeout", float, 10.0),
        send_buffer=_positive(s, "send_buffer", int, 1 << 20),
        upload_timeout=_positive(s, "upload_timeout", float, 30.0),
    )
    s.done()

    e = top.child("engine")
    kind = _choice(e, "kind", ("auto", "jalv", "carla"), "auto")
    j = e.child("jack")
    dummy = None
    if j.data.get("dummy") is not None:
        d = j.child("dummy")
        rate = _positive(d, "rate", int, 48000)
        realtime = d.get("realtime", bool, False)
        if isinstance(d.data.get("period"), dict):
            p = d.child("period")
            named = [name for name in ("carla", "jalv") if name in p.data]
            periods = tuple((name, _positive(p, name, int, 128)) for name in named)
            p.done()
            dummy = DummyServer(rate, 128, realtime, periods)
        else:
            dummy = DummyServer(rate, _positive(d, "period", int, 128), realtime)
        d.done()
    else:
        j.seen.add("dummy")
    jack = JackConfig(j.get("server", str, None), dummy)
    j.done()
    c = e.child("carla")
    for gone in _CARLA_ALSA_KEYS:
        if gone in c.data:
            raise ConfigError(
                c.key(gone),
                "Carla now always runs on JACK (one JACK client per track); remove this key and "
                "set the sound card's rate and period on the JACK server",
            )
    carla = CarlaConfig(_resolve(base, c.get("prefix", str, None)), c.get("bridges", bool, False))
    c.done()
    e.done()
    engine = EngineConfig(kind, jack, carla)

    raw_tracks = top.get("tracks", list, None)
    if not raw_tracks:
        raise ConfigError("tracks", "must list at least one track")
    tracks: list[TrackConfig] = []
    for index, raw in enumerate(raw_tracks):
        t = _Reader(raw, f"tracks[{index}]")
        track_id = t.get("id", str, None)
        if not track_id:
            raise ConfigError(t.key("id"), "is required")
        if any(track_id == other.id for other in tracks):
            raise ConfigError(t.key("id"), f"duplicate track id {track_id!r}")
        tracks.append(TrackConfig(track_id, _ports(t, "inputs"), _ports(t, "outputs")))
        t.done()

    demo: list[DemoPlugin] = []
    for index, raw in enumerate(top.get("demo", list, [])):
        d = _Reader(raw, f"demo[{index}]")
        track = d.get("track", str, tracks[0].id)
        if track not in {t.id for t in tracks}:
            raise ConfigError(d.key("track"), f"no track {track!r}")
        plugin = d.get("plugin", str, None)
        if not plugin:
            raise ConfigError(d.key("plugin"), "is required")
        values = d.get("values", dict, {})
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(d.key(f"values.{name}"), "must be a number")
        demo.append(
            DemoPlugin(track, plugin, {k: float(v) for k, v in values.items()}, d.get("bypass", bool, False))
        )
        d.done()

    data_dir = _resolve(base, top.get("data_dir", str, "/var/lib/appliance"))
    catalog = _resolve(base, top.get("catalog", str, "plugins.yaml"))
    save_delay = top.get("save_delay", float, 0.5)
    if save_delay < 0:
        raise ConfigError("save_delay", "must not be negative")
    spillover = top.get("spillover", float, 3.0)
    if not 0 <= spillover <= 30:
        raise ConfigError("spillover", "must be between 0 and 30 seconds")
    ceiling = top.get("switch_ceiling", float, 80.0)
    if not 0 < ceiling <= 100:
        raise ConfigError("switch_ceiling", "must be a DSP load between 0 and 100 (%)")
    gpio = _resolve(base, top.get("gpio", str, None))
    midi = top.get("midi", bool, True)
    transport_master = top.get("transport_master", bool, False)
    mixer = None
    if top.get("mixer", dict, None) is not None:
        m = _Reader(top.data["mixer"], "mixer")
        device = m.get("device", str, None)
        if not device:
            raise ConfigError(m.key("device"), "name the ALSA control device, e.g. hw:CARD=sndrpihifiberry")
        controls = m.get("controls", dict, {})
        for name, control in controls.items():
            if not isinstance(name, str) or not isinstance(control, str) or not control:
                raise ConfigError(m.key(f"controls.{name}"), "must name an ALSA mixer control, e.g. Digital")
        m.done()
        mixer = MixerConfig(device, dict(controls))
    files = FilesConfig()
    if top.get("files", dict, None) is not None:
        f = _Reader(top.data["files"], "files")
        files = FilesConfig(_positive(f, "max_file_mb", int, 256), _positive(f, "quota_mb", int, 2048))
        f.done()
    top.done()
    assert data_dir is not None and catalog is not None
    return Config(
        path,
        server,
        engine,
        tuple(tracks),
        data_dir,
        catalog,
        tuple(demo),
        save_delay,
        spillover,
        switch_ceiling=ceiling,
        gpio=gpio,
        mixer=mixer,
        midi=midi,
        transport_master=transport_master,
        files=files,
    )


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load(path: Path) -> Config:
    """Read and validate a YAML file.

    Raises:
        ConfigError: unreadable, not YAML, or invalid; names the failing key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
    return parse(data, path)
