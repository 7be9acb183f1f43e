"""Teach a set of questions: ask, parse, vote, select, and write rationales in our `Rationale` format.

Per question (the paper's notebook, `extract_answer_reasoning`):
1. ask for `samples` answers; drop truncated (`finish_reason == "length"`) and malformed ones and ask again for as
   many as were dropped, for at most `rounds` rounds (a truncation doubles `max_tokens` for the next round, as in
   the notebook);
2. take the majority of the valid answers' verdicts; where it differs from the gold label, follow the teacher
   (the notebook) or drop the question (`on_disagreement`);
3. keep only the answers whose verdict is the label in force, and of those up to `keep`, preferring distinct
   recalls (select.select_diverse), seeded per question.

Output folder (`out`):
    rationales.jsonl  one line per question kept: {"question_id", "question", "rationales": [Rationale dicts]}
    summary.json      counts, tokens, estimated cost, and the ids of the questions not kept, by reason
    cache.jsonl       every answer received, keyed by request: a rerun is free and an interrupted run resumes
    config.json, metrics.jsonl   the run's settings and progress lines (as any run folder)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tinythinker.data.records import read_jsonl
from tinythinker.teacher.cache import ResponseCache
from tinythinker.teacher.client import TeacherClient, TeacherRequestError, resolve_api_key
from tinythinker.teacher.parse import REASONS, ParsedAnswer, ParseError, parse_response
from tinythinker.teacher.prompt import DEFAULT_SHOTS, PromptSet, build_messages, load_prompts
from tinythinker.teacher.select import consistent, label_in_force, select_diverse
from tinythinker.types import Question, Rationale

# The paper's notebook: 8 samples per CSQA question, 4 for OBQA and StrategyQA; it keeps as many as it samples.
DEFAULT_SAMPLES = {"csqa": 8, "obqa": 4, "strategyqa": 4}
RATIONALES_FILE, SUMMARY_FILE, CACHE_FILE = "rationales.jsonl", "summary.json", "cache.jsonl"
STATUSES = ("kept", "dropped_disagreement", "no_valid_answer", "failed", "not_attempted")


@dataclass
class TeacherConfig:
    model: str = "gpt-4o-2024-05-13"  # the paper's teacher
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    benchmark: str = "csqa"  # picks the few-shot examples and the defaults below
    samples: int | None = None  # None: DEFAULT_SAMPLES of the benchmark (8)
    keep: int | None = None  # None: as many as `samples`
    shots: int | None = None  # None: DEFAULT_SHOTS of the benchmark (8)
    temperature: float = 0.8
    max_tokens: int = 256
    rounds: int = 3  # the notebook's CSQA and OBQA runs: a first request and two re-asks
    on_disagreement: str = "follow-teacher"
    timeout: float = 60.0
    max_retries: int = 4
    workers: int = 4
    max_consecutive_failures: int = 8
    seed: int = 0
    # GPT-4o (2024-05-13) prices in the notebook: $5 / $15 per million tokens.
    price_in_per_1k: float = 0.005
    price_out_per_1k: float = 0.015
    examples_path: str | None = None
    instruction_path: str | None = None
    progress: bool = True

    def resolved(self) -> TeacherConfig:
        c = TeacherConfig(**asdict(self))
        c.samples = c.samples or DEFAULT_SAMPLES.get(c.benchmark, 8)
        c.keep = c.keep if c.keep is not None else c.samples
        c.shots = c.shots or DEFAULT_SHOTS.get(c.benchmark, 8)
        for name in ("samples", "shots", "rounds", "workers", "max_tokens"):
            if getattr(c, name) < 1:
                raise ValueError(f"teacher setting {name} must be at least 1, got {getattr(c, name)}")
        if c.keep < 1:
            raise ValueError(f"teacher setting keep must be at least 1, got {c.keep}")
        return c


@dataclass
class QuestionResult:
    question: Question
    status: str
    label: str | None = None
    relabelled: bool = False
    received: int = 0
    truncated: int = 0
    malformed: Counter = field(default_factory=Counter)
    valid: int = 0
    consistent: int = 0
    rationales: list[Rationale] = field(default_factory=list)
    error: str = ""


def teach_question(question: Question, cfg: TeacherConfig, prompts: PromptSet, client: TeacherClient) -> QuestionResult:
    result = QuestionResult(question=question, status="no_valid_answer")
    messages = build_messages(prompts, question, cfg.shots)
    valid: list[ParsedAnswer] = []
    max_tokens = cfg.max_tokens
    try:
        for round_index in range(cfg.rounds):
            need = cfg.samples - len(valid)
            if need <= 0:
                break
            choices = client.sample(messages, n=need, temperature=cfg.temperature, max_tokens=max_tokens,
                                    round_index=round_index, question_id=question.id)
            truncated = False
            for choice in choices:
                result.received += 1
                if choice.finish_reason == "length":
                    result.truncated += 1
                    truncated = True
                    continue
                try:
                    valid.append(parse_response(choice.content, question.labels))
                except ParseError as e:
                    result.malformed[e.reason] += 1
            if truncated:
                max_tokens *= 2
    except TeacherRequestError as e:
        # Answers already received stay counted (received = truncated + malformed + valid) and cached.
        result.status, result.error, result.valid = "failed", str(e), len(valid)
        return result

    result.valid = len(valid)
    if not valid:
        return result
    label, status = label_in_force([s.verdict for s in valid], question.answer, cfg.on_disagreement)
    if label is None:
        result.status = status
        return result
    kept_samples = consistent(valid, label)
    result.consistent = len(kept_samples)
    rng = random.Random(f"{cfg.seed}:{question.id}")
    chosen = select_diverse(kept_samples, [s.recall for s in kept_samples], cfg.keep, rng)
    result.status, result.label, result.relabelled = "kept", label, status == "relabelled"
    result.rationales = [
        Rationale(recall=s.recall, analyses=dict(s.analyses), source=f"teacher:{cfg.model}",
                  meta={"teacher": cfg.model, "verdict": s.verdict})
        for s in chosen
    ]
    return result


def _output_line(r: QuestionResult) -> dict[str, Any]:
    q = Question.from_dict(r.question.to_dict())
    if r.relabelled:
        # The label the rationales argue for is the one phase 1 must train on; the benchmark's stays on record.
        q.meta["gold_answer"] = q.answer
        q.answer = r.label
    return {"question_id": q.id, "question": q.to_dict(), "rationales": [x.to_dict() for x in r.rationales]}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summarize(results: list[QuestionResult], client: TeacherClient, cfg: TeacherConfig,
              seconds: float) -> dict[str, Any]:
    statuses = Counter(r.status for r in results)
    malformed: Counter = Counter()
    for r in results:
        malformed.update(r.malformed)
    stats = client.stats
    cost = stats.prompt_tokens / 1000 * cfg.price_in_per_1k + stats.completion_tokens / 1000 * cfg.price_out_per_1k
    return {
        "model": cfg.model,
        "questions": len(results),
        "statuses": {s: statuses.get(s, 0) for s in STATUSES},
        "relabelled": sum(r.relabelled for r in results),
        "samples": {
            "received": sum(r.received for r in results),
            "truncated": sum(r.truncated for r in results),
            "malformed": sum(malformed.values()),
            "malformed_by_reason": {k: malformed[k] for k in REASONS if malformed[k]},
            "valid": sum(r.valid for r in results),
            "consistent": sum(r.consistent for r in results),
            "kept": sum(len(r.rationales) for r in results),
        },
        "client": stats.to_dict(),
        "estimated_cost": round(cost, 6),
        "price_per_1k": {"input": cfg.price_in_per_1k, "output": cfg.price_out_per_1k},
        "seconds": round(seconds, 2),
        "not_kept": {s: [r.question.id for r in results if r.status == s] for s in STATUSES if s != "kept"},
        "errors": {r.question.id: r.error for r in results if r.error},
    }


def format_summary(s: dict[str, Any]) -> str:
    c, st, sm = s["client"], s["statuses"], s["samples"]
    lines = [
        f"questions: {s['questions']}  kept {st['kept']} (relabelled {s['relabelled']}), "
        f"dropped on disagreement {st['dropped_disagreement']}, no valid answer {st['no_valid_answer']}, "
        f"failed {st['failed']}, not attempted {st['not_attempted']}",
        f"answers: received {sm['received']} = truncated {sm['truncated']} + malformed {sm['malformed']} "
        f"+ valid {sm['valid']}; consistent with the label {sm['consistent']}; kept {sm['kept']}",
        f"requests: {c['requests']} sent, {c['cache_hits']} from cache, {c['attempts']} HTTP attempts "
        f"({c['retries']} retries), {c['failed_requests']} failed",
        f"tokens: {c['prompt_tokens']} in + {c['completion_tokens']} out sent "
        f"({c['cached_prompt_tokens']} + {c['cached_completion_tokens']} read from cache)",
        f"estimated cost: ${s['estimated_cost']:.4f} at ${s['price_per_1k']['input']}/1k in, "
        f"${s['price_per_1k']['output']}/1k out  ({s['seconds']:.1f}s)",
    ]
    if sm["malformed_by_reason"]:
        lines.append("malformed: " + ", ".join(f"{k} {v}" for k, v in sm["malformed_by_reason"].items()))
    if c["http_errors"]:
        lines.append("HTTP errors (retried or final): " + ", ".join(f"{k}: {v}" for k, v in c["http_errors"].items()))
    if s["errors"]:
        first = next(iter(s["errors"].items()))
        lines.append(f"failures: {len(s['errors'])} question(s), e.g. {first[0]}: {first[1]}; "
                     "rerun the same command to retry them (answers so far are cached)")
    return "\n".join(lines)


def run_teacher(questions: list[Question], cfg: TeacherConfig, out: str | Path,
                client: TeacherClient | None = None) -> dict[str, Any]:
    """Teach `questions`, write the output folder, return the summary (see format_summary)."""
    cfg = cfg.resolved()
    out = Path(out)
    no_gold = [q.id for q in questions if not q.answer]
    if no_gold:
        raise ValueError(f"{len(no_gold)} question(s) have no gold answer (e.g. {no_gold[0]!r}): the teacher "
                         "prompt opens the gold answer's line (rationalisation)")
    ids = Counter(q.id for q in questions)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"question ids must be unique; {dupes[0]!r} appears {ids[dupes[0]]} times")
    prompts = load_prompts(cfg.benchmark, cfg.examples_path, cfg.instruction_path)
    out.mkdir(parents=True, exist_ok=True)
    if client is None:
        client = TeacherClient(model=cfg.model, cache=ResponseCache(out / CACHE_FILE), base_url=cfg.base_url,
                               api_key=resolve_api_key(cfg.api_key_env, cfg.base_url), timeout=cfg.timeout,
                               max_retries=cfg.max_retries)
    _write_atomic(out / "config.json", json.dumps({"kind": "teach", "examples": prompts.source, **asdict(cfg),
                                                   "questions": len(questions)}, indent=2) + "\n")

    start = time.time()
    results: dict[str, QuestionResult] = {}
    failures_in_a_row = 0
    bar = tqdm(total=len(questions), desc="teach", unit="q", disable=not cfg.progress)
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8")
    pool = ThreadPoolExecutor(max_workers=cfg.workers)
    todo = iter(questions)
    inflight: dict[Future, Question] = {}

    def submit_next() -> None:
        q = next(todo, None)
        if q is not None:
            inflight[pool.submit(teach_question, q, cfg, prompts, client)] = q

    try:
        for _ in range(cfg.workers):
            submit_next()
        while inflight:
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                q = inflight.pop(fut)
                r = results[q.id] = fut.result()
                failures_in_a_row = failures_in_a_row + 1 if r.status == "failed" else 0
                # The server is down or refusing us: stop asking rather than wait out every question's retries.
                if failures_in_a_row < cfg.max_consecutive_failures:
                    submit_next()
                bar.update(1)
                bar.set_postfix(req=client.stats.requests, cached=client.stats.cache_hits,
                                failed=sum(x.status == "failed" for x in results.values()))
                metrics.write(json.dumps({"kind": "teach_progress", "done": len(results), "total": len(questions),
                                          "requests": client.stats.requests,
                                          "time": round(time.time() - start, 2)}) + "\n")
                metrics.flush()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        metrics.close()

    ordered = [results.get(q.id) or QuestionResult(question=q, status="not_attempted") for q in questions]
    summary = summarize(ordered, client, cfg, time.time() - start)
    _write_atomic(out / RATIONALES_FILE,
                  "".join(json.dumps(_output_line(r), ensure_ascii=False) + "\n" for r in ordered if r.status == "kept"))
    _write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "teach_summary", **{k: v for k, v in summary.items() if k != "not_kept"}}) + "\n")
    return summary


def _rationales_path(path: str | Path) -> Path:
    p = Path(path)
    return p / RATIONALES_FILE if p.is_dir() else p


def load_teacher_output(path: str | Path) -> list[tuple[Question, list[Rationale]]]:
    """Read a teach run's rationales (its folder or its rationales.jsonl) as (Question, [Rationale]) pairs; the
    question's `answer` is the label the rationales argue for."""
    p = _rationales_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"teacher rationales not found: {p} (run `python -m tinythinker teach --out ...`)")
    pairs = []
    for loc, d in read_jsonl(p):  # the data area's reader: blank lines skipped, bad JSON named by file and line
        for key in ("question_id", "question", "rationales"):
            if key not in d:
                raise ValueError(f"{loc}: missing field {key!r}")
        try:
            q = Question.from_dict(d["question"])
            rationales = [Rationale.from_dict(x) for x in d["rationales"]]
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{loc}: field 'question' or 'rationales' is malformed ({e})") from None
        if q.id != str(d["question_id"]):
            raise ValueError(f"{loc}: field 'question_id' {d['question_id']!r} differs from the "
                             f"question's id {q.id!r}")
        for r in rationales:
            unknown = set(r.analyses) - set(q.labels)
            if unknown:
                raise ValueError(f"{loc}: field 'rationales' has analyses for unknown option(s) "
                                 f"{', '.join(sorted(unknown))}")
        pairs.append((q, rationales))
    return pairs


def load_teacher_rationales(path: str | Path) -> dict[str, list[Rationale]]:
    """A teach run's rationales keyed by question id: the shape of `tinythinker.data.load_rationales`."""
    return {q.id: rationales for q, rationales in load_teacher_output(path)}
