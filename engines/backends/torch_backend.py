"""torch backend: a ``torch.export`` program (``.pt2``) run eagerly, or compiled with torch.compile.

The fp32 reference (``NAME.pt2``, written beside the ONNX by engines.export) runs on CPU or CUDA,
as the ``device`` option says. Variants built by ``dfwatch-train engines`` (``NAME.fp16.pt2``)
hold weights in their ``precision`` and carry ``runtime.compile`` (a torch.compile mode:
"default", "reduce-overhead" for CUDA graphs, "max-autotune"). A compiled module is fed batches
padded up to a power of two, so at most log2(batch_max) + 1 shapes are ever seen (and
captured as CUDA graphs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engines.backends._pt2_check import check_pt2_archive
from engines.backends._staging import HostStaging
from engines.devices import resolve_torch_device
from engines.errors import ManifestMismatchError, ModelLoadError, rebuild_hint
from engines.manifest import Manifest

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def load_program(artifact: Path, *, device: str) -> torch.nn.Module:
    """Load an ExportedProgram and return it as a callable module on ``device``; pickled payloads are refused."""
    check_pt2_archive(artifact)
    try:
        program = torch.export.load(str(artifact))
    except Exception as exc:  # torch raises many kinds for a bad archive
        raise ModelLoadError(
            f"torch cannot load {artifact} as a torch.export program ({type(exc).__name__}: {exc}); "
            f"{rebuild_hint(artifact, 'torch')}"
        ) from exc
    if device != "cpu":
        # Constants traced into the graph (anchor grids made with torch.arange) carry the export device.
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module()


def bucket(n: int, batch_max: int) -> int:
    """The padded batch size a compiled module sees: the next power of two, at most ``batch_max``."""
    return min(1 << max(n - 1, 0).bit_length(), batch_max)


class TorchBackend:
    def __init__(
        self, artifact: Path, manifest: Manifest, *, device: str | None = None, threads: int | None = None
    ) -> None:
        self.device = resolve_torch_device(device, manifest, artifact)
        if manifest.precision not in DTYPES:
            raise ManifestMismatchError(
                f"{artifact}: precision {manifest.precision!r} is not one a torch artifact can hold "
                f"({list(DTYPES)}); {rebuild_hint(artifact, manifest.format)}"
            )
        self.dtype = DTYPES[manifest.precision]
        self.compile_mode = manifest.runtime.get("compile")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ManifestMismatchError(
                f"{artifact}: runtime.compile {self.compile_mode!r} is not one of {list(COMPILE_MODES)} (or null)"
            )
        if threads and self.device == "cpu":
            logger.info("torch backend: torch.set_num_threads(%d) (process-wide)", threads)
            torch.set_num_threads(threads)
        self.batch_max = manifest.batch_max
        module = load_program(artifact, device=self.device)
        if self.compile_mode is not None:
            # dynamic=None: the first shape compiles static, the second makes the batch axis dynamic,
            # so the power-of-two buckets cost two or three compilations (CUDA graphs: one per bucket).
            module = torch.compile(module, mode=self.compile_mode, dynamic=None, fullgraph=True)
        self.module = module
        self.staging = HostStaging()
        suffix = f"-compiled-{self.compile_mode}" if self.compile_mode else "-eager"
        self.name = f"torch-{self.device}{suffix}-{manifest.precision}"
        logger.debug("%s: %s on %s", manifest.kind, artifact, self.name)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = len(batch)  # batch: (n, 3, S, S) float32
        if self.compile_mode is not None:
            padded = bucket(n, self.batch_max)
            if padded > n:
                batch = np.concatenate([batch, np.zeros((padded - n, *batch.shape[1:]), batch.dtype)])
        if self.device == "cpu":
            x = torch.from_numpy(np.ascontiguousarray(batch))
        else:
            x = self.staging.to_device(batch, self.device)  # (padded, 3, S, S) on the GPU
        x = x.to(self.dtype)
        with torch.inference_mode():
            if self.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            out = self.module(x)
        outs = out if isinstance(out, (list, tuple)) else (out,)
        # The outputs are copied to host before the next call, so CUDA graph buffers are never read stale.
        return [o[:n].float().cpu().numpy() for o in outs]
