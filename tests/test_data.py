"""Benchmark loaders, seeded splits, test-split files, data-dir resolution and the offline hub message."""

import json

import pytest

from tinythinker.data import (
    DataError,
    MissingDataError,
    load_questions,
    resolve_data_dir,
    split_fingerprint,
)


@pytest.fixture(scope="module")
def csqa(data_dir):
    return {s: load_questions("csqa", s, data_dir=data_dir) for s in ("train", "validation")}


def test_csqa_validation_is_1221_drawn_from_train(csqa):
    train, val = csqa["train"], csqa["validation"]
    assert len(val) == 1221 and len(train) == 9741 - 1221
    assert not {q.id for q in train} & {q.id for q in val}
    q = val[0]
    assert [o.label for o in q.options] == list("ABCDE") and q.answer in q.labels and q.source == "csqa"


def test_same_seed_same_split_other_seed_other_split(data_dir, csqa):
    again = load_questions("csqa", "validation", data_dir=data_dir, seed=0)
    assert [q.id for q in again] == [q.id for q in csqa["validation"]]
    assert split_fingerprint(again) == split_fingerprint(csqa["validation"])
    other = load_questions("csqa", "validation", data_dir=data_dir, seed=1)
    assert len(other) == 1221 and split_fingerprint(other) != split_fingerprint(again)
    sqa = [split_fingerprint(load_questions("strategyqa", "validation", data_dir=data_dir, seed=s)) for s in (0, 0, 7)]
    assert sqa[0] == sqa[1] != sqa[2]


def test_fingerprint_depends_on_ids_and_order(csqa):
    qs = csqa["validation"][:5]
    fp = split_fingerprint(qs)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert split_fingerprint(list(reversed(qs))) != fp
    assert split_fingerprint(qs[:4]) != fp


def test_obqa_uses_complete_files_and_official_dev(data_dir):
    train = load_questions("obqa", "train", data_dir=data_dir)
    val = load_questions("obqa", "validation", data_dir=data_dir)
    assert (len(train), len(val)) == (4957, 500)
    assert val[0].id == "8-376" and val[0].meta["fact1"] == "deep sea animals live deep in the ocean"
    assert [o.label for o in val[0].options] == list("ABCD") and val[0].answer == "A"


def test_obqa_falls_back_to_plain_files(tmp_path):
    rec = {"id": "o1", "question": {"stem": "S?", "choices": [{"text": "x", "label": "A"},
                                                             {"text": "y", "label": "B"}]}, "answerKey": "B"}
    (tmp_path / "obqa").mkdir()
    (tmp_path / "obqa" / "dev.jsonl").write_text(json.dumps(rec) + "\n")
    [q] = load_questions("obqa", "validation", data_dir=tmp_path)
    assert q.id == "o1" and q.answer == "B" and "fact1" not in q.meta


def test_strategyqa_yes_no_and_meta(data_dir):
    train = load_questions("strategyqa", "train", data_dir=data_dir)
    val = load_questions("strategyqa", "validation", data_dir=data_dir)
    assert len(val) == round(2061 * 0.1) and len(train) + len(val) == 2061
    first = next(q for q in train + val if q.id == "2bc9c4f9c19c167187f2")
    assert [(o.label, o.text) for o in first.options] == [("A", "yes"), ("B", "no")]
    assert first.answer == "A"  # answer: true
    assert first.meta["term"] == "Genghis Khan" and len(first.meta["decomposition"]) == 3
    assert first.meta["facts"][0] == "Julius Caesar had three children."
    assert any(q.answer == "B" for q in train)


def test_limit(data_dir):
    assert len(load_questions("csqa", "validation", data_dir=data_dir, limit=7)) == 7


@pytest.mark.parametrize("name, missing", [
    ("csqa", "csqa/dev_rand_split.jsonl"),
    ("obqa", "obqa/test_complete.jsonl"),
    ("strategyqa", "strategyqa/dev.json"),
])
def test_test_split_missing_names_the_file(data_dir, name, missing):
    with pytest.raises(MissingDataError, match=missing):
        load_questions(name, "test", data_dir=data_dir)


def test_test_split_read_where_present(tmp_path):
    (tmp_path / "csqa").mkdir()
    (tmp_path / "obqa").mkdir()
    (tmp_path / "strategyqa").mkdir()
    choices = [{"label": lab, "text": t} for lab, t in zip("ABC", ["a", "b", "c"], strict=True)]
    (tmp_path / "csqa" / "dev_rand_split.jsonl").write_text(
        json.dumps({"id": "t1", "question": {"stem": "Q1?", "choices": choices}, "answerKey": "C"}) + "\n"
        + json.dumps({"id": "t2", "question": {"stem": "Q2?", "choices": choices}, "answerKey": "A"}) + "\n")
    (tmp_path / "obqa" / "test.jsonl").write_text(
        json.dumps({"id": "o9", "question": {"stem": "O?", "choices": choices}, "answerKey": "B"}) + "\n")
    (tmp_path / "strategyqa" / "dev.json").write_text(json.dumps([{"qid": "s1", "question": "Is it?",
                                                                   "answer": False, "facts": ["f."]}]))
    assert [(q.id, q.answer) for q in load_questions("csqa", "test", data_dir=tmp_path)] == [("t1", "C"), ("t2", "A")]
    assert [q.id for q in load_questions("obqa", "test", data_dir=tmp_path)] == ["o9"]
    [s] = load_questions("strategyqa", "test", data_dir=tmp_path)
    assert (s.id, s.answer, s.meta["facts"]) == ("s1", "B", ["f."])


