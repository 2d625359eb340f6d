#!/usr/bin/env bash
# Accelerator check in one command (fits 10 minutes): installs the project with the `gpu` extra
# when an NVIDIA GPU is present, then runs tools/device_check.py (step benchmark at batch 256
# and 1024 with MFU; TIGER on Beauty for --minutes, validation Recall@10). On CPU it runs the
# same script:  tools/device_check.sh --minutes 0.5 --small
# The Beauty files: --recbole_dir DIR (default ../shared/data/amazon2014-beauty).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
[ -x .venv/bin/python ] || python3 -m venv .venv
if command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/pip install -q -e '.[gpu]'
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
else
  .venv/bin/pip install -q -e .
fi
exec .venv/bin/python tools/device_check.py "$@"
