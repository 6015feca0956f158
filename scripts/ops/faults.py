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
import threading
import time

import rules
from stack import Proc, http, log, tail, wait_until
from traffic import Load

ALWAYS = {"LeadqWatchdog"}
LEASE_MS = 5000  # LEADQ_LEASE_MS of the test's workers  # fires by design; routed away from Telegram
FIRE_TIMEOUT = 120
RESOLVE_TIMEOUT = 120
QUIET_TIMEOUT = 90

# This driver's own inhibitions (used until alertmanager/alertmanager.yml is shipped; the same
# shape as that file's).
_SYMPTOMS = "LeadqQueueStalled|LeadqQueueBacklogGrowing|LeadqJobWaitHigh|LeadqJobSlaBreached"
OWN_INHIBITIONS = [
    ("LeadqRedisUnreachable", _SYMPTOMS + "|LeadqCanaryFailing|LeadqErrorAlertsUndelivered"),
    ("LeadqNoWorkers", _SYMPTOMS),
    ("LeadqPostgresDown", _SYMPTOMS + "|LeadqJobRetryRateHigh|LeadqJobRetries|LeadqDeadLetters"
     "|LeadqTenantJobsFailing|LeadqScheduledTaskFailing|LeadqApiHighErrorRate"
     "|LeadqCanaryFailing|LeadqSecurityCheckFailing"),
]


# -- what the build offers (the parts that follow main as features land) ---------------------

def _binary_has(st, needle):
    cache = st.__dict__.setdefault("_bin_strings", {})
    if needle not in cache:
        with open(st.bin, "rb") as f:
            cache[needle] = needle.encode() in f.read()
    return cache[needle]


def has_canary(st):
    return _binary_has(st, "LEADQ_CANARY_TENANT")


def has_security_health(st):
    return _binary_has(st, "LEADQ_AUDIT_HEARTBEAT_MAX_AGE_SECS")


def extra_leadq_env(st):
    """leadq settings the faults need beyond the basics."""
    env = {}
    if has_canary(st) and "canary-api-key" in st.files:
        env.update({
            "LEADQ_CANARY_TENANT": "canary",
            "LEADQ_CANARY_API_URL": "http://127.0.0.1:29080",
            "LEADQ_CANARY_API_KEY_FILE": st.files["canary-api-key"],
            "LEADQ_CANARY_TIMEOUT_SECS": "5",
            # every 2 s: well inside the scaled staleness threshold of LeadqCanaryFailing
            "LEADQ_SCHEDULE_CANARY": "*/2 * * * * *",
        })
    if has_security_health(st):
        env.update({
            # Audit rows come from every scored lead (the canary's too): 20 s without one is
            # a stale heartbeat here.
            "LEADQ_AUDIT_HEARTBEAT_MAX_AGE_SECS": "20",
            "LEADQ_SCHEDULE_AUDIT_VERIFY": "*/15 * * * * *",
        })
    return env


def poke_security(st):
    """GET /v1/health/security as the on-call operator: reruns the checks and refreshes the
    leadq_security_check_ok gauges at once (the API's own refresh runs every 30 s)."""
    if not has_security_health(st):
        return 0
    status, _ = http("GET", "http://127.0.0.1:29080/v1/health/security",
                     headers={"Authorization": "Bearer " + st.secrets["operator token"]},
                     timeout=10)
    return status


def warm_up_extra(st):
    """What else the dashboards and the baseline need: a canary success, the security checks
    run once everything is configured."""
    if has_canary(st):
        ok = wait_until("a successful canary run", 60, lambda: re.search(
            rb"(?m)^leadq_canary_success 1", http("GET", "http://127.0.0.1:29091/metrics",
                                                  headers=st.metrics_auth())[1]),
            logs=[st.logs["worker"]])
        if not ok:
            raise RuntimeError("the canary never succeeded")
    time.sleep(0.5)
    poke_security(st)


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
        "inhibit_rules": [{"source_matchers": ['alertname=~"%s"' % src],
                           "target_matchers": ['alertname=~"%s"' % tgt]}
                          for src, tgt in OWN_INHIBITIONS],
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
                 ready=None, logs=("worker", "api")):
        self.name, self.desc, self.alerts = name, desc, alerts
        self.inject, self.heal, self.loads = inject, heal, loads
        self.during, self.after, self.logs = during, after, logs
        self.ready = ready  # extra condition before healing (e.g. an inhibition was seen)


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


