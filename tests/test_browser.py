"""A real browser (Debian's headless Chromium driven by Playwright) clicks through the app."""

import os
import re
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
def browser():
    """One Chromium for the module (Playwright's sync API allows one instance per thread)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page_and_ctx(browser, tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("ws"), data_dir) as (ctx, url):
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_text("TinyThinker Studio").first.wait_for()
        try:
            yield page, ctx
        finally:
            page.close()


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
        " return e && e.value === 'reloader'; }", timeout=WAIT)


# -- the first-use walk (issue 14): what a new user meets, with screenshots for a person to look at ------------

SHOTS = Path(os.environ.get("TINYTHINKER_SCREENSHOTS", Path(__file__).resolve().parent.parent / "bench" / "out"
                            / "screenshots" / "first-use"))
WAIT = 180_000  # ms, for the page
JOB_WAIT = 1_200_000  # ms, for a child process: on a loaded 2-core machine one starts (imports torch) slowly


def _shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.set_default_timeout(WAIT)
    page.goto(url)
    page.get_by_text("TinyThinker Studio").first.wait_for()
    return page


def test_first_page_without_data(browser, tmp_path_factory, monkeypatch):
    from test_app import launched_app

    monkeypatch.delenv("TINYTHINKER_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no ./data
    with launched_app(tmp_path_factory.mktemp("nodata"), None, runs=False) as (_, url):
        page = _open(browser, url)
        panel = page.locator("#first-start")
        panel.get_by_text("Quick run not offered").wait_for()
        assert "--data-dir" in panel.inner_text()
        assert not page.locator("#quick-run").is_visible()  # not offered where no data can be read
        page.get_by_text("What is TinyThinker?").click()
        page.locator("#method-text").get_by_text("Summarize").first.wait_for()
        assert "Piao & Park" in page.locator("#method-text").inner_text()
        _shot(page, "01-first-page-without-data")
        page.close()


@pytest.fixture(scope="module")
def walk(browser, tmp_path_factory, data_dir):
    from test_app import launched_app

    with launched_app(tmp_path_factory.mktemp("walk"), data_dir, traces=False) as (ctx, url):
        page = _open(browser, url)
        try:
            yield page, ctx
        finally:
            page.close()


def test_first_page_with_data_offers_the_quick_run(walk):
    page, _ = walk
    page.locator("#first-start").get_by_text("the quick run").first.wait_for(state="attached")
    if not page.locator("#first-start").is_visible():  # closed once there are trained runs: still there
        page.get_by_text("Start here: what is ready").click()
    page.locator("#quick-run").wait_for(state="visible")
    assert "Or train your own: the quick run" in page.locator("#first-start").inner_text()
    assert "minutes on an idle CPU" not in page.locator("#first-start").inner_text()
    # Explore is filled on page load, not blank until a click.
    page.locator("#explore-question").get_by_text("(A)").wait_for()
    assert "Question 0 of" in page.locator("#explore-header").inner_text()
    _shot(page, "02-first-page-with-data")


def test_a_validation_error_leaves_the_form_usable(walk):
    page, _ = walk
    page.get_by_role("tab", name="Step through").click()
    page.locator("#step-source").get_by_text("my own question").click()
    page.locator("#step-stem textarea").fill("Where do fish live?")
    page.locator("#step-options textarea").fill("water")
    page.locator("#step-recall").click()
    page.locator("#step-note").get_by_text("2 to 26 options").wait_for()
    page.wait_for_timeout(1500)
    # One message, in one place: no error badge over the outputs, no toast.
    assert page.locator(".wrap .error, span.error").filter(has_text="Error").count() == 0
    assert page.locator(".toast-body").count() == 0
    _shot(page, "03-validation-error")
    # The form is usable at once: fix the options and run again.
    page.locator("#step-options textarea").fill("water\ndesert\nsky")
    page.locator("#step-recall").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('#step-recall-text textarea'); return e && e.value.length > 0; }")
    assert "2 to 26" not in page.locator("#step-note").inner_text()


def test_the_annotate_queue_filled_from_the_ui_and_labelled_with_the_keyboard(walk):
    page, ctx = walk
    from tinythinker.store.core import Store

    page.get_by_role("tab", name="Annotate").click()
    page.locator("#annotate-annotator textarea, #annotate-annotator input").first.fill("walker")
    page.locator("#annotate-next").click()
    page.locator("#annotate-header").get_by_text("Fill the queue").first.wait_for()
    _shot(page, "04-empty-queue")
    page.locator("#fill-limit input").fill("2")
    page.locator("#fill-generate").click()
    page.locator("#fill-status").get_by_text(re.compile(r"imported \d+ traces")).wait_for(timeout=JOB_WAIT)
    _shot(page, "05-traces-job-done")
    page.locator("#annotate-next").click()
    page.locator("#annotate-header").get_by_text(re.compile(r"trace \d+ ")).first.wait_for()
    page.locator("#annotate-header").click()  # focus out of the text field
    for key in ("g", "g", "b"):  # Recall good, option A good, option B bad
        page.keyboard.press(key)
    page.keyboard.press("Control+Enter")
    page.locator("#annotate-header").get_by_text("saved 3 label(s)").wait_for()
    _shot(page, "06-three-labels-saved")
    with Store(ctx.ws.db) as store:
        mine = store.labels(annotator="walker")
    assert sorted((lab.stage, lab.option, lab.verdict) for lab in mine) == [
        ("analyze", "A", "good"), ("analyze", "B", "bad"), ("recall", None, "good")]
    # The job's end refreshed the other tabs' lists by itself (no click on a refresh button): the Train tab's job
    # list, empty at page load, now holds the traces job and shows it.
    from tinythinker import jobs

    name = next(j.name for j in jobs.list_jobs(ctx.ws) if j.kind == "traces")
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function(
        "(name) => { const e = document.querySelector('#train-job input'); return e && e.value === name; }",
        arg=name, timeout=WAIT)


def test_a_cancelled_job_keeps_its_checkpoint(walk):
    page, ctx = walk
    from tinythinker import jobs
    from tinythinker.runs import last_checkpoint

    page.get_by_role("tab", name="Train").click()
    page.locator("#train-p1-run textarea, #train-p1-run input").first.fill("walk-cancel")
    student = page.locator("#train-p1-student input")
    student.fill("tiny-a/best")
    student.press("Enter")
    for field, value in (("interval", "1"), ("limit", "8"), ("eval", "4"), ("steps", "10000"), ("bs", "2"),
                         ("warmup", "0")):
        page.locator(f"#train-p1-{field} input").fill(value)
    page.locator("#train-p1-start").click()
    page.locator("#train-message").get_by_text("Started").wait_for()
    page.locator("#train-status").get_by_text("step ").wait_for(timeout=JOB_WAIT)
    page.locator("#train-cancel").click()
    page.locator("#train-cancel-question").get_by_text("saves a checkpoint").wait_for()
    _shot(page, "07-cancel-asks-first")
    page.locator("#train-cancel-yes").click()
    page.locator("#train-status").get_by_text("checkpoint kept").wait_for(timeout=JOB_WAIT)
    _shot(page, "08-cancelled-checkpoint-kept")
    job = jobs.load_job(ctx.ws.run_dir("walk-cancel"))
    assert job.cancelled and last_checkpoint(ctx.ws.runs_dir / "walk-cancel") is not None
    assert "cancelled" in page.locator("#train-progress").inner_text()
