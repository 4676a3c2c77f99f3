"""Build the course as a static website from the committed, executed lessons, without running them (`make book`).

    python tools/build_book.py [--out outputs/book] [--notebooks notebooks]

Why nbconvert and not Jupyter Book 2 (MyST): `myst build --html` fetches its site theme from the MyST template
service at build time; the theme is published neither on PyPI nor on npm, so the build fails on a machine without
the internet (CI's, a classroom's). nbconvert's HTML export, installed with JupyterLab, needs nothing from the
network, and its `lab` template makes the pages look like the lessons do in JupyterLab.

What it writes (open index.html in a browser, or serve the folder: python -m http.server -d outputs/book):

    index.html       the landing page: the README's introduction, its set-up section (Quick start) and course map,
                     the lessons linked
    NN_name.html     one page per lesson, in course order, with links to the previous and the next lesson
    mathjax/         MathJax 2.7, copied from the `jupyter-server-mathjax` package (a dev dependency, from PyPI), so
                     the equations render without a CDN
    book.css         the site's own few rules

The pages load nothing from outside the folder: figures and animations are embedded in the notebooks' outputs,
the `<link>` to Font Awesome that matplotlib's animations carry is dropped (their buttons get text symbols), and
the build fails if any page still loads a script or stylesheet from the network. Answers (collapsed cells, or cells
tagged `solution`) are folded away behind "Show the answer".

Widgets need a kernel, so a static page cannot run them. Each widget output is replaced by a still of its first
state, drawn from the widget state the notebook saved when it was executed (the sliders' values, and the picture
an `ipywidgets.Image` held, stored as a base64 buffer), with a line saying to open the lesson in JupyterLab.
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import re
import shutil
import sys
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
INTERACTIVE = {"IntSliderModel", "FloatSliderModel", "SelectionSliderModel", "IntRangeSliderModel",
               "FloatRangeSliderModel", "DropdownModel", "TextModel", "TextareaModel", "ButtonModel",
               "CheckboxModel", "ToggleButtonsModel", "RadioButtonsModel", "SelectModel", "PlayModel"}

# The `lab` template with the site's own head (local MathJax, no require.js, no widget manager, no mermaid),
# navigation above and below each page, and answers folded away.
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<link rel="icon" href="data:,"><link rel="stylesheet" href="book.css">{% endblock extra_css %}
{%- block html_head_js_mathjax -%}
{%- if resources.book.math -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  // the package ships the STIX web fonts only (as Jupyter's classic notebook configured it)
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web",
               linebreaks: {automatic: true},
               // the blank font MathJax measures web fonts against, without a request Chromium reports as an error
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  displayAlign: "center", messageStyle: "none",
  MMLorHTML: {prefer: "HTML"}
});
</script>
<script src="{{ resources.book.mathjax_url }}"></script>
{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
{{ resources.book.nav }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.book.nav }}
{{ super() }}
{% endblock body_footer %}
{%- block any_cell scoped -%}
{%- if cell.metadata.get('jupyter', {}).get('source_hidden') or 'solution' in cell.metadata.get('tags', []) -%}
<details class="book-answer"><summary>Show the answer</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{%- endblock any_cell -%}
"""

CSS = """main { max-width: 1100px; margin: 0 auto; padding: 0 16px 32px; }
nav.book-nav { display: flex; justify-content: space-between; gap: 16px; padding: 12px 0;
  font-family: var(--jp-ui-font-family); font-size: 14px; border-bottom: 1px solid #ddd; }
nav.book-nav:last-of-type { border-top: 1px solid #ddd; border-bottom: none; }
nav.book-nav a { text-decoration: none; color: #1a5fb4; }
details.book-answer { margin: 8px 0; }
details.book-answer > summary { cursor: pointer; color: #1a5fb4; font-family: var(--jp-ui-font-family); }
.book-widget { display: flex; gap: 6px; align-items: flex-start; }
.book-widget.column { flex-direction: column; }
.book-widget label { font-family: var(--jp-ui-font-family); font-size: 13px; }
/* the hidden MathML MathJax adds for screen readers would ask for TeX fonts the MathJax package does not ship */
.MJX_Assistive_MathML [mathvariant] { font-family: serif !important; }
.book-widget-note { font-style: italic; color: #555; margin-top: 6px; }
/* matplotlib's animations name Font Awesome icons; text symbols stand in for the icon font */
.anim-buttons i.fa { font-style: normal; font-size: 12px; }
.anim-buttons i.fa-minus::before { content: "\\2212"; }
.anim-buttons i.fa-plus::before { content: "+"; }
.anim-buttons i.fa-fast-backward::before { content: "|\\25C0\\25C0"; }
.anim-buttons i.fa-step-backward::before { content: "|\\25C0"; }
.anim-buttons i.fa-play::before { content: "\\25B6"; }
.anim-buttons i.fa-flip-horizontal { display: inline-block; transform: scaleX(-1); }
.anim-buttons i.fa-pause::before { content: "||"; }
.anim-buttons i.fa-step-forward::before { content: "\\25B6|"; }
.anim-buttons i.fa-fast-forward::before { content: "\\25B6\\25B6|"; }
"""


