"""Each student that ships under demo/models/ loads by name and reproduces its cached validation traces."""

import pytest

from tinythinker.pipeline import read_traces, run_pipeline
from tinythinker.shipped import list_shipped
from tinythinker.students import load_student

SHIPPED = list_shipped()
FIRST = 2  # questions re-run per model: SmolLM2 on CPU takes a few seconds each


def test_two_students_ship_with_the_app():
    roles = {m.role for m in SHIPPED}
    assert {"phase1", "reflected"} <= roles, f"demo/models/ should hold a phase-1 and a reflected student: {SHIPPED}"
    for m in SHIPPED:
        size = (m.folder / "adapter_model.safetensors").stat().st_size
        assert size <= 10_000_000, f"{m.name}: adapter is {size} bytes, over 10 MB"
        assert m.has_traces and m.card_path.is_file()


@pytest.mark.slow
@pytest.mark.parametrize("model", SHIPPED, ids=[m.name for m in SHIPPED])
def test_shipped_adapter_reproduces_its_cached_traces(model):
    cached = read_traces(model.traces_path)[:FIRST]
    student = load_student(model.name).merge_adapter()
    assert student.answer_format == model.answer_format
    fresh = run_pipeline(student, [t.question for t in cached], stage_type=model.stage_type,
                         restrict_answer=model.restrict_answer, batch_size=FIRST)
    for a, b in zip(cached, fresh, strict=True):
        assert (a.recall, a.analyses, a.summary, a.predicted) == (b.recall, b.analyses, b.summary, b.predicted), \
            a.question.id
