#!/usr/bin/env bash
# GPU check: the `gpu` and `tensorrt` tests and the engines benchmark on CUDA, everything under $OUT.
#
#   bash benchmarks/gpu_check.sh --prepare     # here (network to PyPI allowed): fills .gpu-carry/
#   OUT=/some/dir bash benchmarks/gpu_check.sh # on the GPU machine, in the repo root: at most 5 min
#
# Device run (the tool `run`): carry=[".gpu-carry"], timeout_s=330. Five minutes a run, so that a second
# run still fits in 15 minutes of device time with the machines' start-ups. Without the carried setup it
# stops at once (exit 2) and says how to make it.
#
# The GPU machine is expected to have python3 with a CUDA torch (2.11 there, not this repo's 2.14.1 pin),
# Triton, numpy, OpenCV, onnx, onnxruntime (CPU-only) and pytest, and no TensorRT, PyAV, ultralytics,
# onnxslim, OpenVINO, Redis or GStreamer, and no ../shared/data. It installs nothing from the network:
# what it lacks travels in .gpu-carry/ (made by --prepare): wheels of ultralytics, ultralytics-thop and
# onnxslim (pure Python; installed with --no-index into a temp dir) and frames.npy (real frames of the
# test clip, for the tests' `frames` fixture). Models are exported there, by the torch that runs them.
#
# Steps, within one budget (GPU_CHECK_BUDGET, 300 s), each under its own timeout so one stuck step cannot
# eat the others' time:
#   0. the carried setup is there (else exit 2 at once); a python with a CUDA torch (else exit 1)
#   1. environment report (python, torch/CUDA/GPU, onnxruntime providers, TensorRT, missing modules)
#   2. pytest -m "gpu or tensorrt" over tests/, up to 210 s: cold torch.compile (inductor; CUDA graphs per
#      batch bucket; recompiles from dynamic=None) takes most of it on a fresh machine
#   3. benchmarks/engines.py --device cuda, classifier then detector, with what is left: ONNX Runtime
#      (CUDA where its build has it, and CPU), torch eager fp32, torch compiled fp16, TensorRT fp16
# Files in $OUT: summary.txt; not-exercised.txt (each path this run could not exercise, and why);
# gpu-tests.log, bench.log, engines-*.json/.md (written after every cell, so a step that hits its timeout
# keeps the cells it finished).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/.gpu-carry"
cd "$ROOT"

if [[ "${1:-}" == "--prepare" ]]; then
  # Run on the development machine. The wheels are pure Python (py3-none-any); pins = this .venv's.
  PY="${PY:-.venv/bin/python}"
  mkdir -p "$CARRY/wheels"
  exclude="$(git rev-parse --git-path info/exclude)"  # a worktree's .git is a file, not a folder
  mkdir -p "$(dirname "$exclude")"
  grep -qxF '/.gpu-carry/' "$exclude" 2>/dev/null || echo '/.gpu-carry/' >> "$exclude"
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
MISSED="$OUT/not-exercised.txt"
: > "$SUMMARY"
: > "$MISSED"
say() { echo "$*" | tee -a "$SUMMARY" >&2; }
missed() { echo "$*" | tee -a "$MISSED" >&2; }
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
BUDGET="${GPU_CHECK_BUDGET:-300}"
left() { echo $(( BUDGET - $(elapsed) )); }

