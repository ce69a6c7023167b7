"""The SchemaEditor's Suggest panel in real Chromium. The page runs the built bundle with a
kernel-less model; `Kernel` below stands in for the Jupyter comm (trait values both ways and
custom messages both ways, in order, a trait sent only when its value changed, as Backbone
does), so a Run in the page really runs the suggester in this Python process and the editor's
annotations here are what the page's edits made them."""

import json
import time
from pathlib import Path

import pytest
from browser import open_notebook, screenshot, serve
from test_jupyterlab import lab  # noqa: F401  (JupyterLab on loopback, for the last test)
from test_schema_editor_browser import current_bundle  # noqa: F401  (the fresh bundle)
from test_schema_editor_suggest import IOI, IOIFromText, builtin, editor_with_changes, merged

import peap_widget as pw

MODEL = "window.peapWidgets[0].model"
PAGE_WRITES = ["span_types", "annotations", "current", "suggestion"]
SYNCED = PAGE_WRITES + ["suggest_status", "suggesters", "saliency", "save_error"]
CHANGED = [0, 2, 4, 6, 8, 10]


@pytest.fixture(scope="module")
def toy():
    model = pw.models.load("toy-ioi")
    return model, pw.tasks.ioi(n=12, seed=1).dataset(model)


class Kernel:
    """The comm between the page's model and ``editor``: `pump` moves what the page wrote and
    sent to Python, then what Python set and sent back to the page, in the order it happened."""

    def __init__(self, page, editor):
        self.page, self.editor, self.events = page, editor, []
        editor.observe(lambda c: self.events.append(("trait", c["name"], _copy(c["new"]))), names=SYNCED)
        editor.send = lambda content, buffers=None: self.events.append(("msg", content, None))
        page.evaluate("""() => {
            const { model, el } = window.peapWidgets[0];
            window.outbox = [];
            el.addEventListener("peap-send", (e) => window.outbox.push(e.detail));
            // what the panel said after each status the kernel sent (after the editor drew it)
            window.statusSeen = [];
            model.on("change:suggest_status", () => window.statusSeen.push({
                text: document.querySelector("[data-role=suggest-status]")?.textContent,
                bar: document.querySelector(".pse-progress-bar")?.style.width ?? null,
                run: document.querySelector("[data-action=run]")?.disabled }));
        }""")

    def pump(self):
        """Python's changes made since the last pump go to the page first (the kernel sends
        as it goes); then the page's writes and messages come to Python, and what Python
        did about them goes back to the page."""
        self._to_page()
        self._from_page()
        for msg in self.page.evaluate("window.outbox.splice(0)"):
            self.editor._on_message(self.editor, msg, [])
        self._to_page()
        self._from_page()        # the page's answer to an "apply" message: its own edit

    def _to_page(self):
        events, self.events = self.events, []
        self.page.evaluate(f"""(events) => {{
            const m = {MODEL};
            for (const [kind, name, value] of events) {{
                if (kind === "msg") m.receive(name);
                else if (JSON.stringify(m.get(name)) !== JSON.stringify(value)) m.set(name, value);
            }}
        }}""", [[k, n, v] for k, n, v in events])

    def _from_page(self):
        state = self.page.evaluate(
            f"(names) => Object.fromEntries(names.map((n) => [n, {MODEL}.get(n)]))", PAGE_WRITES)
        for name, value in state.items():
            if _copy(getattr(self.editor, name)) != value:
                setattr(self.editor, name, value)



def _copy(value):
    return json.loads(json.dumps(value))


def open_page(browser, editor, tmp_path, kernel, name="suggest.html"):
    editor.to_html(tmp_path / name)
    server = serve(tmp_path)
    url = server.__enter__()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    if kernel:
        page.add_init_script("window.peapStandalone = { kernel: true };")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/{name}")
    page.wait_for_selector("body[data-peap-ready='true']", timeout=20000)
    page.errors = errors
    page.stop_server = lambda: server.__exit__(None, None, None)
    page.locator(".pse").focus()
    return page


def count(page, what):
    return int(page.locator(f"[data-count={what}] b").inner_text())


def listed(page, role):
    return [int(x.get_attribute("data-sg-example")) for x in page.locator(f"[data-role={role}] [data-sg-example]").all()]


def expected(accepted):
    """The annotations after accepting ``accepted``: the built-in spans there and wherever
    the editor agreed already; the merged (S1+1 in action1) ones elsewhere."""
    return lambda ds: [merged(r) if i in CHANGED and i not in accepted else r
                       for i, r in enumerate(builtin(ds))]


