"""Size and load time of `landscape report` pages (bench/README.md, "Report").

For each grid (n×n, two splits, loss and accuracy: a synthetic surface written through
io.surface_file, as the engine writes one): the page's size, the seconds to build it
(viz.report.report, median of 3), and in Debian's headless Chromium (tests/report_browser.py:
network blocked, a fresh profile) the seconds from navigation until every plot has drawn, and
the seconds to redraw every plot after switching the split; medians and maxima over --repeat
page loads (a new page each).

    .venv/bin/python bench/report.py [--repeat 5]     # writes bench/results/report.json
    .venv/bin/python bench/report.py --screenshot out/demo/report.html docs/figures/report.png
                                        # the README's picture: the top of the page, a checkpoint hovered
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import report_browser as rb  # noqa: E402

from landscape.viz.report import report  # noqa: E402


def measure(context, n: int, repeat: int, folder: Path) -> dict:
    path = rb.synthetic_surface(folder / f"s{n}.h5", n)
    out = folder / f"s{n}.html"
    builds = []
    for _ in range(3):
        start = time.perf_counter()
        report([path], out)
        builds.append(time.perf_counter() - start)
    loads, switches = [], []
    for _ in range(repeat):
        opened = rb.open_report(context, out)
        assert not opened.errors and not opened.blocked, (opened.errors, opened.blocked)
        loads.append(opened.load_s)
        start = time.perf_counter()
        rb.select(opened.page, "split", "test")
        switches.append(time.perf_counter() - start)
        opened.page.close()
    return {"grid": f"{n}x{n}", "splits": 2, "size_mb": round(out.stat().st_size / 1e6, 2),
            "build_s": round(statistics.median(builds), 3),
            "load_s_median": round(statistics.median(loads), 2), "load_s_max": round(max(loads), 2),
            "switch_split_s_median": round(statistics.median(switches), 2), "switch_split_s_max": round(max(switches), 2)}


def screenshot(page_path: str, png: str, height: int = 1150, width: int = 1000) -> None:
    """The top of a report with the trajectory's checkpoint 3 hovered, `width` px wide, 256 colours."""
    from PIL import Image

    with rb.chromium() as context:
        opened = rb.open_report(context, page_path)
        page = opened.page
        page.evaluate("""() => { const gd = document.getElementById('f1-contour') || document.getElementById('f0-contour');
                                 Plotly.Fx.hover(gd, [{curveNumber: gd.data.length - 1, pointNumber: 3}]); }""")
        full = Image.fromarray(rb.screenshot(page)[:height])
    small = full.resize((width, round(full.height * width / full.width)), Image.LANCZOS)
    small.quantize(256).save(png, optimize=True)
    print(f"[bench] {png}: {Path(png).stat().st_size / 1e3:.0f} kB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--sizes", default="51,201")
    p.add_argument("--out", default=str(ROOT / "bench/results/report.json"))
    p.add_argument("--screenshot", nargs=2, metavar=("REPORT", "PNG"), help="only take the README's screenshot")
    args = p.parse_args()
    why = rb.missing()
    if why:
        sys.exit(f"bench/report.py: {why}")
    if args.screenshot:
        return screenshot(*args.screenshot)
    rows = []
    with tempfile.TemporaryDirectory() as d, rb.chromium() as context:
        version = context.browser.version if context.browser else "?"
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(context, n, args.repeat, Path(d)))
            print(json.dumps(rows[-1]))
    result = {"machine": f"{platform.machine()}, {platform.python_version()}", "chromium": version,
              "flags": rb.ARGS, "repeat": args.repeat, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] {args.out}")


if __name__ == "__main__":
    main()