# -- 0. the carried setup, before anything costs time ----------------------------------------------------
lacking=()
compgen -G "$CARRY/wheels/ultralytics-*.whl" > /dev/null || lacking+=("$CARRY/wheels/ultralytics-*.whl")
compgen -G "$CARRY/wheels/onnxslim-*.whl" > /dev/null || lacking+=("$CARRY/wheels/onnxslim-*.whl")
[[ -s "$CARRY/frames.npy" ]] || lacking+=("$CARRY/frames.npy")
if (( ${#lacking[@]} )); then
  say "FAIL: the carried setup is missing: ${lacking[*]}. Make it on the development machine with" \
      "'bash benchmarks/gpu_check.sh --prepare', then start the device run with carry=[\".gpu-carry\"]."
  missed "everything: the carried setup .gpu-carry/ was not there, nothing ran"
  exit 2
fi

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
  missed "everything: no python with a CUDA torch that sees a GPU"
  nvidia-smi >> "$SUMMARY" 2>&1 || true
  exit 1
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
SITE="$(mktemp -d /tmp/dfwatch-site.XXXX)"
if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl; then
  export PYTHONPATH="$PYTHONPATH:$SITE"  # after the system's packages: the carried wheels only fill gaps
  say "installed carried wheels: $(cd "$CARRY/wheels" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')"
else
  say "WARN: the carried wheels did not install; going on without them"
  missed "exports by ultralytics/onnxslim: the carried wheels did not install"
fi
export DFWATCH_TEST_FRAMES="$CARRY/frames.npy"
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR="${TMPDIR:-/tmp}/dfwatch-ultralytics" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="${TMPDIR:-/tmp}/dfwatch-inductor"

# -- 1. environment, and what this machine cannot run at all --------------------------------------------
say "== environment ($(date -u +%FT%TZ)), python: $PY"
"$PY" - >> "$SUMMARY" 2>&1 <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| device", torch.cuda.get_device_name(0),
      "| capability", torch.cuda.get_device_capability(0))
import onnxruntime as ort
print("onnxruntime", ort.__version__, "| providers", ort.get_available_providers())
for name in ("tensorrt", "triton", "ultralytics", "onnxslim", "onnx", "openvino", "av", "cv2", "numpy", "h5py",
             "redis", "tqdm", "psutil", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s} {getattr(module, '__version__', 'present')}")
    except Exception as exc:
        print(f"{name:12s} MISSING ({type(exc).__name__}: {exc})")
PYEOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >> "$SUMMARY" 2>&1 || true
nproc | sed 's/^/cpu cores: /' >> "$SUMMARY"
"$PY" - >> "$MISSED" 2>&1 <<'PYEOF'
import importlib

try:
    from engines.backends.trt_backend import import_tensorrt

    import_tensorrt()
except Exception as exc:
    print(f"TensorRT plans (build, backend, INT8 calibration, the tests marked tensorrt): {exc}")
try:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"ONNX Runtime on CUDA (IO binding): onnxruntime {ort.__version__} here has no CUDAExecutionProvider")
except ImportError as exc:
    print(f"ONNX Runtime: {exc}")
for module, what in (("av", "real-video decoding and the latency benchmark (PyAV)"),
                     ("openvino", "OpenVINO (a CPU backend; not a GPU path)"), ("redis", "publishing to Redis")):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        print(f"{what}: {exc}")
PYEOF

# -- 2. GPU tests: cold torch.compile needs most of the budget on a fresh machine ----------------------------
tests_limit=$(( $(left) - 80 ))
(( tests_limit > 210 )) && tests_limit=210
say "== pytest -m 'gpu or tensorrt', up to $tests_limit s (started at $(elapsed) s)"
timeout "$tests_limit" "$PY" -m pytest tests -m "gpu or tensorrt" -q -rs -p no:cacheprovider \
  --continue-on-collection-errors > "$OUT/gpu-tests.log" 2>&1
rc=$?
say "pytest exit $rc ($( [[ $rc == 124 ]] && echo "TIMED OUT after $tests_limit s" || tail -n 1 "$OUT/gpu-tests.log"))"
if [[ $rc == 124 ]]; then
  missed "GPU tests after the last one that finished: pytest timed out after $tests_limit s (see gpu-tests.log)"
fi
grep -E '^SKIPPED' "$OUT/gpu-tests.log" | sed 's/^/test skipped: /' >> "$MISSED" || true
grep -E '^ERROR ' "$OUT/gpu-tests.log" | sed 's/^/test module not collected: /' >> "$MISSED" || true

# -- 3. engines benchmark on CUDA, with what is left ---------------------------------------------------------
say "== engines benchmark, $(left) s left (started at $(elapsed) s)"
MODELS="$(mktemp -d /tmp/dfwatch-models.XXXX)"
if (( $(left) < 40 )); then
  missed "engines benchmark on CUDA: no time left of the $BUDGET s budget"
elif timeout 30 "$PY" -m trainer.cli placeholders --out "$MODELS" >> "$OUT/bench.log" 2>&1; then
  for kind in classifier detector; do
    limit=$(( $(left) - 5 ))
    [[ $kind == classifier ]] && limit=$(( $(left) * 2 / 5 ))
    if (( limit < 15 )); then missed "engines benchmark, $kind: no time left"; continue; fi
    timeout "$limit" "$PY" benchmarks/engines.py --device cuda --models "$MODELS" --kinds "$kind" --tag "$kind" \
      --backends onnxruntime,onnxruntime-cpu,torch-eager,torch-compiled-fp16,tensorrt-fp16 \
      --seconds 1 --min-runs 5 --max-runs 50 --warmup 3 --quiet-wait 0 --max-load 1000 --retries 0 \
      --out-dir "$OUT" >> "$OUT/bench.log" 2>&1
    rc=$?
    say "benchmark $kind exit $rc$( [[ $rc == 124 ]] && echo " (TIMED OUT after $limit s)")"
    if [[ $rc == 124 ]]; then missed "engines benchmark, $kind: cells after the last one written (timed out)"; fi
  done
  grep -E 'left out' "$OUT/bench.log" | sed 's/^/engines benchmark: /' >> "$MISSED" || true
else
  say "FAIL: exporting the placeholder models failed (see bench.log; ultralytics/onnxslim missing?)"
  missed "engines benchmark on CUDA: the placeholder models could not be exported (see bench.log)"
fi
missed "latency benchmark on CUDA: not part of this check (it needs PyAV and more time); run benchmarks/latency.py --device cuda where PyAV is"
sort -u -o "$MISSED" "$MISSED"
say "== done in $(elapsed) s of $BUDGET; not exercised: $(wc -l < "$MISSED") paths (not-exercised.txt); files: $(cd "$OUT" && ls | tr '\n' ' ')"
