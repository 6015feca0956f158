"""The processes scripts/ops-test runs, and the HTTP helpers it talks to them with.

Every child is started in its own session, recorded (pid) in .run/ops/pids so that the bash
wrapper's EXIT trap can stop it by id even if this driver dies, and stopped (SIGTERM, then
SIGKILL) when the driver ends.
"""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request


_T0 = time.time()


def log(msg):
    print("[ops %5.1fs] %s" % (time.time() - _T0, msg), flush=True)


def tail(path, lines=40):
    """Prints the last lines of a log file, indented."""
    try:
        with open(path, "rb") as f:
            data = f.read()[-64000:].decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        print("    (no log at %s)" % path, flush=True)
        return
    print("    last %d lines of %s:" % (len(data), path), flush=True)
    for line in data:
        print("    | " + line[:300], flush=True)


class Proc:
    """One child process with its log file."""

    registry = []
    pidfile = None

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env, self.cwd = env, cwd
        self.p = None
        Proc.registry.append(self)

    def start(self):
        f = open(self.log_path, "ab")
        f.write(("\n==== %s start %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.argv)))
                .encode())
        f.flush()
        self.p = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                  start_new_session=True)
        f.close()
        Proc._write_pids()
        log("started %s (pid %d), log %s" % (self.name, self.p.pid, self.log_path))
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, timeout=15):
        if not self.alive():
            return
        try:
            os.kill(self.p.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            os.kill(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            log("%s ignored SIGTERM for %ss; SIGKILL" % (self.name, timeout))
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait(5)
        except ProcessLookupError:
            pass
        Proc._write_pids()

    def kill(self):
        """SIGKILL, as a fault."""
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait(5)
        Proc._write_pids()

    @classmethod
    def _write_pids(cls):
        if not cls.pidfile:
            return
        with open(cls.pidfile + ".tmp", "w") as f:
            for p in cls.registry:
                if p.alive():
                    f.write("%d %s\n" % (p.p.pid, p.name))
        os.replace(cls.pidfile + ".tmp", cls.pidfile)

    @classmethod
    def stop_all(cls):
        for p in reversed(cls.registry):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (p.name, e))
        cls._write_pids()


def http(method, url, body=None, headers=None, timeout=5):
    """(status, body bytes); status 0 when nothing answered."""
    data = body
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def get_json(url, timeout=5):
    status, body = http("GET", url, timeout=timeout)
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def wait_until(desc, timeout, check, logs=(), interval=0.5):
    """Polls check() until it returns a truthy value; on timeout prints desc and log tails."""
    deadline = time.time() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.time() >= deadline:
            log("timed out after %ss waiting for %s" % (timeout, desc))
            for path in logs:
                tail(path)
            return None
        time.sleep(interval)
