"""Watches alert state through Prometheus's /api/v1/alerts and Alertmanager's /api/v2/alerts.

A background thread polls both every POLL seconds and keeps, per alert name, the aggregate
state (Prometheus: firing if any instance fires, else pending, else none; Alertmanager:
active if any instance is active, else suppressed, else none) and a timeline of changes with
their times, so that each fault can ask "when did X first fire after t0" and "when was it
gone again".
"""

import calendar
import re
import threading
import time

from stack import get_json

POLL = 0.5


def _prom_state(alerts):
    out = {}
    for a in alerts:
        name = a.get("labels", {}).get("alertname")
        st = a.get("state")
        if st == "firing" or out.get(name) is None:
            out[name] = st
    return out


def _am_state(alerts):
    out, inhibited = {}, {}
    for a in alerts:
        name = a.get("labels", {}).get("alertname")
        status = a.get("status", {})
        st = status.get("state")
        if st == "active" or out.get(name) is None:
            out[name] = st
        if status.get("inhibitedBy"):
            inhibited[name] = list(status["inhibitedBy"])
    return out, inhibited


class Monitor:
    def __init__(self, prom_url, am_url):
        self.prom_url, self.am_url = prom_url, am_url
        self.lock = threading.Lock()
        self.prom = {}        # name -> state now
        self.am = {}          # name -> state now
        self.events = []      # (t, "prom"|"am", name, state or None)
        self.inhibit_log = []     # (t, name, inhibiting fingerprints) at every poll
        self.fingerprints = {}    # AM fingerprint -> alertname (for inhibitedBy)
        self.prom_alerts = []     # Prometheus's alerts now (labels, state)
        self.label_log = []       # (t, labels) of every Prometheus alert seen firing
        self.durations = {}       # alert name -> its rule's `for:` in seconds
        self.fired_log = []       # (activeAt + for, name): when each instance started firing
        self.ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL)

    def poll(self):
        now = time.time()
        p = get_json(self.prom_url + "/api/v1/alerts", timeout=2)
        a = get_json(self.am_url + "/api/v2/alerts", timeout=2)
        with self.lock:
            if p is not None and p.get("status") == "success":
                new = _prom_state(p["data"]["alerts"])
                self._diff(now, "prom", self.prom, new)
                self.prom = new
                self.prom_alerts = p["data"]["alerts"]
                for al in self.prom_alerts:
                    if al.get("state") == "firing":
                        self.label_log.append((now, al["labels"]))
                        name = al["labels"].get("alertname")
                        at = _epoch(al.get("activeAt"))
                        if at is not None:
                            self.fired_log.append((at + self.durations.get(name, 0), name))
                del self.label_log[:-20000]
            if isinstance(a, list):
                new, inh = _am_state(a)
                for al in a:
                    self.fingerprints[al.get("fingerprint")] = al["labels"].get("alertname")
                self._diff(now, "am", self.am, new)
                self.am = new
                for name in inh:
                    self.inhibit_log.append((now, name, tuple(inh[name])))
                del self.inhibit_log[:-20000]
            self.ok = p is not None and a is not None

    def _diff(self, now, src, old, new):
        for name in set(old) | set(new):
            if old.get(name) != new.get(name):
                self.events.append((now, src, name, new.get(name)))

    # -- queries ---------------------------------------------------------------------------

    def first(self, src, name, state, since):
        """Time of the first change of `name` to `state` at or after `since` (or None)."""
        with self.lock:
            for t, s, n, st in self.events:
                if t >= since and s == src and n == name and st == state:
                    return t
            # Already in that state when `since` began?
            cur = self.prom if src == "prom" else self.am
            if cur.get(name) == state and not any(
                    t >= since and s == src and n == name for t, s, n, _ in self.events):
                return since
        return None

    def state(self, src, name):
        with self.lock:
            return (self.prom if src == "prom" else self.am).get(name)

    def firing(self):
        with self.lock:
            return {n for n, s in self.prom.items() if s == "firing"}

    def active(self):
        """Names Prometheus has pending or firing."""
        with self.lock:
            return dict(self.prom)

    def fired_at(self, name, since, polled):
        """When `name` started firing, from Prometheus's activeAt plus the rule's `for:` (exact
        to an evaluation, where polling is exact to a poll), for an instance that started
        firing after `since`; `polled` when none is known."""
        with self.lock:
            times = [t for t, n in self.fired_log if n == name and since - 1 <= t <= polled + 1]
        return min(times + [polled])

    def labels(self, name):
        """Label sets of `name`'s instances in Prometheus now."""
        with self.lock:
            return [a["labels"] for a in self.prom_alerts
                    if a["labels"].get("alertname") == name]

    def labels_seen(self, name, since):
        """Label sets of `name`'s instances seen firing since `since`."""
        with self.lock:
            return [lb for t, lb in self.label_log if t >= since and lb.get("alertname") == name]

    def inhibitions_since(self, since):
        """Each alert Alertmanager showed inhibited at any poll since `since`, with the names
        of the alerts that inhibited it: a check that looks only now and then would miss an
        inhibition that began and ended between two of its looks."""
        out = {}
        with self.lock:
            for t, name, fps in self.inhibit_log:
                if t >= since:
                    out.setdefault(name, set()).update(self.fingerprints.get(f, f) for f in fps)
        return {name: sorted(by) for name, by in out.items()}


def _epoch(text):
    """Seconds since the epoch of an RFC 3339 time such as 2026-12-04T21:53:14.904648123Z."""
    if not text:
        return None
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    t = calendar.timegm((y, mo, d, h, mi, sec)) + float(m.group(7) or 0)
    tz = m.group(8)
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        t -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return t
