"""Seconds per optimizer step and peak RSS of SmolLM2-135M at batch 16 on each stage's real CSQA/ECQA lengths.

Settings, each in its own child process (so that its peak RSS is its own):
  full          full fine-tuning, the model's own full-width loss (today's phase 1 before issue 12)
  lora          LoRA r=16 (peft, all linear layers), full-width loss
  lora_target   LoRA r=16, loss from hidden states at target positions only (`Student.token_loss`)
  lora_target_ckpt  the same with gradient checkpointing (memory)
Per stage, the first step is a warm-up and not timed; the mean of the next --steps is reported.

    .venv/bin/python bench/train_speed.py --steps 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinythinker.data import load_examples  # noqa: E402
from tinythinker.phase1 import build_stage_data  # noqa: E402
from tinythinker.students import apply_lora, load_student  # noqa: E402

SETTINGS = ("full", "lora", "lora_target", "lora_target_ckpt")


def child(args) -> dict:
    torch.set_num_threads(args.threads)
    examples = load_examples("csqa", "train", data_dir=args.data_dir, limit=200)
    data = build_stage_data(examples, "recall_analyze_summarize", "text_letter")
    student = load_student("smollm2-135m")
    if args.setting != "full":
        apply_lora(student, 16)
    if args.setting.endswith("ckpt"):
        student.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.model.train()
    params = [p for p in student.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    out = {"setting": args.setting, "stages": {}}
    for stage, pairs in data.examples.items():
        times, tokens = [], []
        for step in range(args.steps + 1):
            chunk = pairs[step * 16:(step + 1) * 16]
            feats = student.encode([p[0] for p in chunk], [p[1] for p in chunk], max_source_length=256)
            batch = student.collator()([{k: feats[k][i] for k in feats} for i in range(len(chunk))])
            start = time.perf_counter()
            loss = student.token_loss(batch) if "target" in args.setting else student.model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if step:
                times.append(time.perf_counter() - start)
                tokens.append(int(batch["input_ids"].numel()))
        out["stages"][stage] = {"s_per_step": round(sum(times) / len(times), 2),
                                "tokens_per_step": round(sum(tokens) / len(tokens))}
    # Phase 1's mix: recall 1, analyze 5 (one per option), summarize 1 per cycle of the interval schedule.
    weights = {"recall": 1, "analyze": 5, "summarize": 1}
    out["s_per_step"] = round(sum(out["stages"][s]["s_per_step"] * w for s, w in weights.items()) / 7, 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "train_speed.json"))
    args = ap.parse_args()
    if args.setting:
        print(json.dumps(child(args)))
        return 0
    rows = {}
    for setting in args.settings.split(","):
        cmd = [sys.executable, __file__, "--setting", setting, "--steps", str(args.steps), "--threads",
               str(args.threads), "--data-dir", args.data_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            # A setting killed for memory is a result too: say so instead of losing the others.
            why = "killed by SIGKILL (out of memory)" if proc.returncode == -9 else proc.stderr.strip()[-300:]
            rows[setting] = {"setting": setting, "failed": why, "returncode": proc.returncode}
        else:
            rows[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[setting]), flush=True)
    done = [k for k in rows if "s_per_step" in rows[k]]
    best = min(done, key=lambda k: rows[k]["s_per_step"])
    result = {"command": f"python bench/train_speed.py --steps {args.steps} --threads {args.threads}",
              "machine": platform.processor() or platform.machine(), "threads": args.threads, "batch_size": 16,
              "settings": rows, "full": {"s_per_step": rows.get("full", {}).get("s_per_step"),
                                         "failed": rows.get("full", {}).get("failed")},
              "best": {"setting": best, "s_per_step": rows[best]["s_per_step"]}}
    if "s_per_step" in rows.get("full", {}):
        result["speedup"] = round(rows["full"]["s_per_step"] / rows[best]["s_per_step"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
