#!/usr/bin/env python3
"""The operator console in a real browser: headless Chromium through WebDriver (Selenium 4).

Run by scripts/console-test, which starts `leadq api` and `leadq worker` and passes everything
by environment:

  LEADQ_CONSOLE_BASE            the API, e.g. http://127.0.0.1:40123
  LEADQ_CONSOLE_OPERATOR_TOKEN  the token of operator `console` (dlq, limits, keys, tenants,
                                console)
  LEADQ_CONSOLE_TENANT_A/_B     the two tenants' slugs
  LEADQ_CONSOLE_KEY_A/_B        each tenant's first key (every default scope): posts leads
  LEADQ_CONSOLE_STATUS_KEY_A/_B each tenant's key with only `status:read`: the tenant's page
  LEADQ_BIN                     the leadq binary (set-kind, queue tenant … show), with the
                                database and Redis settings of the API in the environment
  LEADQ_CONSOLE_SHOTS           where the screenshots go (NN-<page>.png)
  LEADQ_CONSOLE_OUT             where chromedriver's log goes
  LEADQ_CHROMIUM, LEADQ_CHROMEDRIVER   the browser and its S.driver (Debian's); SE_OFFLINE=true
  LEADQ_CONSOLE_TEST_SMOKE=1    only prove the harness: load /docs, one screenshot, exit

Only the console's DOM contract is relied on (ids, data-* attributes, form names; see
docs/console.md and the scenario functions below), plus the JSON API to cross-check what the
pages say. One function per scenario; a failed one is reported and the others still run
(those that need its result are then skipped). Prints PASS/FAIL/SKIP per scenario and the
screenshots written; exits 1 on any failure or skip.
"""

import os
import re
import sys
import time
import traceback

from selenium.common.exceptions import WebDriverException

from harness import *  # noqa: F401,F403 - the scenarios' vocabulary (see harness.py)
from harness import S

# --- scenarios ----------------------------------------------------------------------------


def scenario_keyboard():
    """The sign-in page: a labelled token field; Tab from the body reaches it, then the button."""
    S.driver.delete_all_cookies()
    S.driver.get(f"{BASE}/console/login")
    wait_css("form#login")
    shot("login")
    labels = els('label[for="token"]')
    check(len(labels) == 1 and labels[0].text.strip(), "input#token has no <label for=\"token\">")
    check(el("input#token").get_attribute("name") == "token", "input#token is not named token")
    # Focus the body itself (focusable for the moment) so that Tab starts from the top.
    S.driver.execute_script(
        "document.activeElement && document.activeElement.blur();"
        "document.body.setAttribute('tabindex', '-1'); document.body.focus();")
    active = lambda: S.driver.switch_to.active_element.get_attribute("id")  # noqa: E731
    check(S.driver.execute_script("return document.activeElement === document.body"),
          "could not put the focus on the body")
    ActionChains(S.driver).send_keys(Keys.TAB).perform()
    first = active()
    ActionChains(S.driver).send_keys(Keys.TAB).perform()
    second = active()
    S.driver.execute_script("document.body.removeAttribute('tabindex')")
    log(f"  Tab, Tab from the body: #{first}, #{second}")
    check(first == "token", f"the first Tab from the body reached #{first}, not #token")
    check(second == "login-button", f"the second Tab reached #{second}, not #login-button")


