#!/usr/bin/env python3
"""scripts/ops-test's driver: proves on a live stack that each alert fires on its real fault,
reaches Telegram (a fake Bot API) with its runbook link and without secrets, and resolves.

Run through scripts/ops-test (which installs packages, starts PostgreSQL and Redis of the
`ops` profile, builds leadq and exports LEADQ_BIN, LEADQ_DATABASE_URL, LEADQ_REDIS_URL,
LEADQ_DB_PASSWORD and LEADQ_PG_BINDIR). Python standard library only.

Stack (loopback, fixed ports below 32768 so that no client socket takes them):
  leadq api 29080, leadq worker 29091, Prometheus 29090, Alertmanager 29093,
  redis_exporter 29121, postgres_exporter 29187, fake Telegram 29200, fake HubSpot 29201.
Prometheus evaluates every second, scrapes the exporters every second and leadq every 2.5 s
(leadq's /metrics waits up to 2 s for a dependency that is down, and a scrape may not take
longer than its interval), and loads alerts/*.yml through the test override (rules.py, or
alerts/test-override.py once shipped: `for:`, windows and offsets divided by LEADQ_OPS_FACTOR,
default 40, so that the shortest window, 5m, still holds three leadq scrapes).
LEADQ_OPS_RULES_FROM=<git ref> takes alerts/ and alertmanager/ from another branch (to try
rules before they are merged).
Output: a table and target/ops-test/alerts.json; logs in target/ops-test/.
"""

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faults  # noqa: E402
import rules  # noqa: E402
from fakes import FakeHubSpot, FakeTelegram  # noqa: E402
from monitor import Monitor  # noqa: E402
from stack import Proc, get_json, http, log, tail, wait_until  # noqa: E402
from traffic import Traffic  # noqa: E402

PORTS = {"api": 29080, "worker": 29091, "prometheus": 29090, "alertmanager": 29093,
         "redis_exporter": 29121, "postgres_exporter": 29187, "telegram": 29200,
         "hubspot": 29201}
CHAT_ID = -1001234567890         # Alertmanager's on-call chat
ERRORS_CHAT_ID = -1009876543210  # leadq's own error alerts (leadq-notify)
# leadq's /metrics answers within 2 s (its dependency checks' timeout) even when one is down.
LEADQ_SCRAPE = "2500ms"
CHATWOOT_ACCOUNT = 1
SLUG = "ops"


def url(name):
    return "http://127.0.0.1:%d" % PORTS[name]


