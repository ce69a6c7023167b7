"""The standalone page machinery (`to_html`): offline, no CDN, rendered by real Chromium."""

import re

from browser import open_standalone, serve

import peap_widget as pw
from peap_widget.widgets.base import PeapWidget


class _Probe(PeapWidget):
    import traitlets as t

    _esm = """export default { render({ model, el }) {
      const b = new Uint8Array(model.get("blob").buffer);
      el.innerHTML = `<span id=n>${model.get("n")}</span><span id=s></span>` +
        `<span id=b>${[...b].join(",")}</span>`;
      el.querySelector("#s").textContent = model.get("s");
      el.querySelector("#n").onclick = () => { model.set("n", model.get("n") + 1); model.save_changes(); };
      model.on("change:n", () => { el.querySelector("#n").textContent = model.get("n"); });
    } };"""
    n = t.Int(3).tag(sync=True)
    s = t.Unicode("</script><b>x</b>").tag(sync=True)
    blob = t.Bytes(b"\x01\x02\xff").tag(sync=True)


def test_page_has_no_network_references(tmp_path):
    html = pw.to_html(tmp_path / "p.html", _Probe()).read_text()
    assert not re.search(r"(src|href)=\"https?:", html)
    assert "cdn" not in html.lower()
    assert html.count("</script>") == html.count("<script")  # the state's "</script>" was escaped


def test_page_renders_offline_and_keeps_traits(tmp_path, chromium):
    pw.to_html(tmp_path / "p.html", _Probe(), _Probe(n=7))
    with serve(tmp_path) as url:
        page = open_standalone(chromium, f"{url}/p.html")
        assert page.locator("#n").all_inner_texts() == ["3", "7"]
        assert page.locator("#s").first.inner_text() == "</script><b>x</b>"
        assert page.locator("#b").first.inner_text() == "1,2,255"
        page.locator("#n").first.click()
        assert page.locator("#n").first.inner_text() == "4"
        assert page.evaluate("window.peapWidgets[0].model.get('n')") == 4
        assert not page.errors
    # file:// works too (a page opened from disk)
    page = open_standalone(chromium, (tmp_path / "p.html").as_uri())
    assert page.locator("#n").all_inner_texts() == ["3", "7"]
