"""The physical floor of a model on this machine: its FLOPs over the machine's measured fp32 peak.

``model_flops`` counts with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, the
convolutions and matrix products that dominate these networks; element-wise work is not counted).
``measured_peak`` times a large fp32 matrix product, the best case of the CPU's vector units with
every core busy. Their ratio is the time no runtime can beat on this machine: a lower bound, since
real networks reach a fraction of matmul speed (small channel counts, memory traffic, activations).
"""

from __future__ import annotations

import time
from typing import Any


def model_flops(module: Any, input_size: int, *, batch: int = 1) -> int:
    """FLOPs of one forward pass of ``module`` on a (batch, 3, S, S) float32 input."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, 3, input_size, input_size)  # (B, 3, S, S)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return int(counter.get_total_flops())


def measured_peak(*, n: int = 2048, repeats: int = 7, threads: int | None = None) -> dict:
    """fp32 GFLOP/s of an (n, n) @ (n, n) product in torch, best of ``repeats`` (threads: torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a = torch.rand(n, n)  # (n, n)
    b = torch.rand(n, n)  # (n, n)
    torch.mm(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {
        "what": f"torch.mm fp32 ({n}x{n}) @ ({n}x{n}), best of {repeats}",
        "threads": torch.get_num_threads(),
        "gflops": round(2 * n**3 / best / 1e9, 1),
    }
