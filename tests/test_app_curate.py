"""Compare's split report and Annotate's curation tools through the app's HTTP API (gradio_client), on a launched
app over a tmp workspace with tiny students: the outputs must be what the library computes."""

import json

import pytest
from gradio_client import Client
from store_helpers import question, trace

from tinythinker import stages
from tinythinker.compare import cache_path, compare_report, compare_rows
from tinythinker.pipeline import read_traces
from tinythinker.store import Store
from tinythinker.store import agreement as agreement_mod
from tinythinker.store import guideline as guideline_mod

LIMIT = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url):
        yield ctx, Client(url, verbose=False)


def _rows(table):
    return table["data"] if isinstance(table, dict) else table


def _report(client, show="all questions", search="", slice_name="gold letter"):
    return client.predict("tiny-a/best", "tiny-b/best", "csqa", "validation", LIMIT, show, search, slice_name,
                          api_name="/compare_report")


def test_split_report_filters_download_and_row_view(served):
    ctx, client = served
    text, slices, figure, rows, download = _report(client)
    questions = ctx.questions("csqa", "validation")[:LIMIT]
    ta, tb = (read_traces(cache_path(ctx.ws.runs_dir / name / "best", ctx.ws.runs_dir, "csqa", "validation",
                                     questions)) for name in ("tiny-a", "tiny-b"))
    report = compare_report(ta, tb)
    assert f"{LIMIT} questions" in text and f"p = {report['mcnemar']['p_value']:.4g}" in text
    assert [(r[0], r[1], r[2]) for r in _rows(slices)] == [(r["slice"], r["value"], r["n"])
                                                           for r in report["slices"]]
    assert [r[0] for r in _rows(rows)] == [q.id for q in questions]
    lines = [json.loads(x) for x in open(download, encoding="utf-8").read().splitlines()]
    assert len(lines) == 2 * LIMIT and {x["compare"]["side"] for x in lines} == {"A", "B"}
    # Filters come from the library, from the cache (no model load).
    loads = ctx.students.loads
    for show in ("flips only", "same answer", "both wrong, different answers"):
        _, _, _, shown, _ = _report(client, show=show)
        assert [r[0] for r in _rows(shown)] == [r["id"] for r in compare_rows(ta, tb, show)]
    word = questions[1].stem.split()[0]
    _, _, _, found, _ = _report(client, search=word)
    assert [r[0] for r in _rows(found)] == [r["id"] for r in compare_rows(ta, tb, search=word)]
    assert ctx.students.loads == loads
    # A row's question side by side, from the cached traces.
    out = client.predict("tiny-a/best", "tiny-b/best", "csqa", "validation", LIMIT, questions[2].id,
                         api_name="/compare_split_question")
    assert questions[2].stem in out[0] and len(out) == 9
    assert ctx.students.loads == loads


def _hand_traces(ctx):
    """Three sampled traces of model `hand` on one question: recalls one / two / one."""
    q = question("hq1")
    with Store(ctx.ws.db) as store:
        return store.import_traces([trace(q=q, tag=" one"), trace(q=q, tag=" two", predicted="B"),
                                    trace(q=q, tag=" one", predicted="C")], model="hand", iteration=2)


def test_pairwise_choice_in_the_ui_becomes_a_curated_pair(served):
    ctx, client = served
    ids = _hand_traces(ctx)
    out = client.predict("ann", "hand", "", "recall", api_name="/annotate_pair_next")
    first, second = int(out[0]), int(out[1])
    assert {first, second} == set(ids[:2]) and "recall" in out[3]
    after = client.predict("ann", first, second, "recall", "", "hand", "", api_name="/annotate_pair_first")
    assert "saved first better" in after[3] and after[0] is None  # nothing left for ann
    with Store(ctx.ws.db) as store:
        pairs = [p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]
        winner = store.get_trace(first)
    assert len(pairs) == 1 and pairs[0].chosen == winner.trace.recall
    assert pairs[0].prompt == stages.recall_input(question("hq1"))
    assert pairs[0].provenance["chosen"]["model"] == "hand" and pairs[0].provenance["chosen"]["iteration"] == 2
    # overlap 1 (the default): one decision takes the item out of everyone's queue
    assert client.predict("bob", "hand", "", "recall", api_name="/annotate_pair_next")[0] is None
    # a skip makes no pair
    q2 = question("hq2", stem="Where do fish live?", answer="B")
    with Store(ctx.ws.db) as store:
        store.import_traces([trace(q=q2, tag=" x"), trace(q=q2, tag=" y")], model="hand", iteration=2)
    again = client.predict("bob", "hand", "", "recall", api_name="/annotate_pair_next")
    skipped = client.predict("bob", int(again[0]), int(again[1]), "recall", "", "hand", "",
                             api_name="/annotate_pair_skip")
    assert "saved skip" in skipped[3]
    with Store(ctx.ws.db) as store:
        assert len([p for p in store.curated_pairs() if p.provenance.get("kind") == "pairwise"]) == 1


def test_overlap_agreement_guideline_checks_and_downloads(served):
    ctx, client = served
    with Store(ctx.ws.db) as store:
        first = store.next_unlabelled().id
        store.label(first, "summarize", "good", annotator="ann")
    assert "overlap set to 2" in client.predict(2, "lead", api_name="/annotate_overlap")
    # bob still gets the trace ann labelled; ann does not
    assert int(client.predict("bob", "", "", "any", "", "", api_name="/annotate_next")[0]) == first
    assert int(client.predict("ann", "", "", "any", "", "", api_name="/annotate_next")[0]) != first
    with Store(ctx.ws.db) as store:
        store.label(first, "summarize", "bad", annotator="bob")
        expected = agreement_mod.agreement_by_stage(store)
    table, disagree, _ = client.predict(api_name="/annotate_agreement")
    by_stage = {r[0]: r for r in _rows(table)}
    summ = next(r for r in expected if r["stage"] == "summarize")
    assert by_stage["summarize"][2] == summ["items"] == 1 and by_stage["summarize"][3] == "cohen"
    assert [r[0] for r in _rows(disagree)] == [first] and "ann: good, bob: bad" in _rows(disagree)[0][4]
    stats = client.predict(api_name="/annotate_stats")
    assert stats["overlap"] == 2 and stats["disagreements"] == 1 and stats["agreement"][0]["stage"] == "recall"
    # The guideline is stored and shown.
    shown, text = client.predict("Be strict about facts.", "lead", api_name="/annotate_guideline")
    assert "Be strict about facts." in shown and text == "Be strict about facts."
    with Store(ctx.ws.db) as store:
        assert guideline_mod.guideline(store)["author"] == "lead"
    # Pair checks and downloads.
    message, checks, _ = client.predict("curated", api_name="/annotate_pair_checks")
    names = [r[0] for r in _rows(checks)]
    assert "consistent outcome" in names and "duplicates" in names and "pairs" in message
    traces_file, labels_file, pairs_file = client.predict("curated", api_name="/annotate_downloads")
    with Store(ctx.ws.db) as store:
        n_traces, n_labels = store.count_traces(), len(store.labels(include_undone=True))
        n_pairs = len(store.curated_pairs())
    assert len(open(traces_file, encoding="utf-8").read().splitlines()) == n_traces
    assert len(open(labels_file, encoding="utf-8").read().splitlines()) == n_labels
    assert len(open(pairs_file, encoding="utf-8").read().splitlines()) == n_pairs >= 1
