"""SchemaEditor in real Chromium, on its offline `to_html` page (no kernel): mouse selection,
number keys and palette buttons, keyboard navigation, undo/redo, span-type editing, the
download, and the page's annotations fed back to Python."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import open_standalone, screenshot, serve
from tiny import SCHEMA, tiny_records, tiny_tokenizer

import peap_widget as pw
from peap_widget.widgets.schema_editor import PALETTE, SchemaEditor

ROOT = Path(__file__).resolve().parent.parent
MODEL = "window.peapWidgets[0].model"


@pytest.fixture(scope="module", autouse=True)
def current_bundle(tmp_path_factory):
    """Test the front end as it is in js/schema_editor/ now: bundle it (as `npm run build`
    does) when esbuild is there, instead of trusting a possibly stale peap_widget/static."""
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists() or shutil.which("node") is None:
        yield
        return
    out = tmp_path_factory.mktemp("bundle") / "schema_editor.js"
    subprocess.run([str(esbuild), "js/schema_editor/index.js", "--bundle", "--format=esm",
                    "--target=es2020", "--minify", "--loader:.css=text", "--define:define.amd=false",
                    f"--outfile={out}", "--log-level=error"], cwd=ROOT, check=True, timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SchemaEditor, "_esm", out.read_text())
        yield


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def open_editor(browser, editor, tmp_path, name="editor.html"):
    editor.to_html(tmp_path / name)
    server = serve(tmp_path)
    url = server.__enter__()
    page = open_standalone(browser, f"{url}/{name}")
    page.stop_server = lambda: server.__exit__(None, None, None)
    page.locator(".pse").focus()
    return page


def model(page, name):
    return page.evaluate(f"{MODEL}.get({json.dumps(name)})")


def counts(page):
    return (int(page.locator("[data-role=valid-count]").inner_text()),
            int(page.locator("[data-role=invalid-count]").inner_text()))


def drag(page, i, j):
    a = page.locator(f"[data-token='{i}']").bounding_box()
    b = page.locator(f"[data-token='{j}']").bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=6)
    page.mouse.up()


def tint(hex_color, amount):
    """logic.js `tint` as the browser reports it."""
    c = [int(hex_color[k:k + 2], 16) for k in (1, 3, 5)]
    r, g, b = (round(255 + (x - 255) * amount) for x in c)
    return f"rgb({r}, {g}, {b})"


def chip_style(page, i):
    return page.locator(f"[data-token='{i}']").evaluate(
        "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).borderTopColor]")


def test_drag_tag_navigate_undo(chromium, tmp_path, tok):
    ds = pw.Dataset.from_records(tiny_records(), tok)
    page = open_editor(chromium, pw.SchemaEditor(ds), tmp_path)
    try:
        assert counts(page) == (5, 0)
        assert page.locator("[data-token]").count() == 14
        assert page.locator("[data-token='1']").get_attribute("data-span") == "IO"
        assert chip_style(page, 1) == [tint(PALETTE[1], 0.28), tint(PALETTE[1], 1)]
        assert page.locator("[data-role=ok]").inner_text() == "✓ Example 0 is valid"   # from 0

        # drag over "went to" (tokens 4-5) and press 6: they become S2; action1 keeps "the store ,"
        drag(page, 4, 5)
        assert page.locator(".pse-chip.selected").count() == 2
        assert "2 tokens selected [4, 6)" in page.locator("[data-role=selection]").inner_text()
        screenshot(page, "schema_editor")
        page.keyboard.press("6")
        ann = model(page, "annotations")[0]
        assert ann == [[0, 1], [1, 2], [2, 3], [3, 4], [6, 9], [4, 6], [9, 13], [13, 14]]
        assert page.locator(".pse-chip.selected").count() == 0
        assert [page.locator(f"[data-token='{i}']").get_attribute("data-span") for i in (4, 5, 9)] \
            == ["S2", "S2", "action2"]
        assert chip_style(page, 4)[0] == tint(PALETTE[5], 0.28)
        assert counts(page) == (4, 1)
        err = page.locator("[data-role=error]")
        assert err.get_attribute("data-rule") == "contiguous" and err.get_attribute("data-span") == "action1"
        assert "must start at token 4" in err.inner_text()
        assert page.locator("[data-span-row='action1']").get_attribute("class").split() == ["pse-span", "error"]
        assert page.locator(".pse-chip.error").count() == 2        # the gap action1 leaves
        assert "bad" in page.locator("[data-example='0']").get_attribute("class")
        screenshot(page, "schema_editor_invalid")

        # keyboard navigation
        for key, pos in [("ArrowRight", 1), ("j", 2), ("k", 1), ("ArrowLeft", 0), ("ArrowLeft", 0)]:
            page.keyboard.press(key)
            assert page.locator("[data-role=position]").inner_text() == f"Example {pos} (0–4)"
            assert model(page, "current") == pos
        page.locator("[data-action=next]").click()
        assert model(page, "current") == 1
        page.keyboard.press("n")                                   # next invalid: example 1
        assert model(page, "current") == 0

        # undo / redo: keys and buttons
        page.keyboard.press("Control+z")
        assert model(page, "annotations")[0] == [list(r) for r in ds.examples[0].spans]
        assert counts(page) == (5, 0)
        page.keyboard.press("Control+Shift+z")
        assert counts(page) == (4, 1)
        page.locator("[data-action=undo]").click()
        assert counts(page) == (5, 0)
        page.keyboard.press("Control+y")
        assert counts(page) == (4, 1)
        page.locator("[data-action=undo]").click()
        assert page.locator("[data-action=redo]").is_enabled()
        assert page.locator("[data-action=undo]").is_disabled()

        # shift-click selection and a palette button; a span swallowed whole becomes empty
        page.locator("[data-token='0']").click()
        page.locator("[data-token='2']").click(modifiers=["Shift"])
        page.locator("[data-span-type='IO']").click()
        ann = model(page, "annotations")[0]
        assert ann[:4] == [[0, 0], [0, 3], [3, 3], [3, 4]]
        assert page.locator("[data-span-row='and'] [data-role=range]").inner_text() == "empty"
        assert counts(page) == (5, 0)                              # prefix and "and" may be empty
        assert page.locator("[data-action=redo]").is_disabled()   # a new edit ends the redo branch
        # without a selection, a key says what to do
        page.keyboard.press("3")
        assert "Select tokens first" in page.locator("[data-role=notice]").inner_text()
        assert not page.errors
    finally:
        page.stop_server()


def test_span_type_panel(chromium, tmp_path, tok):
    ds = pw.Dataset.from_records(tiny_records(), tok)
    page = open_editor(chromium, pw.SchemaEditor(ds), tmp_path)
    try:
        page.locator("[data-action=types]").click()
        # rename (Enter commits), refused duplicate
        name = page.locator("[data-type-row='IO'] [data-field=name]")
        name.fill("io")
        name.press("Enter")
        assert [t["name"] for t in model(page, "span_types")][1] == "io"
        assert page.locator("[data-span-type='io']").count() == 1
        dup = page.locator("[data-type-row='io'] [data-field=name]")
        dup.fill("S1")
        dup.press("Enter")
        assert "already a span type 'S1'" in page.locator("[data-role=type-error]").inner_text()
        assert dup.input_value() == "io"
        # recolour from the palette: the chips follow
        page.locator("[data-type-row='io'] [data-action=color]").click()
        page.locator(f"[data-color='{PALETTE[8]}']").first.click()
        assert model(page, "span_types")[1]["color"] == PALETTE[8]
        assert chip_style(page, 1)[0] == tint(PALETTE[8], 0.28)
        # required: "and" may not be empty any more
        page.locator("[data-type-row='prefix'] [data-field=required]").check()
        assert model(page, "span_types")[0]["required"] is True
        assert counts(page) == (4, 1)                              # example 2 has an empty prefix
        # add (before the last), reorder, delete
        page.locator("[data-field=new-name]").fill("S1+1")
        page.locator("[data-action=add-type]").click()
        names = [t["name"] for t in model(page, "span_types")]
        assert names[-2:] == ["S1+1", "to"]
        assert model(page, "annotations")[0][-2] == [13, 13]
        page.locator("[data-type-row='S1+1'] [data-action=up]").click()
        assert [t["name"] for t in model(page, "span_types")][-3:] == ["S1+1", "action2", "to"]
        assert model(page, "annotations")[0][-3] == [10, 10]      # empty, at its new place
        assert counts(page) == (4, 1)
        screenshot(page, "schema_editor_types")
        page.locator("[data-type-row='S1+1'] [data-action=delete]").click()
        assert [t["name"] for t in model(page, "span_types")] == ["prefix", "io", *SCHEMA[2:]]
        # undo the deletion brings the type back where it was
        page.locator(".pse").focus()
        page.keyboard.press("Control+z")
        assert [t["name"] for t in model(page, "span_types")][-3] == "S1+1"
        # the last span type is always required
        assert page.locator("[data-type-row='to'] [data-field=required]").is_disabled()
        assert not page.errors
    finally:
        page.stop_server()


def test_page_edits_feed_back_to_python(chromium, tmp_path, tok):
    """Annotate two unannotated records from scratch in the page; the annotations read from
    the page's model, given back to Python, make the same Dataset as the reference spans."""
    records = tiny_records()[:2]
    bare = [{k: v for k, v in r.items() if k != "spans"} for r in records]
    editor = pw.SchemaEditor(bare, model=tok, schema=SCHEMA, path=tmp_path / "ann.json")
    page = open_editor(chromium, editor, tmp_path)
    try:
        assert counts(page) == (0, 2)
        assert page.locator("[data-role=error]").get_attribute("data-rule") == "missing_span"
        assert page.locator("[data-token='13']").get_attribute("data-span") == "to"
        assert "Offline page" in page.locator("[data-role=save-status]").inner_text()

        def tag(first, last, key=None, button=None):
            page.locator(f"[data-token='{first}']").click()
            if last != first:
                page.locator(f"[data-token='{last}']").click(modifiers=["Shift"])
            if button:
                page.locator(f"[data-span-type='{button}']").click()
            else:
                page.keyboard.press(key)

        # "When Mary and John went to the store , John gave a book to"
        tag(0, 0, "1")
        tag(1, 1, button="IO")
        tag(2, 2, "3")
        tag(3, 3, button="S1")
        tag(4, 8, "5")
        tag(9, 9, "6")
        drag(page, 10, 12)
        page.keyboard.press("7")
        assert counts(page) == (1, 1)
        assert page.locator("[data-role=ok]").count() == 1
        page.keyboard.press("j")
        # "Tom and Anna went to the shop , Anna gave a ball to": no prefix
        tag(0, 0, "2")
        tag(1, 1, "3")
        tag(2, 2, "4")
        tag(3, 7, "5")
        tag(8, 8, "6")
        tag(9, 11, "7")
        err = page.locator("[data-role=error]")
        assert (err.get_attribute("data-rule"), err.get_attribute("data-span")) == ("missing_span", "prefix")
        page.locator("[data-span-row='prefix'] [data-action=empty]").click()
        assert counts(page) == (2, 0)
        screenshot(page, "schema_editor_done")

        # the download is an annotation file that Python resumes
        with page.expect_download() as info:
            page.locator("[data-action=download]").click()
        saved = tmp_path / "downloaded.json"
        info.value.save_as(saved)
        resumed = pw.SchemaEditor(bare, model=tok, schema=SCHEMA, path=saved)
        assert resumed.validation().empty
        assert not page.errors

        editor.annotations = model(page, "annotations")
        editor.span_types = model(page, "span_types")
        out = editor.dataset
        ref = pw.Dataset.from_records(records, tok)
        assert [e.spans for e in out.examples] == [e.spans for e in ref.examples]
        assert resumed.dataset.to_records() == out.to_records() == ref.to_records()
        # and the autosave file has them too
        assert pw.Dataset.from_json(tmp_path / "ann.json", tok).to_records() == ref.to_records()
    finally:
        page.stop_server()


