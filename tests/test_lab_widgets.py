"""The lessons' sliders in a real JupyterLab, driven in a headless Chromium: moving one redraws its picture.

nbval ignores widget outputs, and the explorers' own tests check them as Python objects; this test checks what a
student sees. It starts JupyterLab on 127.0.0.1 (a port from a fixed range, a token, temporary settings, runtime and
workspace folders, autosave off, on copies of the lessons), runs only the cells each widget needs, drags the slider,
and compares screenshots of the widget's output area before and after. The kernel's messages are read from the
page's websocket: any `error` message fails the test, naming the cell.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "outputs" / "browser"
PORTS = range(18870, 18890)  # JupyterLab listens on the first free one, on 127.0.0.1 only
SERVER_START_S = 120
NOTEBOOK_OPEN_MS = 120_000
RUN_TRIES, RUN_START_MS = 3, 10_000  # a run asked for while the kernel still connects can be lost: ask again
CELL_MS = 300_000  # the slowest cell run here loads the shipped text-to-image model and draws 16 images
REDRAW_MS = 120_000

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@dataclass(frozen=True)
class Widget:
    """A lesson's widget: the cells it needs (each named by a piece of its source), its own cell, and its slider."""

    lesson: str
    needs: tuple[str, ...]
    cell: str
    slider_to: float  # where to drop the slider, as a fraction of its track


WIDGETS = [
    # imports, the batch of Shapes images and the three schedules; nothing is trained before the explorer
    Widget("01_forward_diffusion", ("from tinyldm.viz import explorer", 'images = batch["image"]', "schedules = {"),
           "explorer.forward_explorer(", 0.8),
    # the first cell loads the shipped model and defines generate(); it also draws the lesson's 16-image teaser
    Widget("06_cross_attention", ("def generate(prompts",), "ipywidgets.VBox([prompt_box, scale_slider", 0.8),
]


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1} on 127.0.0.1 for JupyterLab")


