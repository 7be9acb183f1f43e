"""ECQA (Aggarwal et al., 2021) -> one Rationale per CommonsenseQA question.

ECQA gives `positives` (sentences about the correct option), `negatives` (sentences each usually about one
wrong option, but not labelled with it) and a free-flow `explanation`. TinyThinker needs one explanation per
option (Analyze) and a general text (Recall), so:

Analyze, correct option: all positives, joined.
Analyze, wrong options: each negative sentence goes to the wrong option it names, tried in this order:
  1. exact: the option's words appear in the sentence (from a word start, so plurals match); a sentence
     naming several takes the one it names first, since ECQA negatives open with their option;
  2. fuzzy: rapidfuzz partial_ratio >= FUZZY_MIN against the option (typos, inflections: "jewlery box");
  3. position: when there are exactly as many negatives as wrong options, ECQA writers listed them in option
     order, so an unmatched sentence takes the wrong option at its position if that option has none yet;
  4. explanation: a wrong option still without text takes the free-flow explanation's sentences that name it.
  Sentences still unplaced are kept in meta["unmatched_negatives"]; an option with nothing gets no analysis
  (rationale_coverage counts it).
Recall: the paper's Recall is answer-free "key information" about the question (its prompts), so by default
  it is the positives that name no option (general knowledge behind the answer); when a question has none, the
  free-flow explanation stands in so every question can train all three stages (meta["recall_from"] says
  which). `recall_mode="explanation"` always uses the explanation instead. `recall_mode="strict"` never names an
  option: the option-free positives, else the explanation's sentences that name no option, else no recall (66%
  of ECQA's CSQA questions fall back to the explanation in the default mode, and 67% of the recalls then name
  the answer; strict keeps a recall for 48% of the questions, the rest train no staged example).
"""

from __future__ import annotations

import re
from pathlib import Path

from rapidfuzz import fuzz

from tinythinker.data.records import get, read_jsonl
from tinythinker.types import Question, Rationale

ECQA_FILE = "ecqa/ecqa_csqa_train.jsonl"
FUZZY_MIN = 80  # partial_ratio; below ~80 unrelated short options start to match common words
RECALL_MODES = ("option_free", "explanation", "strict")
# Words too common to show that a sentence is about an option.
_STOP = frozenset("""a an the of to in on at for and or is are be being been your you his her their its it with
from by as some something someone somewhere one ones get getting have having do doing make making go going""".split())
_SENT = re.compile(r"(?<=[.!?])\s+")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _norm(text: str) -> str:
    text = text.lower().replace("\u2019", "").replace("'", "")
    return " " + _NON_WORD.sub(" ", text).strip() + " "


def _join(sentences: list[str]) -> str:
    """Sentences as one text; ECQA sentences often lack a final full stop."""
    return " ".join(s if s[-1] in ".!?\"'" else s + "." for s in (" ".join(x.split()) for x in sentences) if s)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(" ".join(text.split())) if s.strip()]


class _Option:
    def __init__(self, text: str):
        self.norm = _norm(text)
        self.core = self.norm.strip()
        self.stems = [w[:5] for w in self.core.split() if len(w) >= 3 and w not in _STOP]

    def exact(self, sent: str) -> int:
        """Where the option starts in a normalised sentence, from a word start; -1 if absent."""
        return sent.find(" " + self.core)

    def fuzzy(self, sent: str) -> float:
        return fuzz.partial_ratio(self.core, sent, score_cutoff=FUZZY_MIN)

    def named_in(self, sent: str) -> bool:
        if self.exact(sent) >= 0 or self.fuzzy(sent):
            return True
        # every content word present (by its first letters): "being slapped" in "can be slapped"
        return bool(self.stems) and all(f" {s}" in sent for s in self.stems)


def place_negatives(opts: list[_Option], answer: int, negatives: list[str], explanation: str
                    ) -> tuple[dict[int, list[str]], dict[int, str], list[str]]:
    """(sentences per wrong option index, how each option was matched, unplaced sentences)."""
    wrong = [i for i in range(len(opts)) if i != answer]
    placed: dict[int, list[str]] = {}
    how: dict[int, str] = {}
    unmatched: list[int] = []

    def put(i: int, sentence: str, method: str) -> None:
        placed.setdefault(i, []).append(sentence)
        how.setdefault(i, method)

    for k, sentence in enumerate(negatives):
        s = _norm(sentence)
        hits = [(opts[i].exact(s), -len(opts[i].core), i) for i in wrong]
        hits = [h for h in hits if h[0] >= 0]
        if hits:
            put(min(hits)[2], sentence, "exact")
            continue
        score, best = max((opts[i].fuzzy(s), i) for i in wrong)
        if score:
            put(best, sentence, "fuzzy")
        else:
            unmatched.append(k)
    if len(negatives) == len(wrong):
        for k in list(unmatched):
            if wrong[k] not in placed:
                put(wrong[k], negatives[k], "position")
                unmatched.remove(k)
    missing = [i for i in wrong if i not in placed]
    if missing:
        for sentence in _sentences(explanation):
            s = _norm(sentence)
            for i in missing:
                if opts[i].named_in(s):
                    put(i, sentence, "explanation")
    return placed, how, [negatives[k] for k in unmatched]


