"""Two checkpoints on the same questions: word-level differences, flips, and traces cached on disk.

Traces of a (checkpoint, split) pair are cached as JSONL under the checkpoint's run folder
(`<run>/traces/<checkpoint>__<benchmark>-<split>-<n>.jsonl`) so comparing two models over a whole split opens
in well under a second once each has been run once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from pathlib import Path

from tinythinker.types import Question, Trace

TRACES = "traces"
RIGHT_TO_WRONG, WRONG_TO_RIGHT, BOTH_WRONG = "right->wrong", "wrong->right", "both wrong"
FLIP_KINDS = (RIGHT_TO_WRONG, WRONG_TO_RIGHT, BOTH_WRONG)


def word_diff(a: str, b: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """Each text as (word, tag) spans where tag is "-" (only in a), "+" (only in b) or None (shared)."""
    wa, wb = (a or "").split(), (b or "").split()
    left: list[tuple[str, str | None]] = []
    right: list[tuple[str, str | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            left.append((" ".join(wa[i1:i2]) + " ", None))
            right.append((" ".join(wb[j1:j2]) + " ", None))
            continue
        if i2 > i1:
            left.append((" ".join(wa[i1:i2]) + " ", "-"))
        if j2 > j1:
            right.append((" ".join(wb[j1:j2]) + " ", "+"))
    return left, right


def flip_kind(a: Trace, b: Trace) -> str | None:
    """How the verdict moves from model a to model b; None when both are right."""
    if a.correct and not b.correct:
        return RIGHT_TO_WRONG
    if not a.correct and b.correct:
        return WRONG_TO_RIGHT
    if not a.correct and not b.correct:
        return BOTH_WRONG
    return None


def disagreements(traces_a: list[Trace], traces_b: list[Trace], kinds=FLIP_KINDS) -> list[dict]:
    """One row per question (present in both) whose verdict is not right-for-both, in a's order."""
    by_id = {t.question.id: t for t in traces_b}
    rows = []
    for a in traces_a:
        b = by_id.get(a.question.id)
        if b is None:
            continue
        kind = flip_kind(a, b)
        if kind is None or kind not in kinds:
            continue
        rows.append({
            "id": a.question.id,
            "kind": kind,
            "answer": a.question.answer or "",
            "a": a.predicted or "invalid",
            "b": b.predicted or "invalid",
            "same answer": a.predicted == b.predicted,
            "question": a.question.stem,
        })
    return rows


def flip_counts(traces_a: list[Trace], traces_b: list[Trace]) -> dict[str, int]:
    """Counts of every verdict pair, "both right" included, over the questions both models answered."""
    counts = {"both right": 0, RIGHT_TO_WRONG: 0, WRONG_TO_RIGHT: 0, BOTH_WRONG: 0}
    by_id = {t.question.id: t for t in traces_b}
    for a in traces_a:
        b = by_id.get(a.question.id)
        if b is not None:
            counts[flip_kind(a, b) or "both right"] += 1
    return counts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def cache_path(checkpoint: str | Path, runs_dir: str | Path, benchmark: str, split: str,
               questions: list[Question], variant: str = "") -> Path:
    """Where the traces of `checkpoint` on these questions are cached.

    Inside runs_dir: under the checkpoint's top-level run folder. A named student (not a folder) gets
    runs_dir/_students/. The file name carries a hash of the ordered question ids, so another slice of the
    split never reuses the wrong cache. `variant` (e.g. the stage type and answer mode the traces were run with)
    joins the name, so traces run another way are cached apart."""
    runs_dir = Path(runs_dir).resolve()
    path = Path(checkpoint)
    ids = hashlib.sha1("\n".join(q.id for q in questions).encode()).hexdigest()[:10]
    if path.is_dir() and path.resolve().is_relative_to(runs_dir):
        rel = path.resolve().relative_to(runs_dir)
        run_folder, name = runs_dir / rel.parts[0], _slug("__".join(rel.parts[1:]) or "model")
    else:
        run_folder, name = runs_dir / "_students", _slug(str(checkpoint))
    tag = f"-{_slug(variant)}" if variant else ""
    return run_folder / TRACES / f"{name}__{benchmark}-{split}-{len(questions)}-{ids}{tag}.jsonl"