def test_keyboard_only_selection_and_tagging(chromium, tmp_path, tok):
    """Token chips take the focus (roving tabindex: one chip in the tab order), arrows move it,
    Shift+arrows extend a range from anywhere (not only from token 0), the focus is visible,
    and a number key tags the range; example numbers are 0-based, as in Python's errors."""
    ds = pw.Dataset.from_records(tiny_records(), tok)
    page = open_editor(chromium, pw.SchemaEditor(ds), tmp_path, "keys.html")
    try:
        chips = page.locator("[data-token]")
        assert [c.get_attribute("tabindex") for c in chips.all()] == ["0"] + ["-1"] * 13
        assert page.locator("[role=listbox] [role=option]").count() == 14
        focused = lambda: page.evaluate("document.activeElement.dataset.token")  # noqa: E731
        for tabs in range(1, 40):                     # Tab reaches the tokens (one stop)
            page.keyboard.press("Tab")
            if focused() is not None:
                break
        assert focused() == "0"
        page.keyboard.press("Tab")                    # and leaves them in one step
        assert focused() is None
        page.keyboard.press("Shift+Tab")
        assert focused() == "0"
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        assert focused() == "4"
        assert [c.get_attribute("tabindex") for c in chips.all()].count("0") == 1
        assert chips.nth(4).get_attribute("tabindex") == "0"
        style = chips.nth(4).evaluate("el => getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el).outlineWidth")
        assert style.startswith("solid") and not style.endswith(" 0px")   # a visible focus
        page.keyboard.press("Shift+ArrowRight")
        assert focused() == "5"
        assert "2 tokens selected [4, 6)" in page.locator("[data-role=selection]").inner_text()
        assert chips.nth(4).get_attribute("aria-selected") == "true"
        screenshot(page, "schema_editor_keyboard")
        page.keyboard.press("6")                      # tag tokens 4-5 as S2, focus stays
        ann = model(page, "annotations")[0]
        assert ann == [[0, 1], [1, 2], [2, 3], [3, 4], [6, 9], [4, 6], [9, 13], [13, 14]]
        assert focused() == "5"
        # Shift+ArrowLeft past the anchor, Home / End, a plain arrow collapses the range
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("Shift+ArrowLeft")
        page.keyboard.press("Shift+ArrowLeft")
        assert "3 tokens selected [2, 5)" in page.locator("[data-role=selection]").inner_text()
        page.keyboard.press("End")
        assert focused() == "13"
        assert "1 token selected [13, 14)" in page.locator("[data-role=selection]").inner_text()
        page.keyboard.press("Home")
        assert focused() == "0"
        # j / k still change examples from the tokens; numbers are 0-based
        page.keyboard.press("j")
        assert model(page, "current") == 1
        assert page.locator("[data-role=position]").inner_text() == "Example 1 (0–4)"
        assert page.locator("[data-example='1']").get_attribute("title").startswith("Example 1:")
        assert not page.errors
    finally:
        page.stop_server()


