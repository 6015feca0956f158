"""The faults scripts/ops-test injects, the alerts each must raise, and the run over them all.

Each fault is injected for real (a process killed or stopped, a server stopped, a fake
upstream switched, forged requests sent), with a background load where the alert needs
traffic. For every expected alert the run measures, from the moment of injection:
  fired_s     Prometheus (/api/v1/alerts) shows it firing (and Alertmanager /api/v2/alerts
              has it active),
  telegram_s  the fake Telegram accepted a message naming it with its runbook link,
then heals the fault and requires the alert to leave both APIs and a resolved message to
reach Telegram. Alerts whose rule is not (yet) among the shipped rules are listed as not
tested instead of failing.
"""

import json
import os
import re
import signal
import subprocess
import time

from stack import http, log, tail, wait_until
from traffic import Load

ALWAYS = {"LeadqWatchdog"}  # fires by design; routed away from Telegram
FIRE_TIMEOUT = 120
RESOLVE_TIMEOUT = 120
QUIET_TIMEOUT = 90

# Alerts Alertmanager must hold back while RedisDown fires (they are its consequences).
REDIS_CONSEQUENCES = ["LeadqQueueStalled", "LeadqQueueRedisErrors", "LeadqNoWorkers",
                      "LeadqWorkerHeartbeatStale", "LeadqQueueBacklogGrowing",
                      "LeadqJobWaitHigh", "LeadqApiHighErrorRate", "LeadqCanaryFailing",
                      "LeadqJobSlaBreached", "LeadqJobLeasesLost"]


# -- configuration hooks (the parts that follow main as features land) -----------------------

def extra_leadq_env(st):
    """leadq settings the faults need beyond the basics."""
    return {}


def warm_up_extra(st):
    """Traffic beyond leads and a Chatwoot exchange that the dashboards need."""


def alertmanager_config(st, api_url, bot_token, chat_id):
    """Alertmanager's configuration: one Telegram receiver (api_url pointed at the fake),
    grouped by alert name with second-scale timers, the watchdog routed away, and RedisDown
    inhibiting its consequences. (Until alertmanager/alertmanager.yml is shipped.)"""
    message = (
        '{{ range .Alerts.Firing }}FIRING [{{ .Labels.severity }}] {{ .Labels.alertname }}'
        '{{ with .Labels.kind }} kind={{ . }}{{ end }}\n{{ .Annotations.summary }}\n'
        '{{ .Annotations.description }}\nRunbook: {{ .Annotations.runbook_url }}\n\n{{ end }}'
        '{{ range .Alerts.Resolved }}RESOLVED {{ .Labels.alertname }}'
        '{{ with .Labels.kind }} kind={{ . }}{{ end }}\n{{ .Annotations.summary }}\n'
        'Runbook: {{ .Annotations.runbook_url }}\n\n{{ end }}')
    cfg = {
        "route": {"receiver": "telegram", "group_by": ["alertname"], "group_wait": "1s",
                  "group_interval": "2s", "repeat_interval": "4h",
                  "routes": [{"matchers": ['alertname="LeadqWatchdog"'],
                              "receiver": "blackhole"}]},
        "inhibit_rules": [{
            "source_matchers": ['alertname="RedisDown"'],
            "target_matchers": ['alertname=~"%s"' % "|".join(REDIS_CONSEQUENCES)]}],
        "receivers": [
            {"name": "telegram", "telegram_configs": [{
                "api_url": api_url, "bot_token": bot_token, "chat_id": chat_id,
                "send_resolved": True, "parse_mode": "HTML", "message": message}]},
            {"name": "blackhole"}],
    }
    return json.dumps(cfg, indent=1) + "\n"


# -- faults --------------------------------------------------------------------------------

class Fault:
    def __init__(self, name, desc, alerts, inject, heal, loads=(), during=None, after=None,
                 logs=("worker", "api")):
        self.name, self.desc, self.alerts = name, desc, alerts
        self.inject, self.heal, self.loads = inject, heal, loads
        self.during, self.after, self.logs = during, after, logs


