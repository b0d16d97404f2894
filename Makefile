# make up    — install, prepare the bundled model, start router + tiers under the launcher (restarts a server that dies; Ctrl-C drains and stops)
# make test  — install, prepare the bundled model, run every test
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export VLLM_CPU_OMP_THREADS_BIND := nobind
export VLLM_CACHE_ROOT := $(CURDIR)/.cache/vllm
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
export PYTHONPATH := $(CURDIR):$(CURDIR)/protos

.PHONY: setup model up test test-fast protos check-protos bench-deps bench-overhead bench-cost bench-routing bench-scaling bench-http bench

setup:
	@bash scripts/setup.sh

model: setup
	@$(PY) -m tier_server.prepare >/dev/null

up: model
	$(PY) -m launcher --config mesh.yaml

test: model
	$(PY) scripts/gen_protos.py --check
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Without the real engine: seconds, for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -q -m "not engine" $(PYTEST_ARGS)

protos: setup
	$(PY) scripts/gen_protos.py

# Benchmarks (docs/bench.md): each prints its tables and writes results/<name>/.
BENCH_ARGS ?=
bench-deps: setup
	@$(PY) -c "import matplotlib" 2>/dev/null && [ -x $(VENV)/bin/py-spy ] || $(PY) -m pip install --quiet "matplotlib>=3.8" "py-spy>=0.3.14"
bench-overhead: bench-deps
	$(PY) -m bench overhead $(BENCH_ARGS)
bench-cost: bench-deps
	$(PY) -m bench cost $(BENCH_ARGS)
bench-routing: model bench-deps
	$(PY) -m bench routing $(BENCH_ARGS)
bench-scaling: bench-deps
	$(PY) -m bench scaling $(BENCH_ARGS)
# Installs LiteLLM into its own .venv-litellm the first time (benchmark only).
bench-http: bench-deps
	$(PY) -m bench http $(BENCH_ARGS)
bench: bench-overhead bench-cost bench-scaling bench-routing

# Quantization and profiling (docs/quantize.md, docs/profile.md).
.PHONY: setup-quant quantize profile profile-quant
setup-quant:
	@bash scripts/setup_quant.sh

quantize: model setup-quant
	$(PY) -m quantize --scheme w8a8 --overwrite $(QUANT_ARGS)

profile: model
	$(PY) -m profiler --mesh mesh.yaml $(PROFILE_ARGS)

profile-quant: quantize
	$(PY) -m profiler --mesh mesh.quant.yaml $(PROFILE_ARGS)

# Containers (docs/deploy.md). `make test` checks compose.yaml, the Dockerfile and the k8s
# overlays offline (tests/test_deploy_configs.py); compose-check runs the mesh in Docker for
# real (about 10 minutes cold here), so it is its own target, not part of `make test`.
.PHONY: wheelhouse image compose-check
wheelhouse:
	@bash scripts/wheelhouse.sh
image:
	@bash scripts/docker_image.sh
compose-check:
	@bash scripts/compose_check.sh