def _fresh(cache: Path, checkpoint: str | Path) -> bool:
    if not cache.is_file():
        return False
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        return True
    # A checkpoint rewritten after the cache (best/ replaced by a better step) makes the cache stale.
    newest = max((p.stat().st_mtime for p in ckpt.iterdir() if p.is_file()), default=0.0)
    return cache.stat().st_mtime >= newest


def cached_traces(student_loader, checkpoint: str | Path, questions: list[Question], cache: Path,
                  batch_size: int = 16, on_progress=None, **pipeline_kwargs) -> list[Trace]:
    """Greedy full-pipeline traces of `checkpoint` on `questions`, from the cache when it is fresh.

    `student_loader(checkpoint)` is only called on a cache miss, so a cached comparison loads no model.
    `pipeline_kwargs` (stage_type, restrict_answer) go to run_pipeline: name them in `cache_path`'s variant."""
    # Imported here: the pipeline pulls in torch and transformers, which the app loads after it starts serving.
    from tinythinker.pipeline import read_traces, run_pipeline, write_traces

    cache = Path(cache)
    if _fresh(cache, checkpoint):
        return read_traces(cache)
    student = student_loader(checkpoint)
    traces = run_pipeline(student, questions, batch_size=batch_size, on_progress=on_progress, **pipeline_kwargs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    write_traces(tmp, traces)
    os.replace(tmp, cache)  # a reader never sees half a cache
    return traces


# ---- the split-level report: accuracy with intervals, McNemar, slices, filters ----------------------------------

BOTH_RIGHT = "both right"
# Filters of the per-question table (compare_rows): every question, the flips, both wrong with different answers,
# the same answer from both models.
SHOW_ALL, SHOW_FLIPS, SHOW_BOTH_WRONG_DIFFERENT, SHOW_SAME = (
    "all questions", "flips only", "both wrong, different answers", "same answer")
SHOWS = (SHOW_ALL, SHOW_FLIPS, SHOW_BOTH_WRONG_DIFFERENT, SHOW_SAME)
# Question length in words (the stem): cut points of the buckets.
LENGTH_BUCKETS = ((10, "<=10 words"), (20, "11-20 words"), (None, ">20 words"))
# Words too common to say that a Recall "names" an option.
_STOPWORDS = frozenset(
    "a an the of to in on at for by with and or is are be it its this that as from into than then".split())
_WORD = re.compile(r"[a-z0-9]+")


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95% by default) for k successes out of n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(traces: list[Trace]) -> dict:
    """Share of traces whose answer is right (unknown-answer traces count as not right), with its interval."""
    n = len(traces)
    k = sum(t.correct is True for t in traces)
    lo, hi = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "ci_low": lo, "ci_high": hi}


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (the doubled smaller tail, at most 1).

    Computed with integers (math.comb over 2**n), so it is exact for any n; no scipy."""
    if n <= 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def mcnemar(right_to_wrong: int, wrong_to_right: int) -> dict:
    """Exact McNemar test on the discordant pairs: under 'the two models are equally accurate' each flip goes
    either way with probability 1/2, so the p-value is the binomial test of b against b + c."""
    b, c = int(right_to_wrong), int(wrong_to_right)
    return {"right->wrong": b, "wrong->right": c, "discordant": b + c, "p_value": binomial_two_sided(b, b + c)}


def paired(traces_a: list[Trace], traces_b: list[Trace]) -> list[tuple[Trace, Trace]]:
    """(a, b) per question present in both, in a's order; a question a answered twice counts once (its first)."""
    by_id: dict[str, Trace] = {}
    for t in traces_b:
        by_id.setdefault(t.question.id, t)
    out, seen = [], set()
    for a in traces_a:
        b = by_id.get(a.question.id)
        if b is not None and a.question.id not in seen:
            seen.add(a.question.id)
            out.append((a, b))
    return out


