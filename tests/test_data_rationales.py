"""Rationale sources: ECQA matching, OBQA fact1, StrategyQA facts, CoS-E, inline, the paper's format, teach
folders, and coverage."""

import json

import pytest

from tinythinker import stages
from tinythinker.data import (
    DataError,
    MissingDataError,
    load_examples,
    load_questions,
    load_rationales,
    rationale_coverage,
)
from tinythinker.data.ecqa import _Option, ecqa_rationale, place_negatives
from tinythinker.types import Option, Question, Rationale


@pytest.fixture(scope="module")
def csqa_val(data_dir):
    return load_examples("csqa", "validation", data_dir=data_dir, limit=300)


def test_ecqa_on_csqa(csqa_val):
    cov = rationale_coverage(csqa_val)
    assert cov["questions"] == 300 and cov["options"] == 1500
    assert cov["options_with_analysis"] > 0.95 and cov["questions_with_recall"] > 0.95
    for q, rats in csqa_val:
        for r in rats:
            assert r.source == "ecqa" and set(r.analyses) <= set(q.labels) and q.answer in r.analyses
            assert r.meta["recall_from"] in ("option_free", "explanation") and r.recall


def test_ecqa_first_record(data_dir):
    [q] = [q for q in load_questions("csqa", "train", data_dir=data_dir)
           if q.id == "d5d4022dd1196d5986d8fc41eccc3433"]
    [r] = load_rationales("csqa", [q], data_dir=data_dir)[q.id]
    # positives -> the correct option (A, "bloody mess"); each negative -> the option it names
    assert r.analyses["A"].startswith("Bloody mess is covered or stained with blood.")
    assert r.analyses["B"].startswith("Pleasure is a feeling")
    assert r.analyses["C"].startswith("Being imprisoned")
    assert r.analyses["E"].startswith("Cake is baseless")
    assert r.meta["matched"]["B"] == "exact" and r.meta["unmatched_negatives"] == []


def opts(*texts):
    return [_Option(t) for t in texts]


def test_negatives_exact_fuzzy_position_and_explanation():
    options = opts("bedroom", "jewelry box", "roses", "dimly lit room", "synagogue")
    negatives = [
        "A jewlery box is for rings.",  # fuzzy (typo)
        "Roses and a dimly lit room are not where candles go.",  # exact, names two: the first wins
        "Nobody prays by candlelight there.",  # unmatched; 3 negatives for 4 wrong options: no position
    ]
    placed, how, unmatched = place_negatives(options, 0, negatives, "A synagogue is a place of worship.")
    assert placed[1] == [negatives[0]] and how[1] == "fuzzy"
    assert placed[2] == [negatives[1]] and how[2] == "exact"
    assert placed[4] == ["A synagogue is a place of worship."] and how[4] == "explanation"
    assert 3 not in placed and unmatched == [negatives[2]]

    four = negatives[:2] + ["Nobody prays by candlelight there.", "Nothing here names it."]
    placed, how, unmatched = place_negatives(options, 0, four, "")
    # as many negatives as wrong options: unmatched ones take the wrong option at their position if free
    assert placed[3] == ["Nobody prays by candlelight there."] and how[3] == "position"
    assert placed[4] == ["Nothing here names it."] and unmatched == []


def test_longer_option_wins_a_tie():
    placed, how, _ = place_negatives(opts("store", "jewelry", "jewelry box"), 0, ["Jewelry boxes are small."], "")
    assert list(placed) == [2]


def make_q(texts=("bloody mess", "pleasure", "cake"), answer="A"):
    return Question("e1", "What might a person see?", [Option(lab, t) for lab, t in zip("ABC", texts, strict=True)],
                    answer)


