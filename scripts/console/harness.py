"""What scripts/console/browser_test.py's scenarios stand on: the run's settings (from the
environment scripts/console-test sets), the shared state `S`, checks, the JSON API and the CLI,
and the browser (one headless Chromium, screenshots, sign-in, the console's DOM contract).
"""


import http.client
import json
import os
import re
import subprocess
import sys
import time
import traceback
import types
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

BASE = os.environ.get("LEADQ_CONSOLE_BASE", "http://127.0.0.1:8080").rstrip("/")
SHOTS = os.environ.get("LEADQ_CONSOLE_SHOTS", "target/console-screenshots")
OUT = os.environ.get("LEADQ_CONSOLE_OUT", "target/console-test")
CHROMIUM = os.environ.get("LEADQ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LEADQ_CHROMEDRIVER", "/usr/bin/chromedriver")
SMOKE = os.environ.get("LEADQ_CONSOLE_TEST_SMOKE", "") not in ("", "0")
OP_TOKEN = os.environ.get("LEADQ_CONSOLE_OPERATOR_TOKEN", "")
TENANT_A = os.environ.get("LEADQ_CONSOLE_TENANT_A", "")
TENANT_B = os.environ.get("LEADQ_CONSOLE_TENANT_B", "")
KEY_A = os.environ.get("LEADQ_CONSOLE_KEY_A", "")
KEY_B = os.environ.get("LEADQ_CONSOLE_KEY_B", "")
STATUS_KEY_A = os.environ.get("LEADQ_CONSOLE_STATUS_KEY_A", "")
STATUS_KEY_B = os.environ.get("LEADQ_CONSOLE_STATUS_KEY_B", "")
LEADQ_BIN = os.environ.get("LEADQ_BIN", "leadq")
OPERATOR_NAME = "console"
COOKIE = "leadq_console"
KIND = "lead_score"
COUNT_FIELDS = ["pending", "held", "scheduled", "running", "done", "failed", "dead", "retries"]
JOB_STATES = {"pending", "held", "scheduled", "running", "done", "dead"}
STAMP = str(int(time.time()))

URL = urllib.parse.urlsplit(BASE)
# What the run shares: the browser (made in main()), the screenshots written in order, what
# one scenario leaves for the next ({"redriven": {...}, "b_leads": [...]}), and the token the
# browser's session was opened with (to sign in again after idling out).
S = types.SimpleNamespace(driver=None, shots=[], ctx={}, session_token=None)


class Failed(Exception):
    """A scenario's expectation that did not hold."""


class Skipped(Exception):
    """A scenario that cannot run because an earlier one failed."""


def log(msg):
    print(f"[browser] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def wait_until(fn, timeout, what, interval=0.5):
    """Calls fn until it returns something truthy; returns that. Raises Failed on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except (StaleElementReferenceException, Failed) as e:
            last = e
            value = None
        else:
            value = last
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# --- HTTP, the JSON API and the CLI -------------------------------------------------------


def request(method, path, token=None, body=None, cookie=None, headers=None):
    """One request, redirects not followed: (status, headers dict lower-cased, body text)."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=15)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = cookie
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        else:
            data = body.encode() if isinstance(body, str) else body
    try:
        conn.request(method, path, body=data, headers=h)
        res = conn.getresponse()
        text = res.read().decode("utf-8", "replace")
        hdrs = {}
        for k, v in res.getheaders():
            k = k.lower()
            hdrs[k] = f"{hdrs[k]}\n{v}" if k in hdrs else v
        return res.status, hdrs, text
    finally:
        conn.close()


def api(method, path, token, body=None, expect=(200,)):
    status, _, text = request(method, path, token=token, body=body)
    check(status in expect, f"{method} {path}: HTTP {status}, expected {expect}: {text[:300]}")
    return json.loads(text) if text else None


def v1_status():
    """GET /v1/status's counts, {kind: {field: n}}."""
    doc = api("GET", "/v1/status", OP_TOKEN)
    return {q["kind"]: {f: int(q[f]) for f in COUNT_FIELDS} for q in doc["queues"]}


def post_lead(key, external_id, message_id, email=None, phone=None):
    lead = {
        "external_id": external_id,
        "source": "telegram",
        "name": "Ada Lovelace",
        "username": "ada",
        "answers": {"budget": "50k+", "timeline": "this_month", "company_size": "51-200"},
        "message_id": message_id,
    }
    if email:
        lead["email"] = email
    if phone:
        lead["phone"] = phone
    doc = api("POST", "/v1/leads", key, body=lead, expect=(202,))
    check(doc.get("job_id") and doc.get("message_id") == message_id, f"POST /v1/leads: {doc}")
    return doc


def dead_letters(slug):
    """The job ids of the tenant's lead_score dead letters (first page)."""
    doc = api("GET", f"/v1/dlq/{KIND}?tenant={urllib.parse.quote(slug)}", OP_TOKEN)
    return {item["job_id"]: item for item in doc["items"]}


def cli(*args):
    res = subprocess.run([LEADQ_BIN, *args], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise Failed(f"leadq {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()[-500:]}")
    return res.stdout


def tenant_state(slug):
    """`leadq queue tenant <slug> lead_score show`'s state {paused, cap, running, held, ...}."""
    return json.loads(cli("queue", "tenant", slug, KIND, "show"))["state"]


def set_kind(slug, mode):
    cli("tenant", "set-kind", slug, KIND, mode)
    log(f"leadq tenant set-kind {slug} {KIND} {mode}; waiting 4 s for the workers' caches")
    time.sleep(4)


# --- the browser --------------------------------------------------------------------------


def make_driver():
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1366,900", "--disable-gpu", "--no-first-run",
                "--disable-search-engine-choice-screen", "--lang=en-US"):
        options.add_argument(arg)
    # The browser's console, read by scenario_csp: a refused inline script or style shows there.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER,
                      log_output=os.path.join(OUT, "chromedriver.log"))
    d = webdriver.Chrome(service=service, options=options)
    d.set_page_load_timeout(30)
    return d


