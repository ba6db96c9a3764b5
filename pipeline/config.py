"""One TOML file configures streams, stages and sinks; CLI flags override any field.

Each component owns its frozen config dataclass (SourceSpec, RunnerConfig, VerdictConfig, ...);
this module only reads TOML into them, refusing unknown keys and wrong types with a message
that names the field and the valid ones. See deploy/streams.example.toml.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.annotate import AnnotateConfig
from pipeline.errors import ConfigError
from pipeline.policy import SourcePolicy
from pipeline.ranges import check_ranges, ranged
from pipeline.runner import RunnerConfig
from pipeline.schedule import ScheduleConfig
from pipeline.shard import Shard
from pipeline.sources import SourceSpec
from pipeline.tracker import TrackerConfig
from pipeline.verdict import VerdictConfig

# The detector served by default where it is there and opens (OpenVINO installed, built from this face_detector.onnx,
# its INT8 accuracy check accepted): `dfwatch-train engines --int8` builds it; about 40 % less detector time.
FAST_DETECTOR = "face_detector.int8.xml"


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path = Path("models")  # holds face_detector.onnx and deepfake_classifier.onnx
    detector: Path | None = None  # detector artifact; default dir/FAST_DETECTOR where it opens, else face_detector.onnx
    classifier: Path | None = None  # classifier artifact; default dir/deepfake_classifier.onnx
    threads: int | None = ranged(None, 1, 1024)  # ONNX Runtime intra-op threads; None = all cores
    det_conf: float | None = ranged(None, 0, 1, open_lo=True)  # detector confidence threshold; None = the manifest's
    max_faces: int = ranged(20, 1, 1000)  # most faces scored per frame, best first

    def __post_init__(self) -> None:
        check_ranges(self, "models.")

    @property
    def detector_path(self) -> Path:
        return self.detector or self.dir / "face_detector.onnx"

    @property
    def classifier_path(self) -> Path:
        return self.classifier or self.dir / "deepfake_classifier.onnx"


@dataclass(frozen=True)
class SinksConfig:
    # also publish to Redis: redis://, rediss:// or unix:// URL (password: DFWATCH_REDIS_PASSWORD); None = stdout only
    redis: str | None = None
    redis_maxlen: int = ranged(10_000, 1, 100_000_000)  # approximate cap of each per-stream Redis Stream
    redis_ttl: float = ranged(7 * 86400, 0, 10 * 365 * 86400, unit="seconds")  # key expiry after last write; 0 = never

    def __post_init__(self) -> None:
        check_ranges(self, "sinks.")


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"  # Prometheus bind address; keep it on loopback unless a proxy guards it
    port: int = ranged(9108, 0, 65535)  # Prometheus port; 0 disables the endpoint

    def __post_init__(self) -> None:
        check_ranges(self, "metrics.")


@dataclass(frozen=True)
class WatchConfig:
    streams: tuple[SourceSpec, ...] = ()
    models: ModelsConfig = field(default_factory=ModelsConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    sources: SourcePolicy = field(default_factory=SourcePolicy)  # what streams may point at (pipeline.policy)
    shard: Shard | None = None  # top-level `shard = "i/N"`: keep only the streams rendezvous hashing gives worker i


SECTIONS = {
    "models": ModelsConfig,
    "runner": RunnerConfig,
    "schedule": ScheduleConfig,
    "tracker": TrackerConfig,
    "verdict": VerdictConfig,
    "sinks": SinksConfig,
    "metrics": MetricsConfig,
    "annotate": AnnotateConfig,
    "sources": SourcePolicy,
}


def load_config(path: str | Path) -> WatchConfig:
    """Read a TOML file into a WatchConfig; raises ConfigError naming the bad field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return parse_config(raw, where=str(path))


def parse_config(raw: dict[str, Any], *, where: str = "config") -> WatchConfig:
    unknown = sorted(raw.keys() - SECTIONS.keys() - {"streams", "shard"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {unknown}; valid: {sorted([*SECTIONS, 'streams'])} and the key 'shard'"
        )
    shard = None
    if "shard" in raw:
        try:
            shard = Shard.parse(raw["shard"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    parts: dict[str, Any] = {name: build(cls, raw.get(name, {}), f"{where} [{name}]") for name, cls in SECTIONS.items()}
    streams = raw.get("streams", [])
    if not isinstance(streams, list):
        raise ConfigError(f"{where}: streams must be an array of tables ([[streams]]), got {type(streams).__name__}")
    specs = []
    for i, table in enumerate(streams):
        table = dict(table)
        if "id" in table:
            table["stream_id"] = table.pop("id")
        if "stream_id" not in table:
            raise ConfigError(f"{where} [[streams]] #{i + 1}: missing field 'id' (the stream's name)")
        specs.append(build(SourceSpec, table, f"{where} [[streams]] #{i + 1}"))
    ids = [s.stream_id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{where}: stream ids must be unique, {duplicates} appear more than once")
    return WatchConfig(streams=tuple(specs), shard=shard, **parts)


def build(cls: type, table: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, checking names and types of every key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown field {key!r}; valid: {names}")
        values[key] = _coerce(value, hints[key], f"{where} {key}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {missing}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (str, int, float, bool, Path, X | None, tuple[...])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if len(options) == 2 and type(None) in options:  # X | None: X's own message (None is not TOML)
            return _coerce(value, next(o for o in options if o is not type(None)), where)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        raise ConfigError(
            f"{where}: expected {' or '.join(_name(o) for o in options if o is not type(None))}, got {value!r}"
        )
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        (item, *_rest) = typing.get_args(hint) or (Any,)
        return tuple(_coerce(v, item, where) for v in value)
    if hint is Any:
        return value
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):  # TOML and JSON both allow inf, nan
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and issubclass(hint, str) and hint is not str and isinstance(value, str):
        try:
            return hint(value)  # str Enums
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in hint]}") from None
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
