"""The course as a website (tools/build_book.py, `make book`), built and opened in a headless Chromium."""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import re
import threading
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)

LESSONS = [path.stem for path in build_book.lessons(ROOT / "notebooks")]
SITE = ROOT / "outputs" / "book"
SHOTS = ROOT / "outputs" / "browser"
WAIT_MS = 60_000  # the longest any page may take to load and typeset its math


def png_base64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_unexecuted_lesson_is_named_with_the_command_that_executes_it(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lesson 1 — x"),
                                         nbformat.v4.new_code_cell("print('hello')")])
    nbformat.write(nb, tmp_path / "01_first.ipynb")
    assert build_book.main(["--notebooks", str(tmp_path), "--out", str(tmp_path / "site")]) == 1
    message = capsys.readouterr().err
    assert "01_first.ipynb is not executed: code cell 1 (\"print('hello')\")" in message
    assert "jupyter nbconvert --to notebook --execute --inplace" in message and "make book" in message
    assert not (tmp_path / "site").exists()


def test_a_widget_becomes_a_still_of_its_saved_state():
    picture = png_base64(12, 8)
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_row", "IPY_MODEL_picture"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_t", "IPY_MODEL_schedule"]}},
        "t": {"model_name": "IntSliderModel", "state": {"description": "t", "min": 0, "max": 999, "value": 0}},
        "schedule": {"model_name": "DropdownModel",
                     "state": {"description": "schedule", "_options_labels": ["linear", "cosine"], "index": 1}},
        "picture": {"model_name": "ImageModel", "state": {"format": "png"},
                    "buffers": [{"path": ["value"], "encoding": "base64", "data": picture}]},
        "bar": {"model_name": "FloatProgressModel", "state": {"value": 3.0, "max": 3.0}},
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("explorer()", outputs=[
        nbformat.v4.new_output("display_data", data={build_book.WIDGET_VIEW: {"model_id": "box"}}),
        nbformat.v4.new_output("display_data", data={build_book.WIDGET_VIEW: {"model_id": "bar"}}),
    ])])
    nb.metadata["widgets"] = {build_book.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    slider, progress = (output["data"]["text/html"] for output in build_book.prepare(nb).cells[0].outputs)
    assert f'src="data:image/png;base64,{picture}"' in slider
    assert 'max="999"' in slider and 'value="0"' in slider and "<option selected>cosine</option>" in slider
    assert "open the lesson in JupyterLab" in slider
    assert "<progress" in progress and "JupyterLab" not in progress  # a progress bar has nothing to move
    assert "widgets" in nb.metadata  # the notebook itself is left as it was


def test_the_landing_page_links_every_lesson_and_drops_links_out_of_the_site():
    pages = [(f"{stem}.html", stem) for stem in LESSONS]
    landing = build_book.landing_notebook((ROOT / "README.md").read_text(encoding="utf-8"), pages)
    text = "\n".join(cell.source for cell in landing.cells)
    for stem in LESSONS:
        assert f"]({stem}.html)" in text
    assert ".ipynb)" not in text and "](CONTRIBUTING.md" not in text
    assert "make demo" in text  # the set-up section


@pytest.fixture(scope="module")
def site():
    """The site built into outputs/book as `make book` builds it, served on 127.0.0.1 (an ephemeral port)."""
    build_book.build(SITE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def open_page(chromium, url: str):
    """Open url and wait until its math is typeset and the network is quiet; return the page and its problems."""
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: problems.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 else None)
    page.goto(url, wait_until="load", timeout=WAIT_MS)
    if page.evaluate("() => Boolean(window.MathJax)"):  # lesson pages: wait for MathJax's first typesetting
        page.evaluate("() => MathJax.Hub.Register.StartupHook('End', () => { window.bookTypeset = true; })")
        page.wait_for_function("() => window.bookTypeset === true", timeout=WAIT_MS)
    page.wait_for_load_state("networkidle", timeout=WAIT_MS)
    return page, problems


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_page_loads_with_its_pictures_and_math(chromium, site, lesson):
    page, problems = open_page(chromium, f"{site}/{lesson}.html")
    shot = SHOTS / f"book-{lesson}.png"
    try:
        page.screenshot(path=shot)
        images = page.evaluate("() => [...document.images].map(i => ({src: i.src.slice(0, 60), ok: i.complete && "
                               "i.naturalWidth > 0}))")
        math = page.evaluate("() => ({typeset: document.querySelectorAll('.MathJax, .MathJax_Display').length, "
                             "errors: document.querySelectorAll('.MathJax_Error, merror').length})")
        # text of the Markdown cells only: a TeX string left there between dollars was not typeset
        markdown = page.locator(".jp-MarkdownCell").all_inner_texts()
        raw = [m for text in markdown for m in re.findall(r"\$[^$\s][^$\n]*\$", text)]
        widgets, notes = page.locator(".book-widget img").count(), page.locator(".book-widget-note").count()
    finally:
        page.close()
    where = f"{lesson}.html (screenshot: {shot})"
    assert not problems, f"{where} reported: {problems[:5]}"
    assert images, f"{where} has no images"
    assert all(image["ok"] for image in images), f"{where}: images not decoded: {[i for i in images if not i['ok']]}"
    assert math["typeset"] > 0 and math["errors"] == 0, f"{where}: math not rendered: {math}"
    assert not raw, f"{where}: TeX left untypeset in the text: {raw[:3]}"
    assert widgets == notes, f"{where}: {notes} widget notes for {widgets} widget stills"


@pytest.mark.slow
@pytest.mark.browser
def test_the_landing_page_leads_through_every_lesson_in_order(chromium, site):
    page, problems = open_page(chromium, f"{site}/index.html")
    shot = SHOTS / "book-index.png"
    try:
        page.screenshot(path=shot, full_page=True)
        text = page.inner_text("main")
        links = page.eval_on_selector_all("main a[href$='.html']", "links => links.map(a => a.getAttribute('href'))")
    finally:
        page.close()
    chain, name = [], "index.html"
    while len(chain) <= len(LESSONS):
        following = re.search(r'<a href="([^"]+)" rel="next"', (SITE / name).read_text(encoding="utf-8"))
        if following is None:
            break
        name = following.group(1)
        chain.append(name)
    where = f"index.html (screenshot: {shot})"
    assert not problems, f"{where} reported: {problems[:5]}"
    assert "Course map" in text and "make demo" in text, f"{where} lacks the course map or the set-up"
    pages = [f"{lesson}.html" for lesson in LESSONS]
    assert [link for link in dict.fromkeys(links) if link in pages] == pages, f"{where}: lessons out of order"
    assert chain == pages, f"the next links lead through {chain}, not the lessons in order"
