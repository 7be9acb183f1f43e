"""The teacher's prompt, laid out as in the paper's notebook (datasets/Prompt Engineering.ipynb).

System turn: the instruction, then k few-shot examples, each between `###` lines:

    {question}
    Options: A. {a}, B. {b}, ...
    Key Information: {key information}
    Explanations: A is incorrect. Because {..}
    B is correct. Because {..}

User turn ("rationalisation": the gold answer's line is opened first, then every other option's):

    {question}
    Options: A. {a}, B. {b}, ...
    Key Information:
    Explanations: B is correct. Because
    A is incorrect. Because
    ...

This is the teacher's own prompt format, not one of the student's stage formats (those live in stages.py).
Prompt text and examples are files under tinythinker/prompts/ so that users can edit them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tinythinker.types import Question

# The paper's notebook: 8 shots for CSQA and StrategyQA, 7 for OBQA (all of its examples each time).
DEFAULT_SHOTS = {"csqa": 8, "obqa": 7, "strategyqa": 8}
FALLBACK_BENCHMARK = "csqa"


@dataclass
class Example:
    question: str
    options: dict[str, str]
    answer: str
    key_information: str
    explanations: dict[str, str]


@dataclass
class PromptSet:
    instruction: str
    examples: list[Example]
    source: str  # the examples file, for messages and the run summary


def prompts_dir() -> Path:
    return Path(str(resources.files("tinythinker") / "prompts"))


def default_examples_path(benchmark: str) -> Path:
    path = prompts_dir() / f"{benchmark}.json"
    return path if path.is_file() else prompts_dir() / f"{FALLBACK_BENCHMARK}.json"


def _example(d: object, where: str) -> Example:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: an example must be a JSON object")
    for key in ("question", "options", "answer", "key_information", "explanations"):
        if key not in d:
            raise ValueError(f"{where}: missing field {key!r}")
    options, explanations = d["options"], d["explanations"]
    if not isinstance(options, dict) or len(options) < 2:
        raise ValueError(f"{where}: field 'options' must map at least two labels to option texts")
    if not isinstance(explanations, dict) or set(explanations) != set(options):
        raise ValueError(
            f"{where}: field 'explanations' must have exactly the labels of 'options' ({', '.join(options)})"
        )
    if d["answer"] not in options:
        raise ValueError(f"{where}: field 'answer' is {d['answer']!r}, not one of {', '.join(options)}")
    for field_name in ("question", "key_information"):
        if not str(d[field_name]).strip():
            raise ValueError(f"{where}: field {field_name!r} is empty")
    empty = [label for label, text in explanations.items() if not str(text).strip()]
    if empty:
        raise ValueError(f"{where}: field 'explanations' has no text for option(s) {', '.join(empty)}")
    return Example(
        question=str(d["question"]).strip(),
        options={str(k): str(v) for k, v in options.items()},
        answer=str(d["answer"]),
        key_information=str(d["key_information"]).strip(),
        explanations={str(k): str(v).strip() for k, v in explanations.items()},
    )


def load_prompts(benchmark: str, examples_path: str | Path | None = None,
                 instruction_path: str | Path | None = None) -> PromptSet:
    """Read the instruction and the few-shot examples; every error names the file and the example."""
    path = Path(examples_path) if examples_path else default_examples_path(benchmark)
    ipath = Path(instruction_path) if instruction_path else prompts_dir() / "instruction.txt"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"teacher examples file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of examples")
    examples = [_example(d, f"{path}: example {i + 1}") for i, d in enumerate(raw)]
    try:
        instruction = ipath.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"teacher instruction file not found: {ipath}") from None
    if not instruction:
        raise ValueError(f"{ipath}: the instruction is empty")
    return PromptSet(instruction=instruction, examples=examples, source=str(path))


def _one_line(text: str) -> str:
    # The reply is parsed line by line, so the prompt must not teach line breaks inside a field.
    return " ".join(str(text).split())


def options_text(options: dict[str, str]) -> str:
    return ", ".join(f"{label}. {_one_line(text)}" for label, text in options.items())


def verdict_line(label: str, correct: bool, because: str = "") -> str:
    verdict = "correct" if correct else "incorrect"
    return f"{label} is {verdict}. Because {because}".rstrip()


def render_example(ex: Example) -> str:
    lines = [verdict_line(label, label == ex.answer, _one_line(ex.explanations[label])) for label in ex.options]
    return (
        f"\n###\n{_one_line(ex.question)}\n"
        f"Options: {options_text(ex.options)}\n"
        f"Key Information: {_one_line(ex.key_information)}\n"
        f"Explanations: " + "\n".join(lines) + "\n###\n"
    )


def system_message(prompts: PromptSet, shots: int) -> str:
    # The notebook draws its shots at random from a file holding exactly that many; taking the first `shots` in
    # file order keeps the prompt, and so the cache key, the same on every run.
    chosen = prompts.examples[: max(1, shots)]
    return (prompts.instruction + "\n" + "".join(render_example(ex) for ex in chosen)).strip()


def user_message(question: Question, answer: str) -> str:
    options = {o.label: o.text for o in question.options}
    if answer not in options:
        raise ValueError(f"question {question.id!r}: answer {answer!r} is not one of its options")
    lines = [verdict_line(answer, True)] + [verdict_line(lab, False) for lab in options if lab != answer]
    return (
        f"{_one_line(question.stem)}\n"
        f"Options: {options_text(options)}\n"
        f"Key Information:\n"
        f"Explanations: " + "\n".join(lines)
    ).strip()


def build_messages(prompts: PromptSet, question: Question, shots: int) -> list[dict[str, str]]:
    if not question.answer:
        raise ValueError(f"question {question.id!r} has no gold answer: the teacher prompt opens the answer's line")
    return [
        {"role": "system", "content": system_message(prompts, shots)},
        {"role": "user", "content": user_message(question, question.answer)},
    ]