def test_ecqa_recall_option_free_positive_or_explanation():
    rec = {"positives": ["Bloody mess is covered in blood", "Brutal killings leave blood everywhere."],
           "negatives": ["Pleasure is not felt there.", "Cake is not at a crime scene."],
           "explanation": "A bloody mess is seen.  Not cake."}
    r = ecqa_rationale(make_q(), rec)
    assert r.recall == "Brutal killings leave blood everywhere." and r.meta["recall_from"] == "option_free"
    assert r.analyses == {"A": "Bloody mess is covered in blood. Brutal killings leave blood everywhere.",
                          "B": "Pleasure is not felt there.", "C": "Cake is not at a crime scene."}
    rec["positives"] = rec["positives"][:1]
    r = ecqa_rationale(make_q(), rec)
    assert r.recall == "A bloody mess is seen. Not cake." and r.meta["recall_from"] == "explanation"
    assert ecqa_rationale(make_q(), {**rec, "positives": rec["positives"] + ["Blood is red."]},
                          "explanation").recall == "A bloody mess is seen. Not cake."
    # strict: never an option's words; the explanation's option-free sentences, else no recall at all.
    strict = ecqa_rationale(make_q(), {**rec, "explanation": "Crime scenes are grim. Not cake."}, "strict")
    assert strict.recall == "Crime scenes are grim." and strict.meta["recall_from"] == "explanation_option_free"
    none = ecqa_rationale(make_q(), rec, "strict")
    assert none.recall is None and none.analyses == r.analyses


def test_ecqa_option_free_source_never_names_an_option(data_dir, csqa_val):
    from tinythinker.data.ecqa import _norm, _Option, _sentences

    qs = [q for q, _ in csqa_val[:200]]
    rats = load_rationales("csqa", qs, data_dir=data_dir, source="ecqa-option-free")
    default = load_rationales("csqa", qs, data_dir=data_dir)
    by_id = {q.id: q for q in qs}
    recalls = {qid: rs[0].recall for qid, rs in rats.items()}
    assert 0 < sum(r is not None for r in recalls.values()) < len(recalls)  # some questions lose their recall
    for qid, recall in recalls.items():
        if recall is not None:
            for sentence in _sentences(recall):  # as the filter reads it: sentence by sentence
                assert not any(_Option(o.text).named_in(_norm(sentence)) for o in by_id[qid].options), (qid, recall)
        assert rats[qid][0].analyses == default[qid][0].analyses


def test_options_named_finds_exact_stemmed_and_no_options():
    from tinythinker.data.ecqa import options_named

    options = ["race track", "populated areas", "the desert", "apartment", "roadblock"]
    assert options_named(options, "People live in populated areas.") == [1]
    assert options_named(options, "A desert is dry, unlike an apartment.") == [2, 3]  # "desert" without "the"
    assert options_named(options, "People are not always in a place.") == []


def test_ecqa_explanation_source_and_cose(data_dir, csqa_val):
    qs = [q for q, _ in csqa_val[:40]]
    rats = load_rationales("csqa", qs, data_dir=data_dir, source="ecqa-explanation")
    assert rats and all(r[0].meta["recall_from"] == "explanation" for r in rats.values())
    cose = load_rationales("csqa", qs, data_dir=data_dir, source="cose")
    assert len(cose) == 40 and all(r[0].analyses == {} and r[0].recall for r in cose.values())


def test_obqa_fact1_and_strategyqa_facts(data_dir):
    ex = load_examples("obqa", "validation", data_dir=data_dir, limit=20)
    for q, [r] in ex:
        assert r.recall == q.meta["fact1"] and r.analyses == {} and r.source == "obqa-fact1"
    ex = load_examples("strategyqa", "train", data_dir=data_dir, limit=20)
    for q, [r] in ex:
        assert r.recall == " ".join(" ".join(q.meta["facts"]).split()) and "decomposition" in q.meta
    cov = rationale_coverage(ex)
    assert cov["questions_with_recall"] == 1.0 and cov["options_with_analysis"] == 0.0


