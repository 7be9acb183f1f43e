import pytest

from tinythinker import stages
from tinythinker.types import Option, Question


@pytest.fixture
def q():
    return Question("q1", "Where do  you keep\nmilk?", [Option("A", "fridge"), Option("B", "oven"), Option("C", "car")], "A")


def test_recall_input_exact_format(q):
    assert stages.recall_input(q) == "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall:"


def test_analyze_input_exact_format(q):
    assert stages.analyze_input(q, "Milk spoils when warm.", "B") == (
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall: Milk spoils when warm.\nAnalyze: For option B,"
    )
    assert stages.analyze_input(q, None, "C", "analyze_summarize").endswith(
        "(C) car\nAnalyze: For option C,"
    )


def test_summarize_input_exact_format(q):
    text = stages.summarize_input(q, "R.", {"A": "cold.", "B": "hot.", "C": "moves."})
    assert text == (
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall: R.\n"
        "Analyze: For option A, cold. For option B, hot. For option C, moves.\nSummarize:"
    )
    assert stages.summarize_input(q, stage_type="summarize") == (
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nSummarize:"
    )


@pytest.mark.parametrize("stage_type", list(stages.STAGE_TYPES))
def test_round_trip_every_stage_type(q, stage_type):
    recall = "Milk is kept cold." if stages.uses(stage_type, "recall") else None
    analyses = {"A": "a fridge is cold.", "B": "an oven is hot.", "C": "a car is not for food."}
    analyses = analyses if stages.uses(stage_type, "analyze") else None
    parsed = stages.parse_input(stages.summarize_input(q, recall, analyses, stage_type))
    assert parsed.stage == "summarize"
    assert parsed.stem == "Where do you keep milk?"
    assert [(o.label, o.text) for o in parsed.options] == [("A", "fridge"), ("B", "oven"), ("C", "car")]
    assert parsed.recall == recall
    assert parsed.analyses == analyses
    if stages.uses(stage_type, "analyze"):
        p = stages.parse_input(stages.analyze_input(q, recall, "C", stage_type))
        assert (p.stage, p.label, p.recall) == ("analyze", "C", recall)
    if stages.uses(stage_type, "recall"):
        assert stages.parse_input(stages.recall_input(q)).stage == "recall"


def test_answer_regex():
    assert stages.parse_answer("So the answer is option C.") == "C"
    assert stages.parse_answer(stages.summarize_target("B", "oven")) == "B"
    assert stages.parse_answer("So the answer is option C") is None
    assert stages.parse_answer("So the answer is option E.", ["A", "B", "C"]) is None


def test_unknown_stage_type_is_a_clear_error(q):
    with pytest.raises(ValueError, match="unknown stage type 'recall_only'"):
        stages.stages_of("recall_only")
    with pytest.raises(ValueError, match="needs a recall"):
        stages.summarize_input(q, None, {}, "recall_analyze_summarize")


def test_parse_rejects_garbage():
    with pytest.raises(ValueError):
        stages.parse_input("just one line")


def test_answer_formats_all_parse_to_their_letter():
    q = Question("q", "Where?", [Option("A", "oven"), Option("B", "the  park")], "B", "test")
    assert stages.summarize_target("B", "the  park", "text_letter") == "the park. So the answer is option B."
    assert stages.summarize_target("B", "park", "letter") == "So the answer is option B."
    assert stages.summarize_target("B", "park") == "(B) park. So the answer is option B."
    choices = stages.answer_choices(q)
    assert len(choices) == len(stages.ANSWER_FORMATS) * 2 == len(set(choices))
    assert [stages.parse_answer(c, q.labels) for c in choices] == ["A", "B"] * len(stages.ANSWER_FORMATS)
    with pytest.raises(ValueError, match="unknown answer format 'text'"):
        stages.summarize_target("A", "oven", "text")
    with pytest.raises(ValueError, match="needs the option's text"):
        stages.summarize_target("A", None, "text_letter")


