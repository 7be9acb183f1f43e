"""A real browser (Debian's headless Chromium driven by Playwright) clicks through the app."""

import shutil
from pathlib import Path

import pytest

from tinythinker.pipeline import run_pipeline
from tinythinker.students import load_student

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_and_ctx(tmp_path_factory, data_dir):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_text("TinyThinker Studio").first.wait_for()
        try:
            yield page, ctx
        finally:
            browser.close()


def test_step_through_in_a_browser(page_and_ctx, tmp_path):
    page, ctx = page_and_ctx
    page.get_by_role("tab", name="Step through").click()
    page.locator("#step-all").click()
    verdict = page.locator("#step-verdict")
    verdict.get_by_text("Prediction").wait_for()
    recall = page.locator("#step-recall-text textarea").input_value()
    summary = page.locator("#step-summary textarea").input_value()
    shot = tmp_path / "step-through.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    checkpoint = ctx.checkpoint_choices()[0][1]  # the dropdown's default
    q = ctx.questions("csqa", "validation")[0]
    expected = run_pipeline(load_student(ctx.checkpoint_path(checkpoint)), [q])[0]
    assert recall == expected.recall and summary == expected.summary
    assert " ".join(q.stem.split()) in page.locator("#step-question").inner_text()
    assert "untrained" not in page.locator("#step-note").inner_text().lower()
    timings = page.locator("#step-timings").inner_text()
    assert "recall" in timings and "summarize" in timings


def test_annotate_keyboard_shortcuts(page_and_ctx):
    page, ctx = page_and_ctx
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#annotate-annotator textarea, #annotate-annotator input").first.fill("kb")
    page.locator("#annotate-next").click()
    page.locator("#annotate-header").get_by_text("trace").first.wait_for()
    page.locator("#annotate-header").click()  # focus out of the text field
    page.keyboard.press("g")
    page.keyboard.press("b")
    assert page.locator('#annotate-recall-v input[value="good"]').is_checked()
    assert page.locator('#annotate-analyze-v0 input[value="bad"]').is_checked()
    page.keyboard.press("Control+Enter")
    page.locator("#annotate-header").get_by_text("saved 2 label(s)").wait_for()
    from tinythinker.store.core import Store

    with Store(ctx.ws.db) as store:
        mine = store.labels(annotator="kb")
    assert {(lab.stage, lab.option, lab.verdict) for lab in mine} == {("recall", None, "good"),
                                                                     ("analyze", "A", "bad")}


def test_annotator_name_survives_a_reload(page_and_ctx):
    page, _ = page_and_ctx
    page.get_by_role("tab", name="Annotate").click()
    field = page.locator("#annotate-annotator textarea, #annotate-annotator input").first
    field.fill("reloader")
    field.press("Tab")
    page.wait_for_timeout(1000)
    page.reload()
    page.get_by_role("tab", name="Annotate").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('#annotate-annotator textarea, #annotate-annotator input');"
        " return e && e.value === 'reloader'; }")
