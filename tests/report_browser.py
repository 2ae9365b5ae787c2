"""Debian's headless Chromium driven by Playwright, for the report tests and bench/report.py:
open a report offline (every request that is not a file:// one is aborted and recorded), collect
console errors, wait for the page's plots, screenshot, count drawn pixels in a plot's box, hover;
and a large surface file written without torch (synthetic_surface)."""
from __future__ import annotations

import io
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent (scripts/setup.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (scripts/setup.sh installs it)"
    return None


@contextmanager
def chromium():
    """A headless Chromium with a fresh profile (a new temporary --user-data-dir), closed after."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="landscape-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, headless=True,
                                                           viewport={"width": 1400, "height": 1000})
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Opened:
    """A report open in a page: the console errors, the requests that were blocked, seconds to ready."""

    page: object
    errors: list = field(default_factory=list)
    blocked: list = field(default_factory=list)
    load_s: float = 0.0


def open_report(context, path, timeout_s: float = 120) -> Opened:
    """Open report `path` with the network blocked; returns once every plot has drawn."""
    page = context.new_page()
    opened = Opened(page)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"page error: {e}"))

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            opened.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    start = time.perf_counter()
    page.goto(Path(path).resolve().as_uri())
    wait_ready(page, timeout_s)
    opened.load_s = time.perf_counter() - start
    return opened


def wait_ready(page, timeout_s: float = 120) -> None:
    """Wait for the page's last draw (after loading or after a selector changed)."""
    page.wait_for_function("window.landscapeReport && window.landscapeReport.ready", timeout=timeout_s * 1000)
    page.evaluate("() => window.landscapeReport.ready")
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=timeout_s * 1000)


def select(page, control: str, value: str) -> None:
    """Choose `value` in the page's split, metric or scale selector, then wait for the redraw."""
    page.select_option(f"#{control}", value)
    wait_ready(page)


def screenshot(page, path=None) -> np.ndarray:
    """A full-page screenshot as an (h, w, 3) uint8 array (also saved to `path`)."""
    from PIL import Image

    png = page.screenshot(full_page=True, path=None if path is None else str(path))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def box(page, element_id: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of an element in page (full-screenshot) pixels."""
    b = page.evaluate("""id => { const r = document.getElementById(id).getBoundingClientRect();
                                 return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; }""",
                      element_id)
    return tuple(int(round(v)) for v in b)


def colourful(image: np.ndarray, b) -> float:
    """Fraction of the box's pixels that are coloured (not white, grey or black): drawn data."""
    left, top, right, bottom = b
    crop = image[top:bottom, left:right].astype(int)
    return float(((crop.max(axis=2) - crop.min(axis=2)) > 40).mean()) if crop.size else 0.0


def grey(image: np.ndarray, b, level: int = 0xD9) -> float:
    """Fraction of the box's pixels of the heat maps' missing-point grey."""
    left, top, right, bottom = b
    crop = image[top:bottom, left:right].astype(int)
    return float((np.abs(crop - level) <= 2).all(axis=2).mean()) if crop.size else 0.0


def hover(page, element_id: str, x: float | None = None, y: float | None = None, *, point: int | None = None,
          curve: int = 0) -> dict:
    """Hover the plot at data coordinates (x, y), or at point number `point` of trace `curve`, through
    Plotly.Fx.hover; returns the hovered point (x, y, z, customdata, curve of gd._hoverdata[0]) and the
    hover label's text as displayed."""
    at = {"xval": x, "yval": y} if point is None else [{"curveNumber": curve, "pointNumber": point}]
    return page.evaluate("""([id, at]) => {
        const gd = document.getElementById(id);
        Plotly.Fx.hover(gd, at);
        const d = (gd._hoverdata || [])[0];
        const text = Array.from(gd.querySelectorAll('.hoverlayer .hovertext')).map(e => e.textContent).join('\\n');
        Plotly.Fx.unhover(gd);
        return d ? {x: d.x, y: d.y, z: d.z === undefined ? null : d.z, customdata: d.customdata || null,
                    curve: d.curveNumber, text} : {text};
    }""", [element_id, at])


def synthetic_surface(path, n: int = 201, splits=("train", "test")):
    """A complete n×n surface file of smooth synthetic values (loss, acc per split), written through
    io.surface_file as the engine writes one (no torch): for the report's size and load time."""
    from landscape.core.grid import Grid
    from landscape.io import surface_file

    grid = Grid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    metrics = [f"{sp}/{m}" for sp in splits for m in ("loss", "acc")]
    surface_file.prepare(path, grid, metrics, {"task": "classification", "loss_name": "crossentropy"},
                         directions=[{"w": np.ones(3)}] * 2, attrs={"seed": 0, "versions": "synthetic"})
    a, b = np.meshgrid(grid.x, grid.y)
    with surface_file.open_for_writing(path) as f:
        for k, sp in enumerate(splits):
            loss = 0.3 + 2 * a ** 2 + b ** 2 + 0.2 * np.sin(6 * a + k) * np.cos(5 * b) ** 2 + 0.1 * k
            f[f"{sp}/loss"][...] = loss
            f[f"{sp}/acc"][...] = 100 * np.exp(-loss)
        f["mask"][...] = 1
    return path