class Stack:
    """Everything the live test runs, and the secrets it must never see in an alert."""

    def __init__(self, root, factor):
        self.root = root
        self.factor = factor
        self.out = os.path.join(root, "target", "ops-test")
        self.run_dir = os.path.join(root, ".run", "ops")
        for d in (self.out, self.run_dir):
            os.makedirs(d, exist_ok=True)
        Proc.pidfile = os.path.join(self.run_dir, "pids")
        self.bin = os.environ["LEADQ_BIN"]
        self.db_url = os.environ["LEADQ_DATABASE_URL"]
        self.owner_url = os.environ["LEADQ_MIGRATION_DATABASE_URL"]
        self.redis_url = os.environ["LEADQ_REDIS_URL"]
        self.pg_bindir = os.environ.get("LEADQ_PG_BINDIR", "")
        self.logs = {n: os.path.join(self.out, n + ".log") for n in (
            "api", "worker", "prometheus", "alertmanager", "redis_exporter",
            "postgres_exporter", "cli", "promtool")}
        for p in self.logs.values():
            open(p, "w").close()
        # Secrets, new on every run.
        self.secrets = {
            "telegram bot token": "%d:AA%s" % (secrets.randbelow(9 * 10**9) + 10**9,
                                               secrets.token_urlsafe(24)[:33]),
            "hubspot token": "pat-na1-%s" % secrets.token_hex(16),
            "chatwoot webhook secret": secrets.token_urlsafe(24),
            "telegram webhook secret": secrets.token_urlsafe(32),
            "db password": os.environ.get("LEADQ_DB_PASSWORD", ""),
            "signing key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "data key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "audit key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "pii index key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "operator token": secrets.token_urlsafe(24),
            "metrics token": secrets.token_urlsafe(32),
        }
        self.secrets["telegram bot token (leadq)"] = self.secrets["telegram bot token"]
        self.files = {}
        for name, content in (("signing-keys", "ops1:" + self.secrets["signing key"]),
                              ("data-keys", "ops1:" + self.secrets["data key"]),
                              ("audit-keys", "ops1:" + self.secrets["audit key"]),
                              ("pii-index-keys", "ops1:" + self.secrets["pii index key"]),
                              ("operator-tokens", "ops:" + self.secrets["operator token"]),
                              ("hubspot-token", self.secrets["hubspot token"]),
                              ("chatwoot-secret", self.secrets["chatwoot webhook secret"]),
                              ("telegram-secret", self.secrets["telegram webhook secret"]),
                              ("alert-bot-token", self.secrets["telegram bot token"]),
                              ("metrics-token", self.secrets["metrics token"])):
            path = os.path.join(self.run_dir, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content + "\n")
            self.files[name] = path
        self.api_key = None
        self.limited_key = None
        self.procs = {}
        self.telegram = None
        self.hubspot = None
        self.monitor = None
        self.traffic = None
        self.rule_names = set()
        self.am_text = ""
        self.rules_root = root

    # -- leadq -----------------------------------------------------------------------------

    def metrics_auth(self):
        """The header /metrics asks for (LEADQ_METRICS_TOKEN_FILE)."""
        return {"Authorization": "Bearer " + self.secrets["metrics token"]}

    def leadq_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LEADQ_") and k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({
            "DATABASE_URL": self.db_url,
            "LEADQ_MIGRATION_DATABASE_URL": self.owner_url,
            "REDIS_URL": self.redis_url,
            "LEADQ_SIGNING_KEYS_FILE": self.files["signing-keys"],
            "LEADQ_DATA_KEYS_FILE": self.files["data-keys"],
            "LEADQ_AUDIT_KEYS_FILE": self.files["audit-keys"],
            "LEADQ_PII_INDEX_KEYS_FILE": self.files["pii-index-keys"],
            "LEADQ_OPERATOR_TOKENS_FILE": self.files["operator-tokens"],
            # /metrics answers only with this token; Prometheus reads it from the same file.
            "LEADQ_METRICS_TOKEN_FILE": self.files["metrics-token"],
            "LEADQ_API_ADDR": "127.0.0.1:%d" % PORTS["api"],
            "LEADQ_WORKER_ADDR": "127.0.0.1:%d" % PORTS["worker"],
            "LEADQ_LOG_FORMAT": "json",
            "LEADQ_ENVIRONMENT": "ops-test",
            "LEADQ_OPERATOR": "ops-test",
            # crm_sync gives up fast, so that a failing HubSpot dead-letters within seconds.
            "LEADQ_CRM_SYNC_MAX_ATTEMPTS": "3",
            "LEADQ_CRM_SYNC_BACKOFF_BASE_MS": "100",
            "LEADQ_CRM_SYNC_BACKOFF_MAX_MS": "300",
            # Fewer lead_score jobs at once than the worker's 10 PostgreSQL connections: a
            # stalled job holds one, and with 16 (the default) a lock on lead_scores starves
            # the pool, /metrics reports PostgreSQL down and LeadqPostgresDown inhibits the
            # backlog alert (see the scores_locked fault).
            "LEADQ_LEAD_SCORE_CONCURRENCY": "4",
            # Leases of 5 s, so that a worker paused past its lease loses it within seconds.
            "LEADQ_LEASE_MS": str(faults.LEASE_MS),
            # The alert bot: leadq's own error alerts (to a chat of their own, so that the
            # fake's one 429 stays Alertmanager's) and the getMe of the security checks.
            "LEADQ_ALERT_TELEGRAM_BOT_TOKEN_FILE": self.files["alert-bot-token"],
            "LEADQ_ALERT_TELEGRAM_API_URL": url("telegram"),
            "LEADQ_ALERT_TELEGRAM_CHAT_ID": str(ERRORS_CHAT_ID),
        })
        env.update(faults.extra_leadq_env(self))
        return env

    def cli(self, *args, stdin=None):
        """Runs `leadq ARGS`; returns stdout (raises on failure, with the log's tail)."""
        with open(self.logs["cli"], "a") as logf:
            logf.write("\n$ leadq %s\n" % " ".join(args))
            res = subprocess.run([self.bin, *args], env=self.leadq_env(), input=stdin,
                                 capture_output=True, text=True, timeout=120)
            logf.write(res.stderr[-4000:])
        if res.returncode != 0:
            tail(self.logs["cli"])
            raise RuntimeError("leadq %s failed (exit %d): %s" % (
                " ".join(args), res.returncode, res.stderr[-1000:]))
        return res.stdout

    def reset_data(self):
        """A fresh database and an empty Redis: every run starts from nothing. The database
        belongs to the migration owner; leadq runs as the runtime role `leadq migrate` grants."""
        m = re.match(r"postgres://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", self.owner_url)
        user, pw, host, port, db = m.groups()
        psql = os.path.join(self.pg_bindir, "psql") if self.pg_bindir else "psql"
        env = dict(os.environ, PGPASSWORD=pw)
        def run(sql, check=True):
            return subprocess.run([psql, "-X", "-q", "-h", host, "-p", port, "-U", user, "-d",
                                   "postgres", "-c", sql], env=env, check=check,
                                  capture_output=not check)
        # As scripts/lib/services.sh's pg_drop_database: plain DROP first (it stops an
        # autovacuum worker in the database itself); FORCE, which PostgreSQL 15 refuses a
        # non-superuser while autovacuum is there, only for sessions left behind.
        for _ in range(3):
            if any(run(sql, check=False).returncode == 0 for sql in (
                    "drop database if exists %s" % db,
                    "drop database if exists %s with (force)" % db)):
                break
            time.sleep(1)
        run("create database %s owner %s" % (db, user))
        rm = re.match(r"redis://([^:/]+):(\d+)", self.redis_url)
        subprocess.run(["redis-cli", "-h", rm.group(1), "-p", rm.group(2), "FLUSHALL"],
                       check=True, capture_output=True)
        log("fresh database %s and empty Redis" % db)

    def start_leadq(self, which):
        p = self.procs.get(which)
        if p is None:
            p = Proc("leadq " + which, [self.bin, which], self.logs[which], env=self.leadq_env())
            self.procs[which] = p
        p.start()
        return p

    def wait_ready(self, which, timeout=60):
        ok = wait_until("leadq %s /readyz" % which, timeout,
                        lambda: http("GET", url(which) + "/readyz", timeout=2)[0] == 200,
                        logs=[self.logs[which]])
        if not ok:
            raise RuntimeError("leadq %s is not ready" % which)

    def create_tenants(self):
        """The tenant the faults use and, when the build has a canary, the canary's tenant
        (its key goes into the api's and worker's environment, so before they start)."""
        created = json.loads(self.cli("tenant", "create", SLUG))
        self.api_key = created["api_key"]
        self.secrets["api key"] = self.api_key
        # A tenant on a tight ingest limit, for the refusal panels.
        self.limited_key = json.loads(self.cli("tenant", "create", "limited"))["api_key"]
        self.secrets["limited api key"] = self.limited_key
        if faults.has_canary(self):
            canary = json.loads(self.cli("tenant", "create", "canary"))
            self.secrets["canary api key"] = canary["api_key"]
            path = os.path.join(self.run_dir, "canary-api-key")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(canary["api_key"] + "\n")
            self.files["canary-api-key"] = path

    def setup_tenant(self):
        self.cli("tenant", "update", SLUG,
                 "--chatwoot-account-id", str(CHATWOOT_ACCOUNT),
                 "--chatwoot-secret-file", self.files["chatwoot-secret"],
                 "--telegram-secret-file", self.files["telegram-secret"],
                 "--crm-base-url", url("hubspot"),
                 "--crm-token-file", self.files["hubspot-token"],
                 # one lead per HubSpot call: every crm_sync run is one request
                 "--crm-batch-size", "1")
        self.cli("tenant", "set-limits", SLUG, "--per-second", "200", "--burst", "400",
                 "--leads-per-day", "1000000")
        self.cli("tenant", "set-limits", "limited", "--per-second", "1", "--burst", "1",
                 "--leads-per-day", "1000")
        self.traffic = Traffic(url("api"), self.api_key, SLUG,
                               self.secrets["chatwoot webhook secret"], CHATWOOT_ACCOUNT)
        log("tenant %s: Chatwoot, Telegram webhook and HubSpot (fake) configured" % SLUG)

    # -- the series every panel needs ------------------------------------------------------

    def warm_up(self):
        t = self.traffic
        for _ in range(3):
            t.lead(hot=True)
        for _ in range(3):
            t.lead(hot=False)
        t.chatwoot("incoming")
        time.sleep(1.0)
        t.chatwoot("outgoing")
        faults.warm_up_extra(self)
        ok = wait_until("the worker's first tenant job series", 60, lambda: self._tenant_series(),
                        logs=[self.logs["worker"]])
        if not ok:
            raise RuntimeError("no leadq_tenant_jobs_total series on the worker")
        log("warm-up: leads, a Chatwoot exchange%s" % (
            ", a successful canary run" if faults.has_canary(self) else ""))

    def _tenant_series(self):
        out = []
        for target in ("worker", "api"):
            status, body = http("GET", url(target) + "/metrics", timeout=3,
                                headers=self.metrics_auth())
            if status != 200:
                continue
            for line in body.decode("utf-8", "replace").splitlines():
                m = re.match(r"^leadq_tenant_jobs_total\{(.*)\}\s+(\S+)", line)
                if m:
                    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
                    labels["job"] = "leadq-" + target
                    labels["instance"] = "127.0.0.1:%d" % PORTS[target]
                    out.append(labels)
        return out

    def backfill(self, data_dir, series):
        """Three weeks of raw leadq_tenant_jobs_total history (a weekly and daily seasonal
        shape) for the series the worker has, so that the per-tenant baselines (offset
        1w/2w/3w, scaled) have data. Dense (10 s) for the last hours where the scaled offsets
        land; every 30 minutes before that. promtool writes the blocks (one per 2 h, about
        25 s) into a folder of their own while the faults run; they are then moved into
        Prometheus's data folder, which picks them up at its next reload (within a minute)."""
        now = int(time.time())
        end = now - 600  # clear of the live data's 5-minute lookback
        start = end - 22 * 86400
        # Every 10 s where the scaled offsets (up to 3w / factor, plus an hour's window) land,
        # every 30 minutes before (promtool writes one block per 2 h and reads the whole file
        # for each, so the file stays small).
        dense_from = end - int(3 * 604800 / self.factor) - 7200
        stamps = list(range(start, dense_from, 1800)) + list(range(dense_from, end, 10))
        import math
        path = os.path.join(self.out, "backfill.om")
        with open(path, "w") as f:
            f.write("# HELP leadq_tenant_jobs Jobs finished per tenant, kind and outcome.\n")
            f.write("# TYPE leadq_tenant_jobs counter\n")
            for labels in series:
                lbl = ",".join('%s="%s"' % (k, v) for k, v in sorted(labels.items()))
                share = 1.0 if labels.get("outcome") == "completed" else 0.02
                value, prev = 0.0, start
                for ts in stamps:
                    hour = (ts % 86400) / 3600.0
                    day = (ts // 86400) % 7
                    rate = 0.5 * share * (1.2 + math.sin((hour - 9) / 24 * 2 * math.pi)) * \
                        (0.4 if day in (2, 3) else 1.0)  # a quiet weekend
                    value += rate * (ts - prev)
                    prev = ts
                    f.write("leadq_tenant_jobs_total{%s} %.3f %d\n" % (lbl, value, ts))
            f.write("# EOF\n")
        blocks = os.path.join(self.out, "backfill-blocks")
        shutil.rmtree(blocks, ignore_errors=True)
        with open(self.logs["promtool"], "a") as logf:
            res = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics",
                                  path, blocks], stdout=logf, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            tail(self.logs["promtool"])
            raise RuntimeError("promtool tsdb create-blocks-from openmetrics failed")
        n = 0
        for name in sorted(os.listdir(blocks)):
            if os.path.isfile(os.path.join(blocks, name, "meta.json")):
                os.rename(os.path.join(blocks, name), os.path.join(data_dir, name))
                n += 1
        log("backfilled 22 days of leadq_tenant_jobs_total (%d series, %d blocks) into %s"
            % (len(series), n, os.path.relpath(data_dir, self.root)))

    def start_backfill(self, data_dir):
        series = self._tenant_series()
        self.backfill_error = None

        def run():
            try:
                self.backfill(data_dir, series)
            except Exception as e:  # reported by wait_backfill
                self.backfill_error = e
        self.backfill_thread = threading.Thread(target=run, name="backfill", daemon=True)
        self.backfill_thread.start()

    def wait_backfill(self):
        """The backfilled history is queryable (Prometheus reloaded the blocks)."""
        self.backfill_thread.join(120)
        if self.backfill_error:
            raise RuntimeError("backfill: %s" % self.backfill_error)
        q = urllib.parse.quote("count(count_over_time(leadq_tenant_jobs_total[1d] offset 1w))")

        def loaded():
            r = get_json(url("prometheus") + "/api/v1/query?query=" + q)
            return r and r["data"]["result"]
        if not wait_until("Prometheus to load the backfilled blocks", 90, loaded,
                          logs=[self.logs["prometheus"]]):
            raise RuntimeError("the backfilled history is not queryable")

    # -- exporters, Prometheus, Alertmanager -----------------------------------------------

    def start_exporters(self):
        rm = re.match(r"redis://([^/]+)", self.redis_url)
        Proc("redis_exporter", ["prometheus-redis-exporter", "-redis.addr",
                                "redis://" + rm.group(1), "-web.listen-address",
                                "127.0.0.1:%d" % PORTS["redis_exporter"]],
             self.logs["redis_exporter"]).start()
        m = re.match(r"postgres://([^:]+):([^@]+)@([^/]+)/(\w+)", self.db_url)
        env = dict(os.environ, DATA_SOURCE_NAME="postgresql://%s:%s@%s/%s?sslmode=disable"
                   % m.groups())
        Proc("postgres_exporter", ["prometheus-postgres-exporter", "--web.listen-address",
                                   "127.0.0.1:%d" % PORTS["postgres_exporter"]],
             self.logs["postgres_exporter"], env=env).start()

    def start_prometheus(self, data_dir, rule_files):
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [
                {"targets": ["127.0.0.1:%d" % PORTS["alertmanager"]]}]}]},
            "scrape_configs": [
                dict({"job_name": job,
                      "static_configs": [{"targets": ["127.0.0.1:%d" % PORTS[p]]}]},
                     **({"scrape_interval": LEADQ_SCRAPE, "scrape_timeout": LEADQ_SCRAPE,
                         "authorization": {"type": "Bearer",
                                           "credentials_file": self.files["metrics-token"]}}
                        if job.startswith("leadq") else {}))
                for job, p in (("leadq-api", "api"), ("leadq-worker", "worker"),
                               ("redis", "redis_exporter"), ("postgres", "postgres_exporter"),
                               ("prometheus", "prometheus"), ("alertmanager", "alertmanager"))],
        }
        path = os.path.join(self.out, "prometheus.yml")
        with open(path, "w") as f:  # JSON is YAML
            json.dump(cfg, f, indent=1)
        with open(self.logs["promtool"], "a") as logf:
            if subprocess.run(["promtool", "check", "config", path], stdout=logf,
                              stderr=subprocess.STDOUT).returncode != 0:
                tail(self.logs["promtool"])
                raise RuntimeError("promtool check config %s failed" % path)
        Proc("prometheus", ["prometheus", "--config.file", path,
                            "--storage.tsdb.path", data_dir,
                            "--storage.tsdb.retention.time", "60d",
                            "--web.listen-address", "127.0.0.1:%d" % PORTS["prometheus"],
                            "--rules.alert.resend-delay", "1s",
                            "--web.enable-admin-api"],
             self.logs["prometheus"]).start()

    def start_alertmanager(self, shipped):
        if shipped:
            path = shipped
            with open(path) as f:
                self.am_text = f.read()
        else:
            path = os.path.join(self.out, "alertmanager.yml")
            self.am_text = faults.alertmanager_config(self, url("telegram"),
                                                      self.secrets["telegram bot token"], CHAT_ID)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the bot token
            with os.fdopen(fd, "w") as f:
                f.write(self.am_text)
        res = subprocess.run(["amtool", "check-config", path], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout, res.stderr)
            raise RuntimeError("amtool check-config %s failed" % path)
        data = os.path.join(self.out, "alertmanager-data")
        shutil.rmtree(data, ignore_errors=True)
        Proc("alertmanager", ["prometheus-alertmanager", "--config.file", path,
                              "--storage.path", data,
                              "--web.listen-address", "127.0.0.1:%d" % PORTS["alertmanager"],
                              "--cluster.listen-address=", "--log.level=debug"],
             self.logs["alertmanager"]).start()

    def wait_observability(self):
        for name, path in (("Prometheus", url("prometheus") + "/-/ready"),
                           ("Alertmanager", url("alertmanager") + "/-/ready")):
            if not wait_until(name + " ready", 60,
                              lambda: http("GET", path, timeout=2)[0] == 200,
                              logs=[self.logs[name.lower()]]):
                raise RuntimeError(name + " did not become ready")

        def targets_up():
            t = get_json(url("prometheus") + "/api/v1/targets")
            if not t:
                return False
            act = t["data"]["activeTargets"]
            return len(act) == 6 and all(a["health"] == "up" for a in act)
        if not wait_until("all 6 scrape targets up", 60, targets_up,
                          logs=[self.logs["prometheus"]]):
            t = get_json(url("prometheus") + "/api/v1/targets") or {}
            for a in t.get("data", {}).get("activeTargets", []):
                log("  target %s %s %s" % (a["labels"].get("job"), a["health"], a["lastError"]))
            raise RuntimeError("scrape targets are not all up")
        r = get_json(url("prometheus") + "/api/v1/rules?type=alert")
        self.durations = {}
        for g in r["data"]["groups"]:
            for rule in g["rules"]:
                self.rule_names.add(rule["name"])
                self.durations[rule["name"]] = float(rule.get("duration") or 0)
        log("Prometheus loaded %d alert rules; every target is up" % len(self.rule_names))

    # -- everything ------------------------------------------------------------------------

    def start(self):
        self.telegram = FakeTelegram(PORTS["telegram"], self.secrets["telegram bot token"],
                                     os.path.join(self.out, "telegram.jsonl"),
                                     throttle_chat=CHAT_ID).start()
        self.hubspot = FakeHubSpot(PORTS["hubspot"], self.secrets["hubspot token"]).start()
        log("fake Telegram Bot API on %s, fake HubSpot on %s" % (url("telegram"), url("hubspot")))
        self.reset_data()
        self.cli("migrate")
        # Operator tokens name registered operators: the test's own (status, security health)
        # and the CLI's (tenant limits).
        self.cli("operator", "add", "ops", "--permissions", "console,dlq,limits,keys,tenants")
        self.cli("operator", "add", "ops-test", "--permissions", "console,dlq,limits,keys,tenants")
        self.create_tenants()
        self.start_leadq("api")
        self.start_leadq("worker")
        self.wait_ready("api")
        self.wait_ready("worker")
        self.setup_tenant()
        self.warm_up()
        data_dir = os.path.join(self.out, "prometheus-data")
        shutil.rmtree(data_dir, ignore_errors=True)
        os.makedirs(data_dir)
        self.start_backfill(data_dir)
        self.rules_root = rules_tree(self.root, self.out)
        scaled, am = rules.override(self.rules_root, os.path.join(self.out, "override"),
                                    self.factor, url("telegram"),
                                    self.secrets["telegram bot token"], CHAT_ID,
                                    url("telegram") + "/deadmansswitch", log=log)
        self.start_exporters()
        self.start_alertmanager(am)
        self.start_prometheus(data_dir, scaled)
        self.wait_observability()
        self.monitor = Monitor(url("prometheus"), url("alertmanager"))
        self.monitor.durations = self.durations
        self.monitor.start()