def _stop_worker(st):
    st.procs["worker"].stop()


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


class Inhibition:
    """While a cause fires (`sources`): every alert the Alertmanager configuration inhibits
    for it and that fires must show as inhibited in Alertmanager (status.inhibitedBy) and must
    not reach Telegram, and at least one such consequence must have fired (else nothing was
    shown). Reads the inhibit rules from the configuration Alertmanager runs."""

    def __init__(self, sources, wait_for_one=30, grace=30):
        self.sources = sources
        self.wait_for_one = wait_for_one
        self.grace = grace
        self.seen = {}
        self.cause_at = None

    def targets(self, st):
        return rules.inhibit_targets(st.am_text, self.sources) or "$^"

    def during(self, st, t0):
        mon = st.monitor
        if self.cause_at is None and any(mon.state("am", s) == "active" for s in self.sources):
            self.cause_at = time.time()
        pat = self.targets(st)
        for name, by in mon.inhibitions_since(t0).items():
            # Inhibited by this fault's cause, not by whatever else fired meanwhile.
            by = [b for b in by if b in self.sources]
            if by and re.fullmatch(pat, name or ""):
                self.seen.setdefault(name, by)

    def done(self, st):
        """Whether the fault may be healed: consequences were seen inhibited, and every one
        Prometheus fires now has reached Alertmanager and been seen inhibited there too (a
        consequence that starts firing a moment after the first must not be cut off by the
        heal before Alertmanager hears of it); or the time to wait is up.

        The wait ends at `wait_for_one` seconds after the cause only if no consequence is
        firing unseen: a burn-rate alert whose long window tips over just then (how soon
        depends on the traffic earlier faults left in it) gets up to `grace` seconds more to
        reach Alertmanager, instead of being healed away in the second it fired and then
        reported as never inhibited."""
        if self.cause_at is None:
            return False
        pat = self.targets(st)
        firing = [n for n, state in st.monitor.active().items()
                  if state == "firing" and re.fullmatch(pat, n or "")]
        unseen = [n for n in firing if n not in self.seen]
        waited = time.time() - self.cause_at
        if waited > self.wait_for_one + self.grace:
            return True
        if unseen:
            return False
        return bool(self.seen) or waited > self.wait_for_one

    def after(self, st, t0, t_heal):
        pat = self.targets(st)
        problems = []
        start = self.cause_at or t0
        # Consequences that fired while the cause was still in place: a burn-rate alert that
        # trips only after the heal (its window still holds the outage's errors) is a true
        # alarm about the budget, not a symptom the cause should have hidden.
        fired = sorted(n for n in set(st.monitor.prom) | {e[2] for e in st.monitor.events}
                       if re.fullmatch(pat, n or "")
                       and (st.monitor.first("prom", n, "firing", start) or t_heal + 1) <= t_heal)
        # One that began firing in the moment between the last readiness check and the heal
        # is still sent to Alertmanager while the cause is active there (it resolves only
        # after the healed service is scraped again): keep watching until the cause is gone.
        deadline = time.time() + 10
        while (time.time() < deadline and any(n not in self.seen for n in fired)
               and any(st.monitor.state("am", s) == "active" for s in self.sources)):
            self.during(st, t0)
            time.sleep(0.25)
        # What Alertmanager inhibited after the fault's last look and before the cause
        # resolved (the monitor polls all along).
        self.during(st, t0)
        for m in st.telegram.delivered(start):
            if m["t"] > t_heal:
                continue
            for name in fired:
                if name in m["text"] and "firing" in m["text"].lower():
                    problems.append("%s reached Telegram while %s fired" % (
                        name, "/".join(self.sources)))
        log("   inhibition by %s: consequences firing in Prometheus: %s; inhibited in "
            "Alertmanager: %s" % ("/".join(self.sources), ", ".join(fired) or "none",
                                  ", ".join("%s (by %s)" % (n, ",".join(b))
                                            for n, b in sorted(self.seen.items())) or "none"))
        if not self.seen:
            problems.append("no alert was inhibited by %s (consequences that fired: %s)"
                            % ("/".join(self.sources), ", ".join(fired) or "none"))
        for n in fired:
            if n not in self.seen:
                problems.append("%s fired while %s fired but was never inhibited"
                                % (n, "/".join(self.sources)))
        return sorted(set(problems))


