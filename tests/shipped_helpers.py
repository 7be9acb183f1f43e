"""A fake shipped-models folder (what demo/models/ will hold), built with tiny random students: shipped.json,
model_card.md, a loadable model folder and traces/validation.jsonl made by that model."""

from __future__ import annotations

import json
from pathlib import Path

from tinythinker.data import load_questions
from tinythinker.pipeline import run_pipeline, write_traces
from tinythinker.students import load_student
from tinythinker.tiny import tiny_student

N_TRACES = 6
SHIPPED = (
    # name, role, parent, seed, answer mode, stage type
    ("tt-phase1", "phase1", None, 2, "constrain", "recall_analyze_summarize"),
    ("tt-reflected", "reflected", "tt-phase1", 3, "constrain", "recall_analyze_summarize"),
    ("tt-answer-only", "baseline", None, 4, "constrain", "summarize"),
)


def write_shipped(root: Path, data_dir: Path, n: int = N_TRACES) -> Path:
    """root/<name>/ for each SHIPPED model; returns root. The traces are the greedy pipeline on the first `n`
    CSQA validation questions with the model's own answer mode, exactly what the app would compute."""
    root = Path(root)
    questions = load_questions("csqa", "validation", data_dir=data_dir, limit=n)
    for name, role, parent, seed, mode, stage_type in SHIPPED:
        folder = root / name
        tiny_student("bert2bert", seed=seed).save(folder)
        (folder / "shipped.json").write_text(json.dumps({
            "name": name, "role": role, "parent": parent, "base": "tiny-bert2bert", "val_acc": 0.2 + seed / 100,
            "stage_type": stage_type, "answer_format": "letter", "restrict_answer": mode}))
        (folder / "model_card.md").write_text(f"# {name}\n\nA tiny random student for the tests ({role}).\n")
        traces = run_pipeline(load_student(folder), questions, stage_type=stage_type, restrict_answer=mode)
        for t in traces:
            t.model = name
        write_traces(folder / "traces" / "validation.jsonl", traces)
    return root