def write_settings(folder: Path) -> None:
    """JupyterLab settings for a test: every cell in the page, no autosave, no news fetched."""
    settings = {
        "notebook-extension/tracker": {"windowingMode": "none"},
        "docmanager-extension/plugin": {"autosave": False},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on copies of the lessons; yields (base URL, token, log file); stopped in `finally`."""
    home = tmp_path_factory.mktemp("lab")
    root, log_path = home / "lessons", home / "server.log"
    root.mkdir()
    for widget in WIDGETS:
        shutil.copy(ROOT / "notebooks" / f"{widget.lesson}.ipynb", root)
    write_settings(home / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "HF_HUB_OFFLINE": "1"}
    env.pop("MPLBACKEND", None)  # the kernel draws inline, as it does for a student
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}; its log: {log_path}\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {base} within {SERVER_START_S} s; log: {log_path}")
                time.sleep(0.5)
        yield base, token, log_path
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """Stop the server (it shuts its kernels down), then anything left in its process group."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def cell_index(nb, piece: str, lesson: str) -> int:
    found = [k for k, cell in enumerate(nb.cells) if cell.cell_type == "code" and piece in cell.source]
    assert len(found) == 1, f"{lesson}: {len(found)} code cells contain {piece!r}; the test needs exactly one"
    return found[0]


def kernel_errors(page) -> list[str]:
    """Collects the kernel's `error` messages (exception name and value) from the page's websockets."""
    errors: list[str] = []

    def read(payload) -> None:
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        if re.search(r'"msg_type":\s*"error"', text):
            found = re.search(r'"ename":\s*"([^"]*)",\s*"evalue":\s*"((?:[^"\\]|\\.)*)"', text)
            errors.append(f"{found.group(1)}: {found.group(2)}" if found else text[-300:])

    page.on("websocket", lambda socket: socket.on("framereceived", read))
    return errors


@pytest.mark.parametrize("widget", WIDGETS, ids=[w.lesson for w in WIDGETS])
def test_moving_the_slider_redraws_the_picture(chromium, lab, widget):
    from playwright.sync_api import Error, expect

    base, token, log_path = lab
    nb = nbformat.read(ROOT / "notebooks" / f"{widget.lesson}.ipynb", as_version=4)
    cells = [cell_index(nb, piece, widget.lesson) for piece in (*widget.needs, widget.cell)]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = {name: SHOTS / f"lab-{widget.lesson}-{name}.png" for name in ("before", "after", "failure")}
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors = kernel_errors(page)

    def name(index: int) -> str:
        code = [line for line in nb.cells[index].source.splitlines() if line.strip() and not line.startswith("#")]
        return f"cell {index} ({code[0][:60]!r})"

    step = "opening the notebook"
    try:
        page.goto(f"{base}/lab/tree/{widget.lesson}.ipynb?reset&token={token}", timeout=NOTEBOOK_OPEN_MS)
        notebook_cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
        expect(notebook_cells).to_have_count(len(nb.cells), timeout=NOTEBOOK_OPEN_MS)
        step = "waiting for the kernel"  # a cell run before the kernel is ready is cleared but never executed
        expect(page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator").first).to_have_attribute(
            "data-status", "idle", timeout=NOTEBOOK_OPEN_MS)
        for count, index in enumerate(cells, start=1):
            step = f"running {name(index)}"
            run(notebook_cells.nth(index), count, page)
            if errors:
                raise AssertionError(f"the kernel reported {errors}")

        step = f"waiting for the picture of {name(cells[-1])}"
        output = notebook_cells.nth(cells[-1]).locator(".jp-OutputArea").first
        picture = output.locator(".widget-image").first
        expect(picture).to_be_visible(timeout=REDRAW_MS)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle(),
                               timeout=REDRAW_MS)
        source = picture.get_attribute("src")
        output.screenshot(path=shot["before"])

        step = f"moving the slider of {name(cells[-1])}"
        track, grip = output.locator(".noUi-target").first.bounding_box(), output.locator(".noUi-handle").first
        grip.hover(timeout=REDRAW_MS)
        page.mouse.down()
        page.mouse.move(track["x"] + widget.slider_to * track["width"], track["y"] + track["height"] / 2, steps=8)
        page.mouse.up()
        page.wait_for_function("([img, old]) => img.src !== old && img.complete && img.naturalWidth > 0",
                               arg=[picture.element_handle(), source], timeout=REDRAW_MS)
        output.screenshot(path=shot["after"])
        if errors:
            raise AssertionError(f"the kernel reported {errors}")
    except (AssertionError, Error) as error:
        page.screenshot(path=shot["failure"])
        pytest.fail(f"{widget.lesson}: {step} failed: {str(error).strip().splitlines()[0]}\n"
                    f"screenshot: {shot['failure']}; server log: {log_path}")
    finally:
        page.close()
    with Image.open(shot["before"]) as first, Image.open(shot["after"]) as second:
        changed = first.size != second.size or ImageChops.difference(
            first.convert("RGB"), second.convert("RGB")).getbbox() is not None
    assert changed, (f"{widget.lesson}: the output of {name(cells[-1])} looks the same after the slider moved: "
                     f"{shot['before']}, {shot['after']}")


def run(cell, count: int, page) -> None:
    """Run one cell as a student does (select it, Ctrl+Enter) and wait for it to finish as the kernel's run count."""
    from playwright.sync_api import expect

    prompt = cell.locator(".jp-InputArea-prompt").first
    for _ in range(RUN_TRIES):
        cell.locator(".jp-InputPrompt").first.click(timeout=RUN_START_MS)
        page.keyboard.press("Control+Enter")
        try:  # queued, or already done: a fresh kernel numbers its runs 1, 2, 3...
            expect(prompt).to_have_text(re.compile(rf"\[(\*|{count})\]:"), timeout=RUN_START_MS)
            break
        except AssertionError:
            pass  # JupyterLab cleared the cell but the kernel never got it: run it again
    expect(prompt).to_have_text(f"[{count}]:", timeout=CELL_MS)
