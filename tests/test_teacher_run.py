"""The teach loop against a scripted local OpenAI-compatible server: counts, re-asks, votes, cache, and faults
(server down, timeouts, HTTP 429 and 500): retried, then reported, nothing lost."""

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from teacher_fake_server import FakeChatServer, Reply, completion, error_reply, user_question

from tinythinker.cli import main as cli_main
from tinythinker.teacher import (
    TeacherConfig,
    load_teacher_output,
    load_teacher_rationales,
    majority_verdict,
    run_teacher,
    select_diverse,
)
from tinythinker.teacher.cache import ResponseCache
from tinythinker.teacher.client import resolve_api_key
from tinythinker.types import Option, Question

ROOT = Path(__file__).resolve().parent.parent
RECALLS = [
    "Soft moss and tall trees describe a wooded place.",
    "The scene is outdoors where plants cover the ground.",
    "A person resting beneath branches is likely among many trees.",
    "Looking upward at a canopy suggests a forest setting.",
    "Moss grows in damp shaded woodland areas.",
    "Trees all around point to a natural wooded environment.",
    "Lying on vegetation while gazing at leaves implies nature.",
    "The description fits a place dense with trees and moss.",
]


def questions(n=3, answer="A"):
    return [Question(f"q{i}", f"Question number {i}?", [Option(lab, f"option {lab}{i}") for lab in "ABC"], answer)
            for i in range(n)]


def answer(verdict, recall, labels="ABC"):
    lines = [f"{lab} is {'correct' if lab == verdict else 'incorrect'}. Because reason for {lab} number {len(recall)}."
             for lab in labels]
    return f"Key Information: {recall}\nExplanations: " + "\n".join(lines)


def config(server, **kw):
    base = dict(model="fake-teacher", base_url=server.base_url if server else None, samples=4, keep=2, shots=2,
                rounds=3, max_retries=1, timeout=5.0, workers=1, progress=False)
    base.update(kw)
    return TeacherConfig(**base)


def always(verdicts):
    """A responder giving, for every request, answers with these verdicts (cycled to the n asked)."""
    def respond(body, index):
        n = body["n"]
        return Reply(body=completion([answer(verdicts[i % len(verdicts)], RECALLS[(index + i) % 8])
                                      for i in range(n)]))
    return respond


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_truncated_and_malformed_answers_are_reasked_counts_add_up_and_rerun_is_free(tmp_path):
    def respond(body, index):
        if body["n"] == 4:  # first round: two good, one cut off, one without the format
            return Reply(body=completion(
                [answer("A", RECALLS[0]), answer("A", RECALLS[1]), "Key Information: cut", "I think it is A."],
                ["stop", "stop", "length", "stop"]))
        return Reply(body=completion([answer("A", RECALLS[2]), answer("B", RECALLS[3])]))

    with FakeChatServer(respond) as server:
        s = run_teacher(questions(3), config(server), tmp_path)
        first = (tmp_path / "rationales.jsonl").read_bytes()
        assert [(b["n"], b["max_tokens"]) for b in server.requests] == [(4, 256), (2, 512)] * 3
        assert all(b["temperature"] == 0.8 and b["model"] == "fake-teacher" for b in server.requests)

        sm = s["samples"]
        assert s["statuses"] == {"kept": 3, "dropped_disagreement": 0, "no_valid_answer": 0, "failed": 0,
                                 "not_attempted": 0}
        assert sm["received"] == 18 == sm["truncated"] + sm["malformed"] + sm["valid"]
        assert (sm["truncated"], sm["malformed"], sm["valid"], sm["consistent"], sm["kept"]) == (3, 3, 12, 9, 6)
        assert sm["malformed_by_reason"] == {"no_key_information": 3}
        c = s["client"]
        assert (c["requests"], c["cache_hits"], c["prompt_tokens"], c["completion_tokens"]) == (6, 0, 600, 720)
        assert s["estimated_cost"] == pytest.approx(0.6 * 0.005 + 0.72 * 0.015)

        rationales = load_teacher_rationales(tmp_path)
        assert list(rationales) == ["q0", "q1", "q2"]
        for rs in rationales.values():
            assert len(rs) == 2
            assert all(r.meta["verdict"] == "A" and set(r.analyses) == {"A", "B", "C"} for r in rs)
            assert all(r.source == "teacher:fake-teacher" and r.recall in RECALLS for r in rs)

        again = run_teacher(questions(3), config(server), tmp_path)
        assert len(server.requests) == 6  # nothing asked again
        assert (again["client"]["requests"], again["client"]["cache_hits"]) == (0, 6)
        assert again["estimated_cost"] == 0
        assert (tmp_path / "rationales.jsonl").read_bytes() == first


