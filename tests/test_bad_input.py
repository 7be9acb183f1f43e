"""Issue 16 through the CLI: every failure a user can cause is one line `error: ...` naming what and where, exit
status 2, nothing written; tracebacks only with --debug. The data loader's cases are in test_data_errors.py, the
duplicate traces in test_store_duplicates.py, generated bad input in test_bad_input_properties.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from store_helpers import counts, trace, write_jsonl

from tinythinker.cli import main
from tinythinker.store import Store

NOBODY = 65534


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "tt.db"
    with Store(path) as s:
        s.import_traces([trace("q1"), trace("q2", "B")], model="m")
        s.label(1, "recall", "good", annotator="ana")
    return path


def rows(db: Path) -> dict[str, int]:
    with Store(db) as s:
        return counts(s)


# ---- item 3: not a regular file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("command", ["import", "import-pairs"])
def test_store_import_refuses_what_is_not_a_file_at_once(db, tmp_path, kind, command):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
        words = "is a named pipe"
    else:
        path = Path("/dev/zero")
        words = "is a character device"
    before = rows(db)
    rc, out, err = run("store", command, path, "--db", db, "--model", "m") if command == "import" else \
        run("store", command, path, "--db", db)  # before the fix: hashed (or read) the path forever
    assert rc == 2 and f"{path} {words}, not a regular file or a folder" in one_error_line(err)
    assert rows(db) == before


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_data_loader_says_what_the_path_is(tmp_path, kind):
    path = {"fifo": tmp_path / "pipe", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    (tmp_path / "validation.jsonl").mkdir(exist_ok=True)  # the folder case: its split file is a folder
    rc, _, err = run("data", "--data", "jsonl", "--path", path, "--no-rationales")
    words = {"fifo": f"{path} is a named pipe", "device": f"{path} is a character device",
             "folder": f"{tmp_path / 'validation.jsonl'} is a folder, not a regular file"}[kind]
    assert rc == 2 and words in one_error_line(err) and "does not exist" not in err


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("x")
    rc, _, err = run("data", "--data", "csqa", "--data-dir", f, "--no-rationales")
    assert rc == 2 and f"data directory {f} (from the data_dir argument) is a regular file, not a folder" in \
        one_error_line(err)


# ---- item 4: raw tracebacks --------------------------------------------------------------------------------------


def test_trace_id_beyond_sqlite_integers(db):
    before = rows(db)
    for argv in (["show", str(2**63)], ["label", str(2**63), "--stage", "recall", "--verdict", "good",
                                         "--annotator", "ana"], ["skip", str(2**64), "--annotator", "ana"]):
        rc, _, err = run("store", *argv, "--db", db)
        assert rc == 2 and "no trace with id" in one_error_line(err) and "run from 1 to 9223372036854775807" in err
    rc, _, err = run("store", "next", "--iteration", str(2**63), "--db", db)
    assert rc == 2 and "iteration must be a whole number from 0 to 9223372036854775807" in one_error_line(err)
    assert rows(db) == before


def test_db_whose_parent_is_a_file(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    src = write_jsonl(tmp_path / "t.jsonl", [trace("q1")])
    rc, _, err = run("store", "import", src, "--model", "m", "--db", f / "tt.db")
    assert rc == 2 and f"cannot create database {f / 'tt.db'}: {f} is a file, not a folder" in one_error_line(err)


def test_jsonl_meta_that_is_not_an_object(tmp_path):
    for meta in ("5", "[1, 2]", '"text"', "0", "[]"):
        f = tmp_path / "q.jsonl"
        f.write_text('{"question": "Q?", "options": ["a", "b"], "answer": "A", "meta": ' + meta + "}\n")
        rc, _, err = run("data", "--data", "jsonl", "--path", f, "--no-rationales")
        assert rc == 2 and f"{f}, line 1, field 'meta': expected an object (or null)" in one_error_line(err)


def _as_nobody(argv: list[str]) -> tuple[int, str]:
    """Run the CLI as an unprivileged user: root ignores file permissions, so read-only files are only read-only
    to someone else. The child is forked with everything imported (it could not read root's Python install)."""
    if os.geteuid() != 0:
        rc, _, err = run(*argv)
        return rc, err
    with Store(Path(tempfile.gettempdir()) / f"warm-{os.getpid()}.db") as s:  # load sqlite-utils' plugins here
        warm = s.path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{warm}{suffix}").unlink(missing_ok=True)
    import importlib.metadata  # noqa: F401  (sqlite-utils looks up its plugins with it)

    import tinythinker.commands.data  # noqa: F401
    import tinythinker.commands.store  # noqa: F401
    import tinythinker.store.files  # noqa: F401

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 99
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            rc, _, err = run(*argv)
            os.write(w, json.dumps([rc, err]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the unprivileged child failed"
    rc, err = json.loads(data)
    return rc, err


@pytest.fixture
def shared_dir():
    """A folder the unprivileged user can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="tt-bad-input-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(d)


def _owned_by_nobody(*paths: Path) -> None:
    if os.geteuid() == 0:
        for p in paths:
            os.chown(p, NOBODY, NOBODY)


def test_read_only_database_file(shared_dir, db):
    folder = shared_dir / "w"
    folder.mkdir()
    path = folder / "tt.db"
    shutil.copy(db, path)
    _owned_by_nobody(folder, path)
    path.chmod(0o444)
    before = rows(db)
    # Reading works (SQLite keeps its -shm beside it, in the writable folder); writing is refused in words.
    rc, err = _as_nobody(["store", "stats", "--db", str(path)])
    assert (rc, err) == (0, "")
    for argv in (["label", "1", "--stage", "summarize", "--verdict", "bad", "--annotator", "bo"],
                 ["import", str(write_jsonl(folder / "new.jsonl", [trace("n9")])), "--model", "m"]):
        rc, err = _as_nobody(["store", *argv, "--db", str(path)])
        assert rc == 2 and f"database {path} is read-only: the file is read-only" in one_error_line(err)
    assert integrity(path) == "ok"
    path.chmod(0o644)
    assert rows(path) == before


def test_read_only_folder(shared_dir, db):
    folder = shared_dir / "ro"
    folder.mkdir()
    path = folder / "tt.db"
    shutil.copy(db, path)
    _owned_by_nobody(path)
    folder.chmod(0o555)
    rc, err = _as_nobody(["store", "stats", "--db", str(path)])
    assert rc == 2 and f"database {path} is read-only: its folder {folder} is read-only" in one_error_line(err)
    assert "not a usable SQLite database" not in err  # item 5: the old, wrong message
    src = shared_dir / "t.jsonl"
    write_jsonl(src, [trace("q1")]).chmod(0o644)
    rc, err = _as_nobody(["store", "import", str(src), "--model", "m", "--db", str(folder / "new.db")])
    assert rc == 2 and f"cannot open database {folder / 'new.db'}: its folder {folder} is not writable" in \
        one_error_line(err)
    assert not (folder / "new.db").exists()


def test_export_into_a_read_only_folder(shared_dir, db):
    folder = shared_dir / "ro"
    folder.mkdir()
    path = shared_dir / "tt.db"
    shutil.copy(db, path)
    _owned_by_nobody(shared_dir, path)
    folder.chmod(0o555)
    rc, err = _as_nobody(["store", "export", "--out", str(folder / "exp"), "--db", str(path)])
    assert rc == 2 and f"cannot write the export {folder / 'exp'}: Permission denied" in one_error_line(err)
    assert list(folder.iterdir()) == []


# ---- item 6: bad input accepted ---------------------------------------------------------------------------------


def test_read_only_commands_never_create_a_database(tmp_path):
    typo = tmp_path / "tinythinkr.db"
    for argv in (["stats"], ["show", "1"], ["next"], ["export", "--out", str(tmp_path / "exp")],
                 ["label", "1", "--stage", "recall", "--verdict", "good", "--annotator", "ana"],
                 ["undo", "--annotator", "ana"], ["skip", "1", "--annotator", "ana"]):
        rc, _, err = run("store", *argv, "--db", typo)
        assert rc == 2 and f"no database at {typo}" in one_error_line(err), argv
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("drop, field", [("summary", "summary"), ("question", "question")])
def test_a_trace_without_a_required_field(db, tmp_path, drop, field):
    d = trace("n1").to_dict()
    del d[drop]
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(trace("n0").to_dict()) + "\n" + json.dumps(d) + "\n")
    before = rows(db)
    rc, _, err = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 2 and f"{src} line 2: missing field {field!r}" in one_error_line(err)
    assert rows(db) == before


@pytest.mark.parametrize("path, value, words", [
    (("question", "id"), True, "field 'question.id' must be text or a whole number, got true or false"),
    (("question", "id"), 1.5, "field 'question.id' must be text or a whole number, got a number"),
    (("analyses",), ["x"], "field 'analyses' must be an object or null, got a list"),
    (("sampling",), [1], "field 'sampling' must be an object or null, got a list"),
    (("stage_timings",), "fast", "field 'stage_timings' must be an object or null, got text"),
    (("question", "options"), "A, B", "field 'question.options' must be a list, got text"),
    (("question", "options", 0), "bank", "field 'question.options[0]' must be an object with 'label' and 'text'"),
    (("question", "options", 1, "text"), 7, "field 'question.options[1].text' must be text, got a whole number"),
    (("question", "meta"), [], "field 'question.meta' must be an object or null, got a list"),
    (("summary",), None, "field 'summary' must be text, got null"),
    (("correct",), 1, "field 'correct' must be true or false or null, got a whole number"),
    (("sampling", "sample_index"), 2**64, "field 'sampling.sample_index' must be a whole number >= 0"),
    (("sampling", "sample_index"), "0", "field 'sampling.sample_index' must be a whole number >= 0"),
])
def test_a_wrong_typed_trace_field_is_named(db, tmp_path, path, value, words):
    d = trace("n1").to_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(d) + "\n")
    before = rows(db)
    rc, _, err = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 2 and f"{src} line 1: {words}" in one_error_line(err)
    assert rows(db) == before


def test_store_import_repeated_key_bom_and_latin1(db, tmp_path):
    src = tmp_path / "t.jsonl"
    good = json.dumps(trace("n1").to_dict())
    src.write_text(good[:-1] + ', "summary": "again"}\n')
    before = rows(db)
    rc, _, err = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 2 and f"{src} line 1: field 'summary' appears twice in one JSON object" in one_error_line(err)
    src.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n")  # item 7: a BOM is read past
    rc, out, _ = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 0 and "imported 1 traces" in out
    src.write_bytes(json.dumps(trace("n2").to_dict()).encode() + b"\n" + b'{"summary": "caf\xe9"}\n')
    rc, _, err = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 2 and f"{src} line 2: not UTF-8 text (byte 0xe9 at column 17)" in one_error_line(err)
    assert rows(db)["traces"] == before["traces"] + 1


def test_json_errors_say_at_once(db, tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"summary": "tab\there"}\n')
    rc, _, err = run("store", "import", src, "--model", "m", "--db", db)
    assert rc == 2 and "Invalid control character at column 17" in one_error_line(err) and "at at" not in err
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "tab\there"}\n')
    rc, _, err = run("data", "--data", "jsonl", "--path", q, "--no-rationales")
    assert rc == 2 and "Invalid control character at column 18" in one_error_line(err) and "at at" not in err


def test_limit_must_be_positive(tmp_path, capsys):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "Q?", "options": ["a", "b"], "answer": "A"}\n')
    for bad in ("-5", "0", "x"):
        with pytest.raises(SystemExit) as e:
            main(["data", "--data", "jsonl", "--path", str(f), "--limit", bad])
        assert e.value.code == 2
        assert "argument --limit: expected a whole number >= 1" in capsys.readouterr().err


def test_stat_kinds_are_named(tmp_path):
    from tinythinker.data.records import describe_path

    assert describe_path(tmp_path) == "a folder"
    assert describe_path(Path("/dev/null")) == "a character device"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert describe_path(tmp_path / "nope") == "nothing (it does not exist)"
