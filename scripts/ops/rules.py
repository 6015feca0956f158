"""The test override of the shipped alert rules: every `for:`, range window and offset divided
by a factor, so that scripts/ops-test sees in seconds what production sees in minutes.

`override_rules(sources, out_dir, factor)` is the one entry point the driver uses. When the
shared transform `alerts/test-override.py` (the alerting work's documented override) is in the
tree, it is used; otherwise the minimal transform below does the same thing on the text of the
files (no YAML library in the standard library, and a text transform keeps every other byte):

  for: 15m             -> for: 15s          (factor 60; at least 1 s)
  rate(x[10m])         -> rate(x[10s])      (at least MIN_RANGE_S, so that a window still holds
                                             a few 1 s scrapes)
  x offset 1w          -> x offset 10080s   (at least 1 s)

Thresholds that are durations in disguise (`time() - heartbeat > 30`) are not windows and
stay as they are. The shipped files are never edited: the results go to out_dir.
"""

import os
import re
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


def override_rules(root, sources, out_dir, factor, log=print):
    """Writes the scaled copies of `sources` into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    shared = _shared_override(root)
    outs = []
    for src in sources:
        out = os.path.join(out_dir, os.path.basename(src))
        if shared:
            cmd = [sys.executable, shared, "--factor", str(factor), src]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), res.returncode,
                                                          res.stderr[-2000:]))
            text = res.stdout
        else:
            with open(src) as f:
                text = scale_text(f.read(), factor)
        with open(out, "w") as f:
            f.write("# Scaled by scripts/ops (factor %s) from %s; do not edit.\n"
                    % (factor, os.path.relpath(src, root)) + text)
        outs.append(out)
    log("rules: %d file(s) scaled by %s with %s" % (
        len(outs), factor, os.path.relpath(shared, root) if shared else "scripts/ops/rules.py"))
    return outs
