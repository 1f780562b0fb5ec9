"""Opens a driftwatch report page in headless Chromium (Debian's, driven by
Playwright) and prints what a person would see go wrong, as one JSON object:

  {"load_ms": …, "bytes": …, "console_errors": [...], "failed_requests": [...],
   "charts": {"performance": {"count": 1, "marks": 31, "empty": 0}, …}}

Usage: check_report.py URL_OR_FILE SCREENSHOT [--token TOKEN] [--chromium PATH]

A chart is an <svg data-chart="NAME">; each must hold drawn marks (elements
of class "mark" with a non-empty box). The page is loaded with the network
watched: any request that fails or answers >= 400 is listed.
"""

import argparse
import json
import os
import pathlib
import sys
import time

from playwright.sync_api import sync_playwright

CHARTS = ["performance", "drift", "distribution", "missing", "out_of_range", "timeline"]

# flags for a machine with a closed network (no background fetches)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MEASURE = """
(names) => {
  const out = {};
  for (const name of names) {
    const svgs = [...document.querySelectorAll(`svg[data-chart="${name}"]`)];
    let marks = 0, empty = 0;
    for (const svg of svgs) {
      const drawn = [...svg.querySelectorAll('.mark')].filter((m) => {
        const b = m.getBoundingClientRect();
        return b.width > 0 || b.height > 0;
      }).length;
      marks += drawn;
      if (drawn === 0) empty += 1;
    }
    out[name] = {count: svgs.length, marks, empty};
  }
  return out;
}
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("page")
    p.add_argument("screenshot")
    p.add_argument("--token")
    p.add_argument("--chromium", default=os.environ.get("DRIFTWATCH_CHROMIUM", "/usr/bin/chromium"))
    a = p.parse_args()
    if not os.path.exists(a.chromium):
        sys.exit(f"no Chromium at {a.chromium}: install Debian's (apt-get install chromium; scripts/test.sh does) "
                 "or set DRIFTWATCH_CHROMIUM")
    url = a.page if "://" in a.page else pathlib.Path(a.page).resolve().as_uri()
    console_errors, failed = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=FLAGS)
        context = browser.new_context(
            viewport={"width": 1200, "height": 900},
            extra_http_headers={"Authorization": f"Bearer {a.token}"} if a.token else None,
        )
        page = context.new_page()
        page.on("console", lambda m: m.type in ("error", "warning") and console_errors.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.url}: HTTP {r.status}"))
        started = time.monotonic()
        response = page.goto(url, wait_until="load")
        load_ms = (time.monotonic() - started) * 1000
        body = response.body() if response is not None else b""
        charts = page.evaluate(MEASURE, CHARTS)
        page.screenshot(path=a.screenshot, full_page=True)
        browser.close()
    print(json.dumps({
        "load_ms": round(load_ms, 1),
        "bytes": len(body) if body else pathlib.Path(a.page).stat().st_size,
        "console_errors": console_errors,
        "failed_requests": failed,
        "charts": charts,
    }))


if __name__ == "__main__":
    main()
