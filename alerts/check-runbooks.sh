#!/usr/bin/env bash
# alerts/check-runbooks.sh: every alert has a runbook, every runbook is complete.
#
# Fails (exit 1, one line per problem) when:
#   * an alert in alerts/*.yml has no runbook_url, or its runbook_url is not
#     https://github.com/leadq/leadq/blob/main/runbooks/<AlertName>.md, or runbooks/<AlertName>.md
#     does not exist;
#   * a runbook (runbooks/*.md except README.md) does not start with "# <AlertName>", lacks one of
#     "## Meaning", "## Impact", "## Diagnosis", "## Mitigation", or belongs to no alert;
#   * runbooks/README.md does not index the alert;
#   * an alert has no promtool case in alerts/tests/*.yml where it fires (exp_labels) and one
#     where it does not (exp_alerts: [] or no exp_alerts).
# Uses only bash, grep, sed and awk. Run from anywhere: bash alerts/check-runbooks.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

URL_PREFIX="https://github.com/leadq/leadq/blob/main/runbooks/"
SECTIONS=("## Meaning" "## Impact" "## Diagnosis" "## Mitigation")
fail=0
problem() {
  echo "FAIL: $*"
  fail=1
}

shopt -s nullglob
rule_files=(alerts/*.yml)
test_files=(alerts/tests/*.yml)
runbook_files=(runbooks/*.md)
shopt -u nullglob

if ((${#rule_files[@]} == 0)); then
  echo "FAIL: no alerts/*.yml"
  exit 1
fi

# "<file> <alert> <runbook_url or ->" for every alerting rule (recording rules are skipped).
pairs="$(awk '
  function flush() { if (alert != "") print FILENAME, alert, (url == "" ? "-" : url); alert = ""; url = "" }
  FNR == 1 { flush() }
  /^[[:space:]]*-[[:space:]]*(alert|record):/ {
    flush()
    if ($0 ~ /alert:/) { line = $0; sub(/^[^:]*alert:[[:space:]]*/, "", line); gsub(/["'\''[:space:]]/, "", line); alert = line }
    next
  }
  /^[[:space:]]*runbook_url:/ {
    line = $0; sub(/^[[:space:]]*runbook_url:[[:space:]]*/, "", line); gsub(/["'\''[:space:]]/, "", line); url = line
  }
  END { flush() }
' "${rule_files[@]}")"

alerts=()
while read -r file alert url; do
  [[ -z "${alert:-}" ]] && continue
  alerts+=("$alert")
  if [[ "$url" == "-" ]]; then
    problem "$file: alert $alert has no runbook_url"
  elif [[ "$url" != "${URL_PREFIX}${alert}.md" ]]; then
    problem "$file: alert $alert has runbook_url $url, expected ${URL_PREFIX}${alert}.md"
  fi
  if [[ ! -f "runbooks/$alert.md" ]]; then
    problem "$file: alert $alert has no runbooks/$alert.md"
  fi
  if [[ -f runbooks/README.md ]] && ! grep -q "\[$alert\]($alert\.md)" runbooks/README.md; then
    problem "runbooks/README.md does not index $alert"
  fi
done <<<"$pairs"

dupes="$(printf '%s\n' "${alerts[@]}" | sort | uniq -d)"
[[ -n "$dupes" ]] && problem "alert names defined more than once: $(echo "$dupes" | tr '\n' ' ')"

for f in "${runbook_files[@]}"; do
  name="$(basename "$f" .md)"
  [[ "$name" == "README" ]] && continue
  first="$(sed -n '1p' "$f")"
  [[ "$first" == "# $name" ]] || problem "$f: first line is '$first', expected '# $name'"
  for s in "${SECTIONS[@]}"; do
    grep -qx "$s" "$f" || problem "$f: missing section '$s'"
  done
  # A here-string, not a pipe: with pipefail, `printf | grep -q` fails at random when grep
  # exits before printf has written everything (SIGPIPE).
  grep -qxF -- "$name" <<<"$(printf '%s\n' "${alerts[@]}")" || problem "$f: no alert named $name in alerts/*.yml"
done

# Test coverage: "<alert> fire" / "<alert> nofire" for every alert_rule_test case.
coverage=""
if ((${#test_files[@]})); then
  coverage="$(awk '
    function done_case() {
      if (cur != "") { if (fired) print cur, "fire"; else print cur, "nofire" }
      cur = ""; fired = 0
    }
    FNR == 1 { done_case() }
    /^[[:space:]]*-[[:space:]]*(eval_time|alertname|expr|name|interval):/ { done_case() }
    /^[[:space:]]*-?[[:space:]]*alertname:/ {
      line = $0; sub(/^[^:]*alertname:[[:space:]]*/, "", line); gsub(/["'\''[:space:]]/, "", line); cur = line
    }
    /^[[:space:]]*-[[:space:]]*exp_labels:/ { if (cur != "") fired = 1 }
    END { done_case() }
  ' "${test_files[@]}" | sort -u)"
fi
for a in "${alerts[@]}"; do
  grep -qx "$a fire" <<<"$coverage" || problem "alerts/tests: no case where $a fires (exp_labels)"
  grep -qx "$a nofire" <<<"$coverage" || problem "alerts/tests: no case where $a does not fire"
done

if ((fail)); then
  echo "check-runbooks: FAILED"
  exit 1
fi
echo "check-runbooks: ok: ${#alerts[@]} alerts, each with a runbook (4 sections), an index entry, and fire/no-fire tests"
