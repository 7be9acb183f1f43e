"""The loop in one place, through the app's HTTP API (gradio_client) on the tiny test students: generate traces
(a job) -> label them in Annotate (a pairwise choice and single-text verdicts) -> check and download the curated
pairs -> a reflect job on `curated` from the Train tab -> the new model preselected in Compare against its parent,
with the curated questions' before and after. The pairs the user made must be exactly the pairs that trained, and
the new model's traces must be in the store."""

import json
import time

import pytest
from gradio_client import Client

from tinythinker import jobs, stages
from tinythinker.compare import curated_question_ids, trained_pairs
from tinythinker.runs import read_metrics
from tinythinker.store import Store

# Not marked slow: about 45 s at one thread on an idle 2-core machine (two jobs in child processes).
QUESTIONS, SAMPLES, EVAL = 2, 2, 1
MAX_OPTIONS = 8  # demo.annotate.MAX_OPTIONS: the Analyze slots of the label form


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url):
        # As a phase-1 run made by the Train tab records them: its data folder (phase 2 reads its questions from
        # there) and target length (an untrained student's recall runs to the full 128-token budget).
        config = ctx.ws.runs_dir / "tiny-a" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "data_dir": str(data_dir),
                                      "max_source_length": 512, "max_target_length": 256, "seed": 0}))
        yield ctx, Client(url, verbose=False)


def _rows(table):
    return table["data"] if isinstance(table, dict) else table


def _value(update):
    return update["value"] if isinstance(update, dict) else update


def _wait_job(job, timeout=600):
    deadline = time.time() + timeout
    while jobs.is_running(job) and time.time() < deadline:
        time.sleep(1)
    assert jobs.status(job).state == jobs.FINISHED, jobs.log_tail(job, 60)


def _label(client, trace_id, recall_verdict):
    # trace, annotator, note, Recall verdict and text, the Analyze slots, Summarize verdict and text, the filters
    return client.predict(trace_id, "ann", "", recall_verdict, "", *([None, ""] * MAX_OPTIONS), None, "",
                          "", "", "any", "", "", api_name="/annotate_save")


def _key(p):
    return p["stage"], p["prompt"], p["chosen"], p["rejected"], str(p.get("question_id") or "")


def test_generate_label_curate_reflect_compare(served):
    ctx, client = served
    before = [_value(v) for v in client.predict("", "", api_name="/compare_refresh")[:2]]

    # 1. Traces for the Annotate queue: two sampled traces a question of the phase-1 model (a traces job).
    message = client.predict(["tiny-a/best"], "csqa", "validation", QUESTIONS, SAMPLES, 0.7,
                             api_name="/annotate_generate")
    assert "Started traces job" in str(message), message
    _wait_job(next(j for j in jobs.list_jobs(ctx.ws) if j.kind == "traces"))
    with Store(ctx.ws.db) as store:
        mine = [t for t in store.iter_traces() if t.model == "tiny-a/best"]
    assert len(mine) == QUESTIONS * SAMPLES
    by_question: dict[str, list] = {}
    for t in mine:
        by_question.setdefault(t.trace.question.id, []).append(t)
    first_q, second_q = list(by_question)

    # 2. Label. A pairwise choice on the first question's two sampled recalls ...
    first, second, *_ = client.predict("ann", "tiny-a/best", "", "recall", api_name="/annotate_pair_next")
    assert {int(first), int(second)} == {t.id for t in by_question[first_q]}
    client.predict("ann", int(first), int(second), "recall", "", "tiny-a/best", "", api_name="/annotate_pair_first")
    # ... and single-text verdicts on the second's: one recall good, the other bad.
    good, bad = by_question[second_q]
    assert "saved 1 label(s)" in _label(client, good.id, "good")[1]
    assert "saved 1 label(s)" in _label(client, bad.id, "bad")[1]

    # 3. The curated pairs: checked, then downloaded as the user's own record of what they made.
    checks_message, checks, _ = client.predict("curated", api_name="/annotate_pair_checks")
    assert checks_message.startswith("2 pairs"), checks_message
    assert _rows(checks)
    pairs_file = client.predict("curated", api_name="/annotate_downloads")[2]
    made = [json.loads(x) for x in open(pairs_file, encoding="utf-8").read().splitlines()]
    assert sorted(_key(p) for p in made) == sorted([
        ("recall", stages.recall_input(by_question[first_q][0].trace.question),
         ctx_text(ctx, int(first)), ctx_text(ctx, int(second)), first_q),
        ("recall", stages.recall_input(good.trace.question), good.trace.recall, bad.trace.recall, second_q)])

    # 4. A reflect job on the curated pairs, from the Train tab.
    # run, from, iterations, samples, stages, pairs, limit, eval limit, beta, alpha, lr, seed
    job, started = client.predict("p2-loop", "tiny-a", 1, 1, "recall", "curated", 1, EVAL, 0.5, 0.5, 1e-4, 0,
                                  api_name="/start_phase2")
    assert "Started" in started, started
    _wait_job(jobs.load_job(ctx.ws.run_dir("p2-loop")))
    run = ctx.ws.runs_dir / "p2-loop"

    # The pairs the user made are exactly the pairs that trained (the run's own record), provenance and all.
    trained = trained_pairs(run / "best")
    assert sorted(_key(p) for p in trained) == sorted(_key(p) for p in made)
    assert all(p["source"] == "curated" and p["iteration"] == 1 for p in trained)
    provenance = {_key(p): p["provenance"] for p in made}
    assert all(p["provenance"] == provenance[_key(p)] for p in trained)
    [iteration] = read_metrics(run, "iteration")
    assert iteration["curated_pairs"] == iteration["pairs_trained"] == len(made) and iteration["too_long"] == 0

    # The new model's own validation traces are in the store, with its checkpoint and iteration, and in the queue.
    new_model = str(run / "iter_1" / "best")
    with Store(ctx.ws.db) as store:
        new = [t for t in store.iter_traces() if t.model == new_model]
    assert len(new) == EVAL and all(t.iteration == 1 and t.trace.sampling["reflect"] == "validation" for t in new)
    assert client.predict("ann", new_model, "", "any", "", "", api_name="/annotate_next")[0] is not None

    # 5. Compare: the new model preselected against its parent, once the job has ended ...
    a, b = client.predict(*before, api_name="/compare_refresh")[:2]
    assert (_value(a), _value(b)) == ("tiny-a/best", "p2-loop/best") != tuple(before)
    # ... and restricted to the questions whose curated pairs trained it: each one's before (A) and after (B).
    curated = curated_question_ids("p2-loop/best", runs_dir=ctx.ws.runs_dir)
    assert sorted(curated) == sorted([first_q, second_q])
    text, _, _, rows, _ = client.predict("tiny-a/best", "p2-loop/best", "csqa", "validation", 0, "all questions", "",
                                         "gold letter", True, api_name="/compare_report")
    order = [q.id for q in ctx.questions("csqa", "validation") if q.id in set(curated)]
    assert [r[0] for r in _rows(rows)] == order and "whose curated pairs trained B" in text


def ctx_text(ctx, trace_id):
    with Store(ctx.ws.db) as store:
        return store.get_trace(trace_id).trace.recall
