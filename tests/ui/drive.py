#!/usr/bin/env python3
"""Drives the dashboard in headless Chromium as an operator would, over the
DevTools protocol, and asserts what the page shows.

Standard library only: the DevTools websocket is spoken by the small client
below (a handshake and unmasked/masked text frames are all CDP needs), so the
test needs no pip or npm download at CI time and cannot break on a driver
release; Chromium itself comes from Debian (run.sh installs it).

Steps: start `redeemd` on a fresh data dir, sign in with a wrong token (the
page says so) and with the admin token, create a campaign through the form,
generate codes, redeem some through the API and watch the page's counts, the
chart and the events follow, pause (the API then refuses redemptions),
resume, bulk-assign a recipient file and check the downloaded merge CSV,
look up a code and void it; then on the Webhooks page create a subscription
to a receiver on loopback (its secret shown once, copied, absent from every
later read), redeem through the API and watch the receiver get the signed
event and the page show it delivered, pause, resume, rewind, and delete it.
Last, with `redeem-bench uniform` loading the server, save screenshots of a
campaign page (desktop, phone, dark) and of the list into docs/, and one of
the Webhooks page. Every wait is bounded; any failure exits non-zero.
"""

import base64
import csv
import hashlib
import hmac
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
# The whole run must end well inside this; each wait has its own bound too.
DEADLINE = time.monotonic() + float(os.environ.get("UI_TEST_SECONDS", "150"))
WAIT_SECONDS = 15
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--remote-debugging-port=0",
]


