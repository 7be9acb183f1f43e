"""TinyThinker Studio: the research demo and annotation tool.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass] [--data-dir DIR]
                  [--runs-dir runs] [--db annotations/tinythinker.db] [--threads 1] [--int8]

Binds to 127.0.0.1 unless told otherwise: the app starts training jobs and writes files, so exposing it to a
network is a decision the user makes explicitly (--host 0.0.0.0, --share), ideally with --auth.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes user:password (both non-empty)")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="TinyThinker Studio (Gradio)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--auth", type=parse_auth, default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--data-dir", default=None, help="benchmark data folder (else env TINYTHINKER_DATA_DIR)")
    p.add_argument("--runs-dir", default="runs", help="where runs and checkpoints live")
    p.add_argument("--db", default=os.environ.get("TINYTHINKER_DB", "annotations/tinythinker.db"),
                   help="annotation store (SQLite)")
    p.add_argument("--student", default=None, help="the default student (default: smollm2-135m, the offline student that learned best)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the app's own inference (0 = torch's default); training jobs are "
                        "separate processes and keep their own")
    p.add_argument("--int8", action="store_true",
                   help="serve every student with int8 weights on CPU: Recall and Summarize about 1.5-1.9x "
                        "faster, but the answers differ from the fp32 model's and its cached traces (63.5%% of "
                        "p1-equal's 200 validation answers changed, accuracy 34.0 -> 27.5%%; bench/RESULTS.md)")
    return p


def make_context(args: argparse.Namespace):
    from demo.context import AppContext
    from tinythinker import DEFAULT_STUDENT
    from tinythinker.data import resolve_data_dir
    from tinythinker.modelcache import StudentCache
    from tinythinker.workspace import Workspace

    runs_dir, db = Path(args.runs_dir), Path(args.db)
    runs_dir.mkdir(parents=True, exist_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    ws = Workspace(runs_dir=runs_dir, db=db, data_dir=resolve_data_dir(args.data_dir))
    return AppContext(ws=ws, default_student=args.student or DEFAULT_STUDENT,
                      students=StudentCache(int8=args.int8))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from demo.app import build_app, launch_kwargs, warm_up

    if (args.host not in (DEFAULT_HOST, "localhost", "::1") or args.share) and not args.auth:
        print(f"warning: serving on {args.host}{' and a public share link' if args.share else ''} without --auth: "
              "anyone who reaches it can start training jobs and write labels", file=sys.stderr)
    ctx = make_context(args)
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4)
    app.launch(prevent_thread_lock=True, server_name=args.host, server_port=args.port, share=args.share, auth=args.auth,
               **launch_kwargs())
    warm_up(args.threads)
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
