"""Rationale sources -> {question id: [Rationale]}, the join with questions, and coverage.

Sources (the first of each benchmark is its default):
  csqa        ecqa (per-option ECQA explanations, see ecqa.py), ecqa-explanation (the same, recall always the
              free-flow explanation), ecqa-option-free (the same, a recall never names an option: a question
              with no such text has none), cose (CoS-E open-ended explanation, recall only)
  obqa        fact1 (the open-book fact behind the question, recall only)
  strategyqa  facts (the annotated facts joined, recall only; the decomposition stays in Question.meta)
  jsonl       inline (the file's own `recall` / `analyses` fields)
  paper       paper (the folder's recall.json / analyze.json / summarize.json)
  any         a `teach --out` folder (its rationales.jsonl, joined by question id), a folder in the paper's
              released format (joined by question text), or "none"
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tinythinker.data.benchmarks import BENCHMARKS, USER_FORMATS, load_questions, resolve_data_dir
from tinythinker.data.ecqa import ECQA_FILE, ecqa_rationales
from tinythinker.data.errors import DataError, MissingDataError
from tinythinker.data.paper import key_of, paper_rationales
from tinythinker.data.records import get, need_file, read_jsonl
from tinythinker.types import Question, Rationale

SOURCES: dict[str, tuple[str, ...]] = {
    "csqa": ("ecqa", "ecqa-explanation", "ecqa-option-free", "cose"),
    "obqa": ("fact1",),
    "strategyqa": ("facts",),
    "jsonl": ("inline",),
    "paper": ("paper",),
}
COSE_FILE = "cose/cose_train_v1.11.jsonl"
TEACHER_FILE = "rationales.jsonl"  # what `python -m tinythinker teach --out DIR` writes
NONE = "none"


def default_source(name: str) -> str:
    return SOURCES[name][0]


def load_rationales(name: str, questions: list[Question], data_dir: str | Path | None = None,
                    source: str | None = None, path: str | Path | None = None) -> dict[str, list[Rationale]]:
    """Teacher rationales for `questions`, keyed by question id; questions a source does not cover are absent.
    `path` is the folder of name="paper" data (its default source)."""
    if name not in SOURCES:
        raise ValueError(f"unknown data {name!r}; choose one of {', '.join(BENCHMARKS + USER_FORMATS)}")
    source = source or default_source(name)
    if source == NONE:
        return {}
    if source in ("ecqa", "ecqa-explanation", "ecqa-option-free", "cose"):
        root = _local_root(name, source, data_dir)
        if source == "cose":
            return _cose(questions, _need(root / COSE_FILE, source))
        mode = {"ecqa-explanation": "explanation", "ecqa-option-free": "strict"}.get(source, "option_free")
        return ecqa_rationales(questions, _need(root / ECQA_FILE, source), mode)
    if source == "fact1":
        return _from_meta(questions, "fact1", "obqa-fact1", "obqa/train_complete.jsonl, dev_complete.jsonl")
    if source == "facts":
        return _from_meta(questions, "facts", "strategyqa-facts", "strategyqa/train.json with its facts")
    if source == "inline":
        return _inline(questions)
    if source == "paper":
        if path is None:
            raise ValueError("the paper source needs the folder: path=... / --path")
        return join_paper(questions, Path(path))
    folder = Path(source).expanduser()
    if (folder / TEACHER_FILE).is_file() or folder.name == TEACHER_FILE:
        return _teacher(questions, folder)
    if folder.is_dir():
        return join_paper(questions, folder)
    raise ValueError(f"unknown rationale source {source!r} for {name}: choose one of "
                     f"{', '.join(SOURCES[name] + (NONE,))}, a `teach` output folder, or a folder in the "
                     "paper's format")


def load_examples(name: str, split: str = "train", data_dir: str | Path | None = None, seed: int = 0,
                  limit: int | None = None, source: str | None = None, path: str | Path | None = None
                  ) -> list[tuple[Question, list[Rationale]]]:
    """(question, its rationales) for one split; a question no source covers comes with an empty list."""
    questions = load_questions(name, split, data_dir=data_dir, seed=seed, limit=limit, path=path)
    rationales = load_rationales(name, questions, data_dir=data_dir, source=source, path=path)
    return [(_label_in_force(q, rationales.get(q.id, [])), rationales.get(q.id, [])) for q in questions]


def _label_in_force(q: Question, rats: list[Rationale]) -> Question:
    """A teacher that followed its own majority answer (the paper's notebook does) records it as `verdict`: train
    the Summarize target on that label too, or the explanations would argue for one option and the answer name
    another. The benchmark's label stays in meta["gold_answer"]."""
    verdicts = {r.meta["verdict"] for r in rats if r.meta.get("verdict")}
    if len(verdicts) != 1 or q.answer in verdicts:
        return q
    return replace(q, answer=verdicts.pop(), meta={**q.meta, "gold_answer": q.answer})


def rationale_coverage(examples: list[tuple[Question, list[Rationale]]]) -> dict[str, float | int]:
    """How much teacher knowledge the examples carry: `options_with_analysis` is the fraction of all options
    that some rationale of their question explains; `questions_with_recall` the fraction of questions with a
    recall text; `questions_with_rationale` the fraction with any rationale at all."""
    n_q = len(examples)
    n_opt = sum(len(q.options) for q, _ in examples)
    explained = sum(
        sum(1 for lab in q.labels if any((r.analyses.get(lab) or "").strip() for r in rats))
        for q, rats in examples)
    with_recall = sum(1 for _, rats in examples if any((r.recall or "").strip() for r in rats))
    with_any = sum(1 for _, rats in examples if rats)
    return {
        "questions": n_q,
        "options": n_opt,
        "rationales": sum(len(rats) for _, rats in examples),
        "options_with_analysis": explained / n_opt if n_opt else 0.0,
        "questions_with_recall": with_recall / n_q if n_q else 0.0,
        "questions_with_rationale": with_any / n_q if n_q else 0.0,
    }


def _local_root(name: str, source: str, data_dir: str | Path | None) -> Path:
    root = resolve_data_dir(data_dir)
    if root is None:
        raise MissingDataError(f"the {source} rationales for {name} are read from a local data folder "
                               f"(DIR/{COSE_FILE if source == 'cose' else ECQA_FILE}); pass --data-dir DIR or "
                               "set TINYTHINKER_DATA_DIR (see docs/DATA.md)")
    return root


def _need(path: Path, source: str) -> Path:
    if not path.is_file():
        if path.exists():
            need_file(path, f"the {source} rationale file ")  # a folder or a device: say what it is
        raise MissingDataError(f"the {source} rationales need {path}, which does not exist")
    return path


def _from_meta(questions: list[Question], key: str, source: str, hint: str) -> dict[str, list[Rationale]]:
    out = {}
    for q in questions:
        value = q.meta.get(key)
        text = " ".join(value) if isinstance(value, list) else value
        if text and text.strip():
            out[q.id] = [Rationale(recall=" ".join(text.split()), analyses={}, source=source)]
    if questions and not out:
        raise MissingDataError(f"none of the {len(questions)} questions carries {key!r}; it comes from {hint}")
    return out


def _inline(questions: list[Question]) -> dict[str, list[Rationale]]:
    out = {}
    for q in questions:
        recall, analyses = q.meta.get("recall"), q.meta.get("analyses") or {}
        if (recall and recall.strip()) or analyses:
            out[q.id] = [Rationale(recall=recall, analyses=dict(analyses), source="inline")]
    return out


def _cose(questions: list[Question], path: Path) -> dict[str, list[Rationale]]:
    wanted = {q.id for q in questions}
    out = {}
    for loc, rec in read_jsonl(path):
        qid = str(get(rec, "id", loc, (str, int)))
        if qid not in wanted:
            continue
        expl = get(rec, "explanation", loc, dict)
        text = get(expl, "open-ended", loc, field="explanation.open-ended")
        out[qid] = [Rationale(recall=" ".join(text.split()), analyses={}, source="cose")]
    return out


def _teacher(questions: list[Question], path: Path) -> dict[str, list[Rationale]]:
    from tinythinker.teacher.run import load_teacher_rationales  # the teacher area owns its file format

    by_id = load_teacher_rationales(path)
    return {q.id: by_id[q.id] for q in questions if by_id.get(q.id)}


def join_paper(questions: list[Question], folder: Path) -> dict[str, list[Rationale]]:
    """Paper-format rationales joined to questions by their text; a GT that disagrees is a DataError."""
    by_key = paper_rationales(folder)
    out = {}
    for q in questions:
        rats = by_key.get(key_of(q))
        if not rats:
            continue
        for r in rats:
            if q.answer is not None and r.meta.get("GT") != q.answer:
                raise DataError(f"GT {r.meta.get('GT')!r} but question {q.id} has answer {q.answer!r}",
                                file=r.meta.get("file"), line=r.meta.get("line"), record=r.meta.get("record"),
                                field="GT")
        out[q.id] = list(rats)
    return out
