"""Exports take the data out: a dataset card with provenance and pair checks, and a Hub push that fails fast offline.

Nothing here reaches the network: the Hub is either offline (HF_HUB_OFFLINE) or its calls are replaced."""

import json

import pytest
from store_helpers import question, trace

from tinythinker.cli import main
from tinythinker.store import Store, StoreError, hub
from tinythinker.store.files import file_sha256


def _store(path):
    q = question("q1")  # answer A
    s = Store(path)
    s.import_traces([trace(q=q, predicted="A", tag=" one"), trace(q=q, predicted="B", tag=" two")], model="runs/p1", iteration=1)
    s.label(1, "recall", "good", annotator="ana")
    s.label(2, "recall", "bad", annotator="bob")
    s.add_pairs([{"prompt": "P\nRecall:", "chosen": "c text", "rejected": "r text", "stage": "recall",
                  "question_id": "q9", "provenance": {"model": "runs/p2/iter_1/best", "chosen_from": "auto"}}],
                iteration=2)
    return s


def _front_matter(text):
    import yaml

    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_export_writes_a_dataset_card_with_provenance_and_checks(tmp_path, fmt):
    with _store(tmp_path / "t.db") as s:
        manifest = s.export(tmp_path / "out", fmt=fmt, pairs="all")
    card = (tmp_path / "out" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "unknown" and {"tinythinker", "dpo"} <= set(meta["tags"])
    assert "text-generation" in meta["task_categories"] and meta["size_categories"] == ["n<1K"]
    assert ("configs" in meta) == (fmt == "jsonl")
    # Provenance: the database, its schema, when, which pairs and how many, and who wrote them.
    assert f"store: `{tmp_path / 't.db'}` (schema version {manifest['schema_version']})" in card
    assert f"exported at: {manifest['exported_at']}" in card
    assert "pairs: 2, every pair" in card and "by source: auto 1, curated 1" in card
    assert "| `runs/p1` | 1 | 2 |" in card  # the traces' model and iteration
    assert "| `runs/p2/iter_1/best` | 2 | 1 |" in card and "| `runs/p1` | 1 | 1 |" in card  # the pairs' writers
    assert "Annotators: ana, bob" in card
    # The pair checks as a table, with the verdict.
    assert "| consistent outcome | 1 | >= 0.8 | 2 | pass |" in card
    assert "All 2 pairs pass every check." in card
    prov = json.loads((tmp_path / "out" / "manifest.json").read_text())["provenance"]
    assert prov["traces"]["by_model"] == [{"model": "runs/p1", "iteration": 1, "traces": 2}]
    assert prov["pairs"]["by_iteration"] == {"1": 1, "2": 1}


def test_a_card_says_when_checks_fail(tmp_path):
    with Store(tmp_path / "t.db") as s:
        s.add_pairs([{"prompt": f"P{i}\nRecall:", "chosen": "wrong way", "rejected": "right way", "stage": "recall",
                      "provenance": {"chosen_correct": False, "rejected_correct": True}} for i in range(2)],
                    iteration=None, source="curated")
        s.export(tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**1 check(s) fail** on these 2 pairs: consistent outcome." in card
    assert "| consistent outcome | 0 | >= 0.8 | 2 | FAIL |" in card


def _exported(tmp_path):
    with _store(tmp_path / "t.db") as s:
        s.export(tmp_path / "out", fmt="hf", pairs="all")
    return tmp_path / "out", file_sha256(tmp_path / "out")


def test_push_offline_fails_at_once_and_keeps_the_local_export(tmp_path, monkeypatch):
    out, digest = _exported(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_probe", lambda *a: pytest.fail("offline: nothing may be requested"))
    with pytest.raises(hub.HubUnreachable) as e:
        hub.push_export(out, "someone/pairs")
    msg = str(e.value)
    assert msg.startswith("could not reach the Hugging Face Hub to push someone/pairs (HF_HUB_OFFLINE is set)")
    assert f"The local export at {out} is complete" in msg
    assert file_sha256(out) == digest


@pytest.mark.parametrize("where", ["probe", "create_repo"])
def test_a_connection_error_is_the_same_clear_message(tmp_path, monkeypatch, where):
    import httpx2
    from huggingface_hub import HfApi

    out, digest = _exported(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_offline", lambda: False)

    def refuse(*a, **k):
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(hub, "_probe", refuse if where == "probe" else lambda *a: None)
    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(HfApi, "upload_file", lambda *a, **k: pytest.fail("nothing is uploaded"))
    with pytest.raises(hub.HubUnreachable, match="could not reach the Hugging Face Hub") as e:
        hub.push_export(out, "someone/pairs")
    assert "ConnectError" in str(e.value) and f"The local export at {out} is complete" in str(e.value)
    assert file_sha256(out) == digest


def test_push_needs_a_datasets_export(tmp_path):
    with _store(tmp_path / "t.db") as s:
        s.export(tmp_path / "out", fmt="jsonl")
    with pytest.raises(StoreError, match="not a datasets-format export"):
        hub.push_export(tmp_path / "out", "someone/pairs")


def test_cli_export_push_offline(tmp_path, monkeypatch, capsys):
    _store(tmp_path / "t.db").close()
    db, out = str(tmp_path / "t.db"), tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["store", "export", "--out", str(out), "--push-to-hub", "someone/pairs", "--db", db]) == 2
    cap = capsys.readouterr()
    assert "as hf, with its dataset card" in cap.out
    assert "could not reach the Hugging Face Hub" in cap.err and f"local export at {out} is complete" in cap.err
    assert (out / "README.md").is_file() and (out / "pairs" / "state.json").is_file()
    assert main(["store", "export", "--format", "jsonl", "--out", str(tmp_path / "j"), "--push-to-hub", "a/b",
                 "--db", db]) == 2
    assert "use --format hf" in capsys.readouterr().err and not (tmp_path / "j").exists()


def test_app_push_shows_the_offline_message_in_the_result(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from demo import annotate
    from demo.widgets import friendly

    out, digest = _exported(tmp_path)
    ctx = SimpleNamespace(ws=SimpleNamespace(annotations_dir=tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = friendly(lambda *a: annotate.push(ctx, *a), 1, 0, as_json=True)("out", "someone/pairs")
    assert "could not reach the Hugging Face Hub" in result["error"]
    assert f"The local export at {out} is complete" in result["error"] and file_sha256(out) == digest