def saliency_of(ds):
    """A score per token: 1 on IO, 0.5 on S2, -0.25 on the last token, 0 elsewhere."""
    rows = []
    for i, ranges in enumerate(builtin(ds)):
        n = len(ds.tokens(i))
        s = [0.0] * n
        s[ranges[1][0]], s[ranges[6][0]], s[n - 1] = 1.0, 0.5, -0.25
        rows.append(s)
    return rows


def test_run_accept_half_undo_in_the_page(chromium, tmp_path, toy):
    model, ds = toy
    editor = editor_with_changes(ds, model, set(CHANGED), path=tmp_path / "spans.json")
    editor.show_saliency(saliency_of(ds), label="saliency")
    page = open_page(chromium, editor, tmp_path, kernel=True)
    kernel = Kernel(page, editor)
    try:
        run = page.locator("[data-action=run]")
        assert page.locator("[data-role=suggester] option").all_inner_texts() == ["ioi from text"]
        assert run.is_enabled() and page.locator("[data-role=no-kernel]").count() == 0
        # saliency: shaded behind the token text, relative to the example's largest |score|
        chips = page.locator("[data-token]")
        io = builtin(ds)[0][1][0]
        assert chips.nth(io).get_attribute("data-saliency") == "1.000"
        assert chips.nth(len(ds.tokens(0)) - 1).get_attribute("data-saliency") == "0.250"
        assert chips.nth(0).get_attribute("data-saliency") == "0.000"
        shade = lambda i: chips.nth(i).locator(".pse-text").evaluate(  # noqa: E731
            "el => getComputedStyle(el).backgroundColor")
        assert shade(io) == "rgba(245, 158, 11, 0.8)" and shade(0) == "rgba(0, 0, 0, 0)"
        page.locator("[data-field=shade]").uncheck()
        assert chips.nth(io).get_attribute("data-saliency") is None
        page.locator("[data-field=shade]").check()

        # Run: disabled while the kernel works, progress and the running counts shown
        run.click()
        assert run.is_disabled() and run.inner_text() == "Running…"
        assert page.locator("[data-role=suggest-status]").inner_text() == "Asking the kernel…"
        kernel.pump()
        seen = page.evaluate("window.statusSeen")
        assert seen[0]["run"] is True and seen[0]["bar"] == "0%"
        assert {"text": "Running ioi from text… 6 / 12 examples · 60 tokens · $0.0060",
                "bar": "50%", "run": True} in seen
        assert seen[-1]["run"] is False
        assert page.locator("[data-role=suggest-status]").inner_text() == \
            "ioi from text: 11 proposed, 1 left out · 120 tokens · $0.0120"
        assert run.is_enabled()
        assert editor.suggestion["status"] == [None] * 12
        assert editor.annotations == expected(set())(ds)          # a layer, nothing changed

        # the panel: counts, the examples that differ, the one left out (with the reason)
        assert [count(page, k) for k in ("pending", "disagree", "accepted", "rejected", "left-out")] == [11, 5, 0, 0, 1]
        assert listed(page, "disagree-list") == [0, 2, 4, 6, 8]
        assert listed(page, "left-out-list") == [10]
        assert "no comma" in page.locator("[data-role=left-out-list] [data-sg-example]").get_attribute("title")
        # the pending layer under the chips of example 0: S1+1 is where the editor has action1
        s11 = builtin(ds)[0][4][0]
        assert chips.nth(s11).get_attribute("data-suggested") == "S1+1"
        assert chips.nth(s11).get_attribute("data-span") == "action1"
        assert [int(c.get_attribute("data-token")) for c in page.locator(".pse-chip.differs").all()] == [s11]
        assert page.locator("[data-role=suggest-here]").inner_text().startswith("Example 0: suggestion differs in S1+1, action1")
        screenshot(page.locator(".pse"), "schema_editor_suggest")

        # accept half of the six changed examples (0, 2, 4: list, button, key), undo once
        page.locator("[data-role=disagree-list] [data-sg-example='0']").click()
        page.locator("[data-action=accept-one]").click()
        page.locator("[data-role=disagree-list] [data-sg-example='2']").click()
        assert page.locator("[data-role=position]").inner_text() == "Example 2 (0–11)"
        page.locator("[data-action=accept-one]").click()
        page.locator("[data-role=disagree-list] [data-sg-example='4']").click()
        page.keyboard.press("a")
        assert listed(page, "disagree-list") == [6, 8]
        assert count(page, "accepted") == 3
        assert page.locator(".pse-chip.differs").count() == 0 and page.locator("[data-suggested]").count() == 0
        page.keyboard.press("Control+z")                         # undoes the accept of 4
        assert listed(page, "disagree-list") == [4, 6, 8]
        assert count(page, "accepted") == 2
        assert page.locator("[data-role=notice]").count() == 0   # "Accepted ..." is gone
        assert page.locator("[data-role=suggest-here]").inner_text().startswith("Example 4: suggestion differs")
        kernel.pump()
        assert editor.annotations == expected({0, 2})(ds)
        assert [list(map(list, e.spans)) for e in editor.dataset.examples] == expected({0, 2})(ds)
        assert editor.suggestion["status"][:5] == ["accepted", None, "accepted", None, None]
        assert editor.disagreements() == [4, 6, 8]
        # the autosave file has it all, the pending layer too
        saved = json.loads((tmp_path / "spans.json").read_text())
        assert saved["suggestion"]["status"] == editor.suggestion["status"]
        assert [r["spans"] for r in saved["examples"]] == [dict(zip(IOI, r)) for r in expected({0, 2})(ds)]
        screenshot(page.locator(".pse"), "schema_editor_suggest_accepted")

        # Python's accept is an undoable edit in the page too
        assert editor.accept_suggestion([6]) == [6]
        kernel.pump()
        assert listed(page, "disagree-list") == [4, 8]
        page.locator("[data-action=undo]").click()
        kernel.pump()
        assert editor.annotations == expected({0, 2})(ds)
        assert editor.suggestion["status"][6] is None

        # reject all, then undo: the proposals are pending again
        page.locator("[data-action=reject-all]").click()
        assert count(page, "rejected") == 9 and count(page, "pending") == 0
        kernel.pump()
        assert editor.pending() == [] and editor.annotations == expected({0, 2})(ds)
        page.locator("[data-action=undo]").click()
        kernel.pump()
        assert editor.pending() == [1, 3, 4, 5, 6, 7, 8, 9, 11]
        assert editor.annotations == expected({0, 2})(ds)
        assert not page.errors
    finally:
        page.stop_server()


