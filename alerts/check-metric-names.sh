#!/usr/bin/env bash
# alerts/check-metric-names.sh: alerts, dashboards and runbooks use only metrics and labels that
# exist.
#
# Every leadq_* name in alerts/*.yml, dashboards/*.json, runbooks/*.md and docs/observability.md
# must be a constant of platform/src/metrics.rs (histograms also as _bucket/_sum/_count). Every
# redis_* name must be one redis_exporter exports (the list pinned below, from the section
# "redis_exporter" of docs/contracts/observability.md). Label names in selectors, by/on/without/ignoring
# clauses, {{ $labels.x }} templates and Grafana {{x}} legends must be leadq's label names
# (metrics.rs `mod label`) or job/instance/le (or redis_exporter's db/cmd/role). Values
# given to outcome= and state= must be constants of metrics.rs; values given to kind= must be a job
# kind of jobs/src/kinds.rs or a security-event kind. Recording-rule names (level:metric:operations,
# e.g. slo:leadq_ingest_errors:ratio_rate5m) must be defined by a `record:` in alerts/*.yml.
# Uses only bash, grep, sed and awk. Run from anywhere: bash alerts/check-metric-names.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
METRICS=platform/src/metrics.rs
KINDS=jobs/src/kinds.rs

REDIS_METRICS="redis_up redis_instance_info redis_uptime_in_seconds redis_start_time_seconds
redis_connected_clients redis_blocked_clients redis_max_clients redis_config_maxclients
redis_memory_used_bytes redis_memory_used_rss_bytes redis_memory_max_bytes
redis_mem_fragmentation_ratio redis_total_system_memory_bytes redis_rejected_connections_total
redis_evicted_keys_total redis_expired_keys_total redis_keyspace_hits_total
redis_keyspace_misses_total redis_commands_processed_total redis_commands_total
redis_commands_duration_seconds_total redis_db_keys redis_db_keys_expiring redis_connected_slaves
redis_connected_slave_lag_seconds redis_master_link_up redis_rdb_last_save_timestamp_seconds
redis_exporter_last_scrape_error redis_exporter_scrape_duration_seconds redis_key_size
redis_key_value redis_stream_length redis_stream_group_lag redis_stream_group_messages_pending
redis_stream_group_consumer_idle_seconds"
# Labels that are not leadq's own: Prometheus target labels, histogram buckets, redis_exporter's.
EXTRA_LABELS="job instance le db cmd role"

fail=0
problem() {
  echo "FAIL: $*"
  fail=1
}

shopt -s nullglob
files=(alerts/*.yml dashboards/*.json runbooks/*.md docs/observability.md)
shopt -u nullglob
((${#files[@]})) || { echo "check-metric-names: nothing to check"; exit 0; }

# Known names. A constant documented as "Histogram:" also exists as _bucket, _sum and _count.
known="$(awk '
  /^\/\/\/ Histogram:/ { hist = 1; next }
  /^pub const [A-Z_]+: &str =$/ { split_const = 1; next } # rustfmt put the name on the next line
  /^pub const [A-Z_]+: &str = "leadq_/ || (split_const && /^[[:space:]]+"leadq_/) {
    split_const = 0
    name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name)
    print name
    if (hist) { print name "_bucket"; print name "_sum"; print name "_count" }
    hist = 0; next
  }
  /^\/\/\// { next }
  { hist = 0; split_const = 0 }
' "$METRICS")"
known="$known"$'\n'"$(tr -s ' \n' '\n' <<<"$REDIS_METRICS")"

labels="$(awk '
  /^pub mod label/ { inmod = 1; next }
  inmod && /^}/ { inmod = 0 }
  inmod && /pub const [A-Z_]+: &str = "/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v }
' "$METRICS")"
labels="$labels"$'\n'"$(tr -s ' \n' '\n' <<<"$EXTRA_LABELS")"

values_of() { # constants of `pub mod <name>` in metrics.rs
  awk -v mod="$1" '
    $0 ~ "^pub mod " mod " " { inmod = 1; next }
    inmod && /^}/ { inmod = 0 }
    inmod && /pub const [A-Z_]+: &str = "/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v }
  ' "$METRICS"
}
outcomes="$(values_of outcome; values_of webhook_outcome)"
states="$(values_of state)"
kinds="$(grep -E '^pub const [A-Z_]+: &str = "' "$KINDS" | sed -E 's/^[^"]*"([^"]*)".*/\1/')"$'\n'"bad_signature"$'\n'"unauthorized"
# Recording rules (names with a colon): those defined by `record:` in alerts/*.yml.
recorded="$(sed -nE 's/^[[:space:]]*-?[[:space:]]*record:[[:space:]]*["'\'']?([a-zA-Z_:][a-zA-Z0-9_:]*).*/\1/p' alerts/*.yml 2>/dev/null || true)"

