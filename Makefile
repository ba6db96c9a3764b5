# dfwatch: the commands the README quotes. `make run` and `make test` set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := run

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dfwatch-installed
# This machine's pip config lists local package folders that do not all exist; hide that noise.
QUIET_PIP := { grep -v '^WARNING: Location .* is ignored' || true; }

.PHONY: setup models run test bench bench-streams bench-backends lint clean

setup: $(STAMP)

# Rebuilt only when pyproject.toml changes. torch==2.14.1 / torchvision==0.29.1 come from this
# machine's disk through pip. ultralytics pulls the GUI OpenCV; only the headless one may stay.
$(STAMP): pyproject.toml
	@echo "+ setting up $(VENV) (pip; torch and torchvision from this machine's disk)" >&2
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip install -q -e '.[test]' 2>&1 | $(QUIET_PIP) >&2
	@if $(PY) -m pip show -q opencv-python >/dev/null 2>&1; then \
	  v=$$($(PY) -m pip show opencv-python-headless | sed -n 's/^Version: //p'); \
	  echo "+ replacing the GUI opencv-python that ultralytics pulled with opencv-python-headless $$v" >&2; \
	  $(PY) -m pip uninstall -q -y opencv-python opencv-python-headless 2>&1 | $(QUIET_PIP) >&2; \
	  $(PY) -m pip install -q --no-deps "opencv-python-headless==$$v" 2>&1 | $(QUIET_PIP) >&2; \
	fi
	@# MTCNN, the offline teacher of `dfwatch-train detector` / `realfaces` (and their tests): a training-only
	@# tool whose own pins would replace torch, so without its dependencies (all of them are already here).
	@$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0 2>&1 | $(QUIET_PIP) >&2
	@$(PY) -c "import cv2, torch, onnxruntime, av; print('environment ready: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| av', av.__version__, '| opencv', cv2.__version__)" >&2
	@touch $(STAMP)

# The default model pack is committed in models/ (model cards: models/*.md). This loads both artifacts, which
# checks each file against the sha256 in its manifest; a missing or altered file fails with what to do.
models: $(STAMP)
	@$(PY) -c "from engines import Classifier, Detector; \
	d = Detector('models/face_detector.onnx'); c = Classifier('models/deepfake_classifier.onnx'); \
	print('+ models: detector', d.manifest.name, d.input_size, '| classifier', c.manifest.name, c.input_size)" >&2

# The main job on the embedded default (ONNX Runtime on CPU): the generated demo clip when ARGS
# names no source. Verdicts as JSON lines on stdout (and nothing else), metrics on 127.0.0.1:9108,
# logs and the summary on stderr: `make run | jq .verdict` works.
run: $(STAMP) models
	@echo "+ dfwatch watch $(ARGS)" >&2
	@$(VENV)/bin/dfwatch watch $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Per-frame latency per stage and batch of the shipped pack (the same BatchProcessor as `dfwatch watch`), ONNX
# Runtime and torch, against the paper's 6.4 ms and ultralytics' predict on the same detector (benchmarks/latency.py;
# needs Redis on 127.0.0.1:6379): about 1 minute on a quiet 2-core VM. Writes
# benchmarks/results/latency-<machine>.{json,md,png}. BENCH_ARGS="--frames 48" for a quick look.
bench: $(STAMP)
	$(PY) benchmarks/latency.py --models models $(BENCH_ARGS)

# Live feeds per box (benchmarks/streams.py): a real clip at 720p and 480p over RTSP, N = 1, 2, 4, 8, 16, the shipped
# pack next to ultralytics' predict(stream=True) in the same run, and a file-throughput row. Needs the GStreamer
# RTSP server (system python3 with gi). About 11 minutes on a quiet 2-core VM (it first waits up to 10 min for a
# load average below 1). Writes benchmarks/results/streams-<machine>.{json,md}.
bench-streams: $(STAMP)
	$(PY) benchmarks/streams.py $(BENCH_ARGS)

# CPU backends per model: ONNX Runtime fp32/INT8 and OpenVINO fp32/INT8 of the shipped pack, built in a temporary
# copy by `dfwatch-train engines --openvino --int8` (INT8 kept only within 0.01 of fp32 on held-out data), then
# timed by benchmarks/engines.py: about 3 minutes. Writes benchmarks/results/engines-<machine>-cpu-backends.{json,md}.
bench-backends: $(STAMP)
	@tmp=$$(mktemp -d /tmp/dfwatch-backends.XXXX); cp models/*.onnx models/*.onnx.json models/*.pt2 models/*.pt2.json $$tmp/; \
	$(VENV)/bin/dfwatch-train engines --models $$tmp --openvino --int8 --no-tensorrt --no-progress && \
	$(PY) benchmarks/engines.py --models $$tmp --tag cpu-backends \
	  --backends onnxruntime-cpu,onnxruntime-int8,openvino-fp32,openvino-int8 --batches 1,8 $(BENCH_ARGS); \
	rc=$$?; rm -rf $$tmp; exit $$rc

# ruff's linter and its formatter (the tree is `ruff format`ted; no `# fmt: skip` markers).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
