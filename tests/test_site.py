"""The course site: built from the committed notebooks, every link and image checked, and drawn in headless Chromium."""
import base64, functools, http.server, json, os, re, shutil, threading
from pathlib import Path
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from argen_lit.cli import course_dir, main
from argen_lit.site import (SITE_MARKER, build_site, check_site, course_pages, png_size, prepare_notebook, render_math,
                            rewrite_links)

PNG_1x1 = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    return build_site(out)


def tiny_course(folder: Path, image: bytes = PNG_1x1, index_links=("01_one.ipynb",)) -> Path:
    "A two-page course: an index linking to `index_links`, and one notebook with a figure."
    folder.mkdir(parents=True, exist_ok=True)
    links = "\n".join(f"- [{l}]({l})" for l in index_links)
    nbformat.write(new_notebook(cells=[new_markdown_cell("# tiny\n\n> a course"), new_markdown_cell(links)]), str(folder / "index.ipynb"))
    fig = new_output("display_data", data={"image/png": base64.b64encode(image).decode()})
    nbformat.write(new_notebook(cells=[new_markdown_cell("# One\n\n> first"), new_markdown_cell("## A section\n\n[back](index.ipynb)"),
                                       new_code_cell("plot()", outputs=[fig])]), str(folder / "01_one.ipynb"))
    return folder


def test_every_notebook_becomes_a_page_in_course_order(site):
    out = site["out"]
    names = [p.stem for p in course_pages()]
    assert site["pages"] == len(names) == len(list(course_dir().glob("[0-9]*.ipynb"))) + 1
    assert sorted(p.stem for p in out.glob("*.html")) == sorted(names)
    for i, stem in enumerate(names):
        page = (out / f"{stem}.html").read_text()
        assert all(f'href="{n}.html"' in page for n in names)                        # the sidebar lists every page
        if i: assert f'rel="prev" href="{names[i - 1]}.html"' in page
        if i + 1 < len(names): assert f'rel="next" href="{names[i + 1]}.html"' in page
        if stem != "index": assert f"argen-lit course --full {stem.split('_')[0]}" in page
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page)    # nothing from the web
        assert '<script type="application/vnd.jupyter.widget' not in page             # widgets need a kernel
        assert not re.search(r'<pre><span></span><span class="c1">#\|', page)           # no nbdev directive opens a cell


def test_every_internal_link_and_image_of_the_site_resolves(site):
    out = site["out"]
    assert check_site(out) == []
    index = (out / "index.html").read_text()
    assert 'href="10_pixels.html"' in index and ".ipynb" not in re.sub(r"<pre.*?</pre>|<code.*?</code>", "", index, flags=re.S)
    figures = sum(len(re.findall(r'<img [^>]*src="data:image/png', p.read_text())) for p in out.glob("*.html"))
    assert figures > 50
    assert json.loads((out / "search_index.js").read_text().split("=", 1)[1].rstrip(";\n"))[0]["page"] == "index.html"


def test_the_link_checker_finds_broken_links_anchors_and_images(tmp_path):
    (tmp_path / "a.html").write_text('<h2 id="here">x</h2><a href="b.html">b</a><a href="a.html#here">ok</a>'
                                     '<a href="a.html#nowhere">bad anchor</a><img src="data:image/png;base64,aGVsbG8=">'
                                     '<a href="https://example.org/missing">web</a><img src="gone.png">')
    problems = check_site(tmp_path)
    assert len(problems) == 4, problems
    assert any("b.html" in p for p in problems) and any("#nowhere" in p for p in problems)
    assert any("not a PNG" in p for p in problems) and any("gone.png" in p for p in problems)


def test_math_becomes_mathml_and_code_and_money_are_left_alone():
    s = render_math("cost $x^2$, `echo $HOME`, $5 and $6\n\n```bash\necho $PATH $x$\n```\n$$\\sum_i p_i = 1$$")
    assert s.count("<math") == 2 and 'display="block"' in s
    assert "`echo $HOME`" in s and "echo $PATH $x$" in s and "$5 and $6" in s
    for plain in ["a \\$5 and \\$6", "cost $3.50-$4.00 each", "``code $x$``", "~~~\n$x$\n~~~"]:
        assert render_math(plain) == plain
    with pytest.raises(ValueError, match=r"nb: cell 3: the math .* does not parse"): render_math("set $\\frac{a}{$ oops", "nb: cell 3")


