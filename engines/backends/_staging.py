"""Pinned host buffers for copies to the GPU, reused per batch shape (torch and TensorRT backends)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


class HostStaging:
    """One pinned buffer per batch shape (the few most recent): a float32 batch goes to the GPU with one
    memcpy into page-locked memory and one asynchronous copy, without allocating pinned memory per call.

    Safe to reuse because every backend copies its outputs back to the host (which waits for the
    stream) before it returns, so the previous copy from a buffer is done when it is written again.
    """

    def __init__(self, *, keep: int = 4) -> None:
        self.keep = keep
        self.buffers: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def to_device(self, batch: np.ndarray, device: str) -> Any:
        import torch

        key = tuple(batch.shape)
        buffer = self.buffers.pop(key, None)
        if buffer is None:
            buffer = torch.empty(key, dtype=torch.float32, pin_memory=True)
        self.buffers[key] = buffer
        while len(self.buffers) > self.keep:
            self.buffers.popitem(last=False)
        buffer.numpy()[...] = batch  # (N, 3, S, S)
        return buffer.to(device, non_blocking=True)
