"""Architecture registry: a name -> a function that fills a config and builds the model.

Every model takes (B, 3, S, S) float32 in [0, 1] and returns fake logits (B, 1), so export
and evaluation never special-case an architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.models.paper_cnn import PaperCNN, PaperCNNConfig

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> Any:
    """Build a registered architecture; ``overrides`` replace fields of its config."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid: {list_models()}")
    return _REGISTRY[name](**overrides)


@register
def paper_cnn(**overrides: Any) -> PaperCNN:
    """The CNN the paper's search picked: conv 32 -> conv 64 -> max-pool -> dropout -> dense."""
    return PaperCNN(PaperCNNConfig(**overrides))
