"""The dashboard served as a user starts it, and Debian's Chromium driven by Playwright (no downloaded browser)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.kit.processes import answers_ok
from tests.kit.repo import PROJECT_ROOT

CHROMIUM_NAMES = ("chromium", "chromium-browser")
LIVE = "live · "  # the caption app.py draws after the page


def chromium() -> str:
    """Return Debian's chromium; skip without it unless root (CI is root: ``infra/setup`` installs it there)."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0:
        pytest.fail("no chromium: run infra/setup (it installs Debian's chromium as root)")
    pytest.skip("needs Debian's chromium (infra/setup installs it when run as root)")


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(env: Mapping[str, str], port: int, timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``python -m flows.monitoring.dashboard --port PORT`` (own process group); yield its URL."""
    full = {**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "flows.monitoring.dashboard", "--port", str(port)], env=full,
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not answers_ok(f"{url}/_stcore/health", proc, timeout_s):
            if proc.poll() is not None:
                raise AssertionError(f"dashboard exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            raise AssertionError("dashboard did not answer /_stcore/health in time")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def browser() -> Iterator[Any]:
    """Yield a Playwright page in headless Debian Chromium (1400 x 1000)."""
    from playwright.sync_api import sync_playwright

    path = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            b.close()


def open_page(page: Any, url: str, heading: str, timeout_ms: float = 20_000) -> float:
    """Load ``url`` and wait until the page's heading is drawn and the script has finished; return seconds."""
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=timeout_ms)
    page.get_by_text(LIVE).wait_for(timeout=timeout_ms)  # drawn below the page: the script got to its end
    settle(page, timeout_ms)
    return time.perf_counter() - t0


def settle(page: Any, timeout_ms: float = 20_000) -> None:
    """Wait until Streamlit's status widget no longer says the script runs."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms)
    page.wait_for_timeout(300)


def wait_engaged(page: Any, timeout_ms: float = 20_000) -> None:
    """Wait for the kill switch page's status line "ENGAGED ...".

    Case-sensitive and anchored: the page's caption says "while engaged it places only ...", which a
    case-insensitive substring match found before the click had been handled (a flaky test under load).
    """
    page.get_by_text(re.compile(r"^ENGAGED")).first.wait_for(timeout=timeout_ms)


def screenshot(page: Any, out: Path, name: str, full_page: bool = True) -> Path:
    """Save a screenshot (of the whole page, or of the viewport) as ``out/name.png``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def see(page: Any, text: str, exact: bool = False, timeout_ms: float = 10_000) -> None:
    """Wait until ``text`` is on the page (tables draw their cells after the script finished)."""
    page.get_by_text(text, exact=exact).first.wait_for(state="attached", timeout=timeout_ms)  # grid cells are hidden