class LockedScores:
    """lead_score jobs stall on PostgreSQL: a session holds `LOCK TABLE lead_scores IN
    EXCLUSIVE MODE` (reads go on; every insert of a score waits). Workers stay alive and
    heartbeat, so the backlog is a workers-are-not-keeping-up backlog, not LeadqNoWorkers.
    Once LeadqQueueBacklogGrowing has reached Telegram the lock is released for 1 s in every
    7 s: jobs keep finishing, each after seconds of waiting, which is what the turnaround SLA
    (LeadqJobSlaBreached, p95 enqueue-to-done over 5 s) measures."""

    def __init__(self):
        self.psql = None
        self.cycle = None
        self.stop_cycle = threading.Event()

    def _send(self, sql):
        self.psql.stdin.write(sql + "\n")
        self.psql.stdin.flush()

    def inject(self, st):
        m = re.match(r"postgres://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", st.owner_url)
        user, pw, host, port, db = m.groups()
        psql = os.path.join(st.pg_bindir, "psql") if st.pg_bindir else "psql"
        logf = open(os.path.join(st.out, "lock.log"), "a")
        self.psql = subprocess.Popen(
            [psql, "-X", "-q", "-h", host, "-p", port, "-U", user, "-d", db],
            stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PGPASSWORD=pw))
        self.stop_cycle.clear()
        self.cycle = None
        self._send("begin; lock table lead_scores in exclusive mode; select 'locked';")

    def during(self, st, t0):
        if self.cycle is None and (_firing_msg(st, "LeadqQueueBacklogGrowing", t0)
                                   or time.time() - t0 > 60):
            log("   after %.0fs: releasing the lock 1 s in every 7 s" % (time.time() - t0))
            self.cycle = threading.Thread(target=self._cycle, daemon=True)
            self.cycle.start()

    def _cycle(self):
        while not self.stop_cycle.is_set():
            self._send("rollback;")
            if self.stop_cycle.wait(1.0):
                return
            self._send("begin; lock table lead_scores in exclusive mode;")
            self.stop_cycle.wait(6.0)

    def heal(self, st):
        self.stop_cycle.set()
        if self.cycle:
            self.cycle.join(10)
        self._send("rollback;")
        self.psql.stdin.close()
        self.psql.wait(10)


class AuditBlackhole:
    """Audited actions stop being recorded: a BEFORE INSERT trigger on audit_log drops every
    row (what a broken audit writer looks like from the outside). The on-call operator's
    GET /v1/health/security reruns the checks every 2 s meanwhile (its own audit row is dropped
    too); LeadqSecurityCheckFailing{check="audit_heartbeat"} must fire."""

    SQL_ON = ("create or replace function ops_test_drop_audit() returns trigger "
              "language plpgsql as $$ begin return null; end $$; "
              "drop trigger if exists a_ops_test_drop_audit on audit_log; "
              "create trigger a_ops_test_drop_audit before insert on audit_log "
              "for each row execute function ops_test_drop_audit();")
    SQL_OFF = ("drop trigger if exists a_ops_test_drop_audit on audit_log; "
               "drop function if exists ops_test_drop_audit();")

    def __init__(self):
        self.last_poke = 0

    def _sql(self, st, sql):
        m = re.match(r"postgres://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", st.owner_url)
        user, pw, host, port, db = m.groups()
        psql = os.path.join(st.pg_bindir, "psql") if st.pg_bindir else "psql"
        subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port,
                        "-U", user, "-d", db, "-c", sql], check=True, capture_output=True,
                       env=dict(os.environ, PGPASSWORD=pw))

    def inject(self, st):
        self._sql(st, self.SQL_ON)

    def during(self, st, t0):
        if time.time() - self.last_poke >= 2:
            self.last_poke = time.time()
            poke_security(st)
        labels = st.monitor.labels("LeadqSecurityCheckFailing")
        checks = sorted({lb.get("check") for lb in labels})
        if checks and "audit_heartbeat" not in checks:
            log("   LeadqSecurityCheckFailing fires for %s, not audit_heartbeat" % checks)

    def heal(self, st):
        self._sql(st, self.SQL_OFF)
        time.sleep(3)  # a canary lead or two is audited again
        poke_security(st)