def scenario_wrong_token():
    """A token nobody holds: #login-error, HTTP 401, no session."""
    S.driver.delete_all_cookies()
    S.session_token = None
    S.driver.get(f"{BASE}/console/login")
    wait_css("form#login")
    el("input#token").send_keys(f"not-a-token-{STAMP}")
    el("button#login-button").click()
    wait_css("#login-error")
    shot("login-error")
    check(el("#login-error").get_attribute("role") == "alert", "#login-error is not role=alert")
    check(path_now() == "/console/login", f"after a wrong token: {S.driver.current_url}")
    check(S.driver.get_cookie(COOKIE) is None, f"a wrong token left a {COOKIE} cookie")
    S.driver.get(f"{BASE}/console")
    check(path_now() == "/console/login", f"/console without a session showed {S.driver.current_url}")
    # The same over HTTP, to see the status: the sign-in form's token and cookie, then a POST.
    status, headers, page = request("GET", "/console/login")
    check(status == 200, f"GET /console/login: HTTP {status}")
    login_cookie = re.search(r"(leadq_console_login=[^;]+)", headers.get("set-cookie", ""))
    csrf = re.search(r'name="csrf"[^>]*value="([^"]+)"', page) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf"', page)
    check(login_cookie and csrf, "the sign-in page has no form token or no cookie for it")
    form = urllib.parse.urlencode({"csrf": csrf.group(1), "token": f"wrong-{STAMP}"})
    status, headers, _ = request("POST", "/console/login", body=form, cookie=login_cookie.group(1),
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    log(f"  POST /console/login with a wrong token: HTTP {status}")
    check(status == 401, f"a wrong token answered HTTP {status}, expected 401")
    check(not re.search(rf"{COOKIE}=[^;\s]", headers.get("set-cookie", "")),
          "a wrong token was given a session cookie")


def scenario_operator_sign_in():
    """The operator token signs in to the overview."""
    S.driver.delete_all_cookies()
    sign_in(OP_TOKEN, "/console")
    assert_frame(f"operator:{OPERATOR_NAME}")
    cookie = S.driver.get_cookie(COOKIE)
    check(cookie and cookie.get("httpOnly"), f"the session cookie is not HttpOnly: {cookie}")
    shot("signed-in")


def scenario_pause_tenant():
    """Tenant B's lead_score paused from the tenants page (confirmed); 3 of B's leads held."""
    ensure_operator_session()
    operator_page(f"/console/tenants?tenant={TENANT_B}")
    wait_css("table#tenants")
    row = tenant_row(TENANT_B)
    check(cell(row, "paused") == "no", f"B's {KIND} is already paused: {cell(row, 'paused')}")
    for f in ("backlog", "held", "running", "cap", "weight"):
        check(els(f'td[data-field="{f}"]', row), f"the tenants row has no {f} cell")
    check(els('input[name="cap"]', row) and els('button[value="cap"]', row)
          and els('input[name="weight"]', row) and els('button[value="weight"]', row),
          "the tenants row lacks its cap or weight control")
    shot("tenants")
    text, _ = submit_and_confirm(
        el('form.tenant-control button[name="action"][value="pause"]', row), "confirm-pause")
    check("pause" in text.lower(), f"the confirmation does not say pause: {text!r}")
    wait_css("#notice")
    check(path_now() == "/console/tenants" and query_now().get("tenant") == [TENANT_B],
          f"after confirming: {S.driver.current_url}")
    log(f"  notice: {text_of('#notice')!r}")
    row = tenant_row(TENANT_B)
    check(cell(row, "paused") == "yes", f"B's row says paused={cell(row, 'paused')} after the pause")
    check(els('button[name="action"][value="resume"]', row), "no resume button after the pause")
    shot("tenants-paused")
    state = tenant_state(TENANT_B)
    check(state["paused"] is True, f"leadq queue tenant … show: {state}")
    ids = []
    for i in range(3):
        ext = f"held-{STAMP}-{i}"
        doc = post_lead(KEY_B, ext, f"console-held-{STAMP}-{i}")
        ids.append((ext, doc["job_id"]))
    S.ctx["b_leads"] = ids
    state = wait_until(lambda: (lambda s: s if s["held"] >= 3 else None)(tenant_state(TENANT_B)),
                       30, "B's 3 leads to be held")
    log(f"  B's {KIND} state: {state}")
    operator_page(f"/console/tenants?tenant={TENANT_B}")
    row = tenant_row(TENANT_B)
    check(cell(row, "held") == str(state["held"]),
          f"the page says held={cell(row, 'held')}, the CLI {state['held']}")
    shot("tenants-held")


def scenario_overview():
    """The overview's counts equal /v1/status's (read before and after the page)."""
    ensure_operator_session()
    for attempt in range(1, 7):
        before = v1_status()
        operator_page("/console")
        wait_css("table#kinds")
        page = {}
        for row in rows_data("table#kinds tr[data-kind]", "data-kind", COUNT_FIELDS):
            kind = row["@"]
            for f in COUNT_FIELDS:
                check(re.fullmatch(r"\d+", row[f] or ""), f"{kind} {f} is not a plain integer: {row[f]!r}")
            page[kind] = {f: int(row[f]) for f in COUNT_FIELDS}
        after = v1_status()
        check(set(page) == set(before),
              f"the page shows kinds {sorted(page)}, /v1/status {sorted(before)}")
        steady = [k for k in before if before[k] == after.get(k)]
        wrong = {k: (page[k], before[k]) for k in steady if page[k] != before[k]}
        if KIND in steady and not wrong:
            log(f"  attempt {attempt}: {len(steady)}/{len(before)} kinds steady and equal; "
                f"{KIND}: {page[KIND]}")
            check(page[KIND]["held"] >= 3 or "b_leads" not in S.ctx,
                  f"{KIND} held={page[KIND]['held']}, expected B's 3 held leads")
            shot("overview")
            return
        log(f"  attempt {attempt}: steady {steady}, differing {wrong}; again")
        time.sleep(1)
    shot("overview")
    raise Failed(f"the overview never matched /v1/status for the steady kinds: {wrong}")


def scenario_workers():
    """At least one live worker, not stale."""
    ensure_operator_session()
    operator_page("/console/workers")
    wait_css("table#workers")
    rows = els("table#workers tr[data-worker]")
    stale = [r for r in rows if "stale" in (r.get_attribute("class") or "").split()]
    shot("workers")
    log(f"  {len(rows)} worker(s), {len(stale)} stale: "
        f"{[r.get_attribute('data-worker') for r in rows]}")
    check(rows, "no worker on the workers page")
    check(len(stale) < len(rows), "every worker is marked stale")


def scenario_dead_letter():
    """A lead of A dead-lettered (kind disabled), viewed scrubbed, re-driven: count 1, done."""
    ensure_operator_session()
    email, phone = f"ada.console.{STAMP}@example.com", f"+44 20 7946 {STAMP[-4:]}"
    ext, msg = f"dl-{STAMP}", f"console-dl-{STAMP}"
    set_kind(TENANT_A, "disabled")
    try:
        job_id = post_lead(KEY_A, ext, msg, email=email, phone=phone)["job_id"]
        log(f"  posted {ext}: job {job_id}; waiting for its dead letter")
        letter = wait_until(lambda: dead_letters(TENANT_A).get(job_id), 60,
                            f"job {job_id} in /v1/dlq/{KIND}", interval=1)
        log(f"  dead: reason {letter.get('reason')!r}, last error {letter.get('last_error_code')!r}")
    finally:
        set_kind(TENANT_A, "enabled")
    list_path = f"/console/dead-letters?kind={KIND}&tenant={TENANT_A}"
    operator_page(list_path)
    wait_css("table#dead-letters")
    check(els("form#dlq-filter"), "no filter form on the dead-letters page")
    row = el(f'table#dead-letters tr[data-job-id="{job_id}"]')
    shot("dead-letters")
    el("a.dead-letter-link", row).click()
    wait_css("dl#dead-letter")
    check(path_now() == f"/console/dead-letters/{KIND}/{job_id}",
          f"the dead letter's link opened {S.driver.current_url}")
    reason = text_of('dd[data-field="reason"]')
    payload = text_of("pre#payload")
    shot("dead-letter")
    log(f"  reason {reason!r}; payload {len(payload)} characters")
    check("unauthorized" in reason, f"reason {reason!r}, expected unauthorized")
    for secret in (email, email.split("@")[0], phone, phone.replace(" ", ""),
                   f"7946 {STAMP[-4:]}", "Lovelace"):
        check(secret not in payload, f"the scrubbed payload shows {secret!r}")
    operator_page(list_path)
    wait_css("form#dlq-actions")
    box = el(f'form#dlq-actions input[name="job_id"][value="{job_id}"]')
    if not box.is_selected():
        box.click()
    check(box.is_selected(), "the dead letter's checkbox did not tick")
    _, count = submit_and_confirm(
        el('form#dlq-actions button[name="action"][value="redrive"]'), "confirm-redrive")
    check(count == "1", f"#confirm-count is {count!r}, expected 1")
    wait_until(lambda: path_now().startswith("/console/operations/"), 15,
               "the operation's progress page")
    wait_css("progress#op-progress")
    shot("operation")
    first = text_of("#op-state")
    log(f"  operation {path_now().rsplit('/', 1)[-1]}: {first}")
    check(first in ("running", "done"), f"#op-state is {first!r}")
    # The page updates itself (htmx, every second): no reload here.
    wait_until(lambda: text_of("#op-state") == "done", 30, "#op-state to say done")
    result = text_of("#op-result") if els("#op-result") else ""
    log(f"  done: {result!r}")
    check(els("#op-result"), "no #op-result once done")
    shot("operation-done")
    check(job_id not in dead_letters(TENANT_A), f"job {job_id} is still a dead letter")
    S.ctx["redriven"] = {"job_id": job_id, "message_id": msg, "external_id": ext}


def scenario_find_job():
    """The re-driven job, found by its message id and tenant, until it is done."""
    job = S.ctx.get("redriven")
    if not job:
        raise Skipped("no re-driven job (the dead-letter scenario failed)")
    ensure_operator_session()
    operator_page("/console/jobs")
    wait_css("form#find-job")
    el("input#q").send_keys(job["message_id"])
    el('form#find-job input[name="tenant"]').send_keys(TENANT_A)
    el("button#find-button").click()
    wait_until(lambda: els("section#job") or els("#not-found"), 15, "the job or #not-found")
    shot("jobs")
    check(not els("#not-found"), f"#not-found for message id {job['message_id']}")

    def field(name):
        return text_of(f'section#job [data-field="{name}"]')

    check(field("job_id") == job["job_id"], f"found job {field('job_id')}, not {job['job_id']}")
    check(field("kind") == KIND, f"kind {field('kind')!r}")
    log(f"  tenant {field('tenant')!r}, state {field('state')!r}, worker {field('worker')!r}")
    check(TENANT_A in field("tenant"), f"tenant {field('tenant')!r}, expected {TENANT_A}")
    seen = []

    def done():
        S.driver.refresh()
        wait_css("section#job")
        state = field("state")
        check(state in JOB_STATES, f"state {state!r} is none of {sorted(JOB_STATES)}")
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == "done"

    wait_until(done, 60, "the re-driven job to be done", interval=1)
    check(els("section#job table#runs"), "no table#runs")
    runs = [r.text.strip() for r in els('table#runs td[data-field="status"]')]
    log(f"  states seen {seen}; runs {runs}")
    shot("jobs-done")


def scenario_resume_tenant():
    """Tenant B resumed from the tenants page; its 3 held leads run to done."""
    if "b_leads" not in S.ctx:
        raise Skipped("B was not paused (the pause scenario failed)")
    ensure_operator_session()
    operator_page(f"/console/tenants?tenant={TENANT_B}")
    wait_css("table#tenants")
    row = tenant_row(TENANT_B)
    check(cell(row, "paused") == "yes", f"B's row says paused={cell(row, 'paused')}")
    text, _ = submit_and_confirm(
        el('form.tenant-control button[name="action"][value="resume"]', row), "confirm-resume")
    check("resume" in text.lower(), f"the confirmation does not say resume: {text!r}")
    wait_css("#notice")
    log(f"  notice: {text_of('#notice')!r}")
    row = tenant_row(TENANT_B)
    check(cell(row, "paused") == "no", f"B's row says paused={cell(row, 'paused')} after resuming")
    shot("tenants-resumed")
    check(tenant_state(TENANT_B)["paused"] is False, "the CLI still says paused")

    def scored():
        for ext, _ in S.ctx["b_leads"]:
            status, _, text = request("GET", f"/v1/leads/{ext}", token=KEY_B)
            if status != 200 or json.loads(text).get("score") is None:
                return None
        return True

    wait_until(scored, 60, "B's 3 leads to be scored", interval=1)
    state = tenant_state(TENANT_B)
    log(f"  B's 3 leads scored; state {state}")
    check(state["held"] == 0, f"B still holds {state['held']} jobs")


def scenario_audit():
    """The pause and the re-drive in the audit trail, as operator:console."""
    ensure_operator_session()
    operator_page("/console/audit")
    wait_css("table#audit")
    check(els("#chain-verification"), "no #chain-verification")
    entries = rows_data("table#audit tr.audit-entry", "data-id", ["action", "actor"])
    check(entries, "no audit entry")
    log(f"  chain: {text_of('#chain-verification')!r}")
    shot("audit")
    actions = [(e["action"] or "", e["actor"] or "") for e in entries]
    log(f"  {len(actions)} entries; actions: {sorted({a for a, _ in actions})}")
    wanted = ["queue.tenant.pause"] + (["dlq.redrive"] if "redriven" in S.ctx else [])
    for action in wanted:
        mine = [a for a in actions if action in a[0] and a[1] == f"operator:{OPERATOR_NAME}"]
        if not mine:
            # Pushed off the newest page (views are audited too): ask for that action.
            log(f"  {action} not among the newest; filtering by action")
            operator_page(f"/console/audit?action={action}")
            wait_css("table#audit")
            mine = [e for e in rows_data("table#audit tr.audit-entry", "data-id",
                                         ["action", "actor"])
                    if action in (e["action"] or "")
                    and e["actor"] == f"operator:{OPERATOR_NAME}"]
            shot(f"audit-{action.replace('.', '-')}")
        check(mine, f"no {action} entry by operator:{OPERATOR_NAME}")


def scenario_logout():
    """Sign-out: back at the sign-in page; the old cookie opens nothing."""
    ensure_operator_session()
    operator_page("/console")
    old = cookie_header()
    el("button#logout-button").click()
    wait_until(lambda: path_now() == "/console/login", 15, "the sign-in page after sign-out")
    S.session_token = None
    shot("signed-out")
    check(S.driver.get_cookie(COOKIE) is None, "the session cookie survived sign-out")
    for path in ("/console", "/console/workers"):
        status, headers, _ = request("GET", path, cookie=old)
        log(f"  GET {path} with the old cookie: HTTP {status} → {headers.get('location')}")
        check(status in (302, 303, 307) and headers.get("location", "").startswith("/console/login"),
              f"the signed-out cookie opened {path}: HTTP {status}")


def scenario_tenant_view():
    """A's status:read key: its own page only; B's page and operator pages are 403."""
    S.driver.delete_all_cookies()
    own = f"/console/tenants/{TENANT_A}"
    sign_in(STATUS_KEY_A, own)
    assert_frame(f"tenant:{TENANT_A}")
    for css in ("section#tenant-view", "table#tenant-queues", "table#tenant-dead-letters",
                "table#tenant-runs"):
        check(els(css), f"no {css} on the tenant's page")
    dead = el("table#tenant-dead-letters")
    check(not els("input, form, button", dead), "the tenant's dead letters have controls")
    check(not els("section#tenant-view form, section#tenant-view input[type=checkbox]"),
          "the tenant's page has forms")
    nav = [a.get_attribute("href") for a in els('nav[aria-label="Console"] a')]
    log(f"  navigation {nav}; {len(els('table#tenant-runs tbody tr'))} run(s), "
        f"{len(els('table#tenant-dead-letters tbody tr'))} dead letter(s)")
    shot("tenant-view")
    cookie = cookie_header()
    visit(f"/console/tenants/{TENANT_B}", relogin=False)
    check(els("#forbidden"), f"B's page for A's session: no #forbidden ({S.driver.current_url})")
    shot("forbidden")
    visit("/console/tenants", relogin=False)
    check(els("#forbidden"), "the operators' tenants page for A's session: no #forbidden")
    shot("forbidden-tenants")
    for path, want in ((f"/console/tenants/{TENANT_B}", 403), ("/console/tenants", 403),
                       ("/console/dead-letters", 403), (own, 200)):
        status, _, _ = request("GET", path, cookie=cookie)
        log(f"  GET {path} as tenant A: HTTP {status}")
        check(status == want, f"GET {path} as tenant A: HTTP {status}, expected {want}")
    visit(own, frame=f"tenant:{TENANT_A}", relogin=False)
    el("button#logout-button").click()
    wait_until(lambda: path_now() == "/console/login", 15, "the sign-in page after sign-out")
    S.session_token = None
    # And B's key lands on B's page.
    sign_in(STATUS_KEY_B, f"/console/tenants/{TENANT_B}")
    assert_frame(f"tenant:{TENANT_B}")
    shot("tenant-view-b")
    el("button#logout-button").click()
    wait_until(lambda: path_now() == "/console/login", 15, "the sign-in page after sign-out")
    S.session_token = None


def scenario_expiry():
    """A session idle for 21 s (LEADQ_CONSOLE_IDLE_SECS=20) has ended: sign-in with a notice.
    The browser stays on the overview meanwhile, whose auto-refresh must not renew it."""
    S.driver.delete_all_cookies()
    sign_in(OP_TOKEN, "/console")
    old = cookie_header()
    log("  idle for 21 s on the overview")
    time.sleep(21)
    visit("/console", relogin=False)
    check(path_now() == "/console/login", f"after 21 s idle /console showed {S.driver.current_url}")
    wait_css("#login-notice")
    log(f"  notice: {text_of('#login-notice')!r}")
    shot("expired")
    S.session_token = None
    status, headers, _ = request("GET", "/console", cookie=old)
    check(status in (302, 303, 307) and headers.get("location", "").startswith("/console/login"),
          f"the expired cookie opened /console: HTTP {status}")


def scenario_csp():
    """Every page of the run kept to the Content-Security-Policy: the browser logged no
    refused script or style, and no script error (htmx would log one if it broke)."""
    entries = S.driver.get_log("browser")
    bad = [e["message"] for e in entries
           if "Content Security Policy" in e.get("message", "")
           or (e.get("level") == "SEVERE" and "javascript" in e.get("source", "").lower())]
    log(f"    {len(entries)} browser console entries, {len(bad)} CSP or script error(s)")
    check(not bad, "the browser reported: " + "; ".join(bad[:3]))


SCENARIOS = [
    ("keyboard: labelled token, Tab order", scenario_keyboard),
    ("wrong token: #login-error, 401, no session", scenario_wrong_token),
    ("operator sign-in", scenario_operator_sign_in),
    ("tenants: pause B (confirmed), 3 leads held", scenario_pause_tenant),
    ("overview equals /v1/status", scenario_overview),
    ("workers: a live worker", scenario_workers),
    ("dead letter: scrubbed view, re-drive, progress", scenario_dead_letter),
    ("find a job: re-driven job until done", scenario_find_job),
    ("tenants: resume B, held leads run", scenario_resume_tenant),
    ("audit: pause and re-drive recorded", scenario_audit),
    ("sign-out: old cookie refused", scenario_logout),
    ("tenant view: own page only, 403 elsewhere", scenario_tenant_view),
    ("idle expiry: back to sign-in with a notice", scenario_expiry),
    ("CSP: no refused script or style, no script error", scenario_csp),
]


def smoke():
    """The harness alone: Chromium loads /docs; one screenshot."""
    S.driver.get(f"{BASE}/docs")
    wait_until(lambda: S.driver.title or els("body *"), 20, "/docs to render")
    shot("docs")
    log(f"/docs: title {S.driver.title!r}, {len(S.driver.page_source)} bytes of DOM")
    status, _, _ = request("GET", "/console/login")
    log(f"(GET /console/login: HTTP {status}; not a check in smoke mode)")


def main():
    missing = [n for n, v in (("LEADQ_CONSOLE_OPERATOR_TOKEN", OP_TOKEN),
                              ("LEADQ_CONSOLE_TENANT_A", TENANT_A),
                              ("LEADQ_CONSOLE_TENANT_B", TENANT_B),
                              ("LEADQ_CONSOLE_KEY_A", KEY_A), ("LEADQ_CONSOLE_KEY_B", KEY_B),
                              ("LEADQ_CONSOLE_STATUS_KEY_A", STATUS_KEY_A),
                              ("LEADQ_CONSOLE_STATUS_KEY_B", STATUS_KEY_B)) if not v]
    if missing and not SMOKE:
        print(f"missing environment: {', '.join(missing)} (run scripts/console-test)",
              file=sys.stderr)
        return 2
    os.makedirs(SHOTS, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    S.driver = make_driver()
    caps = S.driver.capabilities
    log(f"{caps.get('browserName')} {caps.get('browserVersion')} via chromedriver "
        f"{caps.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]}; {BASE}")
    results = []
    try:
        if SMOKE:
            try:
                smoke()
                results.append(("smoke: Chromium loads /docs", "PASS", ""))
            except Exception as e:  # noqa: BLE001 - reported below
                results.append(("smoke: Chromium loads /docs", "FAIL", f"{type(e).__name__}: {e}"))
        else:
            for name, fn in SCENARIOS:
                log(f"--- {name}")
                started = time.monotonic()
                try:
                    fn()
                    outcome, detail = "PASS", ""
                except Skipped as e:
                    outcome, detail = "SKIP", str(e)
                except Exception as e:  # noqa: BLE001 - every failure is reported, then the next
                    outcome, detail = "FAIL", f"{type(e).__name__}: {e}"
                    if not isinstance(e, Failed):
                        traceback.print_exc(file=sys.stdout)
                    try:
                        shot("fail-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40])
                    except WebDriverException:
                        pass
                log(f"    {outcome} ({time.monotonic() - started:.1f}s) {detail}")
                results.append((name, outcome, detail))
    finally:
        S.driver.quit()
    print("\nconsole-test scenarios:")
    for name, outcome, detail in results:
        print(f"  {outcome:4}  {name}" + (f"  ({detail.splitlines()[0][:200]})" if detail else ""))
    print(f"\nscreenshots ({len(S.shots)}) in {SHOTS}:")
    for name in S.shots:
        print(f"  {name}")
    failed = [r for r in results if r[1] != "PASS"]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed or skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