def test_fact1_missing_everywhere_is_an_error(tmp_path):
    rec = {"id": "o1", "question": {"stem": "S?", "choices": [{"text": "x", "label": "A"},
                                                             {"text": "y", "label": "B"}]}, "answerKey": "B"}
    (tmp_path / "obqa").mkdir()
    (tmp_path / "obqa" / "dev.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(MissingDataError, match="fact1"):
        load_examples("obqa", "validation", data_dir=tmp_path)
    assert load_examples("obqa", "validation", data_dir=tmp_path, source="none")[0][1] == []


def test_ecqa_needs_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match="--data-dir"):
        load_rationales("csqa", [make_q()])
    with pytest.raises(MissingDataError, match="ecqa_csqa_train.jsonl"):
        load_rationales("csqa", [make_q()], data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown rationale source"):
        load_rationales("csqa", [make_q()], data_dir=tmp_path, source="gpt4")


def test_inline_rationales(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"id": "m1", "question": "Q?", "options": ["a", "b"], "answer": "A",
                             "recall": "R.", "analyses": {"A": "yes", "B": "no"}}) + "\n"
                 + json.dumps({"id": "m2", "question": "Q2?", "options": ["a", "b"], "answer": "B"}) + "\n")
    ex = load_examples("jsonl", "train", path=f)
    assert ex[0][1] == [Rationale("R.", {"A": "yes", "B": "no"}, "inline")] and ex[1][1] == []
    assert rationale_coverage(ex)["options_with_analysis"] == 0.5


def test_coverage_counts():
    q1 = Question("1", "s", [Option("A", "a"), Option("B", "b")], "A")
    q2 = Question("2", "s", [Option("A", "a"), Option("B", "b"), Option("C", "c")], "C")
    ex = [(q1, [Rationale(None, {"A": "x"}), Rationale("r", {"B": " "})]), (q2, [])]
    assert rationale_coverage(ex) == {"questions": 2, "options": 5, "rationales": 2, "options_with_analysis": 0.2,
                                      "questions_with_recall": 0.5, "questions_with_rationale": 0.5}
    assert rationale_coverage([])["options_with_analysis"] == 0.0


# --- the paper's released format -------------------------------------------------------------------------------

PAPER_QS = [
    Question("x1", "Where do you keep  milk?", [Option("A", "fridge"), Option("B", "oven")], "A"),
    Question("x2", "What is hot?", [Option("A", "ice"), Option("B", "fire")], "B"),
]
PAPER_RATS = {
    "x1": [Rationale("Milk spoils when warm.", {"A": "a fridge is cold.", "B": "an oven is hot."}),
           Rationale("Cold keeps food.", {"A": "it is cold.", "B": "it cooks."})],
    "x2": [Rationale("Fire burns.", {"A": "ice is cold.", "B": "fire is hot."})],
}


def write_paper(folder, files=("recall", "analyze", "summarize"), gt=None):
    folder.mkdir(exist_ok=True)
    recs = {"recall": [], "analyze": [], "summarize": []}
    for q in PAPER_QS:
        answer = gt or q.answer
        for r in PAPER_RATS[q.id]:
            recs["recall"].append({"input": stages.recall_input(q), "recall": r.recall, "GT": answer})
            for lab in q.labels:
                recs["analyze"].append({"input": stages.analyze_input(q, r.recall, lab), "analyze": r.analyses[lab],
                                        "GT": answer})
            recs["summarize"].append({"input": stages.summarize_input(q, r.recall, r.analyses),
                                      "summarize": stages.summarize_target(answer), "GT": answer})
    for name in files:
        (folder / f"{name}.json").write_text(json.dumps(recs[name], indent=4))
    valid = [{"input": stages.recall_input(q), "GT": q.answer} for q in PAPER_QS[:1]]
    (folder / "valid.json").write_text(json.dumps(valid))
    (folder / "test.json").write_text("\n".join(json.dumps({"input": stages.recall_input(q), "GT": q.answer})
                                                for q in PAPER_QS))  # JSON Lines is read too