def test_unknown_split_and_name(data_dir):
    with pytest.raises(ValueError, match="unknown split"):
        load_questions("csqa", "dev", data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown data"):
        load_questions("arc", "train", data_dir=data_dir)


def test_data_dir_resolution(tmp_path, monkeypatch, data_dir):
    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(None) is None  # nothing local: the hub
    (tmp_path / "data").mkdir()
    assert resolve_data_dir(None) == (tmp_path / "data").resolve()
    monkeypatch.setenv("TINYTHINKER_DATA_DIR", str(data_dir))
    assert resolve_data_dir(None) == data_dir
    assert resolve_data_dir(tmp_path) == tmp_path  # the argument wins
    assert resolve_data_dir("hub") is None
    assert len(load_questions("obqa", "validation")) == 500  # read via the env var
    with pytest.raises(MissingDataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


def test_hub_offline_says_how_to_use_local_files(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # nothing cached
    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError) as info:
        load_questions("csqa", "validation")
    msg = str(info.value)
    assert "tau/commonsense_qa" in msg and "--data-dir" in msg and "TINYTHINKER_DATA_DIR" in msg
    assert "csqa/train_rand_split.jsonl" in msg


def test_user_jsonl_schema(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [
        {"id": "m1", "question": "Where is milk kept?", "options": ["fridge", "oven", "car"], "answer": "A",
         "recall": "Milk spoils when warm.", "analyses": ["cold keeps it", "too hot", "not for food"]},
        {"id": "m2", "question": "Pick b.", "options": {"A": "a", "B": "b"}, "answer": "b"},
        {"question": "Unlabelled?", "options": ["x", "y"], "answer": None},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    qs = load_questions("jsonl", "test", path=f)
    assert [q.id for q in qs] == ["m1", "m2", "line-3"]
    assert [o.text for o in qs[0].options] == ["fridge", "oven", "car"] and qs[0].answer == "A"
    assert qs[1].answer == "B"  # given as the option's text
    assert qs[2].answer is None
    assert qs[0].meta["analyses"] == {"A": "cold keeps it", "B": "too hot", "C": "not for food"}


def test_user_folder_splits(tmp_path):
    lines = [json.dumps({"id": f"u{i}", "question": f"Q{i}?", "options": ["a", "b"], "answer": "A"})
             for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines))
    train = load_questions("jsonl", "train", path=tmp_path, seed=3)
    val = load_questions("jsonl", "validation", path=tmp_path, seed=3)
    assert (len(train), len(val)) == (18, 2) and not {q.id for q in train} & {q.id for q in val}
    assert split_fingerprint(val) == split_fingerprint(load_questions("jsonl", "validation", path=tmp_path, seed=3))
    with pytest.raises(MissingDataError, match="test.jsonl"):
        load_questions("jsonl", "test", path=tmp_path)
    (tmp_path / "validation.jsonl").write_text(lines[0])
    assert len(load_questions("jsonl", "train", path=tmp_path)) == 20  # an own validation file: train is whole
    assert [q.id for q in load_questions("jsonl", "validation", path=tmp_path)] == ["u0"]


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError) and issubclass(MissingDataError, DataError)


def test_hub_rows_are_reshaped_like_local_files(monkeypatch):
    import datasets

    calls = []
    choices = {"label": ["A", "B"], "text": ["x", "y"]}
    rows = {
        "tau/commonsense_qa": [{"id": f"c{i}", "question": f"Q{i}?", "question_concept": "c", "choices": choices,
                                "answerKey": "B"} for i in range(1300)],
        "allenai/openbookqa": [{"id": "o1", "question_stem": "O?", "choices": choices, "answerKey": "A",
                                "fact1": "a fact", "humanScore": 1.0, "clarity": 2.0}],
        "ChilleD/StrategyQA": [{"question": "Is it?", "answer": True, "facts": ["f."]}],
    }

    def fake_load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return rows[repo]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    val = load_questions("csqa", "validation", data_dir="hub")
    assert len(val) == 1221 and val[0].answer == "B" and [o.text for o in val[0].options] == ["x", "y"]
    load_questions("csqa", "test", data_dir="hub")
    [o] = load_questions("obqa", "validation", data_dir="hub")
    assert (o.id, o.stem, o.meta["fact1"]) == ("o1", "O?", "a fact")
    [s] = load_questions("strategyqa", "test", data_dir="hub")
    assert s.answer == "A" and s.id.startswith("h-") and s.meta["facts"] == ["f."]
    assert calls == [("tau/commonsense_qa", None, "train"), ("tau/commonsense_qa", None, "validation"),
                     ("allenai/openbookqa", "additional", "validation"), ("ChilleD/StrategyQA", None, "test")]


def test_unreachable_hub_fails_fast_in_offline_mode_with_the_local_hint(monkeypatch):
    """An offline machine is told at once (no minute of retries), and a dataset cached earlier would still load:
    the call runs with datasets' and huggingface_hub's offline flags set."""
    import datasets
    import datasets.config
    import huggingface_hub.constants

    from tinythinker.data import hub

    seen = []

    def fake_load_dataset(repo, config=None, split=None):
        seen.append((datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE))
        raise ConnectionError("offline, not cached")

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(MissingDataError, match=r"unreachable from this machine.*csqa/train_rand_split\.jsonl"):
        load_questions("csqa", "train", data_dir="hub")
    assert seen == [(True, True)]


def test_hub_reachable_honours_hf_hub_offline(monkeypatch):
    from tinythinker.data import hub

    def no_socket(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE=1 must not open a connection")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", no_socket)
    assert hub.hub_reachable() is False
