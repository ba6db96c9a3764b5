#!/usr/bin/env bash
# GPU check: the `gpu` and `tensorrt` tests and the engines benchmark on CUDA, everything under $OUT.
#
#   bash benchmarks/gpu_check.sh --prepare     # here (network to PyPI allowed): fills .gpu-carry/
#   OUT=/some/dir bash benchmarks/gpu_check.sh # on the GPU machine, in the repo root (< 8 min)
#
# The GPU machine is expected to have python3 with a CUDA torch, Triton, numpy, OpenCV, onnx,
# onnxruntime and pytest, and maybe no TensorRT, PyAV, ultralytics, onnxslim, Redis or GStreamer,
# and no ../shared/data. It installs nothing from the network: what it lacks travels in
# .gpu-carry/ (made by --prepare): wheels of ultralytics, ultralytics-thop and onnxslim (pure
# Python; installed with --no-index into a temp dir) and frames.npy (real frames of the test clip,
# for the tests' `frames` fixture). Models are exported there, by the torch that runs them.
#
# Steps, each under its own timeout so one stuck step cannot eat the others' time:
#   1. environment report (python, torch/CUDA/GPU, onnxruntime providers, TensorRT, missing modules)
#   2. pytest -m "gpu or tensorrt" over tests/ (collection errors of tests needing absent modules are
#      reported and do not stop the run)
#   3. benchmarks/engines.py --device cuda for the classifier, then the detector: ONNX Runtime (CUDA
#      if its build has it, and CPU), torch eager fp32, torch compiled fp16 (CUDA graphs), TensorRT
#      fp16 where importable; batch 1..64
#   4. benchmarks/latency.py --device cuda (sizes 320 and 640) with the time left of 8 minutes, where
#      PyAV is installed (Redis optional: without one the publish stage is not timed)
# Files in $OUT: summary.txt, gpu-tests.log, bench.log, latency.log, engines-*.json/.md, latency-* (written after
# every cell, so a benchmark step that hits its timeout keeps the cells it finished).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/.gpu-carry"
cd "$ROOT"

if [[ "${1:-}" == "--prepare" ]]; then
  # Run on the development machine. The wheels are pure Python (py3-none-any); pins = this .venv's.
  PY="${PY:-.venv/bin/python}"
  mkdir -p "$CARRY/wheels"
  grep -qxF '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >> .git/info/exclude
  for dist in ultralytics ultralytics-thop onnxslim; do
    version=$("$PY" -c "from importlib.metadata import version; print(version('$dist'))") || exit 1
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
      --platform any -d "$CARRY/wheels" "$dist==$version" || exit 1
  done
  "$PY" - "$CARRY/frames.npy" <<'EOF' || exit 1
import sys
from pathlib import Path

import av
import numpy as np

clip = Path("..").resolve() / "shared/data/real_videos/liveportrait_examples/driving_d1.mp4"
with av.open(str(clip)) as container:
    frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(8), container.decode(video=0))]
np.save(sys.argv[1], np.stack(frames))  # (8, H, W, 3) uint8 RGB
print(f"{sys.argv[1]}: {len(frames)} frames of {clip.name}")
EOF
  du -sh "$CARRY"
  echo "carry .gpu-carry to the GPU machine (device run: carry=[\".gpu-carry\"])"
  exit 0
fi

OUT="${OUT:-$ROOT/benchmarks/results/gpu-check}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY" >&2; }
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }

# The python that holds a CUDA torch: the repo's .venv where it has one, else the system python3.
PY=""
for candidate in "$ROOT/.venv/bin/python" "$(command -v python3 || true)"; do
  [[ -n "$candidate" && -x "$candidate" ]] || continue
  if "$candidate" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    PY="$candidate"; break
  fi
done
if [[ -z "$PY" ]]; then
  say "FAIL: no python with a CUDA-enabled torch that sees a GPU (tried .venv/bin/python and python3)"
  nvidia-smi >> "$SUMMARY" 2>&1 || true
  exit 1
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
  SITE="$(mktemp -d /tmp/dfwatch-site.XXXX)"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl; then
    export PYTHONPATH="$PYTHONPATH:$SITE"  # after the system's packages: the carried wheels only fill gaps
    say "installed carried wheels: $(cd "$CARRY/wheels" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')"
  else
    say "WARN: the carried wheels did not install; going on without them"
  fi
