"""Pair checks before export and reflect: outcome consistency, duplicates, identical sides, length and letters."""

from store_helpers import question, trace

from tinythinker.pair_checks import Thresholds, check_pairs
from tinythinker.store import Pair, Store


def _pair(i, chosen=None, rejected=None, stage="recall", **prov):
    return Pair(prompt=f"prompt {i}", chosen=chosen or f"good text number {i}", rejected=rejected or f"bad text {i} x",
                stage=stage, question_id=f"q{i}", source="curated", provenance=prov)


def _by_check(report):
    return {r["check"]: r for r in report.table}


def test_clean_pairs_pass_every_check():
    pairs = [_pair(i, chosen_correct=True, rejected_correct=False, chosen_predicted="ABCD"[i % 4])
             for i in range(12)]
    report = check_pairs(pairs)
    assert report.failed == [] and report.ok and "12 pairs pass" in report.message()
    rows = _by_check(report)
    assert rows["consistent outcome"]["value"] == 1.0 and rows["duplicates"]["value"] == 0.0
    assert rows["largest answer-letter share"]["value"] == 3 / 12
    assert set(report.table[0]) == {"check", "value", "threshold", "ok", "n", "note"}


def test_each_problem_fails_its_own_check():
    base = [_pair(i, chosen_correct=True, rejected_correct=False, chosen_predicted="A") for i in range(10)]
    # all chosen answers are A -> letter balance fails
    assert check_pairs(base).failed == ["largest answer-letter share"]
    mixed = [_pair(i, chosen_correct=True, rejected_correct=False, chosen_predicted="ABCDE"[i % 5])
             for i in range(10)]
    # chosen led to a wrong answer in 4 of 10
    wrong_way = mixed[:6] + [_pair(i, chosen_correct=False, rejected_correct=True) for i in range(6, 10)]
    r = _by_check(check_pairs(wrong_way))
    assert not r["consistent outcome"]["ok"] and r["consistent outcome"]["value"] == 0.6
    # duplicates: 3 extra copies of pair 0 in 13 -> 3/13 > 0.1
    dup = check_pairs(mixed + [mixed[0]] * 3)
    assert "duplicates" in dup.failed and _by_check(dup)["duplicates"]["value"] == 3 / 13
    # identical sides (whitespace aside), and a reversed pair
    same = mixed + [_pair(99, chosen="same  text", rejected="same text")]
    assert "identical sides" in check_pairs(same).failed
    rev = mixed + [Pair(prompt="prompt 0", chosen=mixed[0].rejected, rejected=mixed[0].chosen, stage="recall")]
    assert "contradictions" in check_pairs(rev).failed
    # chosen always much longer
    long = [_pair(i, chosen="word " * 30, rejected="short one", chosen_correct=True, rejected_correct=False,
                  chosen_predicted="ABCDE"[i % 5]) for i in range(10)]
    assert check_pairs(long).failed == ["length ratio (chosen / rejected words)", "chosen side longer"]
    # too few pairs: the balance checks do not judge
    assert check_pairs(long[:3]).ok
    assert check_pairs([]).failed == ["pairs"]
    assert check_pairs(long, thresholds=Thresholds(length_ratio_range=(0, 100), chosen_longer_range=(0, 1))).ok


def test_curated_pairs_from_the_store_look_up_their_traces(tmp_path):
    q = question("q1")  # answer A
    with Store(tmp_path / "t.db") as s:
        s.import_traces([trace(q=q, predicted="A", tag=" one"), trace(q=q, predicted="B", tag=" two"),
                         trace(q=q, predicted="C", tag=" three")], model="m")
        s.label(1, "recall", "good", annotator="ana")
        s.label(2, "recall", "bad", annotator="ana")
        s.label(3, "recall", "bad", text="Banks keep money.", annotator="ana")  # a correction: no outcome
        pairs = s.curated_pairs()
        report = check_pairs(pairs, store=s)
    rows = _by_check(report)
    # (one, two) and (one, three) are consistent; (correction, two/three) have no outcome
    assert len(pairs) == 4 and rows["consistent outcome"]["n"] == 2 and rows["consistent outcome"]["value"] == 1.0
    assert "2 pair(s) with an unknown outcome" in rows["consistent outcome"]["note"]
    assert rows["largest answer-letter share"]["note"].endswith("A: 2")
    # Without the store the trace ids cannot be resolved: nothing known, nothing failed on outcome.
    assert _by_check(check_pairs(pairs))["consistent outcome"]["n"] == 0


def test_phase2_pairs_are_judged_by_construction():
    auto = [Pair(prompt=f"p{i}", chosen=f"chosen {i} text", rejected=f"rejected {i} text", stage="recall",
                 question_id=f"q{i}") for i in range(4)]
    curated = Pair(prompt="p9", chosen="c", rejected="r", stage="recall", question_id="q9", source="curated",
                   provenance={"chosen_correct": False, "rejected_correct": True})
    rows = _by_check(check_pairs(auto + [curated]))
    assert rows["consistent outcome"]["n"] == 5 and rows["consistent outcome"]["value"] == 0.8


def test_export_manifest_and_downloads_carry_the_checks(tmp_path):
    import json

    from tinythinker.store import downloads

    q = question("q1")
    with Store(tmp_path / "t.db") as s:
        s.import_traces([trace(q=q, predicted="A", tag=" one"), trace(q=q, predicted="B", tag=" two")], model="m")
        s.label(1, "recall", "good", annotator="ana")
        s.label(2, "recall", "bad", annotator="ana")
        s.label(2, "recall", "unsure", annotator="bob")
        s.undo_last("bob")
        manifest = s.export(tmp_path / "out")
        assert manifest["pair_checks"]["n"] == 1 and manifest["pair_checks"]["ok"] is True
        assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pair_checks"]["checks"]
        paths = {k: downloads.download(s, k, tmp_path / "dl") for k in downloads.KINDS}
        # The traces download reads back into a new store with its labels.
        with Store(tmp_path / "copy.db") as c:
            assert len(c.import_file(paths["traces"])) == 2
            assert len(c.labels(include_undone=True)) == 3 and len(c.labels()) == 2
    labels = [json.loads(x) for x in paths["labels"].read_text().splitlines()]
    assert [(x["annotator"], x["undone"], x["model"], x["question_id"]) for x in labels] == [
        ("ana", False, "m", "q1"), ("ana", False, "m", "q1"), ("bob", True, "m", "q1")]
    pairs = [json.loads(x) for x in paths["pairs"].read_text().splitlines()]
    assert len(pairs) == 1 and pairs[0]["chosen"] == "Banks hold money one."
