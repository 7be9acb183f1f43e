"""App latency: one step-through stage with the default student, app start-up, opening Compare over 1,221 cached
traces. Writes bench/out/app_latency.json.

    .venv/bin/python bench/app_latency.py [--data-dir ../shared/data] [--student minilm-bert2bert] [--repeats 5]
                                          [--threads 1] [--parts startup step compare]

Step-through is measured warm (the app loads a model once and caches it; the one-off load is reported apart).
"Run all stages" streams: `all_first_update_s_median` is the wait until its Recall shows, `all_s_median` until its
Summarize does.
Compare is measured through the HTTP API, as the browser calls it, on traces already cached: the cache is filled
first by running two tiny random students over the split (what the traces say does not change the cost of
reading, tabulating and charting them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "app_latency.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup(workdir: Path, data_dir: str | None) -> float:
    """Seconds from `python app.py` to the first page served."""
    port = _free_port()
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs-dir", str(workdir / "runs"),
           "--db", str(workdir / "annotations" / "t.db")] + (["--data-dir", data_dir] if data_dir else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}") from None
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


_BREAKDOWN = """
import json, sys, tempfile, time
from pathlib import Path
t0 = time.perf_counter()
import gradio
t1 = time.perf_counter()
from demo.app import build_app, launch_kwargs
from demo.context import AppContext
from tinythinker.workspace import Workspace
t2 = time.perf_counter()
d = Path(tempfile.mkdtemp())
app = build_app(AppContext(ws=Workspace(runs_dir=d, db=d / "t.db", data_dir=sys.argv[1] or None)))
t3 = time.perf_counter()
app.queue()
app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
t4 = time.perf_counter()
app.close(verbose=False)
print(json.dumps({"import_gradio_s": round(t1 - t0, 2), "import_app_s": round(t2 - t1, 2),
                  "build_s": round(t3 - t2, 2), "launch_s": round(t4 - t3, 2),
                  "torch_loaded_before_serving": "torch" in sys.modules}))
