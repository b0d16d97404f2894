#!/usr/bin/env bash
# Build a Debian bookworm base image from Debian's packages, for hosts that reach no
# container image registry (air-gapped sites, this project's build machines):
#
#   scripts/docker_base.sh [IMAGE]        # default qarr-base:bookworm; needs root and debootstrap
#   DEBIAN_MIRROR=http://mirror.internal/debian scripts/docker_base.sh
#
# The image is a plain `minbase` root filesystem. The Dockerfile installs what it
# lacks (python3.11, its venv module, libnuma1) with apt-get from the same mirror.
# Idempotent: an existing image is kept.
set -euo pipefail
image=${1:-qarr-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base: $image already built"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /tmp/qarr-base.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
start=$(date +%s)
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# No package caches in the image; apt-get update inside the build fetches fresh lists.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "base: $image built from Debian bookworm ($mirror) in $(( $(date +%s) - start )) s"
