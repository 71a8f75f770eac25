#!/usr/bin/env bash
# Fill a folder with the wheels gpu_check.sh installs on a machine without a package index:
# foolbox, torchattacks and pyautoattack with their small dependencies (torch, numpy and scipy
# are expected on the GPU machine already, so they are not fetched).
#
#   examples/benchmarks/fetch_gpu_wheels.sh DIR [--python-version 3.11]
#
# Then copy DIR to the GPU machine and run: examples/benchmarks/gpu_check.sh --wheels DIR
set -euo pipefail
DIR="${1:?usage: $0 DIR [--python-version X.Y]}"; shift
PYVER="$(python -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"
[ "${1:-}" = "--python-version" ] && PYVER="$2"
mkdir -p "$DIR"
# --no-deps with an explicit list: pip would otherwise fetch torch and torchvision (gigabytes) as dependencies;
# gpu_check.sh installs each one that is missing with --no-deps too.
PACKAGES=(foolbox eagerpy GitPython gitdb smmap torchattacks pyautoattack tqdm requests typing-extensions
          urllib3 idna charset-normalizer certifi)
python -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --dest "$DIR" "${PACKAGES[@]}" \
  || python -m pip download --no-deps --dest "$DIR" "${PACKAGES[@]}"
ls -1 "$DIR"