def test_server_that_ignores_n_is_asked_again_for_the_rest(tmp_path):
    def respond(body, index):
        return Reply(body=completion([answer("A", RECALLS[index % 8])]))  # one choice whatever n says

    with FakeChatServer(respond) as server:
        s = run_teacher(questions(2), config(server, samples=3, keep=3), tmp_path)
    assert [b["n"] for b in server.requests] == [3, 2, 1, 3, 2, 1]
    assert s["samples"]["kept"] == 6


def test_disagreement_follows_the_teacher_or_drops_the_question(tmp_path):
    with FakeChatServer(always(["B", "B", "B", "A"])) as server:
        s = run_teacher(questions(1), config(server, keep=8), tmp_path / "follow")
        (q, rs), = load_teacher_output(tmp_path / "follow")
        assert s["relabelled"] == 1
        assert (q.answer, q.meta["gold_answer"]) == ("B", "A")
        assert len(rs) == 3 and all(r.meta["verdict"] == "B" for r in rs)

        s = run_teacher(questions(1), config(server, on_disagreement="drop"), tmp_path / "drop")
        assert s["statuses"]["dropped_disagreement"] == 1
        assert s["not_kept"]["dropped_disagreement"] == ["q0"]
        assert load_teacher_rationales(tmp_path / "drop") == {}


def test_no_valid_answer_after_all_rounds(tmp_path):
    with FakeChatServer(lambda body, i: Reply(body=completion(["A is correct."] * body["n"]))) as server:
        s = run_teacher(questions(1), config(server, samples=2, rounds=2), tmp_path)
    assert len(server.requests) == 2
    assert s["statuses"]["no_valid_answer"] == 1
    assert s["samples"]["malformed"] == s["samples"]["received"] == 4


def test_majority_tie_stays_with_the_gold_label():
    assert majority_verdict(["B", "A", "B", "A"], "A") == "A"
    assert majority_verdict(["B", "C", "C"], "A") == "C"
    assert majority_verdict(["B", "C"], "A") == "B"  # no majority for gold: the first of the tie, as Counter does


def test_selection_prefers_distinct_recalls_then_fills_at_random_seeded():
    recalls = ["The forest has moss and trees.", "The forest has moss and trees!", RECALLS[2], RECALLS[4]]
    # 0 and 1 are one edit apart: only 2 and 3 are distinct, so they come first.
    assert select_diverse(list(range(4)), recalls, 2, random.Random(0)) == [2, 3]
    picks = {tuple(select_diverse(list(range(4)), recalls, 3, random.Random(s))) for s in range(20)}
    assert {p[:2] for p in picks} == {(2, 3)} and {p[2] for p in picks} == {0, 1}
    assert select_diverse(list(range(4)), recalls, 3, random.Random(5)) == select_diverse(
        list(range(4)), recalls, 3, random.Random(5))


def test_server_down_is_retried_then_reported_and_a_rerun_resumes(tmp_path):
    port = free_port()
    cfg = config(None, base_url=f"http://127.0.0.1:{port}/v1", max_consecutive_failures=2)
    s = run_teacher(questions(3), cfg, tmp_path)
    assert s["statuses"]["failed"] == 2 and s["statuses"]["not_attempted"] == 1  # stopped asking after 2 in a row
    assert s["client"]["attempts"] == 4 and s["client"]["retries"] == 2  # each request tried twice
    assert s["client"]["errors"] == {"connection error": 2}
    assert set(s["errors"]) == {"q0", "q1"}
    assert (tmp_path / "rationales.jsonl").read_text() == ""
    assert not (tmp_path / "cache.jsonl").exists()

    with FakeChatServer(always(["A"]), port=port) as server:
        s = run_teacher(questions(3), cfg, tmp_path)
    assert s["statuses"]["kept"] == 3 and len(server.requests) == 3


def test_timeouts_are_retried_then_reported(tmp_path):
    def respond(body, index):
        slow = user_question(body) == "Question number 1?" or index < 2  # q0 times out twice, q1 always
        return Reply(body=completion([answer("A", RECALLS[i]) for i in range(body["n"])]), delay=2.5 if slow else 0)

    with FakeChatServer(respond) as server:
        s = run_teacher(questions(2), config(server, timeout=0.8, max_retries=2), tmp_path)
    assert s["statuses"]["kept"] == 1 and s["statuses"]["failed"] == 1
    assert s["client"]["errors"] == {"timeout": 1}
    assert "timeout" in s["errors"]["q1"]
    assert s["client"]["attempts"] == 6 and s["client"]["retries"] == 4
    assert list(load_teacher_rationales(tmp_path)) == ["q0"]


def test_http_429_and_500_are_retried_then_succeed(tmp_path):
    def respond(body, index):
        if index == 0:
            return error_reply(429, "Rate limit reached", {"retry-after-ms": "20"})
        if index == 1:
            return error_reply(500, "boom")
        return Reply(body=completion([answer("A", RECALLS[i]) for i in range(body["n"])]))

    with FakeChatServer(respond) as server:
        s = run_teacher(questions(1), config(server, max_retries=3), tmp_path)
    assert len(server.requests) == 3
    assert s["statuses"]["kept"] == 1
    assert s["client"]["http_errors"] == {"429": 1, "500": 1}
    assert (s["client"]["retries"], s["client"]["failed_requests"], s["client"]["requests"]) == (2, 0, 1)