def test_a_failing_suggester_is_shown_in_the_panel(chromium, tmp_path, toy):
    model, ds = toy
    editor = editor_with_changes(ds, model, set(CHANGED))
    editor.add_suggester(IOIFromText(model.tokenizer, fail=True), name="flaky")
    page = open_page(chromium, editor, tmp_path, kernel=True, name="flaky.html")
    kernel = Kernel(page, editor)
    try:
        page.locator("[data-role=suggester]").select_option(label="flaky")
        page.locator("[data-action=run]").click()
        kernel.pump()
        status = page.locator("[data-role=suggest-status]")
        assert status.inner_text() == "flaky failed: RuntimeError: the model server went away"
        assert status.get_attribute("role") == "alert"
        assert page.locator("[data-action=run]").is_enabled()
        assert page.locator("[data-role=suggest-summary]").count() == 0
        assert editor.annotations == expected(set())(ds) and editor.suggestion == {}
        screenshot(page.locator(".pse-suggest"), "schema_editor_suggest_error")
        assert not page.errors
    finally:
        page.stop_server()


def test_offline_page_shows_the_pending_suggestion(chromium, tmp_path, toy):
    """A `to_html` page has no kernel: Run is off and says why; the pending layer is there,
    accepting works as a page edit, and the downloaded file carries the rest."""
    model, ds = toy
    editor = editor_with_changes(ds, model, set(CHANGED))
    editor.suggest(0)
    page = open_page(chromium, editor, tmp_path, kernel=False, name="offline.html")
    try:
        assert page.locator("[data-action=run]").is_disabled()
        assert "needs a kernel" in page.locator("[data-role=no-kernel]").inner_text()
        assert listed(page, "disagree-list") == [0, 2, 4, 6, 8]
        page.locator("[data-action=accept-all]").click()
        assert count(page, "accepted") == 11 and listed(page, "disagree-list") == []
        screenshot(page.locator(".pse"), "schema_editor_suggest_offline")
        with page.expect_download() as info:
            page.locator("[data-action=download]").click()
        path = tmp_path / "downloaded.json"
        info.value.save_as(path)
        resumed = pw.SchemaEditor(ds, path=path)
        assert resumed.annotations == expected(set(CHANGED) - {10})(ds)
        assert resumed.suggestion["status"] == ["accepted"] * 10 + [None, "accepted"]
        assert resumed.left_out() == editor.left_out()
        assert not page.errors
    finally:
        page.stop_server()


# --- the real thing: JupyterLab, anywidget's own front end, the kernel's comm ---------------------

