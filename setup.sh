#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs mvit2deploy with its pinned dependencies.
# torch is installed first, on its own, so that no other package can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/mvit2deploy --version
