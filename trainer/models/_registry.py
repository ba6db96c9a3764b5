"""Registry plumbing: a model name -> a tiny function that fills that family's config.

A config is a frozen dataclass with a ``build()`` method; ``create_model`` is always
``model_config(name, **overrides).build()``, so a checkpoint that records the name and the
overrides rebuilds exactly the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, Protocol

from trainer.errors import ModelConfigError


class ModelConfig(Protocol):
    input_size: int

    def build(self) -> Any: ...


_REGISTRY: dict[str, Callable[..., ModelConfig]] = {}


def register(fn: Callable[..., ModelConfig]) -> Callable[..., ModelConfig]:
    """Register ``fn`` (its name is the model name); it returns the config, overrides applied."""
    if fn.__name__ in _REGISTRY:
        raise ModelConfigError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of the registered architecture ``name`` with ``overrides`` replacing its fields."""
    if name not in _REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; valid: {list_models()}")
    try:
        return _REGISTRY[name](**overrides)
    except TypeError as exc:  # an override that is not a field of the config
        valid = [f.name for f in fields(_REGISTRY[name]())]  # type: ignore[arg-type]
        raise ModelConfigError(f"model {name!r}: {exc}; valid fields: {valid}") from exc


def create_model(name: str, **overrides: Any) -> Any:
    """Build a registered architecture: input (B, 3, S, S) float32 in [0, 1] -> fake logits (B, 1)."""
    return model_config(name, **overrides).build()


def count_parameters(name: str, **overrides: Any) -> int:
    """Trainable parameters of the model, counted on the meta device (no memory, no init cost)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