"""


def startup_breakdown(data_dir: str | None) -> dict:
    """Where start-up time goes, in a fresh interpreter (imports are cold)."""
    out = subprocess.run([sys.executable, "-c", _BREAKDOWN, data_dir or ""], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_stage(ctx, student: str, repeats: int) -> dict:
    """Seconds per stage of Step through, warm, on questions 0..repeats-1 of CSQA validation."""
    from demo.step import step, step_stream

    def inputs(i, recall=None, table=None):
        q = ["benchmark", "csqa", "validation", i, "", "", "", False, 0.7, 0, 1.0, 0, 0, False]
        return [student, "recall_analyze_summarize", *q, recall, table, None]

    def call(action, i, recall=None, table=None):
        t = time.perf_counter()
        out = step(ctx, action, *inputs(i, recall, table))
        return out, time.perf_counter() - t

    def run_all(i):
        """Run all stages as the tab streams them: seconds to the first update (Recall shown) and to the last."""
        t, first = time.perf_counter(), None
        for _ in step_stream(ctx, "all", *inputs(i)):
            first = first if first is not None else time.perf_counter() - t
        return first, time.perf_counter() - t

    t0 = time.perf_counter()
    ctx.student(student)
    out: dict = {"student": student, "model_load_s": round(time.perf_counter() - t0, 3)}
    call("recall", 0)  # first generate call warms kernels; not a user-visible cost after start-up
    times: dict[str, list[float]] = {"recall": [], "analyze": [], "summarize": [], "all": [], "all_first_update": []}
    for i in range(repeats):
        (_, recall, *_), s = call("recall", i)
        times["recall"].append(s)
        (_, _, table, *_), s = call("analyze", i, recall)
        times["analyze"].append(s)
        _, s = call("summarize", i, recall, table)
        times["summarize"].append(s)
        first, s = run_all(i)
        times["all"].append(s)
        times["all_first_update"].append(first)
    for stage, xs in times.items():
        out[f"{stage}_s_median"] = round(statistics.median(xs), 3)
        out[f"{stage}_s_all"] = [round(x, 3) for x in xs]
    return out


def compare_open(ctx, repeats: int) -> dict:
    """Fill the trace cache of two tiny students over CSQA validation, then time /compare_split over HTTP."""
    from gradio_client import Client

    from demo.app import build_app, launch_kwargs
    from tinythinker.tiny import tiny_student

    questions = ctx.questions("csqa", "validation")
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        tiny_student("bert2bert", seed=seed).save(ctx.ws.runs_dir / name / "best")
    from demo.compare import split_traces

    t = time.perf_counter()
    ta, tb = split_traces(ctx, "tiny-a/best", "tiny-b/best", "csqa", "validation", 0)
    fill_s = time.perf_counter() - t
    app = build_app(ctx)
    app.queue()
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        client = Client(app.local_url, verbose=False)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            summary, table, _ = client.predict("tiny-a/best", "tiny-b/best", "csqa", "validation", 0,
                                               "all disagreements", api_name="/compare_split")
            times.append(time.perf_counter() - t)
    finally:
        app.close()
    return {"traces_per_model": len(ta), "questions": len(questions), "cache_fill_s": round(fill_s, 1),
            "open_s_median": round(statistics.median(times), 3), "open_s_all": [round(x, 3) for x in times],
            "rows": len(table["data"]), "summary": summary}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TINYTHINKER_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--student", default=None,
                   help="default: the student Step through opens on (the best shipped phase-1 student)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads, as app.py --threads")
    p.add_argument("--int8", action="store_true", help="int8 weights, as app.py --int8")
    p.add_argument("--parts", nargs="+", default=["startup", "step", "compare"],
                   choices=["startup", "step", "compare"])
    p.add_argument("--runs-dir", default=None,
                   help="for --parts step with a trained --student folder (e.g. --runs-dir runs --student "
                        "my-run/best); default: a fresh temporary folder")
    args = p.parse_args()
    if args.runs_dir and "compare" in args.parts:
        p.error("--runs-dir is for step timings only: compare writes two tiny students into the runs folder")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from demo.context import AppContext
    from tinythinker.modelcache import StudentCache
    from tinythinker.workspace import Workspace

    if args.student is None:
        from tinythinker.shipped import best_phase1_name

        args.student = best_phase1_name(fallback="minilm-bert2bert")

    results: dict = json.loads(OUT.read_text()) if OUT.is_file() else {}  # parts not rerun are kept
    # Each part records the command and the machine's load when it ran: parts may come from separate runs.
    run_info = {"command": " ".join(["python", *sys.argv]), "cpus": os.cpu_count(),
                "load_average_at_start": os.getloadavg(), "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "runs").mkdir()
        (work / "annotations").mkdir()
        ws = Workspace(runs_dir=args.runs_dir or work / "runs", db=work / "annotations" / "t.db",
                       data_dir=args.data_dir)
        ctx = AppContext(ws=ws, default_student=args.student, students=StudentCache(int8=args.int8))
        if "startup" in args.parts:
            results["startup"] = {**run_info, "seconds": [round(startup(work, args.data_dir), 2) for _ in range(3)],
                                  "breakdown": startup_breakdown(args.data_dir)}
            print("startup", results["startup"], flush=True)
        if "step" in args.parts:
            # one key per thread count, so that runs with --threads 1 and 2 sit side by side
            key = (f"step_through[{args.student}]" + ("" if args.threads == 1 else f"[threads={args.threads}]")
                   + ("[int8]" if args.int8 else ""))
            results[key] = {**run_info, **step_stage(ctx, args.student, args.repeats)}
            print("step", results[key], flush=True)
            if "smollm2" in args.student:  # the headline: one stage of a trained SmolLM2, median
                # The app's default weights (fp32) keep the headline key; an --int8 run writes its own beside it.
                suffix = "_int8" if args.int8 else ""
                stage_medians = [results[key][f"{s}_s_median"] for s in ("recall", "analyze", "summarize")]
                results[f"step_median_s{suffix}"] = statistics.median(stage_medians)
                results[f"step_median_student{suffix}"] = args.student
                results[f"step_median_threads{suffix}"] = args.threads
        if "compare" in args.parts:
            results["compare"] = {**run_info, **compare_open(ctx, args.repeats)}
            print("compare", results["compare"], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