def shot(page):
    """A screenshot of what the browser shows now: NN-<page>.png."""
    name = f"{len(S.shots) + 1:02d}-{page}.png"
    path = os.path.join(SHOTS, name)
    if S.driver.save_screenshot(path):
        S.shots.append(name)
    return name


def path_now():
    return urllib.parse.urlsplit(S.driver.current_url).path


def query_now():
    return urllib.parse.parse_qs(urllib.parse.urlsplit(S.driver.current_url).query)


def els(css, within=None):
    return (within or S.driver).find_elements(By.CSS_SELECTOR, css)


def el(css, within=None):
    found = els(css, within)
    check(found, f"no element {css!r} on {S.driver.current_url}")
    return found[0]


def text_of(css, within=None):
    return el(css, within).text.strip()


def wait_css(css, timeout=15):
    return wait_until(lambda: els(css) and els(css)[0], timeout, f"{css} on {S.driver.current_url}",
                      interval=0.2)


def cookie_header():
    c = S.driver.get_cookie(COOKIE)
    check(c and c.get("value"), f"the browser holds no {COOKIE} cookie")
    return f"{COOKIE}={c['value']}"


def sign_in(token, landing):
    """Signs in through the form; waits for the landing page (a path)."""
    S.driver.get(f"{BASE}/console/login")
    wait_css("form#login")
    field = el("input#token")
    field.clear()
    field.send_keys(token)
    el("button#login-button").click()
    wait_until(lambda: path_now() != "/console/login" or els("#login-error"), 15,
               "the sign-in to finish")
    check(not els("#login-error"), f"sign-in refused: {text_of('#login-error') if els('#login-error') else ''}")
    check(path_now() == landing, f"signed in to {S.driver.current_url}, expected {landing}")
    S.session_token = token


def visit(path, frame=None, relogin=True):
    """Loads a console page. If an operator session idled out meanwhile (the API runs with
    LEADQ_CONSOLE_IDLE_SECS=20; the API and CLI waits here can be longer), signs in again and
    says so. `frame`: the #whoami text every signed-in page must show with its navigation and
    sign-out form."""
    S.driver.get(BASE + path)
    if relogin and path_now() == "/console/login" and not path.startswith("/console/login") \
            and S.session_token == OP_TOKEN:
        log(f"  (session ended while waiting: signing in again for {path})")
        sign_in(OP_TOKEN, "/console")
        S.driver.get(BASE + path)
    if frame:
        assert_frame(frame)


def assert_frame(whoami):
    check(els('nav[aria-label="Console"]'), f"no Console navigation on {S.driver.current_url}")
    check(text_of("#whoami") == whoami, f"#whoami is {text_of('#whoami')!r}, expected {whoami!r}")
    check(els("form#logout button#logout-button"), f"no sign-out form on {S.driver.current_url}")


def operator_page(path):
    visit(path, frame=f"operator:{OPERATOR_NAME}")


def ensure_operator_session():
    if S.session_token != OP_TOKEN or S.driver.get_cookie(COOKIE) is None:
        S.driver.delete_all_cookies()
        sign_in(OP_TOKEN, "/console")


def rows_data(row_css, attr, fields):
    """Every row matching row_css as {"@": its `attr`, field: text of its [data-field]}, read in
    one round trip (a page of 100 audit entries would otherwise take hundreds)."""
    return S.driver.execute_script(
        """
        const [css, attr, fields] = arguments;
        return Array.from(document.querySelectorAll(css)).map(r => {
          const o = {"@": r.getAttribute(attr)};
          for (const f of fields) {
            const c = r.querySelector('[data-field="' + f + '"]');
            o[f] = c ? c.textContent.trim() : null;
          }
          return o;
        });""", row_css, attr, list(fields))


def tenant_row(slug):
    return el(f'table#tenants tr[data-tenant="{slug}"][data-kind="{KIND}"]')


def cell(row, field):
    return el(f'td[data-field="{field}"]', row).text.strip()


def submit_and_confirm(button, page):
    """Clicks a change's button, checks and screenshots the confirmation page, confirms."""
    button.click()
    wait_css("form#confirm")
    text = text_of("#confirm-text") if els("#confirm-text") else ""
    count = text_of("#confirm-count") if els("#confirm-count") else None
    check(els("button#confirm-button") and els("a#cancel"), "the confirmation lacks its buttons")
    shot(page)
    log(f"  confirmation: {text!r}" + (f", count {count}" if count is not None else ""))
    el("button#confirm-button").click()
    return text, count


