"""The exceptions of pipeline/: each names the input and what went wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.sources import SourceSpec


class PipelineError(Exception):
    """Base class of every error raised by pipeline/."""


class SourceError(PipelineError):
    """A stream could not be opened or broke while reading."""

    def __init__(self, spec: SourceSpec, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"stream {spec.stream_id!r} ({spec.display}): {reason}")


class SinkError(PipelineError):
    """A sink (Redis, ...) is unreachable or refused a write."""


class ConfigError(PipelineError, ValueError):
    """A configuration value is invalid; the message names it and the valid choices."""


class StreamLimitError(ConfigError):
    """A worker already watches ``[sources] max_streams`` streams."""
