import json
import threading
import time

import pytest
import torch

from tinythinker import cli, stages
from tinythinker.data import load_questions
from tinythinker.pipeline import (
    GREEDY,
    Sampling,
    StageSampling,
    accuracy,
    complete_trace,
    complete_traces,
    iter_trace,
    read_traces,
    run_pipeline,
    run_stage,
    self_consistency,
    stream_trace,
    write_traces,
)
from tinythinker.students import RowsStreamer
from tinythinker.tiny import tiny_student
from tinythinker.types import Option, Question, Trace

# Short budgets keep tiny-model tests fast; what is tested does not depend on the length.
FAST = Sampling(recall=StageSampling(max_new_tokens=6), analyze=StageSampling(max_new_tokens=4),
                summarize=StageSampling(max_new_tokens=8))


@pytest.fixture(scope="module")
def questions(data_dir):
    csqa = load_questions("csqa", "validation", data_dir=data_dir, limit=4)
    yes_no = Question("s1", "Can a fish climb a tree?", [Option("A", "yes"), Option("B", "no")], "B", "test")
    four = Question("o1", "Which is a metal?", [Option(lab, t) for lab, t in zip("ABCD", ["iron", "wood", "salt",
                                                                                       "glass"], strict=True)],
                    "A", "test")
    return [*csqa, yes_no, four]


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def student(request):
    return tiny_student(request.param)


def _texts(t: Trace):
    return t.recall, t.analyses, t.summary, t.predicted


@pytest.mark.parametrize("restrict", [False, True, "score"])
def test_batched_equals_one_question_at_a_time(student, questions, restrict):
    batched = run_pipeline(student, questions, sampling=FAST, batch_size=4, restrict_answer=restrict)
    single = [run_pipeline(student, [q], sampling=FAST, batch_size=1, restrict_answer=restrict)[0]
              for q in questions]
    assert [t.question.id for t in batched] == [q.id for q in questions]
    assert [_texts(t) for t in batched] == [_texts(t) for t in single]
    assert len({t.recall for t in batched}) > 1
    if restrict:
        assert all(t.predicted in t.question.labels for t in batched)
        assert accuracy(batched)["invalid_rate"] == 0


def test_score_mode_picks_the_answer_with_the_best_mean_log_likelihood(student, questions):
    traces = run_pipeline(student, questions, sampling=FAST, batch_size=3, restrict_answer="score")
    for t in traces:
        q = t.question
        choices = stages.answer_choices(q)
        prompt = stages.summarize_input(q, t.recall, t.analyses)
        with torch.no_grad():
            sums = student.sequence_logprobs([prompt] * len(choices), choices).tolist()
        means = [s / len(ids) for s, ids in zip(sums, student.target_ids(choices), strict=True)]
        assert t.summary == choices[max(range(len(choices)), key=means.__getitem__)]
        assert t.predicted == stages.parse_answer(t.summary, q.labels) and t.predicted in q.labels
    assert len({t.summary.split(".")[0] for t in traces}) > 1  # the choice depends on the input


def test_unknown_answer_mode_fails_before_generating(student, questions):
    with pytest.raises(ValueError, match="unknown answer mode 'guess'"):
        run_pipeline(student, questions[:1], sampling=FAST, restrict_answer="guess")


def test_one_generate_call_per_stage_per_batch(questions, monkeypatch):
    s = tiny_student("seq2seq")
    calls = []
    real_generate, real_choice = s.generate, s.generate_choice
    monkeypatch.setattr(s, "generate", lambda inputs, **kw: calls.append(("gen", len(inputs)))
                        or real_generate(inputs, **kw))
    monkeypatch.setattr(s, "generate_choice", lambda inputs, choices, **kw: calls.append(("choice", len(inputs)))
                        or real_choice(inputs, choices, **kw))
    run_pipeline(s, questions[:4], sampling=FAST, batch_size=2, restrict_answer=True)
    # Two batches of two CSQA questions: Recall (2 inputs), Analyze (2 x 5 options), Summarize (2).
    assert calls == [("gen", 2), ("gen", 10), ("choice", 2)] * 2


