"""The ONLY module that knows the text formats of Recall / Analyze / Summarize.

Formats follow the paper's released code (shengminp/TinyThinker, scripts/generate.py):

    Recall input     {stem}\n(A) a (B) b ...\nRecall:
    Analyze input    {stem}\n(A) ...\nRecall: {recall}\nAnalyze: For option X,      -> target: explanation of X
    Summarize input  {stem}\n(A) ...\nRecall: {recall}\nAnalyze: For option A, .. For option B, ..\nSummarize:
    Summarize target So the answer is option X.

Two recipe variants of the Summarize target keep the paper's answer regex valid (`ANSWER_FORMATS`):
`letter_text` writes `(X) TEXT. So the answer is option X.`, `text_letter` writes `TEXT. So the answer is option X.`

Stage types drop the stages they do not train: `summarize` (answer only), `recall_summarize`,
`analyze_summarize`, `recall_analyze_summarize` (the full method).

Joining stages: a recall or analysis that goes into a later stage's input ends with a full stop (`joined`), as the
paper's trainer.py does to the generated texts at its staged evaluation (`if not text.endswith(('.', '"', "'")):
text += '.'`). Two choices of ours: "!" and "?" also count as an ending (the paper would write "?."), and an empty
text stays empty. It applies wherever a text is joined, teacher's or the student's own, so that phase 1 trains on
inputs of the form the pipeline then writes (the paper's teacher texts already end in a full stop: its notebook adds
one). `join="raw"` on the input renderers joins the texts as they are, this project's behaviour before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tinythinker.types import Option, Question

RECALL, ANALYZE, SUMMARIZE = "recall", "analyze", "summarize"
STAGES = (RECALL, ANALYZE, SUMMARIZE)
STAGE_TYPES: dict[str, tuple[str, ...]] = {
    "summarize": (SUMMARIZE,),
    "recall_summarize": (RECALL, SUMMARIZE),
    "analyze_summarize": (ANALYZE, SUMMARIZE),
    "recall_analyze_summarize": (RECALL, ANALYZE, SUMMARIZE),
}
DEFAULT_STAGE_TYPE = "recall_analyze_summarize"

# The paper's answer regex, verbatim.
ANSWER_RE = re.compile(r"the answer is option ([A-Z])\.")
# An uncased tokenizer (the MiniLM bert2bert student) can only write `option a`: its text has no capitals at all.
_UNCASED_ANSWER_RE = re.compile(r"the answer is option ([a-z]) ?\.")
_OPTION_RE = re.compile(r"\(([A-Z])\) ")
_ANALYSIS_RE = re.compile(r"For option ([A-Z]), (.*?)(?= For option [A-Z], |$)", re.DOTALL)


def stages_of(stage_type: str) -> tuple[str, ...]:
    try:
        return STAGE_TYPES[stage_type]
    except KeyError:
        raise ValueError(
            f"unknown stage type {stage_type!r}; choose one of {', '.join(STAGE_TYPES)}"
        ) from None


def uses(stage_type: str, stage: str) -> bool:
    return stage in stages_of(stage_type)


def _clean(text: str) -> str:
    # Newlines inside a stage's text would break the line structure that parsing relies on.
    return " ".join(text.split())


# How a recall / analysis is joined into the next stage's input: "period" (the paper's; the default) or "raw".
JOIN_MODES = ("period", "raw")
DEFAULT_JOIN = "period"
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'")


def joined(text: str, join: str = DEFAULT_JOIN) -> str:
    """`text` as it goes into a later stage's input: whitespace collapsed and, with join "period", a full stop
    added unless it already ends in terminal punctuation (TERMINAL_PUNCTUATION) or is empty."""
    if join not in JOIN_MODES:
        raise ValueError(f"unknown join mode {join!r}; choose one of {', '.join(JOIN_MODES)}")
    text = _clean(text)
    if join == "raw" or not text or text.endswith(TERMINAL_PUNCTUATION):
        return text
    return text + "."


def options_line(options: list[Option]) -> str:
    return " ".join(f"({o.label}) {_clean(o.text)}" for o in options)


def question_block(q: Question) -> str:
    return f"{_clean(q.stem)}\n{options_line(q.options)}"


def recall_input(q: Question) -> str:
    return f"{question_block(q)}\nRecall:"


def _context(q: Question, recall: str | None, stage_type: str, join: str) -> str:
    block = question_block(q)
    if uses(stage_type, RECALL):
        if recall is None:
            raise ValueError(f"stage type {stage_type!r} needs a recall text for question {q.id!r}")
        block += f"\nRecall: {joined(recall, join)}"
    return block


def analyze_prefix(label: str) -> str:
    return f"For option {label},"


def analyze_input(q: Question, recall: str | None, label: str,
                  stage_type: str = DEFAULT_STAGE_TYPE, join: str = DEFAULT_JOIN) -> str:
    if not uses(stage_type, ANALYZE):
        raise ValueError(f"stage type {stage_type!r} has no Analyze stage")
    return f"{_context(q, recall, stage_type, join)}\nAnalyze: {analyze_prefix(label)}"


def analyses_text(labels: list[str], analyses: dict[str, str], join: str = DEFAULT_JOIN) -> str:
    return " ".join(f"{analyze_prefix(lab)} {joined(analyses.get(lab, ''), join)}".rstrip() for lab in labels)


def summarize_input(q: Question, recall: str | None = None, analyses: dict[str, str] | None = None,
                    stage_type: str = DEFAULT_STAGE_TYPE, join: str = DEFAULT_JOIN) -> str:
    text = _context(q, recall, stage_type, join)
    if uses(stage_type, ANALYZE):
        if analyses is None:
            raise ValueError(f"stage type {stage_type!r} needs analyses for question {q.id!r}")
        text += f"\nAnalyze: {analyses_text(q.labels, analyses, join)}"
    return f"{text}\nSummarize:"


# "letter": the paper's; "letter_text": the option's words after its letter; "text_letter": the words first, so the
# model commits to an option by writing its words (where a pretrained model's knowledge lives) before the letter.
ANSWER_FORMATS = ("letter", "letter_text", "text_letter")


def summarize_target(label: str, option_text: str | None = None, answer_format: str | None = None) -> str:
    """`So the answer is option X.` (the paper). With option_text, `(X) TEXT. So the answer is option X.`
    (answer_format "letter_text", the default when option_text is given) or `TEXT. So the answer is option X.`
    ("text_letter")."""
    if answer_format is None:
        answer_format = "letter" if option_text is None else "letter_text"
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")
    if answer_format == "letter":
        return f"So the answer is option {label}."
    if option_text is None:
        raise ValueError(f"answer format {answer_format!r} needs the option's text")
    if answer_format == "letter_text":
        return f"({label}) {_clean(option_text)}. So the answer is option {label}."
    return f"{_clean(option_text)}. So the answer is option {label}."


# How Summarize writes its answer at inference (the pipeline's `restrict_answer`): free generation (the paper),
# decoding constrained to `answer_choices`, or the choice with the best mean log-likelihood.
ANSWER_MODES = ("free", "constrain", "score")


def answer_mode(restrict_answer: bool | str) -> str:
    """The Summarize answer mode for a `restrict_answer` value: a bool (True = "constrain") or a mode's name."""
    if isinstance(restrict_answer, bool):
        return "constrain" if restrict_answer else "free"
    if restrict_answer not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {restrict_answer!r}; choose one of {', '.join(ANSWER_MODES)}")
    return restrict_answer