def test_persistent_500_is_reported_and_nothing_is_lost(tmp_path):
    def respond(body, index):
        if user_question(body) == "Question number 1?":
            return error_reply(500, "model overloaded")
        return Reply(body=completion([answer("A", RECALLS[i]) for i in range(body["n"])]))

    with FakeChatServer(respond) as server:
        s = run_teacher(questions(3), config(server), tmp_path)
    assert s["statuses"]["kept"] == 2 and s["not_kept"]["failed"] == ["q1"]
    assert "HTTP 500" in s["errors"]["q1"] and s["client"]["errors"] == {"HTTP 500": 1}
    assert s["client"]["http_errors"] == {"500": 2}

    with FakeChatServer(always(["A"])) as healthy:
        s = run_teacher(questions(3), config(healthy), tmp_path)
    assert {user_question(b) for b in healthy.requests} == {"Question number 1?"}
    assert list(load_teacher_rationales(tmp_path)) == ["q0", "q1", "q2"]


def test_a_torn_cache_line_is_cut_off_and_a_corrupt_one_named(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "k1", "choices": [], "usage": {}}) + "\n" + '{"key": "k2", "cho')
    cache = ResponseCache(path)
    assert len(cache) == 1 and path.read_text().endswith("\n")
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"cache\.jsonl, line 1"):
        ResponseCache(path)


def test_teacher_output_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "rationales.jsonl"
    path.write_text(json.dumps({"question_id": "q0", "question": questions(1)[0].to_dict()}) + "\n")
    with pytest.raises(ValueError, match=r"rationales\.jsonl, line 1: missing field 'rationales'"):
        load_teacher_rationales(path)
    with pytest.raises(FileNotFoundError, match="teacher rationales not found"):
        load_teacher_rationales(tmp_path / "nowhere")


def test_api_key_comes_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-test")
    assert resolve_api_key("MY_TEACHER_KEY", None) == "sk-test"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        resolve_api_key("OPENAI_API_KEY", None)
    assert resolve_api_key("OPENAI_API_KEY", "http://127.0.0.1:1/v1")  # local servers need none


def test_questions_without_gold_are_refused_before_any_request(tmp_path):
    qs = questions(2)
    qs[1].answer = None
    with pytest.raises(ValueError, match="q1"):
        run_teacher(qs, config(None, base_url="http://127.0.0.1:9/v1"), tmp_path)
    assert not (tmp_path / "cache.jsonl").exists()


@pytest.mark.slow  # a child process importing the data stack: ~5 s alone, ~20 s on a busy machine
def test_killed_cli_run_resumes_without_reasking_answered_questions(tmp_path, data_dir):
    seen = []

    def stall_on_third(body, index):
        q = user_question(body)
        if q not in seen:
            seen.append(q)
        delay = 60 if seen.index(q) >= 2 else 0
        return Reply(body=completion([answer_for(body, "A")] * body["n"]), delay=delay)

    out = tmp_path / "teach"
    with FakeChatServer(stall_on_third) as server:
        args = ["--data", "csqa", "--split", "train", "--limit", "3", "--data-dir", str(data_dir),
                "--base-url", server.base_url, "--model", "fake-teacher", "--samples", "2", "--workers", "1",
                "--no-progress", "--out", str(out)]
        proc = subprocess.Popen([sys.executable, "-m", "tinythinker", "teach", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while len(seen) < 3 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert len(seen) == 3, proc.stdout.read().decode() if proc.poll() is not None else "no third request"
        finally:
            proc.kill()
            proc.wait()
    assert not (out / "rationales.jsonl").exists()  # killed before the end: nothing half written
    assert len((out / "cache.jsonl").read_text().splitlines()) == 2

    with FakeChatServer(lambda body, i: Reply(body=completion([answer_for(body, "A")] * body["n"]))) as healthy:
        rerun = args[:args.index("--base-url") + 1] + [healthy.base_url] + args[args.index("--model"):]
        assert cli_main(["teach", *rerun]) == 0
    assert [user_question(b) for b in healthy.requests] == [seen[2]]
    assert len(load_teacher_rationales(out)) == 3


def answer_for(body, fallback):
    """A valid answer for the request's question, arguing for the gold label the prompt opened."""
    verdict_lines = body["messages"][-1]["content"].split("\nExplanations: ", 1)[1].splitlines()
    labels = [line.split(" ")[0] for line in verdict_lines]  # the gold label's line comes first
    return answer(labels[0] or fallback, "The key point of this question is what the stem asks.", "".join(labels))