def test_directives_hidden_cells_and_widgets_stay_off_the_page():
    nb = new_notebook(cells=[new_code_cell("#| default_exp x"), new_code_cell("#| export\ndef f(): pass"),
                             new_code_cell("#| hide\nimport nbdev"),
                             new_code_cell("train()", outputs=[new_output("display_data", data={
                                 "application/vnd.jupyter.widget-view+json": {"model_id": "m"}, "text/plain": "100%"})])])
    nb.metadata["widgets"] = {"state": {}}
    out = prepare_notebook(nb)
    assert [c.source for c in out.cells] == ["def f(): pass", "train()"]
    assert list(out.cells[1].outputs[0]["data"]) == ["text/plain"] and "widgets" not in out.metadata
    assert rewrite_links('<a href="02_x.ipynb#y">') == '<a href="02_x.html#y">'
    assert rewrite_links('<a href="https://a.org/b.ipynb">') == '<a href="https://a.org/b.ipynb">'


def test_bad_input_gets_clear_errors_and_writes_nothing(tmp_path):
    course = tiny_course(tmp_path / "nbs")
    assert build_site(tmp_path / "ok", nbs=course)["pages"] == 2
    assert check_site(tmp_path / "ok") == [] and (tmp_path / "ok" / SITE_MARKER).exists()
    assert build_site(tmp_path / "ok", nbs=course)["pages"] == 2                    # a site built here: rebuilt in place
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out: .* is a file"): build_site(tmp_path / "file", nbs=course)
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty.*--force"): build_site(tmp_path / "mine", nbs=course)
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]
    assert build_site(tmp_path / "mine", nbs=course, force=True)["pages"] == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    broken = tiny_course(tmp_path / "broken", image=b"GIF89a not a png at all")
    with pytest.raises(ValueError, match=r"01_one.ipynb: cell 2 has a broken image"): build_site(tmp_path / "b", nbs=broken)
    assert not (tmp_path / "b").exists()
    missing = tiny_course(tmp_path / "missing", index_links=("01_one.ipynb", "07_gone.ipynb"))
    with pytest.raises(FileNotFoundError, match="07_gone.ipynb"): build_site(tmp_path / "m", nbs=missing)
    (tmp_path / "noindex").mkdir()
    with pytest.raises(FileNotFoundError, match="index.ipynb"): build_site(tmp_path / "n", nbs=tmp_path / "noindex")
    with pytest.raises(ValueError, match="nbs"): build_site(tmp_path / "n", nbs=tmp_path / "nowhere")
    assert main(["site", "--out", str(tmp_path / "file")]) == 2                  # the command: one line, status 2
    assert png_size(PNG_1x1) == (1, 1)
    with pytest.raises(ValueError, match="cut short"): png_size(PNG_1x1[:40])
    assert prepare_notebook(new_notebook()).cells == []                             # an empty notebook is an empty page


# --- a real browser: Debian's chromium driven by Playwright (`.ci/run` installs both)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None or not _has_playwright():
        if os.environ.get("ARGEN_LIT_REQUIRE_BROWSER"): pytest.fail("ARGEN_LIT_REQUIRE_BROWSER is set but chromium or playwright is missing")
        pytest.skip("needs Debian's chromium and the playwright package (pip install -e '.[dev]')")
    return path


def _has_playwright():
    import importlib.util
    return importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site["out"])))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown(); srv.server_close()


def test_pages_load_in_headless_chromium_with_no_errors(site, served, tmp_path):
    exe = chromium_path()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            for name in ["index.html", "02_transformer.html", "10_pixels.html", "90_leaderboard.html"]:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                errors, failed = [], []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("requestfailed", lambda r: failed.append(r.url))
                page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                assert page.goto(served + name, wait_until="load").status == 200
                images = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
                hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
                page.screenshot(path=str(tmp_path / f"{name}.png"))
                assert errors == [] and failed == [], (name, errors, failed)
                assert all(w > 0 and h > 0 for w, h in images), (name, images)
                if name != "index.html": assert images, f"{name}: a paradigm notebook page with no figure"
                for href in hrefs:                                               # every internal link answers 200
                    if href.startswith(served):
                        target = href[len(served):].split("#")[0] or "index.html"
                        assert (site["out"] / target).is_file(), (name, href)
                page.close()
            page = browser.new_page()
            page.goto(served + "index.html")
            page.fill("#search", "blind spot")
            hits = page.evaluate("Array.from(document.querySelectorAll('#hits a')).map(a => a.getAttribute('href'))")
            assert "10_pixels.html" in hits
        finally:
            browser.close()
    shots = sorted(tmp_path.glob("*.png"))
    assert len(shots) == 4 and all(png_size(s.read_bytes())[0] == 1300 for s in shots)