class PausedPastLease:
    """A worker paused (SIGSTOP) longer than its lease while it runs jobs: another worker takes
    the jobs over, and when the paused one wakes up it finds its leases lost. lead_score jobs
    are held in flight by a lock on lead_scores (released once the worker is stopped); a second
    worker (not scraped, 127.0.0.1:29092) runs meanwhile. LeadqJobLeasesLost must fire."""

    def __init__(self):
        self.lock = LockedScores()
        self.second = None

    def inject(self, st):
        self.lock.inject(st)
        for _ in range(8):
            st.traffic.lead(False)
        time.sleep(2)  # the worker's four lead_score slots are now waiting on the lock
        st.procs["worker"].signal(signal.SIGSTOP)
        self.lock.heal(st)
        env = dict(st.leadq_env(), LEADQ_WORKER_ADDR="127.0.0.1:29092")
        if self.second is None:
            self.second = Proc("leadq worker 2", [st.bin, "worker"],
                               os.path.join(st.out, "worker2.log"), env=env)
        self.second.start()
        time.sleep(float(LEASE_MS) / 1000 + 4)  # leases expire; worker 2 takes the jobs over
        st.procs["worker"].signal(signal.SIGCONT)

    def heal(self, st):
        self.second.stop()
        st.wait_ready("worker")


def _audit_check_labels(st, t0, t_heal):
    seen = st.monitor.labels_seen("LeadqSecurityCheckFailing", t0)
    if "audit_heartbeat" not in {lb.get("check") for lb in seen}:
        return ["LeadqSecurityCheckFailing fired without check=\"audit_heartbeat\" (%s)"
                % sorted({lb.get("check") for lb in seen})]
    return []