def fail(message):
    print(f"ui test FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_deadline():
    if time.monotonic() > DEADLINE:
        fail("the run took longer than its bound")


# ---- a minimal websocket client (RFC 6455), enough for CDP ---------------

class WebSocket:
    def __init__(self, url):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=WAIT_SECONDS)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                fail("DevTools closed the websocket handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            fail(f"DevTools refused the websocket: {head!r}")

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                fail("DevTools closed the websocket")
            data += chunk
        return data

    def send(self, text):
        payload = text.encode()
        header = bytearray([0x81])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                fail("DevTools closed the websocket")
            if opcode in (0x9, 0xA):
                continue
            message += data
            if b0 & 0x80:
                return message.decode()


class Cdp:
    """One DevTools session: numbered commands, events skipped."""

    def __init__(self, url):
        self.ws = WebSocket(url)
        self.next_id = 0

    def __call__(self, method, **params):
        check_deadline()
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    fail(f"{method}: {message['error']}")
                return message.get("result", {})


# ---- the page, as a person uses it -----------------------------------------

class Page:
    def __init__(self, cdp):
        self.cdp = cdp

    def js(self, expression):
        result = self.cdp("Runtime.evaluate", expression=expression, awaitPromise=True,
                          returnByValue=True)
        if "exceptionDetails" in result:
            fail(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression, what, seconds=WAIT_SECONDS):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        flash = self.js("document.getElementById('flash')?.textContent")
        fail(f"waited {seconds}s for {what}; the page says: {flash!r}")

    def text(self, selector):
        return self.js(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")

    def click(self, selector):
        """A real mouse press at the element's centre."""
        box = self.wait(
            f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
                if (!el) return null; el.scrollIntoView({{block: 'center'}});
                const r = el.getBoundingClientRect();
                return r.width ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""",
            f"{selector} to be clickable")
        for kind in ("mousePressed", "mouseReleased"):
            self.cdp("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                     button="left", clickCount=1)

    def type(self, selector, text):
        """Focuses a field, clears it and types into it."""
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select?.()")
        self.cdp("Input.insertText", text=text)

    def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            self.cdp("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                     windowsVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")

    def set_file(self, selector, path):
        root = self.cdp("DOM.getDocument")["root"]["nodeId"]
        node = self.cdp("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.cdp("DOM.setFileInputFiles", nodeId=node, files=[path])

    def viewport(self, width, height, mobile):
        self.cdp("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=mobile)

    def screenshot(self, name):
        # Let the next chart refresh land, then capture the whole page.
        time.sleep(0.3)
        data = self.cdp("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path = os.path.join(DOCS, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"  saved {os.path.relpath(path, ROOT)}")


# ---- a webhook receiver -----------------------------------------------------

class Receiver:
    """Answers every POST on loopback with 200 and keeps its headers and body."""

    def __init__(self):
        self.deliveries = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                with outer.lock:
                    outer.deliveries.append((self.headers.get("redeemd-signature", ""), body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events_of(self, code):
        """Every delivered event about `code`, with its delivery's signature and body."""
        with self.lock:
            deliveries = list(self.deliveries)
        return [(e, signature, body) for signature, body in deliveries
                for e in json.loads(body)["events"] if e.get("code") == code]

    def wait_for(self, code, count, what):
        end = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < end:
            found = self.events_of(code)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        fail(f"waited {WAIT_SECONDS}s for {what}; the receiver got {len(self.deliveries)} deliveries")


def signed_by(secret, signature, body):
    parts = dict(p.split("=", 1) for p in signature.split(","))
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), parts.get("v1", ""))


# ---- redeemd and its API ----------------------------------------------------

def start_redeemd(binary, data_dir):
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found = {}
    done = threading.Event()

    def read(stream, pattern, key):
        for line in stream:
            clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
            m = re.search(pattern, clean)
            if m and key not in found:
                found[key] = m.group(1)
                if len(found) == 2:
                    done.set()

    threading.Thread(target=read, args=(proc.stdout, r"admin token: (\S+)", "token"), daemon=True).start()
    threading.Thread(target=read, args=(proc.stderr, r"listening.*addr=\"?([0-9.:]+)", "addr"), daemon=True).start()
    if not done.wait(WAIT_SECONDS):
        proc.kill()
        fail(f"redeemd did not start: {found}")
    base = f"http://{found['addr']}"
    end = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < end:
        try:
            if urllib.request.urlopen(f"{base}/readyz", timeout=2).status == 200:
                break
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return proc, base, found["token"]


def call(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=WAIT_SECONDS) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_chromium(profile):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    end = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < end and not os.path.exists(port_file):
        time.sleep(0.05)
    time.sleep(0.2)
    with open(port_file) as f:
        port, browser_path = f.read().split()[:2]
    targets = []
    while time.monotonic() < end and not targets:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = [t for t in json.load(r) if t["type"] == "page"]
        time.sleep(0.05)
    browser = Cdp(f"ws://127.0.0.1:{port}{browser_path}")
    return proc, browser, Cdp(targets[0]["webSocketDebuggerUrl"])


def field(card, name):
    """A field of a webhook card, as a JS expression (its shown text)."""
    return f"document.querySelector('{card} [data-field={name}]')"


def available_codes(base, admin, n):
    status, text = call(base, admin, "GET", "/v1/campaigns/spring/codes?state=available")
    if status != 200:
        fail(f"export of available codes: {status} {text}")
    return [row[0] for row in csv.reader(io.StringIO(text))][1:n + 1]


def redeem(base, token, code, user):
    status, body = call(base, token, "POST", "/v1/redemptions", {"code": code, "user": user})
    if status != 201:
        fail(f"redemption of {code}: {status} {body}")
    return json.loads(body)["lsn"]


def webhooks(page, cdp, browser, base, admin):
    receiver = Receiver()
    print("- webhooks: the page lists none; create one to a receiver on loopback")
    page.click("#nav a[href='#/webhooks']")
    page.wait("document.getElementById('hook-empty')?.hidden === false",
              "the empty webhooks page")
    page.type("#hook-url", receiver.url)
    page.click("#hook-all")
    page.click("#hook-kind-redeemed")
    page.click("#hook-campaign-spring")
    page.type("#hook-description", "till system")
    page.click("#hook-create button[type=submit]")

    print("- its secret is shown once, copies to the clipboard, and no read shows it again")
    secret = page.wait("document.getElementById('hook-secret')?.textContent", "the secret")
    if not secret.startswith("whsec_"):
        fail(f"the secret shown is {secret!r}")
    if "will not be shown again" not in page.text("#secret-panel"):
        fail(f"the secret is not marked as shown once: {page.text('#secret-panel')!r}")
    hook = page.wait("document.querySelector('[data-hook]')?.dataset.hook", "the new card")
    card = f'[data-hook="{hook}"]'
    page.wait(f"{field(card, 'status')}?.textContent === 'active'", "the card, active")
    if page.text(f"{card} [data-field=events]") != "redeemed" \
            or page.text(f"{card} [data-field=campaigns]") != "spring":
        fail(f"the card's filters: {page.text(card)!r}")
    browser("Browser.grantPermissions", origin=base,
            permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    cdp("Emulation.setFocusEmulationEnabled", enabled=True)
    page.click("#copy-secret")
    page.wait("document.getElementById('copy-secret').textContent === 'Copied'", "the copy")
    if page.js("navigator.clipboard.readText()") != secret:
        fail("the clipboard does not hold the secret")
    for path in ("/v1/webhooks", f"/v1/webhooks/{hook}"):
        status, body = call(base, admin, "GET", path)
        if status != 200 or secret in body or "whsec_" in body:
            fail(f"GET {path} shows the secret or failed: {status}")
    page.click("#secret-done")
    page.wait("!document.getElementById('hook-secret')", "the secret to go")
    if secret in page.js("document.documentElement.outerHTML"):
        fail("the secret is still in the page")

    print("- redeem through the API: the receiver gets the signed event, the card shows it")
    # A second subscription, to a port nobody listens on, fails in view.
    status, body = call(base, admin, "POST", "/v1/webhooks",
                        {"url": "http://127.0.0.1:9/refused", "events": ["*"], "description": "refused"})
    if status != 201:
        fail(f"creating the failing webhook: {status} {body}")
    broken = f'[data-hook="{json.loads(body)["id"]}"]'
    first, second = available_codes(base, admin, 2)
    first_lsn = redeem(base, admin, first, "hook-1")
    event, signature, raw = receiver.wait_for(first, 1, "the first redemption's delivery")[0]
    if event["kind"] != "redeemed" or event["lsn"] != first_lsn or not signed_by(secret, signature, raw):
        fail(f"the delivery is wrong or not signed with the secret shown: {event} {signature}")
    page.wait(f"{field(card, 'lag_events')}?.dataset.value === '0' && "
              f"{field(card, 'lag_events')}.textContent === '0 events' && "
              f"!!{field(card, 'last_delivery_at')}?.querySelector('time') && "
              f"Number({field(card, 'cursor_lsn')}.dataset.value) >= {first_lsn}",
              "the card: lag 0, a last delivery, the cursor past the redemption")
    page.wait(f"{field(broken, 'last_error')}?.textContent.length > 4 && "
              f"Number({field(broken, 'consecutive_failures')}.dataset.value) >= 1 && "
              f"!!{field(broken, 'next_attempt_at')}.querySelector('time')",
              "the failing webhook's error, failures and next attempt")
    # offsetParent is null for what is not displayed.
    page.wait(f"{field(broken, 'failing')}.offsetParent !== null", "the failing badge")
    if page.js(f"{field(card, 'failing')}.offsetParent !== null"):
        fail("the delivering webhook shows a failing badge")

    print("- pause: the event waits and the lag shows it; resume: it arrives")
    page.click(f"{card} [data-action=pause]")
    page.wait(f"{field(card, 'status')}.textContent === 'paused' && "
              f"document.querySelector('{card} [data-action=pause]').textContent === 'Resume'",
              "the card, paused")
    redeem(base, admin, second, "hook-2")
    page.wait(f"Number({field(card, 'lag_events')}.dataset.value) >= 1", "the lag to grow while paused")
    if receiver.events_of(second):
        fail("a paused webhook delivered")
    page.click(f"{card} [data-action=pause]")
    page.wait(f"{field(card, 'status')}.textContent === 'active'", "the card, active again")
    receiver.wait_for(second, 1, "the delivery after the resume")
    page.wait(f"{field(card, 'lag_events')}.dataset.value === '0'", "the lag back to 0")

    print("- rewind to before the first redemption: it is delivered again")
    page.click(f"{card} details summary")
    page.type(f"#rewind-{hook}", str(first_lsn - 1))
    page.click(f"{card} [data-action=rewind] button[type=submit]")
    page.wait(f"document.getElementById('flash').textContent.includes('after LSN {first_lsn - 1:,}')",
              "the rewind message")
    receiver.wait_for(first, 2, "the first redemption, again")
    page.wait(f"{field(card, 'lag_events')}.dataset.value === '0'", "the lag back to 0")
    page.js("window.scrollTo(0, 0)")
    page.screenshot("dashboard-webhooks-desktop.png")
    page.viewport(390, 844, True)
    page.wait("document.documentElement.scrollWidth <= window.innerWidth", "no sideways scroll at phone width")
    page.js("window.scrollTo(0, 0)")
    page.screenshot("dashboard-webhooks-phone.png")
    page.viewport(1280, 900, False)

    print("- delete, with a second press to confirm")
    page.click(f"{card} [data-action=delete]")
    page.wait(f"document.querySelector('{card} [data-action=delete]').textContent.startsWith('Really')",
              "the second press")
    if call(base, admin, "GET", f"/v1/webhooks/{hook}")[0] != 200:
        fail("one press deleted the webhook")
    page.click(f"{card} [data-action=delete]")
    page.wait(f"!document.querySelector('{card}')", "the card to go")
    page.wait("document.getElementById('flash').textContent.startsWith('Deleted')", "the delete message")
    if call(base, admin, "GET", f"/v1/webhooks/{hook}")[0] != 404:
        fail("the deleted webhook still reads back")
    receiver.server.shutdown()


def screenshots_under_load(page, cdp, base, admin, bench_binary):
    print("- screenshots while redeem-bench uniform loads the server")
    bench = subprocess.Popen(
        [bench_binary, "uniform", "--url", base, "--connections", "8", "--rate", "300",
         "--duration", "60s", "--warmup", "1s", "--codes", "15000"],
        env={**os.environ, "REDEEM_BENCH_TOKEN": admin},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + WAIT_SECONDS
        campaign = None
        while campaign is None and time.monotonic() < end and bench.poll() is None:
            status, body = call(base, admin, "GET", "/v1/campaigns")
            campaign = next((c["id"] for c in json.loads(body)["campaigns"]
                             if c["id"].startswith("bench-uniform-")), None)
            time.sleep(0.2)
        if campaign is None:
            fail(f"redeem-bench created no campaign: {bench.communicate()[0] if bench.poll() is not None else ''}")
        page.click("a.brand")
        row = f'tr[data-campaign="{campaign}"]'
        page.click(f"{row} a")
        page.wait(f"location.hash === '#/campaigns/{campaign}'", "the bench campaign's page")
        # Some seconds of load (at most 300 redemptions a second), and a
        # closed ten-second point besides the open one: lines, not a dot.
        page.wait("Number(document.getElementById('state-chart')?.dataset.redeemed) >= 1000 && "
                  "Number(document.getElementById('state-chart')?.dataset.points) >= 2",
                  "the chart to show the load", seconds=2 * WAIT_SECONDS)

        def shot(name):
            if bench.poll() is not None:
                fail(f"redeem-bench ended before {name}: {bench.communicate()[0]}")
            page.js("window.scrollTo(0, 0)")
            page.screenshot(name)

        shot("dashboard-campaign-desktop.png")
        page.viewport(390, 844, True)
        shot("dashboard-campaign-phone.png")
        page.viewport(1280, 900, False)
        scheme = "prefers-color-scheme"
        cdp("Emulation.setEmulatedMedia", features=[{"name": scheme, "value": "dark"}])
        shot("dashboard-campaign-dark.png")
        cdp("Emulation.setEmulatedMedia", features=[{"name": scheme, "value": "light"}])
        page.viewport(1280, 700, False)
        page.click("a.brand")
        page.wait("!!document.querySelector('tr[data-campaign=spring] .badge.low')",
                  "the list with a low-stock badge")
        page.wait(f"document.querySelector('{row} td.num')?.textContent !== '0'",
                  "the bench campaign's redemptions per second")
        shot("dashboard-campaigns-desktop.png")
    finally:
        if bench.poll() is None:
            bench.send_signal(signal.SIGINT)
    try:
        out = bench.communicate(timeout=WAIT_SECONDS)[0]
    except subprocess.TimeoutExpired:
        bench.kill()
        fail("redeem-bench did not finish its audit after Ctrl-C")
    if bench.returncode != 0:
        fail(f"redeem-bench failed ({bench.returncode}): {out}")


# ---- the run ---------------------------------------------------------------

def main():
    binary, bench_binary = sys.argv[1], sys.argv[2]
    os.makedirs(DOCS, exist_ok=True)
    work = tempfile.mkdtemp(prefix="redeemd-ui-")
    downloads = os.path.join(work, "downloads")
    os.makedirs(downloads)
    # Made before the server starts: a running server re-reads the token
    # file at most once a reload interval, and the wrong token just read it.
    checkout = subprocess.run(
        [binary, "token", "add", "--data-dir", os.path.join(work, "data"), "--role", "checkout"],
        capture_output=True, text=True, check=True).stdout.split()[-1]
    server, base, admin = start_redeemd(binary, os.path.join(work, "data"))
    chromium = None
    try:
        chromium, browser, cdp = start_chromium(os.path.join(work, "profile"))
        browser("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads)
        page = Page(cdp)
        cdp("Page.enable")
        cdp("Runtime.enable")
        page.viewport(1280, 900, False)

        print("- the page loads without a token and asks for one")
        cdp("Page.navigate", url=f"{base}/ui")
        page.wait("!!document.querySelector('#signin #token')", "the sign-in form")

        print("- a wrong token is refused, and the page says so")
        page.type("#token", "not-a-token")
        page.press_enter()
        page.wait("document.getElementById('flash').textContent.includes('not accepted')",
                  "the wrong-token message")
        if page.js("sessionStorage.getItem('redeemd.token')") is not None:
            fail("a refused token was kept")

        print("- a checkout token is refused with the role it lacks")
        page.type("#token", checkout)
        page.press_enter()
        page.wait("document.getElementById('flash').textContent.includes('needs the admin role')",
                  "the 403 message")

        print("- the admin token signs in; the token is kept in the tab, not the URL")
        page.type("#token", admin)
        page.click("#signin button")
        page.wait("document.body.innerText.includes('No campaigns yet')", "the empty list")
        if admin in page.js("location.href"):
            fail("the token is in the URL")

        print("- create a campaign through the form")
        page.type("#new-id", "spring")
        page.type("#new-prefix", "SPR")
        page.type("#new-generate", "200")
        page.type("#new-low", "200")
        page.click("#create button")
        page.wait("location.hash === '#/campaigns/spring'", "the campaign page")
        page.wait("document.querySelector('[data-stat=available] b')?.textContent === '200'",
                  "200 available codes")

        print("- generate 50 more")
        page.type("#gen-n", "50")
        page.click("#generate button")
        page.wait("document.querySelector('[data-stat=available] b')?.textContent === '250'",
                  "250 available codes")

        print("- redeem 40 through the API; counts, chart and events follow")
        status, text = call(base, admin, "GET", "/v1/campaigns/spring/codes")
        codes = [row[0] for row in csv.reader(io.StringIO(text))][1:]
        for i, code in enumerate(codes[:40]):
            status, body = call(base, admin, "POST", "/v1/redemptions", {"code": code, "user": f"u{i}"})
            if status != 201:
                fail(f"redemption {i}: {status} {body}")
        page.wait("document.querySelector('[data-stat=redeemed] b')?.textContent === '40'",
                  "40 redeemed on the page")
        page.wait("document.getElementById('state-chart').dataset.redeemed === '40'",
                  "the chart's last point at 40 redeemed")
        page.wait("document.querySelectorAll('#events li[data-kind=redeemed]').length > 0",
                  "redeemed events")
        page.wait("document.querySelector('[data-stat=eta] b')?.textContent.startsWith('in ')",
                  "a depletion ETA")
        page.wait("document.querySelectorAll('#state-chart path').length === 5", "five state lines")

        print("- pause: the page shows it and the API refuses redemptions")
        page.click("#pause")
        page.wait("document.getElementById('pause').textContent === 'Resume'", "the Resume button")
        page.wait("!!document.querySelector('h1 .badge.paused')", "the paused badge")
        status, body = call(base, admin, "POST", "/v1/redemptions", {"code": codes[100], "user": "late"})
        if status != 422 or "campaign_paused" not in body:
            fail(f"a redemption in a paused campaign got {status} {body}")
        page.click("#pause")
        page.wait("document.getElementById('pause').textContent === 'Pause'", "the Pause button")

        print("- bulk-assign a recipient file and download the merge CSV")
        recipients = os.path.join(work, "recipients.csv")
        with open(recipients, "w") as f:
            f.write("recipient\n" + "".join(f"person{i}@example.com\n" for i in range(30)))
        page.set_file("#bulk-file", recipients)
        page.click("#bulk-file-form button")
        page.wait("document.getElementById('flash').textContent.includes('30 created')",
                  "the bulk summary")
        merge = os.path.join(downloads, "spring-assigned.csv")
        end = time.monotonic() + WAIT_SECONDS
        while not os.path.exists(merge) and time.monotonic() < end:
            time.sleep(0.1)
        if not os.path.exists(merge):
            fail(f"no merge file downloaded: {os.listdir(downloads)}")
        with open(merge) as f:
            rows = list(csv.reader(f))
        if rows[0] != ["recipient", "code", "status"] or len(rows) != 31 \
                or any(r[2] != "created" or not r[1].startswith("SPR-") for r in rows[1:]):
            fail(f"the merge file is wrong: {rows[:3]} ... ({len(rows)} rows)")
        page.wait("document.querySelector('[data-stat=assigned] b')?.textContent === '30'",
                  "30 assigned on the page")

        print("- look up a code and void it")
        page.type("#lookup-code", codes[200])
        page.click("#lookup button")
        page.wait("document.getElementById('lookup-result').innerText.includes('available')",
                  "the code's status")
        page.click("#void")
        page.wait("document.getElementById('void')?.textContent.startsWith('Really')", "the second press")
        page.click("#void")
        page.wait("document.getElementById('flash').textContent.startsWith('Voided')", "the void")
        page.wait("document.querySelector('[data-stat=voided] b')?.textContent === '1'",
                  "1 voided on the page")

        webhooks(page, cdp, browser, base, admin)
        screenshots_under_load(page, cdp, base, admin, bench_binary)
        print("ui test passed")
    finally:
        if chromium:
            chromium.kill()
            chromium.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
