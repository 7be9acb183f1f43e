"""The paper's released data format (shengminp/TinyThinker, datasets/<name>/final/sft/<stage_type>/).

A folder holds JSON arrays (JSON Lines also accepted) of records with the stage `input`, the ground-truth
letter `GT`, and, for training files, the target under the stage's name:
    recall.json     {"input": "{stem}\\n(A) ..\\nRecall:",                         "recall": "..",    "GT": "B"}
    analyze.json    {"input": "...\\nRecall: ..\\nAnalyze: For option X,",         "analyze": "..",   "GT": "B"}
    summarize.json  {"input": "...\\nAnalyze: For option A, .. For option B, ..\\nSummarize:",
                     "summarize": "So the answer is option B.", "GT": "B"}
    valid.json / test.json   {"input": "...\\nRecall:", "GT": "B"}   (the paper's validation and test sets)
Inputs are read back with stages.parse_input. The records carry no question id, so a question is known by its
stem and option texts (question_key); paper questions get the id "p-" + a hash of that key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from tinythinker import stages
from tinythinker.data.errors import DataError, MissingDataError
from tinythinker.data.questions import make_question, unique_ids
from tinythinker.data.records import Loc, describe_path, get, need_file, read_records
from tinythinker.types import Question, Rationale

TRAIN_FILES = ("summarize.json", "recall.json", "analyze.json")
SPLIT_FILES = {"validation": "valid.json", "test": "test.json"}
TARGET_FIELD = {"recall.json": "recall", "analyze.json": "analyze", "summarize.json": "summarize"}


def question_key(stem: str, option_texts: list[str]) -> str:
    """Whitespace- and case-blind identity of a question, for joining files that carry no ids."""
    def norm(t: str) -> str:
        return " ".join(t.split()).lower()
    return norm(stem) + "\n" + "\n".join(norm(t) for t in option_texts)


def key_of(q: Question) -> str:
    return question_key(q.stem, [o.text for o in q.options])


def _parsed(folder: Path, name: str) -> Iterator[tuple[Loc, dict, stages.ParsedInput]]:
    path = folder / name
    n = 0
    for loc, rec in read_records(path):
        n += 1
        text = get(rec, "input", loc)
        try:
            parsed = stages.parse_input(text)
        except ValueError as e:
            raise loc.error(f"not a TinyThinker stage input: {e}", field="input") from None
        if name in TARGET_FIELD and name != "summarize.json":
            get(rec, TARGET_FIELD[name], loc)  # a training record without its target is unusable
        yield loc, rec, parsed
    if n == 0:
        raise DataError("holds no records (the file is empty, blank lines only, or an empty array)", file=path)


def _folder(folder: Path, what: str) -> None:
    if folder.is_dir():
        return
    if folder.exists():
        raise DataError(f"{what} {folder} is {describe_path(folder)}, not a folder")
    raise MissingDataError(f"{what} {folder} does not exist")


def _question(loc: Loc, rec: dict, p: stages.ParsedInput) -> Question:
    key = question_key(p.stem, [o.text for o in p.options])
    qid = "p-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    answer = get(rec, "GT", loc).strip()
    return make_question(loc, qid, p.stem, list(p.options), answer, "paper", answer_field="GT")


def paper_questions(folder: Path, split: str) -> list[Question]:
    """train: the questions of the training files; validation / test: valid.json / test.json."""
    _folder(folder, "paper-format folder (recall.json, analyze.json, ...)")
    if split in SPLIT_FILES:
        path = folder / SPLIT_FILES[split]
        if not path.is_file():
            if path.exists():
                need_file(path)  # a folder or a device where the file should be: say what it is
            raise MissingDataError(f"paper-format {split} split needs {path}, which does not exist")
        # Analyze-only ablations repeat a question once per option: keep its first record.
        seen: dict[str, tuple[Loc, Question]] = {}
        for loc, rec, p in _parsed(folder, SPLIT_FILES[split]):
            q = _question(loc, rec, p)
            seen.setdefault(q.id, (loc, q))
        return unique_ids(seen.values())
    names = [n for n in TRAIN_FILES if (folder / n).exists()]  # one that is not a regular file is refused
    if not names:
        raise MissingDataError(f"{folder} holds none of {', '.join(TRAIN_FILES)}")
    seen = {}
    for loc, rec, p in _parsed(folder, names[0]):
        q = _question(loc, rec, p)
        if q.id in seen and seen[q.id][1].answer != q.answer:
            raise loc.error(f"GT {q.answer!r} differs from {seen[q.id][0]} for the same question", field="GT")
        seen.setdefault(q.id, (loc, q))
    return [q for _, q in seen.values()]


def paper_rationales(folder: Path) -> dict[str, list[Rationale]]:
    """Rationales by question_key, from whichever of summarize.json, analyze.json, recall.json exist.

    A summarize input holds one whole rationale (recall and every option's analysis); analyze records are
    grouped by (question, recall) into one rationale; recall records add recall-only rationales for recalls
    not already part of a fuller one. GT is kept in meta so a join can check it against the question."""
    _folder(folder, "rationale folder")
    names = [n for n in TRAIN_FILES if (folder / n).exists()]  # one that is not a regular file is refused
    if not names:
        raise MissingDataError(f"{folder} holds none of {', '.join(TRAIN_FILES)}")
    found: dict[str, dict[tuple, Rationale]] = {}

    def add(key: str, recall: str | None, analyses: dict[str, str], loc: Loc, gt: str) -> None:
        ident = (recall, tuple(sorted(analyses.items())))
        meta = {"file": loc.file, "line": loc.line, "record": loc.record, "GT": gt}
        found.setdefault(key, {}).setdefault(ident, Rationale(recall, dict(analyses), "paper", meta))

    if "summarize.json" in names:
        for loc, rec, p in _parsed(folder, "summarize.json"):
            if p.recall is not None or p.analyses:
                add(question_key(p.stem, [o.text for o in p.options]), p.recall, p.analyses or {}, loc,
                    get(rec, "GT", loc).strip())
    if "analyze.json" in names:
        groups: dict[tuple[str, str | None], tuple[Loc, str, dict[str, str]]] = {}
        for loc, rec, p in _parsed(folder, "analyze.json"):
            key = question_key(p.stem, [o.text for o in p.options])
            group = groups.setdefault((key, p.recall), (loc, get(rec, "GT", loc).strip(), {}))
            group[2].setdefault(p.label, rec["analyze"])
        for (key, recall), (loc, gt, analyses) in groups.items():
            have = found.get(key, {})
            if not any(r.recall == recall and analyses.items() <= r.analyses.items() for r in have.values()):
                add(key, recall, analyses, loc, gt)
    if "recall.json" in names:
        for loc, rec, p in _parsed(folder, "recall.json"):
            key = question_key(p.stem, [o.text for o in p.options])
            recall = " ".join(rec["recall"].split())
            if not any(r.recall == recall for r in found.get(key, {}).values()):
                add(key, recall, {}, loc, get(rec, "GT", loc).strip())
    return {key: list(by_ident.values()) for key, by_ident in found.items()}
