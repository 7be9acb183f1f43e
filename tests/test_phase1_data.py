"""Stage datasets from (Question, [Rationale]): formats from stages.py, all rationales, dedup, clear errors."""

import pytest

from tinythinker import stages
from tinythinker.phase1 import Phase1Config, build_stage_data
from tinythinker.types import Option, Question, Rationale


def q(i="q1", answer="B"):
    return Question(i, f"Where is thing {i}?", [Option("A", "home"), Option("B", "park"), Option("C", "shop")],
                    answer, "test")


def full(recall="Things are in parks.", tag=""):
    return Rationale(recall, {"A": f"home is wrong{tag}.", "B": f"park is right{tag}.", "C": f"shop is wrong{tag}."})


def test_full_method_uses_every_rationale_and_formats_from_stages():
    question = q()
    r1, r2 = full(), full("Parks hold things.", tag=" too")
    data = build_stage_data([(question, [r1, r2])], "recall_analyze_summarize")
    assert data.sizes() == {"recall": 2, "analyze": 6, "summarize": 2}
    assert data.n_options == 3
    assert data.examples["recall"][0] == (stages.recall_input(question), r1.recall)
    assert (stages.analyze_input(question, r2.recall, "C"), "shop is wrong too.") in data.examples["analyze"]
    inp, target = data.examples["summarize"][1]
    assert inp == stages.summarize_input(question, r2.recall, r2.analyses)
    assert target == "So the answer is option B."
    assert stages.parse_answer(target) == "B"


def test_duplicates_dropped_by_input_and_target():
    question = q()
    # Same recall twice, different analyses: recall deduplicates, analyze keeps both versions of each option.
    data = build_stage_data([(question, [full(), full(), full(tag=" 2")])], "recall_analyze_summarize")
    assert data.sizes() == {"recall": 1, "analyze": 6, "summarize": 2}
    assert data.dropped_duplicates == {"recall": 2, "analyze": 3, "summarize": 1}


def test_answer_only_keeps_one_example_per_question():
    data = build_stage_data([(q(), [full(), full("Other.")]), (q("q2", "A"), [])], "summarize")
    assert data.sizes() == {"summarize": 2}
    assert data.examples["summarize"][1] == (stages.summarize_input(q("q2"), stage_type="summarize"),
                                             "So the answer is option A.")


def test_letter_text_answer_format():
    data = build_stage_data([(q(), [full()])], "summarize", answer_format="letter_text")
    target = data.examples["summarize"][0][1]
    assert target == stages.summarize_target("B", "park")
    assert stages.parse_answer(target) == "B"


def test_partial_stage_types_build_only_their_stages():
    question = q()
    rs = build_stage_data([(question, [full()])], "recall_summarize")
    assert set(rs.examples) == {"recall", "summarize"}
    assert rs.examples["summarize"][0][0] == stages.summarize_input(question, full().recall, None, "recall_summarize")
    az = build_stage_data([(question, [Rationale(None, full().analyses)])], "analyze_summarize")
    assert set(az.examples) == {"analyze", "summarize"}
    assert "Recall:" not in az.examples["analyze"][0][0]


def test_incomplete_rationales_are_skipped_per_stage_and_counted():
    question = q()
    partial = Rationale("Recall only.", {"A": "home is wrong."})
    data = build_stage_data([(question, [full(), partial])], "recall_analyze_summarize")
    assert data.sizes() == {"recall": 2, "analyze": 4, "summarize": 1}
    assert data.skipped == {"recall": 0, "analyze": 2, "summarize": 1}


def test_source_without_analyses_is_a_clear_error():
    recall_only = [(q(), [Rationale("A fact.", {})])]
    with pytest.raises(ValueError, match="trains Analyze, but obqa rationales has no per-option analyses"):
        build_stage_data(recall_only, "recall_analyze_summarize", source_name="obqa rationales")
    assert build_stage_data(recall_only, "recall_summarize").sizes() == {"recall": 1, "summarize": 1}
    with pytest.raises(ValueError, match="trains Recall, but .* has no recall texts"):
        build_stage_data([(q(), [Rationale(None, full().analyses)])], "recall_summarize")


def test_question_without_answer_is_an_error():
    with pytest.raises(ValueError, match="'q9' has no answer key"):
        build_stage_data([(q("q9", None), [full()])], "summarize")


@pytest.mark.parametrize("field,value,message", [
    ("stage_type", "think_hard", "unknown stage type 'think_hard'"),
    ("answer_format", "words", "unknown answer format"),
    ("order", "random", "unknown order"),
    ("interval", 0, "interval must be at least 1"),
])
def test_config_check(field, value, message):
    with pytest.raises(ValueError, match=message):
        Phase1Config(**{field: value}).check()


def own_trace(question, recall="People are in parks.", analyses=None):
    from tinythinker.types import Trace

    analyses = {"A": "home is odd.", "B": "park fits.", "C": "shop is odd."} if analyses is None else analyses
    return Trace(question, recall, analyses, "So the answer is option A.", "A", False)


def test_own_context_adds_summarize_examples_with_the_gold_answer():
    question = q()
    own = [own_trace(question), own_trace(q("q2", "A"), analyses={"A": "only one."})]
    data = build_stage_data([(question, [full()])], "recall_analyze_summarize", own_context=own)
    assert data.sizes() == {"recall": 1, "analyze": 3, "summarize": 2}
    inp, target = data.examples["summarize"][1]
    # The student's own (wrong-answer) context, but the gold answer as the target.
    assert inp == stages.summarize_input(question, "People are in parks.", own[0].analyses)
    assert target == "So the answer is option B."
    assert data.skipped["summarize"] == 1  # q2's trace lacks analyses for B and C


def test_train_stages_and_own_context_config(tmp_path):
    from tinythinker.phase1 import load_own_context, only_stages
    from tinythinker.pipeline import write_traces

    cfg = Phase1Config(stage_type="recall_analyze_summarize", train_stages="summarize, recall")
    assert cfg.trained_stages() == ["recall", "summarize"]
    with pytest.raises(ValueError, match="has the stages recall, analyze, summarize, not judge"):
        Phase1Config(train_stages="judge").check()
    with pytest.raises(ValueError, match="trains no Summarize"):
        Phase1Config(train_stages="recall", own_context="x.jsonl").check()
    with pytest.raises(ValueError, match="bare question"):
        Phase1Config(stage_type="summarize", own_context="x.jsonl").check()
    data = build_stage_data([(q(), [full()])], "recall_analyze_summarize")
    assert only_stages(data, ["summarize"]).sizes() == {"summarize": 1}
    traces = tmp_path / "own.jsonl"
    write_traces(traces, [own_trace(q("t1")), own_trace(q("v1"))])
    with pytest.raises(ValueError, match=r"own.jsonl, trace 2: question 'v1' is a validation question"):
        load_own_context(traces, [q("v1")])
    assert [t.question.id for t in load_own_context(traces, [q("v9")])] == ["t1", "v1"]
    with pytest.raises(Exception, match="own context: .*does not exist"):
        load_own_context(tmp_path / "missing.jsonl", [])
