"""Parsing rules of teacher answers, on answers in the format real chat models return (tests/fixtures/teacher/)."""

import json
from pathlib import Path

import pytest

from tinythinker.teacher.parse import ParseError, parse_response
from tinythinker.teacher.prompt import build_messages, load_prompts, prompts_dir
from tinythinker.types import Option, Question

FIXTURES = Path(__file__).parent / "fixtures" / "teacher"
ABCDE = list("ABCDE")

GOOD = """Key Information: A tool or material made to soak up ink is what stops a fountain pen from smudging.
Explanations: E is correct. Because a blotter is porous paper designed to absorb excess ink.
A is incorrect. Because a shirt pocket only gets stained by accident.
B is incorrect. Because a calligrapher's hand is not meant to absorb ink.
C is incorrect. Because an inkwell stores ink rather than absorbing it.
D is incorrect. Because a desk drawer is for storage"""


def test_good_answer_gives_recall_and_one_analysis_per_option():
    p = parse_response(GOOD, ABCDE)
    assert p.recall == "A tool or material made to soak up ink is what stops a fountain pen from smudging."
    assert p.verdict == "E"
    assert list(p.analyses) == ABCDE  # in option order, whatever order the teacher judged them in
    assert p.analyses["E"] == "a blotter is porous paper designed to absorb excess ink."
    assert p.analyses["D"] == "a desk drawer is for storage."  # the notebook's full stop
    assert p.verdicts == {"E": True, "A": False, "B": False, "C": False, "D": False}


def test_markdown_headers_new_lines_and_because_comma_are_accepted():
    text = (
        "**Key Information:** Hamsters are prey animals.\n\n**Explanations:**\n"
        "A is correct. Because, hamsters are eaten by owls and snakes.\n"
        "B is incorrect. Because hamsters are part of many food chains.\n"
    )
    p = parse_response(text, ["A", "B"])
    assert p.recall == "Hamsters are prey animals."
    assert p.analyses == {"A": "hamsters are eaten by owls and snakes.", "B": "hamsters are part of many food chains."}


def test_although_and_while_keep_their_connective():
    text = ("Key Information: Bread rises from gas.\nExplanations: A is incorrect. Although salt matters, it makes no gas.\n"
            "B is correct. Because yeast makes carbon dioxide.\nC is incorrect. While an oven bakes, it is not added.")
    p = parse_response(text, ["A", "B", "C"])
    assert p.analyses["A"] == "although salt matters, it makes no gas."
    assert p.analyses["C"] == "while an oven bakes, it is not added."


def test_reading_stops_at_a_new_example_and_ignores_chatter():
    text = ("Sure! Here is the analysis.\nKey Information: Pears float.\nExplanations: A is incorrect. Because pears "
            "are less dense than water.\nB is correct. Because air in the fruit keeps it afloat.\nI hope this helps.\n"
            "###\nIs the sky green?\nKey Information: no.\nExplanations: A is correct. Because x\nB is correct. Because y")
    p = parse_response(text, ["A", "B"])
    assert p.verdict == "B"
    assert p.analyses["B"] == "air in the fruit keeps it afloat."


def test_key_information_and_explanations_on_one_line():
    p = parse_response("Key Information: Mars is far. Explanations: A is correct. Because its orbit is longer. "
                       "\nB is incorrect. Because it is not shorter.", ["A", "B"])
    assert p.recall == "Mars is far."
    assert p.verdict == "A"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("E is correct. Because blotters absorb ink.", "no_key_information"),
        ("Key Information:\nExplanations: E is correct. Because\nA is incorrect. Because", "empty_key_information"),
        (GOOD.replace("D is incorrect.", "F is incorrect."), "unknown_option"),
        (GOOD + "\nA is correct. Because it is a pocket.", "duplicate_option"),
        ("\n".join(GOOD.splitlines()[:-1]), "missing_option"),
        (GOOD.replace("D is incorrect. Because a desk drawer is for storage", "D is incorrect. Because"),
         "empty_explanation"),
        (GOOD.replace("E is correct.", "E is incorrect."), "no_correct_option"),
        (GOOD.replace("A is incorrect.", "A is correct."), "several_correct_options"),
        ("", "no_key_information"),
    ],
)
def test_malformed_answers_are_rejected_with_their_reason(text, reason):
    with pytest.raises(ParseError) as e:
        parse_response(text, ABCDE)
    assert e.value.reason == reason


def _outcome(text, labels):
    try:
        parse_response(text, labels)
        return "valid"
    except ParseError as e:
        return e.reason


def test_recorded_answers_of_a_real_small_model_are_filtered_by_rule():
    recorded = json.loads((FIXTURES / "smollm2_answers.json").read_text())["answers"]
    assert len(recorded) >= 12
    assert [
        "length" if a["finish_reason"] == "length" else _outcome(a["content"], a["labels"]) for a in recorded
    ] == [a["expected"] for a in recorded]
    # The same verdict lines behind a Key Information line: the per-option rules catch what is wrong with them.
    assert [_outcome("Key Information: k.\nExplanations: " + a["content"], a["labels"]) for a in recorded] == [
        a["expected_with_key_information"] for a in recorded
    ]


def test_a_verdict_without_because_is_not_a_verdict_line():
    text = "Key Information: k.\nA is incorrect. Because a.\nB is correct and A is incorrect, because b."
    with pytest.raises(ParseError, match="missing_option: B"):
        parse_response(text, ["A", "B"])


def test_prompt_opens_the_gold_line_first_and_renders_every_shot():
    q = Question("q1", "What absorbs ink?", [Option(lab, t) for lab, t in zip("ABC", ["pocket", "blotter", "well"], strict=True)], "B")
    prompts = load_prompts("csqa")
    system, user = build_messages(prompts, q, shots=3)
    assert user["content"].splitlines() == [
        "What absorbs ink?",
        "Options: A. pocket, B. blotter, C. well",
        "Key Information:",
        "Explanations: B is correct. Because",
        "A is incorrect. Because",
        "C is incorrect. Because",
    ]
    assert system["content"].splitlines().count("###") == 6  # three shots, each between ### lines
    assert system["content"].startswith(prompts.instruction)


def test_every_shipped_example_file_loads_and_parses_as_a_valid_answer():
    for path in sorted(prompts_dir().glob("*.json")):
        prompts = load_prompts(path.stem)
        assert len(prompts.examples) >= 7, path
        for ex in prompts.examples:
            lines = [f"{lab} is {'correct' if lab == ex.answer else 'incorrect'}. Because {ex.explanations[lab]}"
                     for lab in ex.options]
            text = f"Key Information: {ex.key_information}\nExplanations: " + "\n".join(lines)
            assert parse_response(text, list(ex.options)).verdict == ex.answer


def test_bad_examples_file_names_file_example_and_field(tmp_path):
    bad = tmp_path / "mine.json"
    bad.write_text(json.dumps([{"question": "q", "options": {"A": "x", "B": "y"}, "answer": "C",
                                "key_information": "k", "explanations": {"A": "a", "B": "b"}}]))
    with pytest.raises(ValueError, match=r"mine\.json: example 1: field 'answer'"):
        load_prompts("csqa", bad)
    bad.write_text("[{")
    with pytest.raises(ValueError, match=r"mine\.json: not valid JSON \(line 1\)"):
        load_prompts("csqa", bad)
