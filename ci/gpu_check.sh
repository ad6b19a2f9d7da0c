#!/usr/bin/env bash
# The one command for a GPU window (see ci/gpu_check.py): on the device machine, from the repository root.
# Packages the device image lacks travel as wheels in .whl/ (README, "GPU use"); they are installed to /tmp/site first.
# On the device machine ($OUT set) the check works in /tmp/gpu_check and copies its summaries into $OUT, since at most
# 8 files come back from there (the checkpoints and training runs stay behind); elsewhere it writes to runs/gpu_check.
# GPU_CHECK_TIMEOUT (seconds) stops the check itself, so the summaries it has written are still copied back.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
out="${OUT:-runs/gpu_check}"
work="${OUT:+/tmp/gpu_check}"; work="${work:-$out}"
mkdir -p "$out" "$work"
timeout -s INT "${GPU_CHECK_TIMEOUT:-0}" python3 ci/gpu_check.py --out "$work" "$@" 2>&1 | tee "$out/log.txt"
rc="${PIPESTATUS[0]}"
if [ "$work" != "$out" ]; then
  for f in gpu_check.json gpu_check.md cuda_tests.log decode.json train.json speculative.json; do
    [ -f "$work/$f" ] && cp "$work/$f" "$out/"
  done
fi
exit "$rc"
