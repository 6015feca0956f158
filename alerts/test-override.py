#!/usr/bin/env python3
"""alerts/test-override.py: the shipped alert rules and Alertmanager config, on a faster clock.

The live alerting test injects faults (stops the worker, PostgreSQL, ...) and expects the
shipped alerts to fire and reach a fake Telegram Bot API within minutes, not hours. It must run
the SHIPPED rules, not a copy someone edits by hand, so this script derives the fast copy from
alerts/*.yml and alertmanager/alertmanager.yml every time; it never writes to either.

What it changes (nothing else, byte for byte):

  alerts/*.yml -> OUT/rules/*.yml, every duration literal divided by --factor (default 60):
    * the value of `for:` (5m -> 5s) and of a group's `interval:`;
    * range and subquery selectors inside `expr:` ([5m] -> [5s], [1w:1h] -> [168m:1m]);
    * the duration after `offset` inside `expr:` (offset 1w -> offset 168m);
    * a number followed by the marker comment `# test-override: seconds` inside `expr:` (a
      threshold in seconds such as the canary's 600 s staleness; PromQL ignores the comment).
    Results are rounded UP to whole seconds, at least 1s (0 stays 0), and written in the
    largest unit that divides them evenly (60s -> 1m, 10080s -> 168m).
    Not changed: plain numeric thresholds without the marker (e.g. heartbeat ages), the
    wall-clock hours of alerts/peak-hours.yml (unless --always-peak: then
    leadq:peak_hours:bool is vector(1), so the anomaly alert can fire at any hour), and
    annotations.

  alertmanager/alertmanager.yml -> OUT/alertmanager/alertmanager.yml (templates copied beside it):
    * group_wait, group_interval, repeat_interval divided by --factor, rounded the same way;
    * the bot_token placeholder, the chat_id placeholder and (if --watchdog-url is given) the
      dead man's switch URL replaced by the arguments;
    * `api_url:` added to every telegram_configs entry, so messages go to the fake Bot API
      (Alertmanager posts to <api_url>/bot<token>/sendMessage).

Usage (python3 standard library only; no PyYAML, the transform is line-based):

  python3 alerts/test-override.py --out /tmp/alerts-fast \\
      [--factor 60] \\
      [--api-url http://127.0.0.1:18081 --bot-token 123456:TEST --chat-id -100123] \\
      [--watchdog-url http://127.0.0.1:18081/deadmansswitch] [--always-peak]

Without --api-url only the rules are written. Then, e.g.:

  promtool check rules /tmp/alerts-fast/rules/*.yml
  amtool check-config /tmp/alerts-fast/alertmanager/alertmanager.yml

With factor 60 the shortest range in the rules is [5m] -> [5s]: scrape the targets and evaluate
the rules every 1s, or rate() sees fewer than two samples and nothing fires. The canary must run
more often than its scaled staleness threshold (600 s -> 10 s). See alerts/README.md.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
# A Prometheus duration: one or more <number><unit>, e.g. 5m, 1h30m, 1w.
DUR = r"(?:\d+(?:ms|[smhdwy]))+"
DUR_PART = re.compile(r"(\d+)(ms|[smhdwy])")
SECONDS_MARKER = "# test-override: seconds"


def parse_ms(text: str) -> int:
    total, pos = 0, 0
    for m in DUR_PART.finditer(text):
        if m.start() != pos:
            raise ValueError(f"not a duration: {text!r}")
        total += int(m.group(1)) * UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return total


def fmt_seconds(seconds: int) -> str:
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def scale_seconds(seconds: float, factor: float) -> int:
    """Divides, rounds up to whole seconds, at least 1 (0 stays 0)."""
    if seconds == 0:
        return 0
    return max(1, math.ceil(seconds / factor - 1e-9))


def scale_duration(text: str, factor: float) -> str:
    return fmt_seconds(scale_seconds(parse_ms(text) / 1000, factor))


RANGE = re.compile(r"\[(" + DUR + r")(?::(" + DUR + r")?)?\]")
OFFSET = re.compile(r"(\boffset\s+-?)(" + DUR + r")\b")
MARKED_NUMBER = re.compile(r"(\d+(?:\.\d+)?)(\s*)" + re.escape(SECONDS_MARKER))


def scale_expr_line(line: str, factor: float) -> str:
    def rng(m: re.Match) -> str:
        out = "[" + scale_duration(m.group(1), factor)
        if ":" in m.group(0):
            out += ":" + (scale_duration(m.group(2), factor) if m.group(2) else "")
        return out + "]"

    def num(m: re.Match) -> str:
        value = scale_seconds(float(m.group(1)), factor)
        return f"{value}{m.group(2)}{SECONDS_MARKER}"

    line = RANGE.sub(rng, line)
    line = OFFSET.sub(lambda m: m.group(1) + scale_duration(m.group(2), factor), line)
    return MARKED_NUMBER.sub(num, line)


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# `key: value` where value is a duration, optionally quoted, optionally followed by a comment.
def duration_value(keys: str) -> re.Pattern:
    return re.compile(r"^(\s*(?:-\s+)?(?:" + keys + r"):\s*)(['\"]?)(" + DUR + r")\2(\s*(?:#.*)?)$")


RULE_DURATION_KEYS = duration_value("for|interval")
EXPR_KEY = re.compile(r"^(\s*(?:-\s+)?)expr:(.*)$")


PEAK_RULE = re.compile(r"^(\s*-\s+record:\s*leadq:peak_hours:bool\s*\n\s*expr:\s*).*$", re.M)


def always_peak(text: str) -> str:
    return PEAK_RULE.sub(lambda m: m.group(1) + "vector(1)", text)


def transform_rules(text: str, factor: float) -> str:
    out = []
    expr_indent = None  # indentation of the current `expr:` key while inside its value
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        if expr_indent is not None:
            if body.strip() == "" or indent_of(body) > expr_indent:
                out.append(scale_expr_line(body, factor) + line[len(body):])
                continue
            expr_indent = None
        m = EXPR_KEY.match(body)
        if m:
            expr_indent = len(m.group(1))
            out.append(m.group(1) + "expr:" + scale_expr_line(m.group(2), factor) + line[len(body):])
            continue
        m = RULE_DURATION_KEYS.match(body)
        if m:
            body = m.group(1) + m.group(2) + scale_duration(m.group(3), factor) + m.group(2) + m.group(4)
        out.append(body + line[len(line.rstrip("\n")):])
    return "".join(out)


AM_DURATION_KEYS = duration_value("group_wait|group_interval|repeat_interval")
BOT_TOKEN = re.compile(r"^(\s*(?:-\s+)?)bot_token:\s*TELEGRAM_BOT_TOKEN_PLACEHOLDER\s*$")
CHAT_ID = re.compile(r"^(\s*(?:-\s+)?)chat_id:\s*-1000000000000\s*$")
WATCHDOG_URL = "http://deadmansswitch.invalid/ping/leadq"


def yaml_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def transform_alertmanager(text: str, factor: float, api_url: str, bot_token: str, chat_id: int,
                           watchdog_url: str | None) -> str:
    out, tokens = [], 0
    for line in text.splitlines():
        m = AM_DURATION_KEYS.match(line)
        if m:
            line = m.group(1) + m.group(2) + scale_duration(m.group(3), factor) + m.group(2) + m.group(4)
        m = BOT_TOKEN.match(line)
        if m:
            tokens += 1
            out.append(m.group(1) + "bot_token: " + yaml_quote(bot_token))
            # api_url lines up with bot_token's key (after a possible "- ").
            out.append(" " * len(m.group(1)) + "api_url: " + yaml_quote(api_url))
            continue
        m = CHAT_ID.match(line)
        if m:
            line = m.group(1) + f"chat_id: {chat_id}"
        if watchdog_url and WATCHDOG_URL in line:
            line = line.replace(WATCHDOG_URL, watchdog_url)
        out.append(line)
    if tokens == 0:
        sys.exit("test-override: no `bot_token: TELEGRAM_BOT_TOKEN_PLACEHOLDER` line in the Alertmanager config")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (rules/ and alertmanager/ are written inside)")
    p.add_argument("--factor", type=float, default=60, help="divide every duration by this (default 60)")
    p.add_argument("--rules", type=Path, default=ROOT / "alerts", help="folder of the shipped *.yml rules")
    p.add_argument("--alertmanager", type=Path, default=ROOT / "alertmanager" / "alertmanager.yml")
    p.add_argument("--api-url", help="Telegram Bot API base URL to send to (the fake one)")
    p.add_argument("--bot-token", default="123456:TEST", help="bot token the fake API expects")
    p.add_argument("--chat-id", type=int, default=-100123, help="chat id (an integer)")
    p.add_argument("--watchdog-url", help="URL for the LeadqWatchdog dead man's switch receiver")
    p.add_argument("--always-peak", action="store_true", help="make leadq:peak_hours:bool always 1")
    args = p.parse_args()
    if args.factor < 1:
        p.error("--factor must be at least 1")

    rules_out = args.out / "rules"
    rules_out.mkdir(parents=True, exist_ok=True)
    files = sorted(args.rules.glob("*.yml"))
    if not files:
        p.error(f"no *.yml in {args.rules}")
    for f in files:
        text = transform_rules(f.read_text(), args.factor)
        if args.always_peak:
            text = always_peak(text)
        (rules_out / f.name).write_text(text)
    print(f"test-override: {len(files)} rule file(s) -> {rules_out} (durations / {args.factor:g})")

    if args.api_url:
        am_out = args.out / "alertmanager"
        am_out.mkdir(parents=True, exist_ok=True)
        text = transform_alertmanager(args.alertmanager.read_text(), args.factor, args.api_url,
                                      args.bot_token, args.chat_id, args.watchdog_url)
        (am_out / "alertmanager.yml").write_text(text)
        templates = args.alertmanager.parent / "templates"
        if templates.is_dir():
            shutil.copytree(templates, am_out / "templates", dirs_exist_ok=True)
        print(f"test-override: Alertmanager config -> {am_out / 'alertmanager.yml'} (api_url {args.api_url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