def rules_tree(root, out):
    """The tree alerts/ and alertmanager/ come from: this checkout, or the git ref in
    LEADQ_OPS_RULES_FROM (extracted into target/ops-test/rules-tree)."""
    ref = os.environ.get("LEADQ_OPS_RULES_FROM")
    if not ref:
        return root
    tree = os.path.join(out, "rules-tree")
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    paths = [p for p in ("alerts", "alertmanager")
             if subprocess.run(["git", "-C", root, "cat-file", "-e", "%s:%s" % (ref, p)],
                               capture_output=True).returncode == 0]
    archive = subprocess.run(["git", "-C", root, "archive", ref, *paths], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    log("alerts/ and alertmanager/ from %s (LEADQ_OPS_RULES_FROM)" % ref)
    return tree


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--factor", type=float,
                    default=float(os.environ.get("LEADQ_OPS_FACTOR", "40")))
    ap.add_argument("--only", action="append", default=[],
                    help="run only this fault (repeatable); see --list")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    ap.add_argument("--no-dashboards", action="store_true",
                    help="skip scripts/check-dashboards-live")
    args = ap.parse_args()
    if args.list:
        for f in faults.FAULTS:
            print("%-20s %s -> %s" % (f.name, f.desc, ", ".join(f.alerts)))
        return 0

    started = time.time()
    st = Stack(args.root, args.factor)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    rc = 1
    try:
        st.start()
        log("stack up in %.0fs" % (time.time() - started))
        rc = faults.run_all(st, args.only, args.no_dashboards)
    except KeyboardInterrupt as e:
        log("interrupted (%s); stopping everything" % (e or "Ctrl-C"))
        rc = 130
    except Exception as e:  # report, then clean up
        log("error: %s" % e)
        import traceback
        traceback.print_exc()
        rc = 1
    finally:
        if st.monitor:
            st.monitor.stop()
        if getattr(st, "backfill_thread", None):
            st.backfill_thread.join(90)  # promtool is a child: let it finish
        Proc.stop_all()
        for fake in (st.telegram, st.hubspot):
            if fake:
                fake.stop()
        log("runtime %.0fs; logs in %s" % (time.time() - started,
                                          os.path.relpath(st.out, args.root)))
    return rc


if __name__ == "__main__":
    sys.exit(main())
