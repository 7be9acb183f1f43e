"""Bad data files: each problem is a DataError naming the file, the line (or record) and the field."""

import json

import pytest

from tinythinker.data import DataError, load_questions, load_rationales

CHOICES = [{"label": lab, "text": t} for lab, t in zip("ABC", ["red", "green", "blue"], strict=True)]


def csqa_line(qid="c1", answer="A", choices=CHOICES, stem="Which colour?"):
    return json.dumps({"id": qid, "question": {"stem": stem, "choices": choices}, "answerKey": answer})


def write_csqa(root, lines):
    (root / "csqa").mkdir(exist_ok=True)
    path = root / "csqa" / "dev_rand_split.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def raised(fn) -> DataError:
    with pytest.raises(DataError) as info:
        fn()
    return info.value


def test_malformed_jsonl_line(tmp_path):
    path = write_csqa(tmp_path, [csqa_line("c1"), '{"id": "c2", "question": ', csqa_line("c3")])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert (e.file, e.line) == (str(path), 2)
    assert str(path) in str(e) and "line 2" in str(e) and "malformed JSON" in str(e)


def test_line_that_is_not_an_object(tmp_path):
    write_csqa(tmp_path, [csqa_line("c1"), "[1, 2]"])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert e.line == 2 and "JSON object" in str(e)


@pytest.mark.parametrize("drop, field", [("answerKey", "answerKey"), ("id", "id")])
def test_missing_top_level_field(tmp_path, drop, field):
    rec = json.loads(csqa_line("c2"))
    del rec[drop]
    write_csqa(tmp_path, [csqa_line("c1"), json.dumps(rec)])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert (e.line, e.field) == (2, field) and f"field '{field}'" in str(e) and "missing" in str(e)


def test_missing_nested_field(tmp_path):
    rec = json.loads(csqa_line("c1"))
    del rec["question"]["choices"][1]["text"]
    write_csqa(tmp_path, [json.dumps(rec)])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert e.line == 1 and e.field == "question.choices[1].text"


def test_answer_not_among_options(tmp_path):
    write_csqa(tmp_path, [csqa_line("c1"), csqa_line("c2", answer="E")])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert (e.line, e.field) == (2, "answerKey") and "'E' is not among the options A, B, C" in str(e)


def test_fewer_than_two_options(tmp_path):
    write_csqa(tmp_path, [csqa_line("c1", choices=CHOICES[:1])])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert (e.line, e.field) == (1, "question.choices") and "at least 2 options" in str(e)


def test_duplicate_ids(tmp_path):
    path = write_csqa(tmp_path, [csqa_line("c1"), csqa_line("c2"), csqa_line("c1")])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert (e.line, e.field) == (3, "id") and f"first at {path}, line 1" in str(e)


def test_bad_option_labels(tmp_path):
    twice = [CHOICES[0], {"label": "A", "text": "again"}]
    write_csqa(tmp_path, [csqa_line("c1", choices=twice)])
    assert "appears twice" in str(raised(lambda: load_questions("csqa", "test", data_dir=tmp_path)))
    write_csqa(tmp_path, [csqa_line("c1", choices=[{"label": "1", "text": "x"}, {"label": "2", "text": "y"}])])
    assert "single letter" in str(raised(lambda: load_questions("csqa", "test", data_dir=tmp_path)))


def test_strategyqa_json_array_record(tmp_path):
    (tmp_path / "strategyqa").mkdir()
    path = tmp_path / "strategyqa" / "dev.json"
    path.write_text(json.dumps([{"qid": "s1", "question": "Q?", "answer": True},
                                {"qid": "s2", "question": "Q2?", "answer": "yes"}]))
    e = raised(lambda: load_questions("strategyqa", "test", data_dir=tmp_path))
    assert (e.file, e.record, e.field) == (str(path), 2, "answer") and "expected bool" in str(e)
    path.write_text('[{"qid": "s1",')
    assert "malformed JSON" in str(raised(lambda: load_questions("strategyqa", "test", data_dir=tmp_path)))


@pytest.mark.parametrize("row, field, words", [
    ({"options": ["a", "b"], "answer": "A"}, "question", "missing"),
    ({"question": "Q?", "answer": "A"}, "options", "missing"),
    ({"question": "Q?", "options": ["a", "b"]}, "answer", "missing"),
    ({"question": "Q?", "options": ["a", "b"], "answer": "C"}, "answer", "not among the options A, B"),
    ({"question": "Q?", "options": ["a", "b"], "answer": "zebra"}, "answer", "not among the options"),
    ({"question": "Q?", "options": ["only"], "answer": "A"}, "options", "at least 2 options"),
    ({"question": "Q?", "options": "a, b", "answer": "A"}, "options", "expected list or dict"),
    ({"question": "", "options": ["a", "b"], "answer": "A"}, "question", "empty"),
    ({"question": "Q?", "options": ["a", "b"], "answer": "A", "analyses": ["x"]}, "analyses", "one per option"),
    ({"question": "Q?", "options": ["a", "b"], "answer": "A", "analyses": {"Z": "x"}}, "analyses", "not an option"),
])
def test_user_jsonl_bad_rows(tmp_path, row, field, words):
    f = tmp_path / "mine.jsonl"
    good = {"id": "ok", "question": "Fine?", "options": ["a", "b"], "answer": "B"}
    f.write_text(json.dumps(good) + "\n" + json.dumps({"id": "bad", **row}) + "\n")
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.file, e.line, e.field) == (str(f), 2, field)
    assert words in str(e) and str(f) in str(e) and "line 2" in str(e)


def test_user_jsonl_duplicate_ids(tmp_path):
    f = tmp_path / "mine.jsonl"
    row = {"id": 7, "question": "Q?", "options": ["a", "b"], "answer": "A"}
    f.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.line, e.field) == (2, "id") and "duplicate id '7'" in str(e)


def test_ecqa_record_for_another_question_version(tmp_path):
    write_csqa(tmp_path, [csqa_line("c1")])
    (tmp_path / "ecqa").mkdir()
    ecqa = tmp_path / "ecqa" / "ecqa_csqa_train.jsonl"
    rec = {"id": "c1", "question": "Which colour?", "options": ["red", "green", "pink"], "answer": "red",
           "positives": ["Red is a colour."], "negatives": [], "explanation": ""}
    ecqa.write_text(json.dumps(rec) + "\n")
    qs = load_questions("csqa", "test", data_dir=tmp_path)
    e = raised(lambda: load_rationales("csqa", qs, data_dir=tmp_path))
    assert (e.file, e.line, e.field) == (str(ecqa), 1, "options")
    rec["options"] = ["red", "green", "blue"]
    rec["answer"] = "blue"
    ecqa.write_text(json.dumps(rec) + "\n")
    e = raised(lambda: load_rationales("csqa", qs, data_dir=tmp_path))
    assert e.field == "answer"
    rec["answer"] = "red"
    del rec["positives"]
    ecqa.write_text(json.dumps(rec) + "\n")
    assert raised(lambda: load_rationales("csqa", qs, data_dir=tmp_path)).field == "positives"