LAB_SETUP = """\
import json, sys, time
sys.path.insert(0, {tests!r})
import peap_widget as pw
from test_schema_editor_suggest import IOIFromText, editor_with_changes
model = pw.models.load("toy-ioi")
ds = pw.tasks.ioi(n=12, seed=1).dataset(model)

class Slow(IOIFromText):
    # one status message per example, apart, so the page draws each
    def __call__(self, examples, tokens, *, progress=None):
        def slow(*a):
            time.sleep(0.1)
            progress(*a)
        return super().__call__(examples, tokens, progress=slow)

editor = editor_with_changes(ds, model, {changed!r}, path="spans.json")
editor.add_suggester(Slow(model.tokenizer), name="ioi slowly")
editor"""

LAB_DUMP = """\
json.dump({{"annotations": editor.annotations, "status": editor.suggestion.get("status"),
           "dataset": [[list(r) for r in e.spans] for e in editor.dataset.examples]}},
          open({name!r}, "w"))"""


def test_in_jupyterlab_run_accept_undo(lab, chromium, toy):
    """Run in the page of a real notebook, accept three examples, undo one (Ctrl+Z); the
    kernel's editor has exactly the expected annotations. Then an accept made in Python is
    undone with the page's button."""
    import nbformat

    url, token, root = lab
    model, ds = toy
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        LAB_SETUP.format(tests=str(Path(__file__).resolve().parent), changed=set(CHANGED)),
        LAB_DUMP.format(name="state1.json"), "editor.accept_suggestion([6])",
        LAB_DUMP.format(name="state2.json"))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "suggest.ipynb")
    page, errors = open_editor_notebook(chromium, url, token, "suggest.ipynb")

    def run_cell(i, output=None):
        page.evaluate(f"""() => {{
            window.jupyterapp.shell.currentWidget.content.activeCellIndex = {i};
            return window.jupyterapp.commands.execute("notebook:run-cell");
        }}""")
        if output:
            deadline = time.time() + 60
            while not (root / output).exists() and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(0.3)
            return json.loads((root / output).read_text())

    editor = page.locator(".pse").first
    editor.scroll_into_view_if_needed()
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const s = document.querySelector("[data-role=suggest-status]");
            if (s) window.seen.push(s.textContent);
        }).observe(document.querySelector(".pse-suggest"), { subtree: true, childList: true, characterData: true });
    }""")
    page.locator("[data-role=suggester]").select_option(label="ioi slowly")
    page.locator("[data-action=run]").click()
    page.wait_for_selector("[data-role=suggest-status]:text('Running ioi slowly')", timeout=60000)
    screenshot(page.locator(".pse-suggest"), "jupyterlab_schema_editor_suggest_running")  # to look at
    page.wait_for_selector("[data-role=suggest-summary]", timeout=60000)
    seen = page.evaluate("window.seen")
    running = [s for s in seen if s.startswith("Running ioi slowly… ")]
    assert any(f" {k} / 12 examples" in s for s in running for k in range(1, 12)), seen
    assert listed(page, "disagree-list") == [0, 2, 4, 6, 8]
    screenshot(editor, "jupyterlab_schema_editor_suggest")

    for i in (0, 2, 4):
        page.locator(f"[data-role=disagree-list] [data-sg-example='{i}']").click()
        page.locator("[data-action=accept-one]").click()
    assert count(page, "accepted") == 3
    page.locator(".pse").first.focus()
    page.keyboard.press("Control+z")
    assert listed(page, "disagree-list") == [4, 6, 8]
    state = run_cell(1, "state1.json")
    want = expected({0, 2})(ds)
    assert state["annotations"] == want and state["dataset"] == want
    assert state["status"][:5] == ["accepted", None, "accepted", None, None]

    run_cell(2)                                         # editor.accept_suggestion([6])
    page.wait_for_function("document.querySelectorAll('[data-role=disagree-list] [data-sg-example]').length === 2",
                           timeout=60000)
    page.locator("[data-action=undo]").click()
    assert listed(page, "disagree-list") == [4, 6, 8]
    state = run_cell(3, "state2.json")
    assert state["annotations"] == want and state["status"][6] is None
    assert not errors, errors


def open_editor_notebook(chromium, url, token, notebook):
    """Open ``notebook`` in JupyterLab, run its first cell once the kernel is idle and wait
    for the SchemaEditor: (page, page errors)."""
    errors = []
    page = open_notebook(chromium, url, token, notebook, {"width": 1500, "height": 1100}, errors)
    page.click(".jp-Cell:nth-child(1) .jp-InputArea-editor")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
    page.wait_for_selector(".pse [data-action=run]:not([disabled])", timeout=120000)
    return page, errors
