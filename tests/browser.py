"""Real-browser test helpers: Debian's Chromium driven by Playwright, pages served from loopback.

Never lets Playwright download a browser: it always launches /usr/bin/chromium. Without
Chromium the browser tests skip, except under CI=true, where they fail (CI must run them).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("PEAP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = os.environ.get("PEAP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium():
    """Skip (or, with CI=true, fail) when Chromium or Playwright is missing."""
    why = None
    if not Path(CHROMIUM).exists():
        why = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed (pip install -e '.[test]')"
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests must run under CI: {why}")
        pytest.skip(why)


@contextlib.contextmanager
def launch():
    """A headless Chromium (the system one) through Playwright."""
    require_chromium()
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve ``directory`` on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(page_or_locator, name: str) -> Path:
    """Save a screenshot under test-artifacts/ (kept for people to look at)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page_or_locator.screenshot(path=str(path))
    return path


def open_standalone(browser, url: str, console: list | None = None):
    """Open a `to_html` page and wait until its widgets have rendered; returns the page.
    Page errors fail the test."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if console is not None:
        page.on("console", lambda m: console.append(m.text))
    page.goto(url)
    page.wait_for_selector("body[data-peap-ready='true']", timeout=20000)
    page.errors = errors
    return page


@contextlib.contextmanager
def jupyterlab(root: Path, timeout: float = 90):
    """A real JupyterLab server on loopback serving ``root`` (its config, runtime and settings
    folders inside ``root``, so nothing of the user's is read or written); yields ``(url,
    token)``. Raises RuntimeError with the end of its log when it does not start."""
    import secrets
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True"]
    log_path = root / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except Exception:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("JupyterLab did not start:\n"
                                           + log_path.read_text()[-3000:]) from None
                    time.sleep(0.5)
            yield url, token
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def open_notebook(browser, url: str, token: str, notebook: str, viewport: dict,
                  errors: list | None = None):
    """A page with ``notebook`` open in the JupyterLab at ``url`` and its kernel idle (page
    errors appended to ``errors`` when given)."""
    page = browser.new_page(viewport=viewport)
    if errors is not None:
        page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/lab/tree/{notebook}?token={token}", timeout=60000)
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')",
                           timeout=60000)
    page.wait_for_function("""() => {
        const w = window.jupyterapp.shell.currentWidget;
        return w?.sessionContext?.session?.kernel?.status === "idle";
    }""", timeout=90000)
    return page