class NotExecuted(RuntimeError):
    """A lesson on disk has code cells that never ran, so its page would have no pictures."""


def lessons(notebooks: Path) -> list[Path]:
    """The lessons in course order: notebooks/NN_name.ipynb."""
    found = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no lessons (NN_name.ipynb) in {notebooks}")
    return found


def check_executed(path: Path, nb) -> None:
    """Raise NotExecuted naming the lesson, its first cell that never ran, and the command that executes it."""
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.strip() and cell.get("execution_count") is None:
            raise NotExecuted(
                f"{shown} is not executed: code cell {index} ({cell.source.strip().splitlines()[0]!r}) has never run,"
                " so its page would have no outputs. Execute the lesson with\n"
                f"  .venv/bin/jupyter nbconvert --to notebook --execute --inplace "
                f"--ExecutePreprocessor.record_timing=False {shown}\n"
                "then run `make book` again."
            )


def title_of(nb, fallback: str) -> str:
    """The lesson's first Markdown heading ("Lesson 1 — The Markov noising chain")."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return fallback


def widget_still(model_id: str, state: dict) -> tuple[str, bool]:
    """HTML for a widget as it was saved, and whether it has controls a reader could move in JupyterLab."""
    model = state.get(model_id)
    if model is None:
        return "", False
    name, values = model["model_name"], model["state"]
    description = html.escape(values.get("description", ""))
    label = f"<label>{description}</label>" if description else ""
    interactive = name in INTERACTIVE
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        parts = [widget_still(child.removeprefix("IPY_MODEL_"), state) for child in values.get("children", [])]
        direction = "" if name == "HBoxModel" else " column"
        body = "".join(part for part, _ in parts)
        return f'<div class="book-widget{direction}">{body}</div>', any(flag for _, flag in parts)
    if name == "ImageModel":
        buffers = {tuple(b["path"]): b["data"] for b in model.get("buffers", []) if b.get("encoding") == "base64"}
        data = buffers.get(("value",))
        if data is None:
            return "", False
        base64.b64decode(data, validate=True)  # a damaged buffer fails the build here, not in the reader's browser
        return f'<img alt="the widget\'s picture" src="data:image/{values.get("format", "png")};base64,{data}">', False
    if name in ("IntSliderModel", "FloatSliderModel"):
        value = values.get("value", values.get("min", 0))
        readout = format(value, values.get("readout_format", ".2f" if name == "FloatSliderModel" else "d"))
        return (f'<div class="book-widget">{label}<input type="range" disabled min="{values.get("min", 0)}" '
                f'max="{values.get("max", 100)}" step="{values.get("step", 1)}" value="{value}">'
                f"<label>{html.escape(readout)}</label></div>"), True
    if name == "SelectionSliderModel":
        options, index = values.get("_options_labels", []), values.get("index", 0)
        readout = html.escape(options[index]) if 0 <= index < len(options) else ""
        return (f'<div class="book-widget">{label}<input type="range" disabled min="0" max="{max(len(options) - 1, 0)}"'
                f' value="{index}"><label>{readout}</label></div>'), True
    if name == "DropdownModel":
        options, index = values.get("_options_labels", []), values.get("index")
        items = "".join(f'<option{" selected" if k == index else ""}>{html.escape(o)}</option>'
                        for k, o in enumerate(options))
        return f'<div class="book-widget">{label}<select disabled>{items}</select></div>', True
    if name in ("TextModel", "TextareaModel"):
        return (f'<div class="book-widget">{label}<input type="text" disabled size="48" '
                f'value="{html.escape(values.get("value", ""))}"></div>'), True
    if name in ("LabelModel",):
        return f'<div class="book-widget"><label>{html.escape(values.get("value", ""))}</label></div>', False
    if name == "HTMLModel":
        return f'<div class="book-widget">{values.get("value", "")}</div>', False
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f'<progress value="{values.get("value", 0)}" max="{values.get("max", 100)}"></progress>', False
    return f"<label>{description or html.escape(name.removesuffix('Model'))}</label>", interactive


def still_output(output, state: dict):
    """A widget output replaced by a display_data output holding its still and, for controls, the JupyterLab line."""
    model_id = output["data"][WIDGET_VIEW]["model_id"]
    body, interactive = widget_still(model_id, state)
    if not body:
        body = f"<pre>{html.escape(str(output['data'].get('text/plain', '')))}</pre>"
        interactive = True
    if interactive:
        body += ('<p class="book-widget-note">A still of this widget as the lesson left it: open the lesson in '
                 "JupyterLab (<code>make lab</code>) to move its controls.</p>")
    return nbformat.v4.new_output("display_data", data={"text/html": body})


def prepare(nb):
    """A copy of the lesson ready to export: widgets as stills, animations without their CDN stylesheet."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for k, output in enumerate(cell.outputs):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                cell.outputs[k] = still_output(output, state)
            elif "text/html" in data:
                data["text/html"] = re.sub(r"<link[^>]*font-awesome[^>]*>", "", data["text/html"], flags=re.S)
    return nb