def test_a_failed_autosave_is_shown_in_the_page(chromium, tmp_path, tok):
    """The kernel's ``save_error`` (an autosave that could not be written) replaces the
    "Autosaved to ..." line, as an alert, and clears when a later save succeeds."""
    ds = pw.Dataset.from_records(tiny_records(), tok)
    page = open_editor(chromium, pw.SchemaEditor(ds), tmp_path)
    try:
        status = page.locator("[data-role=save-status]")
        page.evaluate(f"""() => {{ const m = {MODEL}; m.kernel = undefined;
            m.set("save_path", "/data/ann.json"); m.save_changes && m.save_changes(); }}""")
        page.wait_for_function("document.querySelector('[data-role=save-status]')"
                               ".textContent.startsWith('Autosaved to /data/ann.json')")
        page.evaluate(f"""() => {{ {MODEL}.set("save_error",
            "Not saved: Read-only file system (/data/ann.json). Your edits are kept"); }}""")
        page.wait_for_function("document.querySelector('[data-role=save-status]')"
                               ".dataset.failed === 'true'")
        assert status.inner_text().startswith("Not saved: Read-only file system")
        assert status.get_attribute("role") == "alert"
        screenshot(page, "schema_editor_save_failed")
        page.evaluate(f"""() => {{ {MODEL}.set("save_error", ""); }}""")
        page.wait_for_function("document.querySelector('[data-role=save-status]')"
                               ".dataset.failed === 'false'")
        assert status.inner_text().startswith("Autosaved to /data/ann.json")
    finally:
        page.stop_server()