for f in "${files[@]}"; do
  # Metric names. YAML comments count too: they must not name metrics that do not exist.
  # (redis_exporter alone is the exporter's name, not a metric.)
  # A name with colons is a recording rule (tenant:leadq_tenant_jobs:rate1h): it must be recorded.
  for m in $(grep -oE '([a-z_]+:)*\b(leadq|redis)_[a-z0-9_]+(:[a-z0-9_]+)*' "$f" | { grep -vx 'redis_exporter' || true; } | sort -u); do
    if [[ "$m" == *:* ]]; then
      grep -qxF "$m" <<<"$recorded" || problem "$f: recording rule $m is not defined by a record: in alerts/*.yml"
    else
      grep -qx "$m" <<<"$known" || problem "$f: unknown metric $m"
    fi
  done

  # Label names: selectors, grouping and matching clauses, alert templates, Grafana legends.
  # JSON escapes quotes as \", so drop backslashes first.
  text="$(sed 's/\\"/"/g' "$f")"
  used_labels="$(
    {
      grep -oE '\b(leadq|redis)_[a-z0-9_:]+\{[^}]*\}' <<<"$text" | sed -E 's/^[^{]*\{//; s/\}$//' |
        grep -oE '[a-z_]+[[:space:]]*(=~|!~|!=|=)' | sed -E 's/[[:space:]]*(=~|!~|!=|=)$//' || true
      grep -oE '\b(by|on|without|ignoring|group_left|group_right)[[:space:]]*\([^)]*\)' <<<"$text" |
        sed -E 's/^[a-z_]+[[:space:]]*\(//; s/\)$//' | tr ',' '\n' | sed -E 's/[[:space:]]//g' || true
      # shellcheck disable=SC2016 # a literal $labels, not an expansion
      grep -oE '\$labels\.[a-z_]+' <<<"$text" | sed 's/^\$labels\.//' || true
      if [[ "$f" == *.json ]]; then
        grep -oE '"legendFormat":[[:space:]]*"[^"]*"' <<<"$text" | grep -oE '\{\{[[:space:]]*[a-z_]+[[:space:]]*\}\}' |
          sed -E 's/[{}[:space:]]//g' || true
      fi
    } | { grep -v '^$' || true; } | sort -u
  )"
  for l in $used_labels; do
    grep -qx "$l" <<<"$labels" || problem "$f: unknown label $l"
  done

  # Exact-match label values with a fixed set.
  for pair in $(grep -oE '\b(outcome|state|kind)="[a-z_]+"' <<<"$text" | sort -u || true); do
    name="${pair%%=*}"
    value="${pair#*=\"}"
    value="${value%\"}"
    case "$name" in
    outcome) set="$outcomes" ;;
    state) set="$states" ;;
    kind) set="$kinds" ;;
    esac
    grep -qx "$value" <<<"$set" || problem "$f: $name=\"$value\" is not a value leadq emits"
  done
done

if ((fail)); then
  echo "check-metric-names: FAILED"
  exit 1
fi
echo "check-metric-names: ok: every metric, label and label value in ${#files[@]} file(s) exists"