# --- joining stages (issue 13, item 4) ----------------------------------------------------------------------------

def test_a_recall_or_analysis_without_an_ending_gets_a_full_stop(q):
    assert stages.analyze_input(q, "Milk spoils  when warm", "B") == (
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall: Milk spoils when warm.\nAnalyze: For option B,"
    )
    assert stages.summarize_input(q, "R", {"A": "cold", "B": "is it hot?", "C": 'it "moves"'}) == (
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall: R.\n"
        'Analyze: For option A, cold. For option B, is it hot? For option C, it "moves"\nSummarize:'
    )
    # The paper's endings, plus "!" and "?"; an empty text stays empty.
    assert [stages.joined(t) for t in ["a.", "a!", "a?", 'a "b"', "a 'b'", "a", "", "  a \n b  "]] == [
        "a.", "a!", "a?", 'a "b"', "a 'b'", "a.", "", "a b."]
    assert stages.summarize_input(q, "R", {"A": "", "B": "b", "C": "c"}).endswith(
        "Analyze: For option A, For option B, b. For option C, c.\nSummarize:")


def test_join_raw_keeps_the_old_behaviour(q):
    assert stages.analyze_input(q, "Milk spoils when warm", "B", join="raw").endswith(
        "Recall: Milk spoils when warm\nAnalyze: For option B,")
    assert stages.summarize_input(q, "R", {"A": "cold", "B": "hot", "C": "moves"}, join="raw").endswith(
        "Recall: R\nAnalyze: For option A, cold For option B, hot For option C, moves\nSummarize:")
    with pytest.raises(ValueError, match="unknown join mode 'comma'"):
        stages.joined("x", "comma")


class _ScriptedStudent:
    """Writes fixed texts per stage and records every input it is given (the pipeline's next-stage inputs)."""

    name = "scripted"

    def __init__(self):
        self.inputs = []

    def generate_shared(self, groups, **kw):  # the pipeline's Analyze call: one group of inputs per question
        flat = self.generate([x for g in groups for x in g], **kw)
        out, k = [], 0
        for g in groups:
            out.append(flat[k:k + len(g)])
            k += len(g)
        return out

    def generate(self, inputs, **kw):
        self.inputs += inputs
        out = []
        for text in inputs:
            if text.endswith("Recall:"):
                out.append("milk is kept  cold")
            elif text.endswith("Summarize:"):
                out.append("So the answer is option A.")
            else:
                out.append("it is " + text[-2])  # "For option X," -> "it is X", no full stop
        return out


def test_the_pipeline_joins_generated_texts_with_a_full_stop(q):
    from tinythinker.pipeline import run_pipeline

    student = _ScriptedStudent()
    [trace] = run_pipeline(student, [q])
    assert trace.recall == "milk is kept  cold" and trace.predicted == "A"  # the trace keeps what was written
    block = "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall: milk is kept cold."
    assert student.inputs == [
        "Where do you keep milk?\n(A) fridge (B) oven (C) car\nRecall:",
        f"{block}\nAnalyze: For option A,", f"{block}\nAnalyze: For option B,", f"{block}\nAnalyze: For option C,",
        f"{block}\nAnalyze: For option A, it is A. For option B, it is B. For option C, it is C.\nSummarize:",
    ]


def test_the_answer_regexes_are_pinned():
    # The paper's regex verbatim, and the uncased variant an uncased tokenizer (bert2bert) needs.
    assert stages.ANSWER_RE.pattern == r"the answer is option ([A-Z])\."
    assert stages._UNCASED_ANSWER_RE.pattern == r"the answer is option ([a-z]) ?\."
    assert stages.parse_answer("so the answer is option b .") == "B"
    assert stages.parse_answer("so the answer is option b.") == "B"
    assert stages.parse_answer("So the answer is option b.") is None  # cased text: only the paper's regex
