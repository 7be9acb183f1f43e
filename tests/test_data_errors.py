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


# ---- issue 16: silent data loss, errors without a place, bad input accepted ------------------------------------


def write_user(tmp_path, *lines, name="mine.jsonl"):
    f = tmp_path / name
    f.write_text("".join(line + "\n" for line in lines))
    return f


GOOD = '{"id": "ok", "question": "Fine?", "options": ["a", "b"], "answer": "B"}'


def test_repeated_option_label_is_an_error_not_the_last_value(tmp_path):
    f = write_user(tmp_path, GOOD, '{"id": "q", "question": "Q?", "options": {"A": "x", "A": "y", "B": "z"}, '
                                   '"answer": "A"}')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.file, e.line, e.field) == (str(f), 2, "options.A") and "appears twice" in str(e)
    # Anywhere in a record: a repeated top-level key, and one in a JSON-array record of the paper's format.
    f = write_user(tmp_path, '{"id": "q", "question": "Q?", "question": "R?", "options": ["a", "b"], "answer": "A"}')
    assert raised(lambda: load_questions("jsonl", "train", path=f)).field == "question"
    f = tmp_path / "arr.json"
    f.write_text('[{"id": "q", "question": "Q?", "options": ["a", "b"], "answer": "A"}, '
                 '{"id": "r", "question": "R?", "options": [{"x": 1, "x": 2}], "answer": "A"}]')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.record, e.field) == (2, "options[0].x")


@pytest.mark.parametrize("text", ["cats (B) dogs", "see (C)", "x\n(B) y"])
def test_an_option_text_that_reads_back_as_another_option(tmp_path, text):
    from tinythinker import stages

    f = write_user(tmp_path, GOOD, json.dumps({"id": "q", "question": "Q?", "options": [text, "z", "w"],
                                               "answer": "B"}))
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.line, e.field) == (2, "options") and "read back as the start of another option" in str(e)
    # What it guards against: the rendered prompt reads back with an option too many.
    from tinythinker.types import Option, Question

    q = Question("q", "Q?", [Option("A", text), Option("B", "z"), Option("C", "w")], "B")
    assert len(stages.parse_input(stages.recall_input(q)).options) == 4


def test_an_analysis_that_reads_back_as_another_analysis(tmp_path):
    f = write_user(tmp_path, json.dumps({"id": "q", "question": "Q?", "options": ["a", "b"], "answer": "A",
                                         "analyses": {"A": "fine. For option B, also fine", "B": "no"}}))
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.line, e.field) == (1, "analyses") and "another analysis" in str(e)


def test_latin1_byte_names_file_line_and_column(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_bytes(GOOD.encode() + b'\n{"question": "caf\xe9?", "options": ["a", "b"], "answer": "A"}\n')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.file, e.line) == (str(f), 2) and "not UTF-8 text (byte 0xe9 at column 18)" in str(e)
    f.write_bytes(b'[{"question": "caf\xe9?", "options": ["a", "b"], "answer": "A"}]')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert (e.file, e.line) == (str(f), 1) and "byte 0xe9 at column 19" in str(e)


def test_json_error_says_at_once(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(GOOD + '\n{"question": "unterminated')  # no newline at the end of the file
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert "Unterminated string starting at column 14" in str(e) and "at at" not in str(e)


def test_answer_matching_two_option_texts(tmp_path):
    f = write_user(tmp_path, '{"question": "Q?", "options": ["Yes", "no", "yes"], "answer": "yes"}')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert e.field == "answer" and "matches the text of options A, C" in str(e) and "not among" not in str(e)


@pytest.mark.parametrize("value, words", [("true", "expected str or int, got bool"),
                                          ("1.5", "expected str or int, got float")])
def test_id_must_be_text_or_a_whole_number(tmp_path, value, words):
    f = write_user(tmp_path, '{"id": ' + value + ', "question": "Q?", "options": ["a", "b"], "answer": "A"}')
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert e.field == "id" and words in str(e)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "[]"])
def test_empty_user_file_is_an_error(tmp_path, content):
    f = tmp_path / "mine.jsonl"
    f.write_text(content)
    e = raised(lambda: load_questions("jsonl", "train", path=f))
    assert e.file == str(f) and "holds no questions" in str(e)


@pytest.mark.parametrize("name, split", [("recall.json", "train"), ("valid.json", "validation")])
def test_empty_paper_files_are_an_error(tmp_path, name, split):
    (tmp_path / name).write_text("[]")
    e = raised(lambda: load_questions("paper", split, path=tmp_path))
    assert e.file == str(tmp_path / name) and "holds no records" in str(e)


def test_empty_benchmark_file_is_an_error(tmp_path):
    write_csqa(tmp_path, [""])
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert e.file == str(tmp_path / "csqa" / "dev_rand_split.jsonl") and "holds no questions" in str(e)


def test_negative_limit(tmp_path):
    f = write_user(tmp_path, GOOD)
    with pytest.raises(ValueError, match="limit must be a whole number >= 0"):
        load_questions("jsonl", "train", path=f, limit=-5)


def test_utf8_bom_is_read(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n")
    [q] = load_questions("jsonl", "train", path=f)
    assert q.id == "ok"
    f.write_bytes(b"\xef\xbb\xbf[" + GOOD.encode() + b"]")  # a JSON array with a BOM, too
    assert [q.id for q in load_questions("jsonl", "train", path=f)] == ["ok"]


def test_data_dir_and_paths_that_are_not_what_they_should_be(tmp_path):
    from tinythinker.data import MissingDataError, resolve_data_dir

    f = write_user(tmp_path, GOOD)
    e = raised(lambda: resolve_data_dir(f))
    assert not isinstance(e, MissingDataError) and "is a regular file, not a folder" in str(e)
    (tmp_path / "csqa").mkdir()
    (tmp_path / "csqa" / "dev_rand_split.jsonl").mkdir()
    e = raised(lambda: load_questions("csqa", "test", data_dir=tmp_path))
    assert "is a folder, not a regular file" in str(e)
    e = raised(lambda: load_questions("paper", "train", path=f))
    assert "is a regular file, not a folder" in str(e)