fi
if [[ -f "$CARRY/frames.npy" ]]; then
  export DFWATCH_TEST_FRAMES="$CARRY/frames.npy"
fi
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR="${TMPDIR:-/tmp}/dfwatch-ultralytics" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="${TMPDIR:-/tmp}/dfwatch-inductor"

# -- 1. environment --------------------------------------------------------------------------------------
say "== environment ($(date -u +%FT%TZ)), python: $PY"
"$PY" - >> "$SUMMARY" 2>&1 <<'EOF'
import importlib, platform
print("python", platform.python_version())
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| device", torch.cuda.get_device_name(0),
      "| capability", torch.cuda.get_device_capability(0))
import onnxruntime as ort
print("onnxruntime", ort.__version__, "| providers", ort.get_available_providers())
for name in ("tensorrt", "triton", "ultralytics", "onnxslim", "onnx", "av", "cv2", "numpy", "h5py", "redis",
             "tqdm", "psutil", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s} {getattr(module, '__version__', 'present')}")
    except Exception as exc:
        print(f"{name:12s} MISSING ({type(exc).__name__}: {exc})")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$SUMMARY" 2>&1 || true
nproc | sed 's/^/cpu cores: /' >> "$SUMMARY"

# -- 2. GPU tests ----------------------------------------------------------------------------------------
say "== pytest -m 'gpu or tensorrt' (started at $(elapsed) s)"
timeout 190 "$PY" -m pytest tests -m "gpu or tensorrt" -q -rs -p no:cacheprovider \
  --continue-on-collection-errors > "$OUT/gpu-tests.log" 2>&1
rc=$?
say "pytest exit $rc ($( [[ $rc == 124 ]] && echo 'TIMED OUT' || tail -n 1 "$OUT/gpu-tests.log"))"

# -- 3. engines benchmark on CUDA ------------------------------------------------------------------------
say "== engines benchmark (started at $(elapsed) s)"
MODELS="$(mktemp -d /tmp/dfwatch-models.XXXX)"
if timeout 45 "$PY" -m trainer.cli placeholders --out "$MODELS" >> "$OUT/bench.log" 2>&1; then
  for kind_limit in classifier:80 detector:140; do
    kind="${kind_limit%%:*}"; limit="${kind_limit##*:}"
    timeout "$limit" "$PY" benchmarks/engines.py --device cuda --models "$MODELS" --kinds "$kind" --tag "$kind" \
      --backends onnxruntime,onnxruntime-cpu,torch-eager,torch-compiled-fp16,tensorrt-fp16 \
      --seconds 1 --min-runs 5 --max-runs 50 --warmup 3 --quiet-wait 0 --max-load 1000 --retries 0 \
      --out-dir "$OUT" >> "$OUT/bench.log" 2>&1
    rc=$?
    say "benchmark $kind exit $rc$( [[ $rc == 124 ]] && echo ' (TIMED OUT after '"$limit"' s)')"
  done
else
  say "FAIL: exporting the placeholder models failed (see bench.log; ultralytics/onnxslim missing?)"
fi
# -- 4. per-frame latency on CUDA (benchmarks/latency.py), with what is left of the 8 minutes -------------
left=$(( 470 - $(elapsed) ))
if (( left < 60 )); then
  say "latency benchmark skipped: $(elapsed) s used, under 60 s left of the 8-minute budget"
elif ! "$PY" -c 'import av' 2>/dev/null; then
  say "latency benchmark skipped: PyAV (av) is not installed on this machine (it decodes the clip)"
else
  redis_url=none
  "$PY" -c 'import redis; redis.Redis(socket_timeout=1).ping()' 2>/dev/null && redis_url=redis://127.0.0.1:6379/0
  say "== latency benchmark, $left s left (started at $(elapsed) s; publish to Redis: $redis_url)"
  timeout "$left" "$PY" benchmarks/latency.py --device cuda --sizes 320,640 --frames 64 --redis "$redis_url" \
    --quiet-wait 0 --max-load 1000 --retries 0 --out-dir "$OUT" >> "$OUT/latency.log" 2>&1
  rc=$?
  say "latency exit $rc$( [[ $rc == 124 ]] && echo " (TIMED OUT after $left s)")"
fi
say "== done in $(elapsed) s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