@pytest.mark.parametrize("files", [("recall", "analyze", "summarize"), ("summarize",), ("recall", "analyze")])
def test_paper_format_round_trip(tmp_path, files):
    write_paper(tmp_path / "p", files)
    train = load_questions("paper", "train", path=tmp_path / "p")
    assert [(q.stem, q.answer) for q in train] == [("Where do you keep milk?", "A"), ("What is hot?", "B")]
    assert all(q.id.startswith("p-") for q in train)
    assert [q.id for q in load_questions("paper", "validation", path=tmp_path / "p")] == [train[0].id]
    assert [q.id for q in load_questions("paper", "test", path=tmp_path / "p")] == [q.id for q in train]
    ex = load_examples("paper", "train", path=tmp_path / "p")
    for (_, rats), want in zip(ex, PAPER_QS, strict=True):
        assert [(r.recall, r.analyses) for r in rats] == [(r.recall, r.analyses) for r in PAPER_RATS[want.id]]


def test_paper_folder_as_source_for_a_benchmark(tmp_path):
    write_paper(tmp_path / "p")
    ours = [Question("c9", "where do you keep milk?", [Option("A", "Fridge"), Option("B", "oven ")], "A"),
            Question("c8", "Unrelated?", [Option("A", "x"), Option("B", "y")], "A")]
    rats = load_rationales("csqa", ours, source=str(tmp_path / "p"))
    assert list(rats) == ["c9"] and len(rats["c9"]) == 2 and rats["c9"][0].source == "paper"
    write_paper(tmp_path / "wrong", gt="B")
    with pytest.raises(DataError, match="GT 'B'") as info:
        load_rationales("csqa", ours, source=str(tmp_path / "wrong"))
    assert info.value.file.endswith("summarize.json") and info.value.field == "GT"


def test_paper_bad_records(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "recall.json").write_text(json.dumps([{"input": stages.recall_input(PAPER_QS[0]), "GT": "A"}]))
    with pytest.raises(DataError, match="record 1, field 'recall': missing"):
        load_rationales("paper", PAPER_QS, path=folder)
    (folder / "recall.json").write_text(json.dumps([{"input": "just text", "recall": "r", "GT": "A"}]))
    with pytest.raises(DataError, match="field 'input'"):
        load_questions("paper", "train", path=folder)
    (folder / "recall.json").write_text(json.dumps([{"input": stages.recall_input(PAPER_QS[0]), "recall": "r",
                                                     "GT": "Q"}]))
    with pytest.raises(DataError, match="'Q' is not among the options"):
        load_questions("paper", "train", path=folder)
    with pytest.raises(MissingDataError, match="valid.json"):
        load_questions("paper", "validation", path=folder)


def test_teach_output_folder_as_source(tmp_path):
    q = PAPER_QS[0]
    r = Rationale("Milk spoils.", {"A": "cold", "B": "hot"}, "teacher")
    (tmp_path / "rationales.jsonl").write_text(json.dumps({"question_id": q.id, "question": q.to_dict(),
                                                           "rationales": [r.to_dict()]}) + "\n")
    rats = load_rationales("csqa", PAPER_QS, source=str(tmp_path))
    assert rats == {"x1": [r]}


def test_teacher_label_in_force_becomes_the_training_answer(tmp_path, data_dir):
    from tinythinker.data import load_examples, load_questions

    q = load_questions("csqa", "train", data_dir=data_dir, limit=2)[0]
    wrong = next(label for label in q.labels if label != q.answer)
    followed = Rationale("k", {label: "x" for label in q.labels}, "teacher", meta={"verdict": wrong})
    agreed = Rationale("k", {label: "x" for label in q.labels}, "teacher", meta={"verdict": q.answer})
    for rats, expected in (([followed], wrong), ([agreed], q.answer)):
        (tmp_path / "rationales.jsonl").write_text(json.dumps(
            {"question_id": q.id, "question": q.to_dict(), "rationales": [r.to_dict() for r in rats]}) + "\n")
        got, got_rats = load_examples("csqa", "train", data_dir=data_dir, limit=2, source=str(tmp_path))[0]
        assert (got.id, got.answer, got_rats) == (q.id, expected, rats)
        assert got.meta.get("gold_answer", q.answer) == q.answer