@pytest.mark.parametrize("stage_type", list(stages.STAGE_TYPES))
def test_every_stage_type(stage_type, questions):
    s = tiny_student("seq2seq")
    traces = run_pipeline(s, questions, stage_type=stage_type, sampling=FAST, batch_size=3, restrict_answer=True)
    used = stages.stages_of(stage_type)
    for t in traces:
        assert (t.recall is not None) == (stages.RECALL in used)
        assert (set(t.analyses) == set(t.question.labels)) if stages.ANALYZE in used else t.analyses == {}
        assert t.summary and t.predicted in t.question.labels
        assert t.correct == (t.predicted == t.question.answer)
        assert set(t.stage_timings) == set(used) and all(v >= 0 for v in t.stage_timings.values())
        assert t.stage_type == stage_type and t.model == s.name


def test_step_api_reruns_only_what_follows_an_edit(student, questions):
    q = questions[0]
    full = complete_trace(student, q, sampling=FAST)
    assert _texts(full) == _texts(run_pipeline(student, [q], sampling=FAST)[0])

    recall = run_stage(student, q, "recall", sampling=FAST)
    assert recall == full.recall
    analyses = run_stage(student, q, "analyze", recall=recall, sampling=FAST)
    assert analyses == full.analyses
    assert run_stage(student, q, "summarize", recall=recall, analyses=analyses, sampling=FAST) == full.summary

    edited = complete_trace(student, q, recall="Plates are kept in a cupboard.", from_stage="analyze",
                            sampling=FAST)
    assert edited.recall == "Plates are kept in a cupboard."
    assert edited.analyses != full.analyses  # the later stages were re-run from the edit
    assert edited.analyses == run_stage(student, q, "analyze", recall=edited.recall, sampling=FAST)

    mine = {**full.analyses, "A": "This is clearly right."}
    last = complete_trace(student, q, recall=full.recall, analyses=mine, from_stage="summarize", sampling=FAST)
    assert (last.recall, last.analyses) == (full.recall, mine)  # earlier stages untouched
    assert set(last.stage_timings) == {"summarize"}

    batch = complete_traces(student, [full, edited], "summarize", sampling=FAST, batch_size=2)
    assert [t.summary for t in batch] == [
        complete_trace(student, q, recall=t.recall, analyses=t.analyses, from_stage="summarize",
                       sampling=FAST).summary for t in (full, edited)]


def test_iter_trace_yields_each_stage_as_it_lands(student, questions):
    q = questions[0]
    full = complete_trace(student, q, sampling=FAST)
    steps = list(iter_trace(student, q, sampling=FAST))
    assert [stage for stage, _ in steps] == ["recall", "analyze", "summarize"]
    (_, after_recall), (_, after_analyze), (_, last) = steps
    assert after_recall.recall == full.recall and after_recall.analyses == {} and after_recall.summary == ""
    assert after_analyze.analyses == full.analyses and after_analyze.summary == ""
    assert set(after_analyze.stage_timings) == {"recall", "analyze"}
    assert _texts(last) == _texts(full) and last.predicted == full.predicted
    # From an edited recall: Analyze, then Summarize; the edit is kept in every trace it yields.
    edited = list(iter_trace(student, q, recall="Plates are kept in a cupboard.", from_stage="analyze",
                             sampling=FAST))
    assert [stage for stage, _ in edited] == ["analyze", "summarize"]
    assert all(t.recall == "Plates are kept in a cupboard." for _, t in edited)


def test_stream_trace_shows_each_stage_as_written_and_ends_like_iter_trace(student, questions):
    q = questions[0]
    events = list(stream_trace(student, q, sampling=FAST, restrict_answer=False, min_interval=0))
    finished = [(stage, t) for stage, t, done in events if done]
    expected = list(iter_trace(student, q, sampling=FAST, restrict_answer=False))
    assert [stage for stage, _ in finished] == [stage for stage, _ in expected]
    assert [_texts(t) for _, t in finished] == [_texts(t) for _, t in expected]
    partial = {stage: [t for st, t, done in events if st == stage and not done] for stage in stages.STAGES}
    # Every token is shown (min_interval 0): FAST's budgets are 6 / 4 / 8 tokens, and an untrained tiny model
    # rarely stops early; the last text shown while writing is the stage's output.
    for stage, text_of in (("recall", lambda t: t.recall), ("analyze", lambda t: t.analyses),
                           ("summarize", lambda t: t.summary)):
        assert len(partial[stage]) >= 2, stage
        assert text_of(partial[stage][-1]) == text_of(dict(finished)[stage])
    # While Analyze is written the Recall is the finished one and Summarize still empty.
    assert all(t.recall == expected[0][1].recall and t.summary == "" for t in partial["analyze"])
    assert all(set(t.analyses) == set(q.labels) for t in partial["analyze"])