def make_faults():
    redis = Inhibition(["LeadqRedisUnreachable"])
    pg = Inhibition(["LeadqPostgresDown"])
    lock = LockedScores()
    audit = AuditBlackhole()
    paused = PausedPastLease()
    return [
        Fault("worker_killed", "SIGKILL the only worker",
              ["LeadqWorkerDown", "LeadqNoWorkers"], _kill_worker, _start_worker),
        Fault("worker_stopped", "stop the only worker (SIGTERM, graceful)",
              ["LeadqCanaryFailing"], _stop_worker, _start_worker),
        Fault("scores_locked", "lead_score stalls on a table lock while leads keep arriving "
              "(15/s); then the lock is released 1 s in 7",
              ["LeadqQueueBacklogGrowing", "LeadqJobSlaBreached"], lock.inject, lock.heal,
              loads=[("cold leads", lambda st: st.traffic.lead(False), 15)],
              during=lock.during),
        Fault("worker_paused", "SIGSTOP a worker with jobs in flight for longer than its lease "
              "while a second worker runs", ["LeadqJobLeasesLost"], paused.inject, paused.heal),
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
        Fault("audit_stale", "audit rows silently dropped (trigger on audit_log)",
              ["LeadqSecurityCheckFailing"], audit.inject, audit.heal, during=audit.during,
              after=_audit_check_labels),
        Fault("redis_stopped", "stop Redis (leads keep arriving, 4/s)",
              ["RedisDown", "LeadqRedisUnreachable"],
              lambda st: _services(st, "redis-stop"),
              lambda st: (_services(st, "redis-start"), _heal_ready(st)),
              loads=[("cold leads", lambda st: st.traffic.lead(False), 4)],
              during=redis.during, after=redis.after, ready=redis.done),
        Fault("postgres_stopped", "stop PostgreSQL (leads keep arriving, 4/s)",
              ["LeadqPostgresDown"],
              lambda st: _services(st, "pg-stop"),
              lambda st: (_services(st, "pg-start"), _heal_ready(st)),
              loads=[("cold leads", lambda st: st.traffic.lead(False), 4)],
              during=pg.during, after=pg.after, ready=pg.done),
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
    poked = [0.0]

    def quiet():
        if time.time() - poked[0] > 5:  # security gauges refresh only every 30 s by themselves
            poked[0] = time.time()
            poke_security(st)
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
        if all(g["fired"] and g["am"] and g["tg"] for g in got.values()) and (
                fault.ready is None or fault.ready(st)):
            break
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
                tail(st.logs[name], 8)
            tail(st.logs["alertmanager"], 8)
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
            if a in resolved or not g["fired"]:
                continue
            if st.monitor.state("prom", a) is None and st.monitor.state("am", a) is None \
                    and _resolved_msg(st, a, g["tg"] or t0):
                resolved[a] = time.time()
        return len(resolved) == sum(1 for g in got.values() if g["fired"])
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
        if g["fired"]:
            g["fired"] = st.monitor.fired_at(a, t0, g["fired"])
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


def dashboard_traffic(st):
    """Fresh series for every panel after the faults (the worker restarted, so its counters
    did too): leads hot and cold, a Chatwoot contact's message and an agent's reply (the chat
    SLA), a refused API key, requests over a tenant's limit."""
    t = st.traffic
    for _ in range(3):
        t.lead(hot=True)
        t.lead(hot=False)
    conv = int(time.time()) % 100000
    t.chatwoot("incoming", conversation=conv, contact=conv)
    time.sleep(1.5)
    t.chatwoot("outgoing", conversation=conv, contact=conv)
    http("POST", "http://127.0.0.1:29080/v1/leads", {"external_id": "x", "source": "telegram"},
         {"Authorization": "Bearer lq_not_a_key_000000000000000000000000"})
    if st.limited_key:
        for _ in range(6):
            http("POST", "http://127.0.0.1:29080/v1/leads",
                 {"external_id": "lim-%d" % time.time_ns(), "source": "telegram",
                  "name": "Limited"}, {"Authorization": "Bearer " + st.limited_key})
    time.sleep(8)  # a few scrapes of each


def run_dashboards(st):
    script = os.path.join(st.root, "scripts", "check-dashboards-live")
    if not os.path.isfile(script):
        log("scripts/check-dashboards-live is not in this tree yet; dashboard check skipped")
        return []
    dashboard_traffic(st)
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
    errors = [c for c in calls if c["chat_id"] != -1001234567890]
    log("fake Telegram: %d calls, %d answered 429, %d delivered (%d of them leadq's own error "
        "alerts); %d getMe; %d dead man's switch pings" % (
            len(calls), n429, len(calls) - n429, len(errors), st.telegram.get_me,
            len(st.telegram.watchdog_pings)))
    if st.am_text and "deadmansswitch" in st.am_text and not st.telegram.watchdog_pings:
        problems.append("LeadqWatchdog never reached the dead man's switch")
    if calls and n429 != 1:
        problems.append("expected exactly one 429 from the fake Telegram, saw %d" % n429)
    if n429 and not any(c["status"] == 200 and c["t"] > calls[0]["t"] for c in calls):
        problems.append("Alertmanager did not retry after the 429")
    print_table(results, os.path.join(st.out, "alerts.json"))
    if untested:
        print("not tested (no rule among the shipped rules yet): %s" % ", ".join(untested))
    if not no_dashboards and not only:
        st.wait_backfill()
        problems += run_dashboards(st)
    if problems:
        print("\nFAILED:")
        for p in problems:
            print("  - " + p)
        return 1
    print("\nOK: every expected alert fired, reached Telegram with its runbook link, "
          "leaked no secret and resolved")
    return 0
