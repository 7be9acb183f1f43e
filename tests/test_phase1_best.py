"""Phase 1 keeps the best evaluation's checkpoint when validation accuracy goes up and down (issue 13, item 7)."""

import hashlib
import json
from pathlib import Path

import torch

from tinythinker import phase1
from tinythinker.phase1 import Phase1Config, train_phase1
from tinythinker.students import load_student
from tinythinker.tiny import tiny_student
from tinythinker.types import Option, Question, Rationale


def fingerprint(student):
    h = hashlib.sha256()
    for name, p in sorted(student.model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def examples(n=6):
    out = []
    for i in range(n):
        answer = "ABC"[i % 3]
        q = Question(f"t{i}", f"where is item {i}?", [Option("A", "home"), Option("B", "park"), Option("C", "shop")],
                     answer, "test")
        out.append((q, [Rationale(f"Item {i} is in the {q.option_text(answer)}.", {})]))
    return out


def test_best_checkpoint_is_the_best_evaluation_not_the_last(tmp_path, monkeypatch):
    scores = [0.25, 0.75, 0.5, 0.75]  # up, down, and a tie with the best at the last step
    seen = []

    def scripted(student, questions, stage_type, **kw):
        acc = scores[len(seen)]
        seen.append(fingerprint(student))
        n = len(questions)
        counts = torch.zeros(3 + len(phase1.LABELS), dtype=torch.float64)
        counts[0], counts[2], counts[3] = acc * n, n, n  # every answer "A"
        return counts

    monkeypatch.setattr(phase1, "evaluate_pipeline", scripted)
    ex = examples()
    config = Phase1Config(run=str(tmp_path / "run"), student="tiny", stage_type="summarize", interval=1,
                          batch_size=2, eval_batch_size=4, max_steps=4, lr=1e-3, max_target_length=32,
                          logging_steps=1)
    result = train_phase1(config, student=tiny_student("causal"), examples=ex, questions=[q for q, _ in ex[:4]])
    run = Path(config.run)
    assert len(seen) == 4 and len(set(seen)) == 4  # an evaluation per step (one cycle), each on other weights
    assert result.best_accuracy == 0.75 and result.best_step == 2
    assert json.loads((run / "best" / "phase1_best.json").read_text()) == {"step": 2, "accuracy": 0.75}
    assert fingerprint(load_student(run / "best")) == seen[1]
    assert fingerprint(load_student(run / "checkpoints" / "checkpoint-2")) == seen[1]  # kept as the best
    assert fingerprint(load_student(run / "checkpoints" / "checkpoint-4")) == seen[3] != seen[1]
