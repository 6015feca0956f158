#!/usr/bin/env bash
# alerts/check-metric-names.sh: alerts, dashboards and runbooks use only metrics and labels that
# exist.
#
# Every leadq_* name in alerts/*.yml, dashboards/*.json, runbooks/*.md and docs/observability.md
# must be a constant of platform/src/metrics.rs (histograms also as _bucket/_sum/_count). Every
# redis_* name must be one redis_exporter exports (the list pinned below, from the section
# "redis_exporter" of docs/contracts/observability.md), every pg_* name one postgres_exporter 0.11
# exports (pinned below likewise). Recording rules (`record:` in alerts/*.yml) must be named
# level:metric:operations (e.g. slo:leadq_ingest_errors:ratio_rate5m); their names may be used
# anywhere and are not read as metric names. Label names in selectors, by/on/without/ignoring
# clauses, {{ $labels.x }} templates and Grafana {{x}} legends must be leadq's label names
# (metrics.rs `mod label`) or job/instance/le (or redis_exporter's db/cmd/role, postgres_exporter's
# server/datname/mode). Values
# given to outcome= and state= must be constants of metrics.rs; values given to kind= must be a job
# kind of jobs/src/kinds.rs or a security-event kind.
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
# prometheus-postgres-exporter 0.11 (docs/contracts/observability.md, section "postgres_exporter"):
# the default collectors' names we may use, plus pg_replication_lag and
# pg_postmaster_start_time_seconds from the queries file docker/postgres-exporter/queries.yaml.
# (pg_settings_* exports every setting; only the ones rules need are listed.)
PG_METRICS="pg_up pg_static pg_exporter_last_scrape_duration_seconds pg_exporter_last_scrape_error
pg_exporter_scrapes_total pg_scrape_collector_duration_seconds pg_scrape_collector_success
pg_settings_max_connections pg_settings_superuser_reserved_connections
pg_stat_activity_count pg_stat_activity_max_tx_duration pg_database_size_bytes pg_locks_count
pg_stat_database_numbackends pg_stat_database_xact_commit pg_stat_database_xact_rollback
pg_stat_database_deadlocks pg_stat_database_blks_hit pg_stat_database_blks_read
pg_stat_database_temp_bytes pg_stat_database_conflicts
pg_stat_archiver_failed_count pg_stat_archiver_last_archive_age
pg_replication_lag pg_postmaster_start_time_seconds"
# Labels that are not leadq's own: Prometheus target labels, histogram buckets, redis_exporter's,
# postgres_exporter's, and the burn-rate windows long/short that alerts/slo.yml sets.
EXTRA_LABELS="job instance le db cmd role server datname mode long short"

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
# rustfmt puts a long constant's value on the next line ("pub const X: &str =\n    \"leadq_…\"").
known="$(awk '
  function emit(line) {
    name = line; sub(/^[^"]*"/, "", name); sub(/".*/, "", name)
    print name
    if (hist) { print name "_bucket"; print name "_sum"; print name "_count" }
    hist = 0
  }
  /^\/\/\/ Histogram:/ { hist = 1; next }
  /^pub const [A-Z_]+: &str = "leadq_/ { emit($0); next }
  /^pub const [A-Z_]+: &str =$/ { pending = 1; next }
  pending && /^[[:space:]]+"leadq_/ { pending = 0; emit($0); next }
  /^\/\/\// { next }
  { hist = 0; pending = 0 }
' "$METRICS")"
known="$known"$'\n'"$(tr -s ' \n' '\n' <<<"$REDIS_METRICS $PG_METRICS")"

labels="$(awk '
  /^pub mod label/ { inmod = 1; next }
  inmod && /^}/ { inmod = 0 }
  inmod && /pub const [A-Z_]+: &str = "/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v }
' "$METRICS")"
labels="$labels"$'\n'"$(tr -s ' \n' '\n' <<<"$EXTRA_LABELS")"

# Recording rules: name them level:metric:operations; their names are not metric names.
recorded="$(sed -nE 's/^[[:space:]]*-?[[:space:]]*record:[[:space:]]*["'\'']?([^"'\''[:space:]]+).*/\1/p' alerts/*.yml | sort -u)"
for r in $recorded; do
  [[ "$r" =~ ^[a-z][a-z0-9_]*:[a-z0-9_]+:[a-z0-9_]+$ ]] ||
    problem "recording rule $r is not named level:metric:operations"
done
# Longest first, so that a name is never cut by a shorter one it contains.
recorded_sed=""
if [[ -n "$recorded" ]]; then
  recorded_sed="$(awk '{ print length, $0 }' <<<"$recorded" | sort -rn | cut -d' ' -f2- |
    sed 's/.*/s#&#RECORDED_RULE#g/')"
fi

values_of() { # constants of `pub mod <name>` in metrics.rs
  awk -v mod="$1" '
    $0 ~ "^pub mod " mod " " { inmod = 1; next }
    inmod && /^}/ { inmod = 0 }
    inmod && /pub const [A-Z_]+: &str = "/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); print v }
  ' "$METRICS"
}
outcomes="$(values_of outcome; values_of webhook_outcome; values_of alert_outcome)"
states="$(values_of state)"
kinds="$(grep -E '^pub const [A-Z_]+: &str = "' "$KINDS" | sed -E 's/^[^"]*"([^"]*)".*/\1/')"$'\n'"bad_signature"$'\n'"unauthorized"$'\n'"cross_tenant_activity"

for f in "${files[@]}"; do
  # Metric names. YAML comments count too: they must not name metrics that do not exist.
  # (redis_exporter alone is the exporter's name, not a metric.)
  # pg_*: every name in rules and dashboards; in Markdown only names written as a metric (followed
  # by a selector, a range, a closing parenthesis or a backtick), so that pg_isready or the
  # pg_stat_activity view in a psql command are not taken for metrics.
  stripped="$(if [[ -n "$recorded_sed" ]]; then sed -e "$recorded_sed" "$f"; else cat "$f"; fi)"
  if [[ "$f" == *.md ]]; then pg_re='\bpg_[a-z0-9_]+[{[)`]'; else pg_re='\bpg_[a-z0-9_]+'; fi
  for m in $(grep -oE '\b(leadq|redis)_[a-z0-9_]+' <<<"$stripped" | { grep -vx 'redis_exporter' || true; } | sort -u); do
    grep -qx "$m" <<<"$known" || problem "$f: unknown metric $m"
  done
  for m in $({ grep -oE "$pg_re" <<<"$stripped" || true; } | grep -oE '^pg_[a-z0-9_]+' | sort -u); do
    grep -qx "$m" <<<"$known" || problem "$f: unknown metric $m"
  done

  # Label names: selectors, grouping and matching clauses, alert templates, Grafana legends.
  # JSON escapes quotes as \", so drop backslashes first.
  text="$(sed 's/\\"/"/g' <<<"$stripped")"
  used_labels="$(
    {
      grep -oE '\b(leadq|redis|pg)_[a-z0-9_]+\{[^}]*\}' <<<"$text" | sed -E 's/^[^{]*\{//; s/\}$//' |
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