def test_stream_trace_one_stage_and_the_reader_leaving(student, questions):
    q = questions[1]
    alone = list(stream_trace(student, q, recall="Plates are kept in a cupboard.", from_stage="analyze",
                              until="analyze", sampling=FAST, min_interval=0))
    assert [stage for stage, _, done in alone if done] == ["analyze"]
    assert alone[-1][1].summary == "" and alone[-1][1].recall == "Plates are kept in a cupboard."
    with pytest.raises(ValueError, match="no 'analyze' stage to stop after"):
        list(stream_trace(student, q, stage_type="summarize", until="analyze"))


def _no_stream_thread_left(seconds=10):
    deadline = time.time() + seconds
    while any(t.name == "stream_trace" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.01)
    return not any(t.name == "stream_trace" for t in threading.enumerate())


def _counting_puts(monkeypatch):
    # Tokens handed to the streamers, per stage call: what the worker generated, read or not.
    calls: list[int] = []
    real_init, real_put = RowsStreamer.__init__, RowsStreamer.put

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.call_index = len(calls)
        calls.append(0)

    def put(self, value):
        calls[self.call_index] += 1
        return real_put(self, value)

    monkeypatch.setattr(RowsStreamer, "__init__", init)
    monkeypatch.setattr(RowsStreamer, "put", put)
    return calls


def test_stream_trace_stops_when_the_reader_leaves(student, questions, monkeypatch):
    q = questions[1]
    calls = _counting_puts(monkeypatch)
    # Mid-stage: a reader that goes away after the first token of a 400-token Recall (an untrained tiny model
    # rarely writes EOS): the worker stops at its next token instead of writing the rest.
    events = stream_trace(student, q, sampling=Sampling(recall=StageSampling(max_new_tokens=400)), min_interval=0)
    assert next(events)[2] is False
    events.close()
    assert _no_stream_thread_left()
    assert len(calls) == 1 and calls[0] < 50, calls
    # Between stages: a reader that leaves once the Recall is done (its later partial texts held back by the
    # interval).
    # The worker may have begun Analyze (then stopped at its next token) but never reaches Summarize.
    calls.clear()
    long_analyze = Sampling(recall=StageSampling(max_new_tokens=6), analyze=StageSampling(max_new_tokens=400))
    events = stream_trace(student, q, sampling=long_analyze, restrict_answer="score", min_interval=3600)
    stage, _, finished = next(events)
    while not finished:  # the first text may show at once; later ones wait the interval, past the stage's end
        stage, _, finished = next(events)
    assert stage == "recall"
    events.close()
    assert _no_stream_thread_left()
    assert len(calls) in (1, 2) and (len(calls) == 1 or calls[1] < 50), calls