def answer_choices(q: Question, formats: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Every valid Summarize text for `q` in the given answer formats (default: all of them): what restricted
    decoding may write. A student trained on one format is scored on that format alone."""
    for fmt in formats or ():
        if fmt not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {fmt!r}; choose one of {', '.join(ANSWER_FORMATS)}")
    return [summarize_target(lab, q.option_text(lab), fmt) for fmt in (formats or ANSWER_FORMATS)
            for lab in q.labels]


def parse_answer(text: str, valid_labels: list[str] | None = None) -> str | None:
    """The predicted letter, or None (an invalid answer) when the regex misses or names no listed option."""
    text = text or ""
    m = ANSWER_RE.search(text)
    if not m and text == text.lower():
        m = _UNCASED_ANSWER_RE.search(text)
    if not m:
        return None
    label = m.group(1).upper()
    if valid_labels is not None and label not in valid_labels:
        return None
    return label


@dataclass
class ParsedInput:
    stem: str
    options: list[Option]
    recall: str | None
    analyses: dict[str, str] | None
    stage: str
    label: str | None = None  # the option an Analyze input asks about


def parse_input(text: str) -> ParsedInput:
    """Inverse of the *_input renderers: read any stage input back into its parts."""
    lines = text.split("\n")
    if len(lines) < 3:
        raise ValueError(f"not a stage input (needs stem, options and a stage line): {text[:80]!r}")
    stem, opt_line, rest = lines[0], lines[1], lines[2:]
    marks = list(_OPTION_RE.finditer(opt_line))
    if not marks:
        raise ValueError(f"no '(A) ...' options in line {opt_line[:80]!r}")
    options = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(opt_line)
        options.append(Option(m.group(1), opt_line[m.end():end].rstrip()))
    recall = None
    analyses = None
    if rest and rest[0].startswith("Recall:"):
        if len(rest) == 1:
            return ParsedInput(stem, options, None, None, RECALL)
        recall = rest[0][len("Recall: "):]
        rest = rest[1:]
    if rest and rest[0].startswith("Analyze: "):
        body = rest[0][len("Analyze: "):]
        if len(rest) == 1:  # an Analyze input ends with the open prefix "For option X,"
            m = re.fullmatch(r"For option ([A-Z]),", body)
            if not m:
                raise ValueError(f"malformed Analyze input line {body[:80]!r}")
            return ParsedInput(stem, options, recall, None, ANALYZE, m.group(1))
        analyses = {m.group(1): m.group(2).strip() for m in _ANALYSIS_RE.finditer(body)}
        rest = rest[1:]
    if rest == ["Summarize:"]:
        return ParsedInput(stem, options, recall, analyses, SUMMARIZE)
    raise ValueError(f"stage input does not end with a known stage line: {text[-80:]!r}")
