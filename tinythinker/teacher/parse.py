"""Parse one teacher answer into a recall and one analysis per option, or say why it is unusable.

The rules follow the paper's notebook (`collate_content` / `filter_answer`):
- `Key Information: ...` up to `Explanations:` (or the first verdict line) is the recall; it must not be empty.
- every option is judged on one line, `X is correct. Because ...` / `X is incorrect. Because ...`; the text after
  `Because` (also `Because,`) is that option's analysis; a line with a verdict but no `Because` is not a verdict
  line (the notebook skips it, so its option ends up missing). The notebook also accepts `Although` / `While` in place of
  `Because`; we accept them too but keep the word, since dropping it turns a concession into a claim.
- every option of the question must be judged exactly once, with a non-empty analysis, and exactly one option may
  be `correct` (the notebook keeps the last `correct` line of an answer that names several; such an answer would
  teach the student two contradicting analyses, so we drop it).
- a sentence that does not end in `.`, `"`, `'`, `!` or `?` gets a full stop, as in the notebook.
Lines that are not verdict lines are ignored, and reading stops at a `###` line (a model that goes on to write
another few-shot example). Truncated answers (finish reason `length`) never get here: the caller drops them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REASONS = (
    "no_key_information",
    "empty_key_information",
    "unknown_option",
    "duplicate_option",
    "missing_option",
    "empty_explanation",
    "no_correct_option",
    "several_correct_options",
)

_KEY_RE = re.compile(r"key\s+information\s*:", re.IGNORECASE)
_EXPL_RE = re.compile(r"explanations?\s*:", re.IGNORECASE)
_VERDICT_RE = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?(?:explanations?\s*:\s*)?"  # a bullet, or the `Explanations:` header on the first line
    r"(?:option\s+)?\(?([A-Za-z])\)?\s*[.:]?\s+is\s+(correct|incorrect)\b\s*[.,:;]?\s*"
    r"(?:(because)\b\s*[,:]?|(although|while)\b)\s*(.*)$",  # a verdict without its reason is no verdict line
    re.IGNORECASE,
)
_END_PUNCT = (".", '"', "'", "!", "?")


@dataclass
class ParsedAnswer:
    recall: str
    analyses: dict[str, str]
    verdict: str  # the one option this answer calls correct
    verdicts: dict[str, bool] = field(default_factory=dict)


class ParseError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text.endswith(_END_PUNCT) else text + "."


def _strip_markup(text: str) -> str:
    # Chat models like markdown: `**Key Information:**`, `### Explanations`. Bold marks carry no content.
    return text.replace("**", "").replace("__", "")


def _verdict(line: str) -> re.Match[str] | None:
    return _VERDICT_RE.match(line)


def parse_response(text: str, labels: list[str]) -> ParsedAnswer:
    """Parse a teacher answer for a question with option `labels`; raise ParseError (with `.reason`) if unusable."""
    text = _strip_markup(text or "")
    key = _KEY_RE.search(text)
    if key is None:
        raise ParseError("no_key_information")
    rest = text[key.end():]
    lines = rest.split("\n")

    # The recall: the rest of the Key Information line and any following lines, up to `Explanations:` or the
    # first verdict line.
    recall_parts: list[str] = []
    body_start = len(lines)
    for i, line in enumerate(lines):
        expl = _EXPL_RE.search(line)
        if expl is not None:
            recall_parts.append(line[: expl.start()])
            lines[i] = line[expl.start():]
            body_start = i
            break
        if i > 0 and _verdict(line):
            body_start = i
            break
        recall_parts.append(line)
    recall = _sentence(" ".join(recall_parts))
    if not recall:
        raise ParseError("empty_key_information")

    verdicts: dict[str, bool] = {}
    analyses: dict[str, str] = {}
    for line in lines[body_start:]:
        if line.strip().startswith("###"):
            break
        m = _verdict(line)
        if m is None:
            continue
        label = m.group(1).upper()
        if label not in labels:
            raise ParseError("unknown_option", label)
        if label in verdicts:
            raise ParseError("duplicate_option", label)
        connective = (m.group(4) or "").lower()
        reason = " ".join(m.group(5).split())
        if not reason:
            raise ParseError("empty_explanation", label)
        verdicts[label] = m.group(2).lower() == "correct"
        analyses[label] = _sentence(f"{connective} {reason}" if connective else reason)

    missing = [label for label in labels if label not in verdicts]
    if missing:
        raise ParseError("missing_option", ", ".join(missing))
    correct = [label for label in labels if verdicts[label]]
    if not correct:
        raise ParseError("no_correct_option")
    if len(correct) > 1:
        raise ParseError("several_correct_options", ", ".join(correct))
    return ParsedAnswer(recall=recall, analyses={lab: analyses[lab] for lab in labels}, verdict=correct[0],
                        verdicts=verdicts)