def nav(pages: list[tuple[str, str]], index: int | None) -> str:
    """Links to the course map and to the previous and next lessons; index is the page's place (None: the map)."""
    def link(k: int, arrow_first: bool) -> str:
        href, title = pages[k]
        text = f"&larr; {html.escape(title)}" if arrow_first else f"{html.escape(title)} &rarr;"
        return f'<a href="{href}" rel="{"prev" if arrow_first else "next"}">{text}</a>'

    if index is None:
        return f'<nav class="book-nav"><span>Course map</span>{link(0, False)}</nav>'
    previous = link(index - 1, True) if index > 0 else "<span></span>"
    following = link(index + 1, False) if index + 1 < len(pages) else "<span></span>"
    return f'<nav class="book-nav">{previous}<a href="index.html">Course map</a>{following}</nav>'


def readme_sections(readme: str) -> tuple[str, dict[str, str]]:
    """The README's introduction (without its title) and its `## ` sections by heading."""
    parts = re.split(r"^## +(.+)$", readme, flags=re.MULTILINE)
    intro = re.sub(r"^# .*\n", "", parts[0], count=1)
    return intro, {parts[k].strip(): parts[k + 1] for k in range(1, len(parts), 2)}


def site_links(markdown: str) -> str:
    """README links for the site: lessons point at their pages; other files of the repository become plain text."""
    markdown = re.sub(r"\]\((?:notebooks/)?(\d\d_[\w-]+)\.ipynb\)", r"](\1.html)", markdown)
    return re.sub(r"\[([^\]]+)\]\((?!https?://|#|\d\d_[\w-]+\.html\))[^)]*\)", r"\1", markdown)


def landing_notebook(readme: str, pages: list[tuple[str, str]]):
    """The landing page as a notebook of Markdown cells: the README's introduction, set-up and course map."""
    intro, sections = readme_sections(readme)
    missing = [name for name in ("Quick start", "Course map") if name not in sections]
    if missing:
        raise ValueError(f"README.md has no `## {missing[0]}` section; the landing page is built from it")
    lesson_list = "\n".join(f"{k + 1}. [{title}]({href})" for k, (href, title) in enumerate(pages))
    cells = [
        "# tinyldm — latent diffusion, built one lesson at a time\n" + intro,
        "## The lessons\n\n" + lesson_list,
        "## Course map\n" + sections["Course map"],
        "## Set up (Quick start)\n" + sections["Quick start"],
        "The lessons' sliders need a running kernel: on these pages each shows a still of the state the lesson was "
        "saved in. To move them, set up the course as above and run `make lab`.",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(site_links(c)) for c in cells])
    nb.metadata["title"] = "tinyldm — the course"
    return nb


def exporter() -> HTMLExporter:
    return HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"book.html.j2": TEMPLATE})],
                        template_file="book.html.j2")


def check_offline(page: str, name: str) -> None:
    """Fail the build if a page would load a script or a stylesheet from the network."""
    remote = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//[^\"']+", page)
    if remote:
        raise RuntimeError(f"{name} would load {remote[0]!r} from the network; the site must work offline")


def mathjax_folder() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise SystemExit(
            "MathJax is missing: the site serves it from the `jupyter-server-mathjax` package, a dev dependency; "
            'install it with `make setup` (or pip install -c constraints.txt -e ".[dev]")'
        ) from error
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def build(out: Path, notebooks: Path = ROOT / "notebooks", readme: Path = ROOT / "README.md") -> list[Path]:
    """Write the site into out and return its pages, the landing page first."""
    sources = lessons(notebooks)
    books = [nbformat.read(path, as_version=4) for path in sources]
    for path, nb in zip(sources, books):
        check_executed(path, nb)
    pages = [(f"{path.stem}.html", title_of(nb, path.stem)) for path, nb in zip(sources, books)]
    mathjax = mathjax_folder()

    out.mkdir(parents=True, exist_ok=True)
    for stale in set(out.glob("[0-9][0-9]_*.html")) - {out / href for href, _ in pages}:
        stale.unlink()  # a lesson renamed or removed since the last build
    shutil.copytree(mathjax, out / "mathjax", dirs_exist_ok=True)
    (out / "book.css").write_text(CSS, encoding="utf-8")
    html_exporter = exporter()
    written = []
    landing = landing_notebook(readme.read_text(encoding="utf-8"), pages)
    todo = [("index.html", landing, nav(pages, None), False)]
    todo += [(href, prepare(nb), nav(pages, k), True) for k, ((href, _), nb) in enumerate(zip(pages, books))]
    for name, nb, links, math in todo:
        resources = {"book": {"nav": links, "math": math, "mathjax_url": MATHJAX_URL},
                     "metadata": {"name": Path(name).stem}}
        page, _ = html_exporter.from_notebook_node(nb, resources=resources)
        check_offline(page, name)
        (out / name).write_text(page, encoding="utf-8")
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "book", help="the site's folder")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="the folder of the lessons")
    args = parser.parse_args(argv)
    try:
        pages = build(args.out, args.notebooks)
    except NotExecuted as error:
        print(f"make book: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(pages)} pages to {args.out} (open {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
