#!/usr/bin/env bash
# The one command for a GPU window (see ci/gpu_check.py): on the device machine, from the repository root.
# Packages the device image lacks travel as wheels in .whl/ (README, "GPU use"); they are installed to /tmp/site first.
# Everything the check writes goes under $OUT (the device machine's return folder), or runs/gpu_check elsewhere.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
python3 ci/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