def _words(text: str | None) -> list[str]:
    out = []
    for w in _WORD.findall((text or "").lower()):
        # A light plural fold: "banks" names "bank".
        out.append(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def names_option(text: str | None, option_text: str) -> bool:
    """Whether `text` contains every content word of the option (all its words when it has only stopwords)."""
    words = _words(option_text)
    content = [w for w in words if w not in _STOPWORDS] or words
    if not content or not text:
        return False
    have = set(_words(text))
    return all(w in have for w in content)


def length_bucket(q: Question) -> str:
    n = len(q.stem.split())
    for limit, name in LENGTH_BUCKETS:
        if limit is None or n <= limit:
            return name
    return LENGTH_BUCKETS[-1][1]


def _recall_names_gold(t: Trace) -> str:
    q = t.question
    if t.recall is None or q.answer is None:
        return "no recall" if t.recall is None else "no gold"
    return "yes" if names_option(t.recall, q.option_text(q.answer)) else "no"


def _recall_names_other(t: Trace) -> str:
    q = t.question
    if t.recall is None:
        return "no recall"
    others = [o for o in q.options if o.label != q.answer]
    return "yes" if any(names_option(t.recall, o.text) for o in others) else "no"


def concept(q: Question) -> str | None:
    """The question's concept where the benchmark has one (CSQA's question_concept)."""
    value = q.meta.get("question_concept") or q.meta.get("concept")
    return str(value) if value else None


# Slice name -> function of the (a, b) pair giving the slice's value; None leaves the question out of that slice.
SLICES = {
    "concept": lambda a, b: concept(a.question),
    "gold letter": lambda a, b: a.question.answer,
    "question length": lambda a, b: length_bucket(a.question),
    "A's recall names the gold option": lambda a, b: _recall_names_gold(a),
    "B's recall names the gold option": lambda a, b: _recall_names_gold(b),
    "A's recall names another option": lambda a, b: _recall_names_other(a),
    "B's recall names another option": lambda a, b: _recall_names_other(b),
}


def _group_stats(pairs: list[tuple[Trace, Trace]]) -> dict:
    a = accuracy([x for x, _ in pairs])
    b = accuracy([y for _, y in pairs])
    counts = {BOTH_RIGHT: 0, RIGHT_TO_WRONG: 0, WRONG_TO_RIGHT: 0, BOTH_WRONG: 0}
    for x, y in pairs:
        counts[flip_kind(x, y) or BOTH_RIGHT] += 1
    n = len(pairs)
    test = mcnemar(counts[RIGHT_TO_WRONG], counts[WRONG_TO_RIGHT])
    return {
        "n": n, "acc_a": a["accuracy"], "acc_a_ci": (a["ci_low"], a["ci_high"]),
        "acc_b": b["accuracy"], "acc_b_ci": (b["ci_low"], b["ci_high"]),
        **counts,
        "right->wrong rate": counts[RIGHT_TO_WRONG] / n if n else 0.0,
        "wrong->right rate": counts[WRONG_TO_RIGHT] / n if n else 0.0,
        "p_value": test["p_value"],
    }


def slice_report(pairs: list[tuple[Trace, Trace]], slices: dict | None = None, min_n: int = 1) -> list[dict]:
    """One row per (slice, value): its size, both accuracies with intervals, flip counts and rates, and the exact
    McNemar p-value inside it. Values with fewer than `min_n` questions are left out. Rows sorted by slice,
    then by size (largest first)."""
    slices = SLICES if slices is None else slices
    rows = []
    for name, fn in slices.items():
        groups: dict[str, list[tuple[Trace, Trace]]] = {}
        for a, b in pairs:
            value = fn(a, b)
            if value is not None:
                groups.setdefault(str(value), []).append((a, b))
        for value, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if len(members) >= min_n:
                rows.append({"slice": name, "value": value, **_group_stats(members)})
    return rows


def largest_differences(rows: list[dict], top: int = 10, min_n: int = 5) -> list[dict]:
    """The slice rows where the two models' accuracies differ most (a slice finder), largest first."""
    usable = [r for r in rows if r["n"] >= min_n]
    return sorted(usable, key=lambda r: (-abs((r["acc_b"] or 0) - (r["acc_a"] or 0)), r["p_value"]))[:top]


def _haystack(t: Trace) -> str:
    q = t.question
    parts = [q.stem, *(o.text for o in q.options), t.recall or "", *t.analyses.values(), t.summary or ""]
    return "\n".join(parts).lower()


def matches(a: Trace, b: Trace, show: str = SHOW_ALL, search: str = "") -> bool:
    """Whether the question passes a table filter (SHOWS) and a case-insensitive text search over the question,
    its options and every stage of both traces (all words must occur)."""
    if show not in SHOWS:
        raise ValueError(f"unknown filter {show!r}; choose one of {', '.join(SHOWS)}")
    kind = flip_kind(a, b)
    if show == SHOW_FLIPS and kind not in (RIGHT_TO_WRONG, WRONG_TO_RIGHT):
        return False
    if show == SHOW_BOTH_WRONG_DIFFERENT and not (kind == BOTH_WRONG and a.predicted != b.predicted):
        return False
    if show == SHOW_SAME and a.predicted != b.predicted:
        return False
    words = (search or "").lower().split()
    if words:
        hay = _haystack(a) + "\n" + _haystack(b)
        return all(w in hay for w in words)
    return True


def compare_rows(traces_a: list[Trace], traces_b: list[Trace], show: str = SHOW_ALL, search: str = "") -> list[dict]:
    """The per-question table: one row per question in both (both right included), filtered by `matches`."""
    rows = []
    for a, b in paired(traces_a, traces_b):
        if not matches(a, b, show, search):
            continue
        rows.append({
            "id": a.question.id, "kind": flip_kind(a, b) or BOTH_RIGHT, "answer": a.question.answer or "",
            "a": a.predicted or "invalid", "b": b.predicted or "invalid", "same answer": a.predicted == b.predicted,
            "question": a.question.stem,
        })
    return rows


def compare_report(traces_a: list[Trace], traces_b: list[Trace], min_slice: int = 1) -> dict:
    """Everything the split-level comparison shows, as plain data (the app, the README and the bench call it).

    Keys: n (questions in both), only_a / only_b (questions one model lacks), a / b (accuracy with a Wilson 95%
    interval over the shared questions), flips (counts of each verdict pair), mcnemar (exact test on the flips),
    slices (slice_report rows), largest_differences (slice rows ordered by accuracy gap)."""
    pairs = paired(traces_a, traces_b)
    ids_a, ids_b = {t.question.id for t in traces_a}, {t.question.id for t in traces_b}
    overall = _group_stats(pairs)
    slices = slice_report(pairs, min_n=min_slice)
    return {
        "n": len(pairs),
        "only_a": len(ids_a - ids_b),
        "only_b": len(ids_b - ids_a),
        "a": accuracy([a for a, _ in pairs]),
        "b": accuracy([b for _, b in pairs]),
        "flips": {k: overall[k] for k in (BOTH_RIGHT, RIGHT_TO_WRONG, WRONG_TO_RIGHT, BOTH_WRONG)},
        "mcnemar": mcnemar(overall[RIGHT_TO_WRONG], overall[WRONG_TO_RIGHT]),
        "slices": slices,
        "largest_differences": largest_differences(slices),
    }


def report_markdown(report: dict, name_a: str = "A", name_b: str = "B") -> str:
    """A short human summary of compare_report: accuracies with intervals, flips and the McNemar p-value."""
    a, b, m = report["a"], report["b"], report["mcnemar"]

    def acc(x):
        if x["accuracy"] is None:
            return "n/a"
        return f"{x['accuracy']:.1%} [{x['ci_low']:.1%}, {x['ci_high']:.1%}]"

    p = m["p_value"]
    verdict = "a significant difference (p < 0.05)" if p < 0.05 else "no significant difference (p >= 0.05)"
    extra = ""
    if report["only_a"] or report["only_b"]:
        extra = f" · not in both: {report['only_a']} only in A, {report['only_b']} only in B"
    return (f"**{report['n']} questions** · {name_a}: {acc(a)} · {name_b}: {acc(b)} (Wilson 95%)  \n"
            f"right->wrong {m['right->wrong']} · wrong->right {m['wrong->right']} · exact McNemar p = {p:.4g}: "
            f"{verdict}{extra}")


def write_compared_traces(path: str | Path, traces_a: list[Trace], traces_b: list[Trace], name_a: str = "A",
                          name_b: str = "B") -> Path:
    """Both models' traces as one JSONL file (A's then B's), each line a Trace dict that `store import` reads,
    with `compare: {side, checkpoint}` saying which model wrote it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for side, name, traces in (("A", name_a, traces_a), ("B", name_b, traces_b)):
            for t in traces:
                d = t.to_dict()
                d["model"] = d.get("model") or name
                d["compare"] = {"side": side, "checkpoint": name}
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ---- lineage: what trained a phase-2 model, and on which questions its curated pairs were ------------------------

ITER_RE = re.compile(r"^iter_(\d+)$")
PAIRS_FILE = "pairs.jsonl"  # phase2.PAIRS_FILE; not imported, phase2 pulls in torch
CURATED_MODES = ("curated", "both")


class LineageError(ValueError):
    """A model whose training record cannot answer what was asked of it; the message says why."""


def reflect_checkpoint(checkpoint: str | Path) -> tuple[Path, dict, int | None] | None:
    """(run folder, its config, the iteration whose checkpoint this is) when `checkpoint` is a phase-2 run folder
    or its best/ (iteration None: the run's best) or an iter_<k>/best (iteration k); None for anything else."""
    from tinythinker import runs

    path = Path(checkpoint)

    def reflect_config(folder: Path) -> dict | None:
        try:
            config = runs.read_config(folder)
        except runs.RunError:
            return None
        return config if config.get("command") == "reflect" else None

    iteration = None
    if path.name == runs.BEST:
        path = path.parent
    m = ITER_RE.match(path.name)
    if m:
        iteration, path = int(m.group(1)), path.parent
    config = reflect_config(path)
    return None if config is None else (path, config, iteration)


def completed_iterations(run: str | Path) -> list[dict]:
    """The records of a phase-2 run's finished iterations, in order: 1, 2, ... each with its iter_<k>/best, as
    phase 2 resumes and picks its best/ by them."""
    from tinythinker import runs

    done: list[dict] = []
    for rec in runs.read_metrics(run, "iteration"):
        if rec.get("iteration") == len(done) + 1 and (Path(run) / f"iter_{rec['iteration']}" / runs.BEST).is_dir():
            done.append(rec)
    return done


def parent_checkpoint(checkpoint: str | Path) -> Path | None:
    """The phase-1 model a phase-2 checkpoint was reflected from (its run's --from best/); None when `checkpoint`
    is no phase-2 model or that folder is gone."""
    from tinythinker import runs

    found = reflect_checkpoint(checkpoint)
    if found is None or not found[1].get("from_run"):
        return None
    best = Path(found[1]["from_run"]) / runs.BEST
    return best if best.is_dir() else None


def trained_iterations(checkpoint: str | Path) -> list[int]:
    """The phase-2 iterations whose pairs trained `checkpoint`. Iteration k starts from iteration k-1's best, so
    iter_<k>/best learnt from 1..k; the run's best/ is a copy of its best iteration's (the first with the highest
    validation accuracy, as phase 2 picks it). LineageError for a model phase 2 did not train."""
    found = reflect_checkpoint(checkpoint)
    if found is None:
        raise LineageError(f"{checkpoint} is not a phase-2 model (a reflect run, its best/ or an iter_<k>/best), "
                           "so no preference pairs trained it")
    run, _, iteration = found
    done = completed_iterations(run)
    if not done:
        raise LineageError(f"{run} has no finished phase-2 iteration yet, so no pairs have trained a model there")
    if iteration is None:
        iteration = max(done, key=lambda r: r.get("val_acc") or 0.0)["iteration"]
    elif iteration > len(done):
        raise LineageError(f"{checkpoint}: iteration {iteration} of {run} has not finished")
    return list(range(1, iteration + 1))


def trained_pairs(checkpoint: str | Path) -> list[dict]:
    """Every pair that trained `checkpoint` as its run recorded it (iter_<k>/pairs.jsonl, written before that
    iteration's training), each with "iteration": k added, in training-record order."""
    found = reflect_checkpoint(checkpoint)
    out = []
    for k in trained_iterations(checkpoint):
        path = found[0] / f"iter_{k}" / PAIRS_FILE
        if not path.is_file():
            raise LineageError(f"{path} is missing: iteration {k} of {found[0]} has no record of its pairs")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append({**json.loads(line), "iteration": k})
    return out


def _question_id_from_store(pair: dict, store) -> str | None:
    """A curated pair recorded without a question id (imported from another store): the question of a trace its
    provenance names, else of the same pair stored with one."""
    from tinythinker.pairs import provenance_of

    provenance = provenance_of(pair)  # older run folders keep it in `meta`
    for side in ("chosen", "rejected"):
        origins = provenance.get(side) if isinstance(provenance, dict) else None
        for origin in origins if isinstance(origins, list) else [origins]:
            if isinstance(origin, dict) and isinstance(origin.get("trace_id"), int):
                try:
                    return store.get_trace(origin["trace_id"]).trace.question.id
                except ValueError:  # StoreError: that trace is not in this store
                    continue
    for p in store.pairs(source="curated", stage=pair.get("stage")):
        if p.question_id and (p.prompt, p.chosen, p.rejected) == (pair.get("prompt"), pair.get("chosen"),
                                                                  pair.get("rejected")):
            return str(p.question_id)
    return None


def curated_question_ids(model: str | Path, store=None, runs_dir: str | Path | None = None) -> list[str]:
    """The ids of the questions whose curated pairs trained `model`, each once, in the order it first trained.

    `model` is a phase-2 checkpoint folder (a name relative to `runs_dir`, as the app lists them, or a path). Read
    from the run's own record of what trained (`trained_pairs`), not from the store's labels now, which may have
    changed since. `store` (a tinythinker.store.Store) only supplies question ids the record lacks. LineageError
    when the model is no phase-2 model or its run did not train on curated pairs (--pairs auto)."""
    path = Path(model)
    if runs_dir is not None and not path.is_absolute():
        path = Path(runs_dir) / path
    found = reflect_checkpoint(path)
    if found is not None and found[1].get("pairs") not in CURATED_MODES:
        raise LineageError(f"{model} was trained on automatic pairs only (--pairs {found[1].get('pairs')}); only a "
                           "phase-2 run on curated (or both) pairs has questions whose curated pairs trained it")
    ids: dict[str, None] = {}
    for pair in trained_pairs(path):
        if pair.get("source") != "curated":
            continue
        qid = pair.get("question_id") or (_question_id_from_store(pair, store) if store is not None else None)
        if qid:
            ids.setdefault(str(qid), None)
    return list(ids)