def _services(st, action):
    script = os.path.join(st.root, "scripts", "lib", "services.sh")
    res = subprocess.run(["bash", script, action, "ops"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("services.sh %s ops failed: %s" % (action, res.stderr[-1500:]))


def _restart_leadq_if_dead(st):
    for which in ("api", "worker"):
        if not st.procs[which].alive():
            log("leadq %s exited during the fault; starting it again" % which)
            st.start_leadq(which)


def _heal_ready(st):
    _restart_leadq_if_dead(st)
    st.wait_ready("api")
    st.wait_ready("worker")


def _kill_worker(st):
    st.procs["worker"].kill()


def _start_worker(st):
    st.start_leadq("worker")
    st.wait_ready("worker")


def _pause_worker(st):
    st.procs["worker"].signal(signal.SIGSTOP)


def _resume_worker(st):
    st.procs["worker"].signal(signal.SIGCONT)
    st.wait_ready("worker")


def _hubspot(mode):
    def f(st):
        st.hubspot.set_mode(mode)
    return f


class RedisInhibition:
    """While RedisDown fires: every alert Alertmanager shows inhibited must stay out of
    Telegram, and at least one consequence must have been inhibited (else nothing proved)."""

    def __init__(self):
        self.seen = {}  # name -> inhibited by
        self.redis_active_at = None

    def during(self, st, t0):
        mon = st.monitor
        if self.redis_active_at is None and mon.state("am", "RedisDown") == "active":
            self.redis_active_at = time.time()
        for name in REDIS_CONSEQUENCES:
            by = mon.inhibited_by(name)
            if by:
                self.seen.setdefault(name, by)

    def after(self, st, t0, t_heal):
        problems = []
        start = self.redis_active_at or t0
        for m in st.telegram.delivered(start):
            if m["t"] > t_heal:
                continue
            for name in REDIS_CONSEQUENCES:
                if re.search(r"FIRING.*\b%s\b" % name, m["text"]) or (
                        name in m["text"] and "firing" in m["text"].lower()
                        and "RESOLVED" not in m["text"]):
                    problems.append("%s reached Telegram while RedisDown fired" % name)
        fired = [n for n in REDIS_CONSEQUENCES if st.monitor.first("prom", n, "firing", t0)]
        log("inhibition: fired in Prometheus during RedisDown: %s; inhibited in Alertmanager: %s"
            % (", ".join(fired) or "none",
               ", ".join("%s (by %s)" % (n, ",".join(b)) for n, b in self.seen.items())
               or "none"))
        if not self.seen:
            problems.append("no consequence of RedisDown was inhibited (none fired: %s)"
                            % (", ".join(fired) or "nothing fired"))
        for n in fired:
            if n not in self.seen:
                problems.append("%s fired during RedisDown but was never inhibited" % n)
        return sorted(set(problems))


def make_faults():
    inh = RedisInhibition()
    return [
        Fault("worker_killed", "SIGKILL the only worker",
              ["LeadqWorkerDown", "LeadqNoWorkers"], _kill_worker, _start_worker),
        Fault("worker_paused", "SIGSTOP the worker while leads keep arriving (15/s)",
              ["LeadqQueueBacklogGrowing", "LeadqJobSlaBreached"], _pause_worker,
              _resume_worker, loads=[("cold leads", lambda st: st.traffic.lead(False), 15)]),
        Fault("crm_500", "fake HubSpot answers 500 (crm_sync retries, then dead letters)",
              ["LeadqCrmUpstreamErrors", "LeadqJobRetries", "LeadqJobRetryRateHigh",
               "LeadqDeadLetters"], _hubspot("500"), _hubspot("normal"),
              loads=[("hot leads", lambda st: st.traffic.lead(True), 4)]),
        Fault("crm_401", "fake HubSpot answers 401", ["LeadqCrmAuthFailing"],
              _hubspot("401"), _hubspot("normal"),
              loads=[("hot leads", lambda st: st.traffic.lead(True), 2)]),
        Fault("forged_signatures", "Chatwoot deliveries with forged signatures (4/s)",
              ["LeadqWebhookBadSignatureSpike"], lambda st: None, lambda st: None,
              loads=[("forged Chatwoot", lambda st: st.traffic.chatwoot(forged=True), 4)]),
        Fault("redis_stopped", "stop Redis (leads keep arriving, 4/s)", ["RedisDown"],
              lambda st: _services(st, "redis-stop"),
              lambda st: (_services(st, "redis-start"), _heal_ready(st)),
              loads=[("cold leads", lambda st: st.traffic.lead(False), 4)],
              during=inh.during, after=inh.after),
        Fault("postgres_stopped", "stop PostgreSQL", ["LeadqPostgresDown"],
              lambda st: _services(st, "pg-stop"),
              lambda st: (_services(st, "pg-start"), _heal_ready(st))),
    ]


FAULTS = make_faults()


# -- the run -------------------------------------------------------------------------------

def _firing_msg(st, name, since):
    link = "runbooks/%s.md" % name
    for m in st.telegram.delivered(since):
        text = m["text"]
        if name in text and link in text and "firing" in text.lower():
            return m
    return None


def _resolved_msg(st, name, since):
    for m in st.telegram.delivered(since):
        if re.search(r"resolved", m["text"], re.I) and name in m["text"]:
            return m
    return None


def wait_quiet(st, allowed=()):
    """Waits until nothing but the always-firing alerts is pending or firing."""
    ok_set = ALWAYS | set(allowed)

    def quiet():
        prom = st.monitor.active()
        am = {n for n, s in st.monitor.am.items() if s}
        return not (set(prom) - ok_set) and not (am - ok_set)
    if not wait_until("no alert pending or firing", QUIET_TIMEOUT, quiet, interval=0.5):
        log("not quiet: Prometheus %s, Alertmanager %s" % (st.monitor.active(), st.monitor.am))
        return False
    return True


def run_fault(st, fault, results, problems):
    expected = [a for a in fault.alerts if a in st.rule_names]
    untested = [a for a in fault.alerts if a not in st.rule_names]
    if not expected:
        log("== %s: skipped, no rule yet for %s" % (fault.name, ", ".join(untested)))
        return untested
    wait_quiet(st)
    log("== %s: %s; expecting %s" % (fault.name, fault.desc, ", ".join(expected)))
    t0 = time.time()
    fault.inject(st)
    loads = [Load(n, (lambda fn: lambda: fn(st))(fn), rate).start()
             for n, fn, rate in fault.loads]
    got = {a: {"fired": None, "am": None, "tg": None} for a in expected}
    deadline = t0 + FIRE_TIMEOUT
    while time.time() < deadline:
        for a, g in got.items():
            g["fired"] = g["fired"] or st.monitor.first("prom", a, "firing", t0)
            g["am"] = g["am"] or st.monitor.first("am", a, "active", t0)
            if g["tg"] is None:
                m = _firing_msg(st, a, t0)
                g["tg"] = m["t"] if m else None
        if fault.during:
            fault.during(st, t0)
        if all(g["fired"] and g["am"] and g["tg"] for g in got.values()):
            break
        time.sleep(0.5)
    if fault.during:
        # give inhibited consequences a moment to show up while the fault lasts
        extra = time.time() + 10
        while time.time() < extra:
            fault.during(st, t0)
            time.sleep(0.5)
    side = sorted(set(st.monitor.firing()) - set(expected) - ALWAYS)
    for a, g in got.items():
        if not (g["fired"] and g["am"] and g["tg"]):
            what = ("never fired in Prometheus" if not g["fired"] else
                    "not active in Alertmanager" if not g["am"] else
                    "no Telegram message with runbooks/%s.md" % a)
            problems.append("%s (%s): %s within %ss" % (a, fault.name, what, FIRE_TIMEOUT))
            log("FAIL %s: %s" % (a, what))
            for name in fault.logs:
                tail(st.logs[name], 25)
            tail(st.logs["alertmanager"], 15)
    log("   fired: %s; also firing: %s; load: %s" % (
        ", ".join("%s %.1fs" % (a, g["fired"] - t0) for a, g in got.items() if g["fired"]),
        ", ".join(side) or "nothing",
        ", ".join("%s x%d" % (ld.name, ld.calls) for ld in loads) or "none"))
    for ld in loads:
        ld.stop()
    t_heal = time.time()
    fault.heal(st)
    if fault.after:
        problems.extend("%s: %s" % (fault.name, p) for p in fault.after(st, t0, t_heal))
    resolved = {}

    def all_resolved():
        for a, g in got.items():
            if a in resolved:
                continue
            if st.monitor.state("prom", a) is None and st.monitor.state("am", a) is None \
                    and _resolved_msg(st, a, g["tg"] or t0):
                resolved[a] = time.time()
        return len(resolved) == len(got)
    if not wait_until("%s resolved" % ", ".join(got), RESOLVE_TIMEOUT, all_resolved,
                      logs=[st.logs[n] for n in fault.logs]):
        for a in got:
            if a not in resolved:
                problems.append("%s (%s): not resolved within %ss after healing (Prometheus %s, "
                                "Alertmanager %s, resolved message %s)" % (
                                    a, fault.name, RESOLVE_TIMEOUT, st.monitor.state("prom", a),
                                    st.monitor.state("am", a),
                                    bool(_resolved_msg(st, a, got[a]["tg"] or t0))))
    for a, g in got.items():
        results.append({
            "alert": a, "fault": fault.name,
            "fired_s": round(g["fired"] - t0, 1) if g["fired"] else None,
            "telegram_s": round(g["tg"] - t0, 1) if g["tg"] else None,
            "resolved": a in resolved,
        })
    log("   resolved: %s (%.0fs after healing)" % (
        ", ".join(sorted(resolved)) or "none",
        (max(resolved.values()) - t_heal) if resolved else 0))
    return untested


def check_secrets(st):
    leaks = []
    for m in st.telegram.all_calls():
        for what, value in st.secrets.items():
            if value and len(value) >= 6 and value in m["text"]:
                leaks.append("%s leaked in a Telegram message at %s" % (
                    what, time.strftime("%H:%M:%S", time.localtime(m["t"]))))
    return sorted(set(leaks))


def print_table(results, path):
    head = "%-32s %-18s %8s %11s %9s" % ("alert", "fault", "fired_s", "telegram_s", "resolved")
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        print("%-32s %-18s %8s %11s %9s" % (
            r["alert"], r["fault"], "-" if r["fired_s"] is None else "%.1f" % r["fired_s"],
            "-" if r["telegram_s"] is None else "%.1f" % r["telegram_s"],
            "yes" if r["resolved"] else "no"))
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print("\nwritten to %s" % path)


def run_dashboards(st):
    script = os.path.join(st.root, "scripts", "check-dashboards-live")
    if not os.path.isfile(script):
        log("scripts/check-dashboards-live is not in this tree yet; dashboard check skipped")
        return []
    log("scripts/check-dashboards-live --prometheus http://127.0.0.1:29090")
    res = subprocess.run([script, "--prometheus", "http://127.0.0.1:29090"])
    return [] if res.returncode == 0 else ["scripts/check-dashboards-live failed (exit %d)"
                                           % res.returncode]


def run_all(st, only, no_dashboards):
    results, problems, untested = [], [], []
    chosen = [f for f in FAULTS if not only or f.name in only]
    unknown = set(only) - {f.name for f in FAULTS}
    if unknown:
        raise RuntimeError("unknown fault(s): %s" % ", ".join(sorted(unknown)))
    for fault in chosen:
        untested += run_fault(st, fault, results, problems)
    problems += check_secrets(st)
    calls = st.telegram.all_calls()
    n429 = sum(1 for c in calls if c["status"] == 429)
    log("fake Telegram: %d calls, %d answered 429, %d delivered" % (
        len(calls), n429, len(calls) - n429))
    if calls and n429 != 1:
        problems.append("expected exactly one 429 from the fake Telegram, saw %d" % n429)
    if n429 and not any(c["status"] == 200 and c["t"] > calls[0]["t"] for c in calls):
        problems.append("Alertmanager did not retry after the 429")
    print_table(results, os.path.join(st.out, "alerts.json"))
    if untested:
        print("not tested (no rule among the shipped rules yet): %s" % ", ".join(untested))
    if not no_dashboards and not only:
        problems += run_dashboards(st)
    if problems:
        print("\nFAILED:")
        for p in problems:
            print("  - " + p)
        return 1
    print("\nOK: every expected alert fired, reached Telegram with its runbook link, "
          "leaked no secret and resolved")
    return 0
