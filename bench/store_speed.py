"""Store speed: import 50,000 traces, label 5,000, time the annotation queue's `next` query at that size.

    .venv/bin/python bench/store_speed.py            # writes bench/out/store_speed.json
    .venv/bin/python bench/store_speed.py --traces 5000 --labels 500   # a quick look

Traces are synthetic but shaped like CSQA ones (5 options, a recall paragraph, one analysis per option), written to a
JSONL file and imported the way `store import` does (parse, validate, one transaction). Two models share the
questions so the disagreement filter has work to do. The labels go on the first trace ids, the ones the queue
serves first, so every `next` has to step past all of them: the case annotators meet.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from tinythinker.store import Store
from tinythinker.types import Option, Question, Trace

WORDS = ("river bank money water store paper fire plant animal light house school music city road tree cloud "
         "people often because usually place where would which might person needs something used find").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_traces(n: int, seed: int = 0) -> list[Trace]:
    rng = random.Random(seed)
    n_questions = max(1, n // 10)
    questions = [
        Question(id=f"bench-{i}", stem=sentence(rng, 14).rstrip(".") + "?",
                 options=[Option(lab, sentence(rng, 2).rstrip(".")) for lab in "ABCDE"],
                 answer=rng.choice("ABCDE"), source="bench")
        for i in range(n_questions)
    ]
    traces = []
    for i in range(n):
        q = questions[i % n_questions]
        model = "bench/phase1" if (i // n_questions) % 2 == 0 else "bench/phase2"
        predicted = q.answer if rng.random() < 0.6 else rng.choice("ABCDE")
        traces.append(Trace(
            question=q, recall=sentence(rng, 35), analyses={lab: sentence(rng, 20) for lab in "ABCDE"},
            summary=f"So the answer is option {predicted}.", predicted=predicted, correct=predicted == q.answer,
            stage_timings={"recall": 0.05, "analyze": 0.2, "summarize": 0.03},
            sampling={"recall": {"do_sample": True, "temperature": 0.7}, "sample_index": i // n_questions},
            model=model,
        ))
    return traces


def time_next(store: Store, repeats: int, **filters) -> dict[str, float]:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        store.next_unlabelled(**filters)
        times.append((time.perf_counter() - t0) * 1000)
        if i == 0:
            first = times[0]
    times.sort()
    return {"first_ms": round(first, 3), "median_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3), "max_ms": round(times[-1], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=50_000)
    ap.add_argument("--labels", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", default="bench/out/store_speed.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "traces.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for t in make_traces(args.traces):
                f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        store = Store(Path(tmp) / "bench.db")

        t0 = time.perf_counter()
        ids = store.import_file(src, iteration=0)  # model names come from the traces' own `model` field
        import_s = time.perf_counter() - t0
        assert len(ids) == args.traces == store.count_traces()

        t0 = time.perf_counter()
        for i, trace_id in enumerate(ids[:args.labels]):
            store.label(trace_id, "recall", ("good", "bad", "unsure")[i % 3], annotator="ana",
                        text="A corrected recall." if i % 10 == 0 else None)
        label_s = time.perf_counter() - t0

        store.skip(ids[args.labels], "ana")
        queue = {
            "no filter": time_next(store, args.repeats),
            "model": time_next(store, args.repeats, model="bench/phase1"),
            "model + iteration + wrong": time_next(store, args.repeats, model="bench/phase1", iteration=0,
                                                   correct=False),
            "iteration + right": time_next(store, args.repeats, iteration=0, correct=True),
            "annotator's skips left out": time_next(store, args.repeats, annotator="ana"),
            # Double annotation: her own labels are what the query steps over (the slow path).
            "per annotator, the one who labelled them": time_next(store, args.repeats, annotator="ana",
                                                              per_annotator=True),
            "per annotator, fresh annotator": time_next(store, args.repeats, annotator="bob", per_annotator=True),
            # The first call builds the disagreement set; later calls reuse it until traces are added.
            "disagree phase1 vs phase2": time_next(store, args.repeats,
                                                   disagree=("bench/phase1", "bench/phase2")),
        }
        t0 = time.perf_counter()
        n_pairs = len(store.curated_pairs())
        curated_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.stats()
        stats_s = time.perf_counter() - t0
        db_mb = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*")) / 1e6
        store.close()

    result = {
        "traces": args.traces, "labels": args.labels,
        "import_s": round(import_s, 2), "import_traces_per_s": round(args.traces / import_s),
        "label_s": round(label_s, 2), "labels_per_s": round(args.labels / label_s),
        "next_query": queue, "next_target_ms": 20,
        "curated_pairs": n_pairs, "curated_pairs_s": round(curated_s, 2), "stats_s": round(stats_s, 3),
        "db_mb": round(db_mb, 1), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
