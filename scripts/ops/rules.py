"""The test override of the shipped alert rules: every `for:`, range window and offset divided
by a factor, so that scripts/ops-test sees in seconds what production sees in minutes.

`override(...)` is the one entry point the driver uses. When the shared transform
`alerts/test-override.py` (the documented test override of the alerting work) is in the tree,
it renders both the rules and alertmanager/alertmanager.yml; otherwise the minimal transform
below scales the rules on the text of the files (no YAML library in the standard library, and
a text transform keeps every other byte):

  for: 15m             -> for: 15s          (factor 60; at least 1 s)
  rate(x[10m])         -> rate(x[10s])      (at least MIN_RANGE_S, so that a window still holds
                                             a few 1 s scrapes)
  x offset 1w          -> x offset 10080s   (at least 1 s)

Thresholds that are durations in disguise (`time() - heartbeat > 30`) are not windows and
stay as they are. The shipped files are never edited: the results go to out_dir.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

MIN_RANGE_S = 4

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DUR = r"(?:\d+(?:ms|s|m|h|d|w|y))+"


def parse_duration(text):
    """Seconds in a Prometheus duration such as 1h30m."""
    total = 0.0
    for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text):
        total += int(n) * _UNITS[unit]
    return total


def _fmt(seconds):
    return "%ds" % max(1, int(round(seconds)))


def scale_text(text, factor, min_range=MIN_RANGE_S):
    """The minimal transform on one rule file's text."""

    def for_(m):
        return m.group(1) + _fmt(parse_duration(m.group(2)) / factor)

    def range_(m):
        rng = _fmt(max(min_range, parse_duration(m.group(1)) / factor))
        if m.group(2) is None:
            return "[" + rng + "]"
        step = m.group(3)
        step = ":" + (_fmt(parse_duration(step) / factor) if step else "")
        return "[" + rng + step + "]"

    def offset(m):
        return m.group(1) + _fmt(parse_duration(m.group(2)) / factor)

    text = re.sub(r"(?m)^(\s*(?:for|keep_firing_for):\s*)(" + _DUR + r")\s*$", for_, text)
    text = re.sub(r"\[\s*(" + _DUR + r")\s*(:\s*(" + _DUR + r")?\s*)?\]", range_, text)
    text = re.sub(r"(\boffset\s+)(" + _DUR + r")", offset, text)
    return text


def _shared_override(root):
    path = os.path.join(root, "alerts", "test-override.py")
    return path if os.path.isfile(path) else None


def override(root, out_dir, factor, api_url, bot_token, chat_id, watchdog_url, log=print):
    """The scaled rules of root/alerts/*.yml, and Alertmanager's configuration when the tree
    ships one (root/alertmanager/alertmanager.yml), rendered for the fake Telegram.

    Returns (rule files, Alertmanager config path or None). With alerts/test-override.py in
    the tree, that shared transform does both; otherwise the minimal transform above scales the
    rules and the caller writes its own Alertmanager configuration."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    shared = _shared_override(root)
    sources = sorted(glob.glob(os.path.join(root, "alerts", "*.yml")))
    am_src = os.path.join(root, "alertmanager", "alertmanager.yml")
    if shared:
        cmd = [sys.executable, shared, "--out", out_dir, "--factor", "%g" % factor,
               "--rules", os.path.join(root, "alerts")]
        if os.path.isfile(am_src):
            cmd += ["--alertmanager", am_src, "--api-url", api_url, "--bot-token", bot_token,
                    "--chat-id", str(chat_id), "--watchdog-url", watchdog_url]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (os.path.relpath(shared, root),
                                                      res.returncode, res.stderr[-2000:]))
        rules = sorted(glob.glob(os.path.join(out_dir, "rules", "*.yml")))
        am = os.path.join(out_dir, "alertmanager", "alertmanager.yml")
        am = am if os.path.isfile(am) else None
        if am:
            os.chmod(am, 0o600)  # it holds the bot token
    else:
        os.makedirs(os.path.join(out_dir, "rules"))
        rules = []
        for src in sources:
            out = os.path.join(out_dir, "rules", os.path.basename(src))
            with open(src) as f:
                text = scale_text(f.read(), factor)
            with open(out, "w") as f:
                f.write(text)
            rules.append(out)
        am = None
    log("rules: %d file(s) on a clock %g times faster (%s)%s" % (
        len(rules), factor,
        os.path.relpath(shared, root) if shared else "scripts/ops/rules.py, until "
        "alerts/test-override.py is in the tree",
        "; Alertmanager config from alertmanager/alertmanager.yml" if am else ""))
    return rules, am


def inhibit_targets(am_text, sources):
    """Alert names (as one regex) that Alertmanager's config inhibits while any of `sources`
    fires: the target alertname matchers of every inhibit rule whose source matcher names one
    of them. Reads the shipped YAML (line-based) or this driver's JSON."""
    targets = []
    try:
        cfg = json.loads(am_text)
        blocks = [(" ".join(r.get("source_matchers", [])), " ".join(r.get("target_matchers", [])))
                  for r in cfg.get("inhibit_rules", [])]
    except ValueError:
        blocks = []
        for part in re.split(r"(?m)^\s*-\s+source_matchers:", am_text.split("inhibit_rules:", 1)[-1]
                             .split("\nreceivers:", 1)[0])[1:]:
            src, _, tgt = part.partition("target_matchers:")
            blocks.append((src, tgt.split("equal:")[0]))
    for src, tgt in blocks:
        names = re.findall(r'alertname\s*=~?\s*"([^"]+)"', src)
        if not any(re.fullmatch(n, s) for n in names for s in sources):
            continue
        targets += re.findall(r'alertname\s*=~?\s*"([^"]+)"', tgt)
    return "|".join("(?:%s)" % t for t in targets) if targets else None
