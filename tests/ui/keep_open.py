#!/usr/bin/env python3
"""Keeps the dashboard open, as an operator would, for a benchmark
(benches/dashboard_overhead.sh): headless Chromium signs in, prints
"dashboard: ready", waits for the first campaign created after it started
whose id starts with PREFIX, opens its page (the live chart
polling `/history` and the events long-poll running), stays there until
SIGTERM or for at most SECONDS, and prints how many requests the page made
meanwhile.

    keep_open.py BASE_URL TOKEN PREFIX SECONDS

Uses drive.py's DevTools client; standard library only.
"""

import json
import os
import shutil
import signal
import sys
import threading
import tempfile
import time
import urllib.request

os.environ.setdefault("UI_TEST_SECONDS", "3600")
sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drive  # noqa: E402

# How long the bench may take to create its campaign.
CAMPAIGN_WAIT_SECONDS = 120


def campaigns(base, token):
    req = urllib.request.Request(f"{base}/v1/campaigns")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return [c["id"] for c in json.load(r)["campaigns"]]


def new_campaign(base, token, prefix, old):
    end = time.monotonic() + CAMPAIGN_WAIT_SECONDS
    while time.monotonic() < end:
        for c in campaigns(base, token):
            if c.startswith(prefix) and c not in old:
                return c
        time.sleep(0.1)
    drive.fail(f"no campaign starting with {prefix!r} within {CAMPAIGN_WAIT_SECONDS} s")


def main():
    base, token, prefix, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    old = set(campaigns(base, token))
    work = tempfile.mkdtemp(prefix="redeemd-keep-open-")
    chromium = None
    try:
        chromium, _, cdp = drive.start_chromium(os.path.join(work, "profile"))
        page = drive.Page(cdp)
        cdp("Page.enable")
        page.viewport(1280, 900, False)
        cdp("Page.navigate", url=f"{base}/ui")
        page.wait("!!document.querySelector('#signin #token')", "the sign-in form")
        page.type("#token", token)
        page.press_enter()
        page.wait("location.hash === '' && !!document.querySelector('#campaign-rows')", "the list")
        print("dashboard: ready", flush=True)
        campaign = new_campaign(base, token, prefix, old)
        page.js(f"location.hash = '#/campaigns/' + {json.dumps(campaign)}")
        page.wait("Number(document.getElementById('state-chart')?.dataset.points) >= 1",
                  "the campaign's chart")
        page.js("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000)")
        print(f"dashboard: open on {campaign}", flush=True)
        started = time.monotonic()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait(seconds)
        seconds = time.monotonic() - started
        counts = page.js("""(() => { const c = {}; for (const e of performance.getEntriesByType('resource')) {
            const p = new URL(e.name).pathname; const k = p.endsWith('/history') ? 'history'
              : p === '/v1/events' ? 'events' : p.startsWith('/v1/campaigns/') ? 'campaign' : p;
            c[k] = (c[k] || 0) + 1; } return c; })()""")
        redeemed = page.js("document.getElementById('state-chart').dataset.redeemed")
        print(f"dashboard: {sum(counts.values())} requests in {seconds:.0f} s {json.dumps(counts)}; "
              f"the chart's last point shows {redeemed} redeemed", flush=True)
    finally:
        if chromium:
            chromium.kill()
            chromium.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
