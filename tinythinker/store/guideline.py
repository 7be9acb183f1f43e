"""The labelling guideline, stored in the database (schema 0003) and edited from the app.

Each save adds a version; the latest is in force and the older ones stay as history."""

from __future__ import annotations

from typing import Any

from tinythinker.store.validate import StoreError, check_name, check_text

MAX_GUIDELINE_CHARS = 20_000

DEFAULT_GUIDELINE = """**Labelling guideline** (edit me: saved in the database for every annotator)

- **good**: the text is true, on topic and helps pick the right option; small wording slips are fine.
- **bad**: a false statement, a claim about the wrong option, a loop or repetition, or text that would push
  toward a wrong answer. Give a corrected text when you can: it becomes a preferred example.
- **unsure**: you cannot tell without looking things up. Unsure labels never make pairs.
- Judge each stage on its own input: a Recall by the question, an analysis by the question and that Recall.
- Pairwise: **1** / **2** when one text is clearly better, **=** when they are equally good or bad, **s** to skip.
"""


def guideline(store) -> dict[str, Any]:
    """The guideline in force: {text, author, created_at, version}; the default (version 0) when none is saved."""
    r = store._one("SELECT id, text, author, created_at FROM guidelines ORDER BY id DESC LIMIT 1")
    if r is None:
        return {"text": DEFAULT_GUIDELINE, "author": None, "created_at": None, "version": 0}
    return {"text": r["text"], "author": r["author"], "created_at": r["created_at"], "version": r["id"]}


def set_guideline(store, text: Any, author: Any) -> dict[str, Any]:
    """Save a new version of the guideline; returns it as `guideline` does. Saving the same text again is a no-op."""
    from tinythinker.store.core import _now

    if author is None or (isinstance(author, str) and not author.strip()):
        raise StoreError("an author name is required to edit the guideline")
    author = check_name(author, "author")
    text = check_text(text, "guideline", limit=MAX_GUIDELINE_CHARS, empty_ok=False).strip()
    with store._write():
        current = store._one("SELECT text FROM guidelines ORDER BY id DESC LIMIT 1")
        if current is None or current["text"] != text:
            store.db["guidelines"].insert({"text": text, "author": author, "created_at": _now()})
    return guideline(store)


def guideline_history(store) -> list[dict[str, Any]]:
    return [{"version": r["id"], "text": r["text"], "author": r["author"], "created_at": r["created_at"]}
            for r in store.db.query("SELECT * FROM guidelines ORDER BY id")]
