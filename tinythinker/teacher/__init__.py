"""The LLM teacher: rationales from an OpenAI-compatible chat API, as in the paper's notebook.

`run_teacher(questions, TeacherConfig(...), out)` writes `out/rationales.jsonl`; `load_teacher_rationales(out)` reads
it back as `{question_id: [Rationale]}` for phase 1 (tinythinker.data uses it as a rationale source).
"""

from tinythinker.teacher.client import TeacherClient, TeacherRequestError
from tinythinker.teacher.parse import ParsedAnswer, ParseError, parse_response
from tinythinker.teacher.prompt import PromptSet, build_messages, load_prompts
from tinythinker.teacher.run import (
    DEFAULT_SAMPLES,
    TeacherConfig,
    format_summary,
    load_teacher_output,
    load_teacher_rationales,
    run_teacher,
    teach_question,
)
from tinythinker.teacher.select import label_in_force, majority_verdict, select_diverse

__all__ = [
    "DEFAULT_SAMPLES",
    "ParseError",
    "ParsedAnswer",
    "PromptSet",
    "TeacherClient",
    "TeacherConfig",
    "TeacherRequestError",
    "build_messages",
    "format_summary",
    "label_in_force",
    "load_prompts",
    "load_teacher_output",
    "load_teacher_rationales",
    "majority_verdict",
    "parse_response",
    "run_teacher",
    "select_diverse",
    "teach_question",
]