def options_named(option_texts: list[str], text: str) -> list[int]:
    """Indices of the options a text names, by the same matching that builds the option-free recalls
    (`bench/trace_stats.py` asks it of the student's own Recalls)."""
    s = _norm(text)
    return [i for i, o in enumerate(_Option(t) for t in option_texts) if o.named_in(s)]


def option_free(opts: list[_Option], sentences: list[str]) -> list[str]:
    out = []
    for x in sentences:
        s = _norm(x)
        if not any(o.named_in(s) for o in opts):
            out.append(x)
    return out


def ecqa_rationale(q: Question, record: dict, recall_mode: str = "option_free") -> Rationale:
    """One Rationale from one ECQA record whose options are q's options in order."""
    opts = [_Option(o.text) for o in q.options]
    answer = q.labels.index(q.answer)
    positives = [p for p in record["positives"] if p.strip()]
    negatives = [n for n in record["negatives"] if n.strip()]
    explanation = " ".join(record["explanation"].split())
    placed, how, unmatched = place_negatives(opts, answer, negatives, explanation)
    analyses = {q.labels[i]: _join(sents) for i, sents in placed.items()}
    if positives:
        analyses[q.answer] = _join(positives)
        how[answer] = "positives"
    else:
        found = [s for s in _sentences(explanation) if opts[answer].named_in(_norm(s))]
        if found:
            analyses[q.answer] = _join(found)
            how[answer] = "explanation"
    # Only positives: a negative that names no option is still about one wrong option (unplaced ones
    # were placed by position), so it is not general knowledge.
    general = option_free(opts, positives) if recall_mode != "explanation" else []
    if general:
        recall, recall_from = _join(general), "option_free"
    elif recall_mode == "strict":
        sentences = option_free(opts, _sentences(explanation))
        recall, recall_from = (_join(sentences), "explanation_option_free") if sentences else (None, None)
    else:
        recall, recall_from = explanation or None, "explanation"
    meta = {"recall_from": recall_from, "matched": {q.labels[i]: m for i, m in sorted(how.items())},
            "unmatched_negatives": unmatched}
    ordered = {lab: analyses[lab] for lab in q.labels if lab in analyses}
    return Rationale(recall=recall, analyses=ordered, source="ecqa", meta=meta)


def ecqa_rationales(questions: list[Question], path: Path, recall_mode: str = "option_free"
                    ) -> dict[str, list[Rationale]]:
    """Rationales for those of `questions` that ECQA covers (it covers CSQA train only)."""
    if recall_mode not in RECALL_MODES:
        raise ValueError(f"unknown ECQA recall mode {recall_mode!r}; choose one of {', '.join(RECALL_MODES)}")
    by_id = {q.id: q for q in questions}
    out: dict[str, list[Rationale]] = {}
    for loc, rec in read_jsonl(path):
        qid = str(get(rec, "id", loc, (str, int)))
        q = by_id.get(qid)
        if q is None:
            continue  # ECQA covers all of CSQA train; only the asked-for questions are built
        options = get(rec, "options", loc, list)
        if [" ".join(str(t).split()).lower() for t in options] != [" ".join(o.text.split()).lower()
                                                                      for o in q.options]:
            raise loc.error(f"options {options} differ from question {qid}'s "
                            f"{[o.text for o in q.options]}: not the same CommonsenseQA version", field="options")
        answer = get(rec, "answer", loc)
        if q.answer is None or " ".join(answer.split()).lower() != " ".join(q.option_text(q.answer).split()).lower():
            raise loc.error(f"answer {answer!r} is not question {qid}'s answer", field="answer")
        for key in ("positives", "negatives"):
            value = get(rec, key, loc, list)
            if not all(isinstance(s, str) for s in value):
                raise loc.error("expected a list of strings", field=key)
        if not isinstance(rec.get("explanation", ""), str):
            raise loc.error("expected a string", field="explanation")
        rec.setdefault("explanation", "")
        out[qid] = [ecqa_rationale(q, rec, recall_mode)]
    return out