def test_stream_trace_hands_a_worker_error_to_the_reader(student, questions, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom: the model failed")

    monkeypatch.setattr(student, "generate", broken)
    with pytest.raises(ValueError, match="boom: the model failed"):
        list(stream_trace(student, questions[0], sampling=FAST))
    assert _no_stream_thread_left()


def test_step_api_bad_input(questions):
    s = tiny_student("seq2seq")
    q = questions[0]
    with pytest.raises(ValueError, match="keeps the recall"):
        complete_trace(s, q, from_stage="analyze")
    with pytest.raises(ValueError, match=r"options \['B', 'C', 'D', 'E'\] have none"):
        complete_trace(s, q, recall="r", analyses={"A": "x"}, from_stage="summarize")
    with pytest.raises(ValueError, match="has no 'recall' stage"):
        complete_trace(s, q, stage_type="analyze_summarize", from_stage="recall")
    with pytest.raises(ValueError, match="has no 'analyze' stage"):
        run_stage(s, q, "analyze", stage_type="recall_summarize")
    with pytest.raises(ValueError, match="unknown stage type"):
        run_pipeline(s, [q], stage_type="everything")
    with pytest.raises(ValueError, match="temperature"):
        StageSampling(temperature=0)


def test_sampling_is_seeded_and_reproducible(questions):
    s = tiny_student("causal")
    hot = Sampling.sampled(temperature=2.0, seed=7)
    hot.recall.max_new_tokens, hot.analyze.max_new_tokens, hot.summarize.max_new_tokens = 6, 4, 8
    first = run_pipeline(s, questions, sampling=hot, batch_size=3, num_samples=3)
    again = run_pipeline(s, questions, sampling=hot, batch_size=3, num_samples=3)
    assert [_texts(t) for t in first] == [_texts(t) for t in again]
    assert len(first) == 3 * len(questions)
    assert [t.sampling["sample_index"] for t in first[:3]] == [0, 1, 2]
    assert len({t.recall for t in first[:3]}) > 1  # the samples of one question differ
    other = run_pipeline(s, questions, sampling=Sampling.from_dict({**hot.to_dict(), "seed": 8}), batch_size=3,
                         num_samples=3)
    assert [t.recall for t in other] != [t.recall for t in first]
    assert first[0].sampling["recall"]["do_sample"] and not first[0].sampling["summarize"]["do_sample"]
    assert Sampling.from_dict(first[0].sampling) == hot
    votes = self_consistency(first)
    assert set(votes) == {q.id for q in questions}
    assert "self_consistency_accuracy" in accuracy(first)


def _trace(qid: str, answer: str | None, predicted: str | None) -> Trace:
    q = Question(qid, "stem", [Option("A", "a"), Option("B", "b"), Option("C", "c")], answer)
    return Trace(q, None, {}, "", predicted, None if answer is None else predicted == answer)


def test_accuracy_and_self_consistency():
    traces = [_trace("1", "A", "A"), _trace("2", "B", None), _trace("3", "C", "A"), _trace("4", None, "B")]
    assert accuracy(traces) == {"accuracy": 1 / 3, "invalid_rate": 1 / 4, "n": 4, "top_answer_share": 2 / 4}
    votes = [_trace("1", "A", "B"), _trace("1", "A", "A"), _trace("1", "A", "A"),
             _trace("2", "B", None), _trace("2", "B", None), _trace("2", "B", "B"),
             _trace("3", "C", None)]
    assert self_consistency(votes) == {"1": "A", "2": "B", "3": None}
    result = accuracy(votes)
    assert result["questions"] == 3 and result["self_consistency_accuracy"] == 2 / 3
    assert accuracy([]) == {"accuracy": 0.0, "invalid_rate": 0.0, "n": 0, "top_answer_share": 0.0}


def test_traces_jsonl_round_trip_and_errors(tmp_path, questions):
    traces = run_pipeline(tiny_student("seq2seq"), questions[:2], sampling=FAST)
    path = write_traces(tmp_path / "out" / "traces.jsonl", traces)
    assert read_traces(path) == traces
    assert [p.name for p in path.parent.iterdir()] == ["traces.jsonl"]  # no temporary file left behind
    lines = path.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_traces(bad)
    bad.write_text(lines[0] + "\n" + json.dumps({"recall": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not a trace .*question"):
        read_traces(bad)


def test_evaluate_command(tmp_path, data_dir, capsys):
    folder = tiny_student("causal").save(tmp_path / "student")
    out = tmp_path / "traces.jsonl"
    common = ["evaluate", "--student", str(folder), "--data", "csqa", "--data-dir", str(data_dir), "--limit", "3",
              "--recall-tokens", "4", "--analyze-tokens", "3", "--summarize-tokens", "6", "--batch-size", "2"]
    assert cli.main([*common, "--out", str(out), "--restrict-answer", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == 3 and result["invalid_rate"] == 0 and result["questions_per_second"] > 0
    assert result["weights"] == "fp32"
    traces = read_traces(out)
    assert len(traces) == 3 and all(t.predicted in "ABCDE" for t in traces)
    assert result["accuracy"] == accuracy(traces)["accuracy"]

    assert cli.main([*common, "--out", str(out), "--num-samples", "2", "--temperature", "1.5"]) == 0
    text = capsys.readouterr().out
    assert "accuracy:" in text and "self-consistency:" in text and "questions/second:" in text
    assert len(read_traces(out)) == 6

    assert cli.main([*common, "--out", str(out), "--restrict-answer", "--json", "--int8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"] == "int8" and result["questions"] == 3
    assert all(t.predicted in "ABCDE" for t in read_traces(out))
    assert cli.main([*common, "--out", str(out), "--restrict-answer", "--int8"]) == 0
    assert " (int8) on csqa" in capsys.readouterr().out

    assert cli.main([*common, "--out", str(out), "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert cli.main([*common, "--out", str(out), "--sample-stages", "think", "--temperature", "1"]) == 2
    assert "unknown stage 'think'" in capsys.readouterr().err


def test_evaluate_from_stage_gives_the_student_the_teachers_texts(tmp_path, data_dir, capsys):
    from tinythinker.data import load_rationales

    folder = tiny_student("seq2seq").save(tmp_path / "student")
    out = tmp_path / "oracle.jsonl"
    argv = ["evaluate", "--student", str(folder), "--data", "csqa", "--data-dir", str(data_dir), "--limit", "6",
            "--summarize-tokens", "6", "--batch-size", "4", "--out", str(out), "--json",
            "--from-stage", "summarize", "--restrict-answer", "score"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    traces = read_traces(out)
    assert result["questions"] == len(traces) == 6 - result["skipped_uncovered"] > 0
    questions = load_questions("csqa", "validation", data_dir=data_dir, limit=6)
    teacher = load_rationales("csqa", questions, data_dir=data_dir)
    for t in traces:  # the teacher's recall and analyses, untouched; only the summary is the student's
        assert any(t.recall == r.recall and t.analyses == r.analyses for r in teacher[t.question.id])
        assert t.summary in stages.answer_choices(t.question)
    assert cli.main([*argv[:-4], "--stage-type", "summarize", "--from-stage", "summarize"]) == 2
    assert "gives the student nothing from the teacher" in capsys.readouterr().err

    # --resume keeps the traces that hold the teacher's texts it gives now, and refuses one that does not
    first = traces[:2]
    write_traces(out, first)
    assert cli.main([*argv, "--resume"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed_questions"] == 2 and [t.to_dict() for t in read_traces(out)[:2]] == [
        t.to_dict() for t in first]
    assert [(t.question.id, t.summary) for t in read_traces(out)] == [(t.question.id, t.summary) for t in traces]
    first[1].recall = "not the teacher's recall"
    write_traces(out, first)
    assert cli.main([*argv, "--resume"]) == 2
    assert "oracle.jsonl, line 2: not the teacher's texts before summarize" in capsys.readouterr().err


def test_greedy_is_the_default():
    assert GREEDY.is_greedy and not Sampling.sampled().is_greedy
    assert GREEDY.summarize.max_new_tokens >= len("So the answer is option A.".split())


def test_evaluate_resume_keeps_saved_traces_and_runs_the_rest(tmp_path, data_dir, capsys, monkeypatch):
    import tinythinker.pipeline as pipeline

    folder = tiny_student("causal").save(tmp_path / "student")
    out = tmp_path / "traces.jsonl"
    common = ["evaluate", "--student", str(folder), "--data", "csqa", "--data-dir", str(data_dir),
              "--recall-tokens", "4", "--analyze-tokens", "3", "--summarize-tokens", "6", "--batch-size", "1",
              "--restrict-answer", "score", "--json"]
    assert cli.main([*common, "--limit", "4", "--out", str(tmp_path / "whole.jsonl")]) == 0
    whole = read_traces(tmp_path / "whole.jsonl")
    capsys.readouterr()

    # a run that dies in its third batch keeps the two batches it finished
    real, calls = pipeline._run_stages, []

    def dies_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "_run_stages", dies_third)
    assert cli.main([*common, "--limit", "4", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "_run_stages", real)
    assert len(read_traces(out)) == 2
    saved = {t.question.id: t for t in read_traces(out)}

    assert cli.main([*common, "--limit", "4", "--out", str(out), "--resume"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed_questions"] == 2 and result["questions"] == 4
    resumed = read_traces(out)
    assert [t.question.id for t in resumed] == [t.question.id for t in whole]  # question order, not run order
    assert [(t.recall, t.analyses, t.predicted) for t in resumed] == [(t.recall, t.analyses, t.predicted)
                                                                      for t in whole]
    assert all(resumed[i].stage_timings == saved[t.question.id].stage_timings  # kept, not run again
               for i, t in enumerate(resumed) if t.question.id in saved)
    assert result["accuracy"] == accuracy(whole)["accuracy"]

    # lines another run wrote are refused, naming the line, and the file is left as it was
    before = out.read_text()
    assert cli.main([*common, "--limit", "4", "--out", str(out), "--resume", "--stage-type", "summarize"]) == 2
    assert "traces.jsonl, line 1: its stage type is 'recall_analyze_summarize'" in capsys.readouterr().err
    assert cli.main([*common, "--limit", "3", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "traces.jsonl, line 4: question" in err and "not among this run's 3 questions" in err
    assert out.read_text() == before
    assert cli.main([*common, "--limit", "4", "--resume"]) == 2
    assert "--resume needs the --out" in capsys.readouterr().err
