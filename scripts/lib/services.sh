#!/usr/bin/env bash
# scripts/lib/services.sh: private PostgreSQL and Redis instances for leadq.
#
# Sourced by scripts/test, scripts/dev and .ci/run. It can also be run directly,
# which is handy after `LEADQ_KEEP_SERVICES=1 scripts/test`:
#
#   scripts/lib/services.sh start  dev|test   # install if needed, start (or reuse)
#   scripts/lib/services.sh stop   dev|test   # stop this project's instances of a profile
#   scripts/lib/services.sh status dev|test
#   scripts/lib/services.sh pg-start|pg-stop chaos   # PostgreSQL alone, for the fault test that
#                                                    # stops the database under load
#   scripts/lib/services.sh start|stop|status ops    # the live alerting test (scripts/ops-test),
#   scripts/lib/services.sh pg-start|pg-stop|redis-start|redis-stop ops   # which stops and
#                                                    # restarts each server as a fault
#
# What it provides to callers (after `source scripts/lib/services.sh`):
#
#   ensure_service_packages     redis-server, redis-cli and PostgreSQL, installed with apt
#                               only when missing (apt-get update runs once, only then)
#   ensure_promtool / ensure_jq / ensure_curl / ensure_faketime
#   ensure_ops_packages         prometheus, prometheus-alertmanager, prometheus-redis-exporter,
#                               prometheus-postgres-exporter (scripts/ops-test), only when missing
#   ensure_browser_packages     chromium and chromium-driver (scripts/console-test drives the
#                               console in headless Chromium through WebDriver), only when missing
#   services_start PROFILE      PROFILE is dev or test; starts or reuses both servers and sets
#                               LEADQ_PG_PORT, LEADQ_REDIS_PORT, LEADQ_DATABASE_URL, LEADQ_REDIS_URL
#   services_stop_started       stops only what THIS shell started (call it from an EXIT trap)
#   wait_for DESC TIMEOUT LOG CMD...   polls CMD until it succeeds; on timeout prints DESC and
#                               the tail of LOG, then returns 1
#
# Layout (all under the git-ignored .run/ folder of the project):
#   .run/<profile>/pg/data        PostgreSQL data folder; its unix socket lives here too
#   .run/<profile>/pg/postgres.log
#   .run/<profile>/redis/         redis.pid, redis.log and (dev) the append-only file
# When running as root, PostgreSQL runs as the `postgres` OS user (initdb refuses root). If that
# user cannot reach the project folder (or the socket path would be too long), the PostgreSQL
# folder moves to /var/tmp/leadq-<profile>-<hash of the project path>/ instead; the chosen path
# is written to .run/<profile>/pg-location for humans.
#
# The distribution's own services (redis-server.service, postgresql@15-main) are never started:
# during apt installs a temporary /usr/sbin/policy-rc.d forbids it.

set -euo pipefail

# Sourcing twice is harmless.
if [[ -n "${_LEADQ_SERVICES_SH_LOADED:-}" ]]; then
  return 0 2>/dev/null || exit 0
fi
_LEADQ_SERVICES_SH_LOADED=1

# ---------------------------------------------------------------------------------------------
# Constants and small helpers
# ---------------------------------------------------------------------------------------------

# Project root: two levels above this file (scripts/lib/services.sh).
LEADQ_ROOT="${LEADQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)}"

# Fixed loopback ports per profile (the Rust tests and the dev quick start rely on them).
readonly LEADQ_DEV_PG_PORT=55432 LEADQ_DEV_REDIS_PORT=56379
readonly LEADQ_TEST_PG_PORT=55433 LEADQ_TEST_REDIS_PORT=56380
readonly LEADQ_CHAOS_PG_PORT=55434 LEADQ_CHAOS_REDIS_PORT=56381
readonly LEADQ_OPS_PG_PORT=55435 LEADQ_OPS_REDIS_PORT=56382

# Application roles and database (created idempotently in every instance). leadq runs as the
# runtime role (LEADQ_DB_USER, owns nothing); the migration owner (LEADQ_DB_OWNER) owns the
# database and schema and runs `leadq migrate`, which grants the runtime role its privileges.
# The ops profile replaces the runtime role's password with a random one (svc_profile), so that
# scripts/ops-test can prove it never reaches an alert.
readonly LEADQ_DB_USER=leadq LEADQ_DB_NAME=leadq
LEADQ_DB_PASSWORD=leadq
readonly LEADQ_DB_OWNER=leadq_owner LEADQ_DB_OWNER_PASSWORD=leadq_owner

# How long to wait for a server to come up, in seconds.
LEADQ_SVC_TIMEOUT="${LEADQ_SVC_TIMEOUT:-60}"

# What this shell started (services_stop_started only stops these).
_SVC_STARTED_PG=0
_SVC_STARTED_REDIS=0
_SVC_APT_UPDATED=0

svc_log() { printf '[services] %s\n' "$*" >&2; }
svc_warn() { printf '[services] warning: %s\n' "$*" >&2; }
svc_die() {
  printf '[services] error: %s\n' "$*" >&2
  exit 1
}

# Prints the last lines of a log file, indented, to stderr (if the file exists).
svc_tail_log() {
  local log="$1" lines="${2:-40}"
  if [[ -r "$log" ]]; then
    printf '[services] last %s lines of %s:\n' "$lines" "$log" >&2
    tail -n "$lines" "$log" | sed 's/^/    | /' >&2 || true
  else
    printf '[services] (no log at %s)\n' "$log" >&2
  fi
}

# wait_for DESCRIPTION TIMEOUT_SECS LOGFILE CMD [ARGS...]
# Runs CMD every 0.25 s until it exits 0. On timeout: prints a clear error with the tail of
# LOGFILE (pass "" for none) and returns 1. CMD's own output is discarded.
wait_for() {
  local desc="$1" timeout="$2" log="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf '[services] error: timed out after %ss waiting for %s\n' "$timeout" "$desc" >&2
      [[ -n "$log" ]] && svc_tail_log "$log"
      return 1
    fi
    sleep 0.25
  done
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
svc_port_in_use() {
  local port="$1"
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# Package installation (Debian/apt)
# ---------------------------------------------------------------------------------------------

# Runs a command as root (directly, or via sudo for a non-root developer).
_svc_as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -- "$@"
  else
    svc_die "need root to run: $* (install the packages by hand, or run as root)"
  fi
}

# Runs apt-get with retries while another apt/dpkg holds the lock.
_svc_apt_get() {
  local attempt out rc
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    rc=0
    out="$(_svc_as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 "$@" 2>&1)" || rc=$?
    if ((rc == 0)); then
      return 0
    fi
    if grep -qiE 'could not get lock|unable to acquire|is another process using it' <<<"$out"; then
      svc_log "apt is busy (attempt $attempt/10); waiting 15 s"
      sleep 15
      continue
    fi
    printf '%s\n' "$out" | tail -n 30 >&2
    svc_die "apt-get $* failed (exit $rc)"
  done
  svc_die "apt-get $* kept failing: apt/dpkg is locked by another process"
}

# apt_install PKG...: installs the packages (apt-get update first, once per shell) without
# recommends, and without letting their maintainer scripts start any system service.
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    svc_die "apt-get not found; install by hand: $*"
  if ((_SVC_APT_UPDATED == 0)); then
    svc_log "apt-get update"
    _svc_apt_get update -q
    _SVC_APT_UPDATED=1
  fi
  svc_log "apt-get install $*"
  # policy-rc.d exiting 101 tells invoke-rc.d/deb-systemd-invoke "do not start services".
  # Only create it (and later remove it) if nobody else has one in place.
  local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
  if [[ ! -e "$policy" ]]; then
    _svc_as_root sh -c "printf '#!/bin/sh\n# leadq: temporary, blocks service starts during apt installs\nexit 101\n' >$policy && chmod 755 $policy"
    made_policy=1
  fi
  (_svc_apt_get install -y -q --no-install-recommends "$@") || rc=$?
  if ((made_policy)); then
    _svc_as_root rm -f "$policy" || true
  fi
  ((rc == 0)) || svc_die "could not install: $*"
}

# Newest PostgreSQL server bin folder (Debian: /usr/lib/postgresql/<major>/bin), or "".
pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" && -x "$d/psql" ]]; then
    printf '%s\n' "$d"
  fi
}

# pg_drop_database URL NAME: drops database NAME (if it exists) over URL, a URL of another
# database on the same server, as a role allowed to drop NAME. Returns non-zero, with
# PostgreSQL's last error on stderr, if NAME is still there after three tries.
#
# Plain DROP DATABASE first: it stops any autovacuum worker in NAME itself and waits for it.
# WITH (FORCE) only then, for sessions left behind (a killed test's pool): on PostgreSQL 15
# FORCE checks its right to end every process in NAME first, and an autovacuum worker belongs
# to no role, so a role that is not superuser gets "must be a member of the role whose process
# is being terminated" whenever autovacuum happens to be there. That failed a CI run once
# (scripts/test dropping the previous suite's ~300 databases just after a restart, when
# autovacuum visits them); 3 of 30 freshly written databases refused FORCE alone on this VM.
pg_drop_database() {
  local url="$1" name="$2" psql out try
  psql="$(pg_bindir)/psql"
  [[ -x "$psql" ]] || psql=psql
  for try in 1 2 3; do
    out="$("$psql" -X -q "$url" -c "drop database if exists \"$name\"" 2>&1)" && return 0
    out="$("$psql" -X -q "$url" -c "drop database if exists \"$name\" with (force)" 2>&1)" &&
      return 0
    ((try == 3)) || sleep 1
  done
  printf '%s\n' "$out" >&2
  return 1
}

ensure_redis_installed() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return 0
  fi
  apt_install redis-server redis-tools
  command -v redis-server >/dev/null 2>&1 || svc_die "redis-server still missing after install"
}

ensure_postgres_installed() {
  if [[ -n "$(pg_bindir)" ]]; then
    return 0
  fi
  apt_install postgresql
  [[ -n "$(pg_bindir)" ]] || svc_die "PostgreSQL binaries still missing under /usr/lib/postgresql"
}

# promtool (checks Prometheus alert rules) comes with Debian's prometheus package.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  apt_install prometheus
  command -v promtool >/dev/null 2>&1 || svc_die "promtool still missing after installing prometheus"
}

ensure_jq() {
  command -v jq >/dev/null 2>&1 || apt_install jq
}

# libfaketime's `faketime` wrapper: the clock-skew fault test runs workers with their clocks
# off by ±2 s.
ensure_faketime() {
  command -v faketime >/dev/null 2>&1 || apt_install faketime
}

ensure_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}

# What scripts/ops-test runs beside leadq: Prometheus (and promtool), Alertmanager (and
# amtool) and the two exporters, from Debian's packages.
ensure_ops_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 ||
    missing+=(prometheus)
  [[ -x /usr/bin/prometheus-alertmanager ]] && command -v amtool >/dev/null 2>&1 ||
    missing+=(prometheus-alertmanager)
  [[ -x /usr/bin/prometheus-redis-exporter ]] || missing+=(prometheus-redis-exporter)
  [[ -x /usr/bin/prometheus-postgres-exporter ]] || missing+=(prometheus-postgres-exporter)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  local b
  for b in prometheus promtool prometheus-alertmanager amtool prometheus-redis-exporter \
    prometheus-postgres-exporter; do
    command -v "$b" >/dev/null 2>&1 || svc_die "$b still missing after installing ${missing[*]}"
  done
}

# What scripts/console-test drives the operator console with: Debian's Chromium and its
# matching WebDriver (/usr/bin/chromium, /usr/bin/chromedriver; both from the same source
# package, so their versions always agree).
ensure_browser_packages() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  local b
  for b in chromium chromedriver; do
    command -v "$b" >/dev/null 2>&1 || svc_die "$b still missing after installing ${missing[*]}"
  done
}

# Everything scripts/test and scripts/dev need.
ensure_service_packages() {
  local missing=()
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    missing+=(redis-server redis-tools)
  fi
  [[ -n "$(pg_bindir)" ]] || missing+=(postgresql)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  ensure_redis_installed
  ensure_postgres_installed
}

# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------

# svc_profile PROFILE: sets the per-profile variables used below (no side effects).
svc_profile() {
  local profile="$1"
  case "$profile" in
    dev) LEADQ_PG_PORT=$LEADQ_DEV_PG_PORT LEADQ_REDIS_PORT=$LEADQ_DEV_REDIS_PORT ;;
    test) LEADQ_PG_PORT=$LEADQ_TEST_PG_PORT LEADQ_REDIS_PORT=$LEADQ_TEST_REDIS_PORT ;;
    chaos) LEADQ_PG_PORT=$LEADQ_CHAOS_PG_PORT LEADQ_REDIS_PORT=$LEADQ_CHAOS_REDIS_PORT ;;
    ops) LEADQ_PG_PORT=$LEADQ_OPS_PG_PORT LEADQ_REDIS_PORT=$LEADQ_OPS_REDIS_PORT ;;
    *) svc_die "unknown profile '$profile' (expected dev, test, chaos or ops)" ;;
  esac
  LEADQ_PROFILE="$profile"
  LEADQ_RUN_DIR="$LEADQ_ROOT/.run/$profile"
  LEADQ_DB_PASSWORD=leadq
  if [[ "$profile" == ops ]]; then
    # A random password, made once and kept (mode 600) in .run/ops/db-password.
    mkdir -p "$LEADQ_RUN_DIR"
    if [[ ! -s "$LEADQ_RUN_DIR/db-password" ]]; then
      (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$LEADQ_RUN_DIR/db-password")
    fi
    LEADQ_DB_PASSWORD="$(cat "$LEADQ_RUN_DIR/db-password")"
  fi
  LEADQ_REDIS_DIR="$LEADQ_RUN_DIR/redis"
  LEADQ_REDIS_PIDFILE="$LEADQ_REDIS_DIR/redis.pid"
  LEADQ_REDIS_LOG="$LEADQ_REDIS_DIR/redis.log"
  LEADQ_DATABASE_URL="postgres://$LEADQ_DB_USER:$LEADQ_DB_PASSWORD@127.0.0.1:$LEADQ_PG_PORT/$LEADQ_DB_NAME"
  LEADQ_MIGRATION_DATABASE_URL="postgres://$LEADQ_DB_OWNER:$LEADQ_DB_OWNER_PASSWORD@127.0.0.1:$LEADQ_PG_PORT/$LEADQ_DB_NAME"
  LEADQ_REDIS_URL="redis://127.0.0.1:$LEADQ_REDIS_PORT/"
  # LEADQ_PG_DIR / LEADQ_PG_DATA / LEADQ_PG_LOG are set by _pg_choose_dir (it may create folders).
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

# The OS user that owns and runs the PostgreSQL instance.
_pg_os_user() {
  if ((EUID == 0)); then echo postgres; else id -un; fi
}

# _pg_run CMD...: runs a PostgreSQL tool as the instance's OS user, from "/" so the tools do
# not complain about an unreadable working folder.
_pg_run() {
  local bindir
  bindir="$(pg_bindir)"
  local cmd="$1"
  shift
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$bindir/$cmd" "$@")
  else
    (cd / && "$bindir/$cmd" "$@")
  fi
}

# _pg_can_use DIR: can the instance's OS user create files in DIR (and thus reach it)?
_pg_can_use() {
  local dir="$1"
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- test -d "$dir" -a -w "$dir" -a -x "$dir") 2>/dev/null
  else
    [[ -d "$dir" && -w "$dir" && -x "$dir" ]]
  fi
}

# Picks (and creates) the PostgreSQL folder: .run/<profile>/pg, or the /var/tmp fallback.
_pg_choose_dir() {
  local owner dir reason=""
  owner="$(_pg_os_user)"
  dir="$LEADQ_RUN_DIR/pg"
  mkdir -p "$dir"
  if ((EUID == 0)); then
    chown "$owner:" "$dir"
    chmod 700 "$dir"
  fi
  # A unix socket path must fit in 107 bytes: <dir>/data/.s.PGSQL.<port>.lock
  if ((${#dir} + 22 > 100)); then
    reason="the socket path under $dir would be too long"
  elif ! _pg_can_use "$dir"; then
    reason="user '$owner' cannot reach $dir"
  fi
  if [[ -n "$reason" ]]; then
    local hash
    hash="$(printf '%s' "$LEADQ_ROOT" | sha256sum | cut -c1-12)"
    dir="/var/tmp/leadq-$LEADQ_PROFILE-$hash"
    svc_log "$reason; using $dir for PostgreSQL instead"
    if [[ -L "$dir" ]] || { [[ -e "$dir" ]] && [[ ! -d "$dir" ]]; }; then
      svc_die "$dir exists and is not a plain folder; remove it"
    fi
    mkdir -p "$dir"
    if ((EUID == 0)); then chown "$owner:" "$dir"; fi
    chmod 700 "$dir"
    [[ "$(stat -c %U "$dir")" == "$owner" ]] ||
      svc_die "$dir is owned by $(stat -c %U "$dir"), not $owner; remove it"
  fi
  LEADQ_PG_DIR="$dir"
  LEADQ_PG_DATA="$dir/data"
  LEADQ_PG_LOG="$dir/postgres.log"
  printf '%s\n' "$LEADQ_PG_DATA" >"$LEADQ_RUN_DIR/pg-location"
}

# True if the instance in $LEADQ_PG_DATA is running: postmaster.pid names a live process that
# is a postgres (a pid left over from before a reboot may now belong to something else).
_pg_running() {
  local pid
  [[ -f "$LEADQ_PG_DATA/postmaster.pid" ]] || return 1
  pid="$(head -n 1 "$LEADQ_PG_DATA/postmaster.pid" 2>/dev/null | tr -dc 0-9)"
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == postgres ]] || return 1
  _pg_run pg_ctl -D "$LEADQ_PG_DATA" status >/dev/null 2>&1
}

# Removes lock files a crashed or rebooted instance left behind (only when it is not running).
_pg_clear_stale_locks() {
  if [[ -f "$LEADQ_PG_DATA/postmaster.pid" ]]; then
    svc_log "removing stale $LEADQ_PG_DATA/postmaster.pid"
    rm -f "$LEADQ_PG_DATA/postmaster.pid" "$LEADQ_PG_DATA"/.s.PGSQL.*.lock
  fi
}

_pg_ready() {
  _pg_run pg_isready -q -h 127.0.0.1 -p "$LEADQ_PG_PORT" -t 2
}

# Runs initdb once; checks the major version of an existing folder.
_pg_init() {
  local bindir major
  bindir="$(pg_bindir)"
  major="$(basename "$(dirname "$bindir")")"
  if [[ -f "$LEADQ_PG_DATA/PG_VERSION" ]]; then
    local have
    have="$(cat "$LEADQ_PG_DATA/PG_VERSION")"
    [[ "$have" == "$major" ]] ||
      svc_die "$LEADQ_PG_DATA was made by PostgreSQL $have but the server is $major; remove that folder"
    return 0
  fi
  if [[ -d "$LEADQ_PG_DATA" ]] && [[ -n "$(ls -A "$LEADQ_PG_DATA" 2>/dev/null)" ]]; then
    svc_die "$LEADQ_PG_DATA is not empty but holds no PostgreSQL cluster; remove it"
  fi
  svc_log "initdb $LEADQ_PG_DATA (PostgreSQL $major)"
  # Local (socket) connections: trust, but the socket sits in the 0700 data folder, so only
  # the owner (and root) can reach it. TCP: password (scram-sha-256) only.
  if ! _pg_run initdb -D "$LEADQ_PG_DATA" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions \
    >"$LEADQ_PG_DIR/initdb.log" 2>&1; then
    svc_tail_log "$LEADQ_PG_DIR/initdb.log"
    svc_die "initdb failed"
  fi
}

# Writes leadq.conf (our settings, rewritten on every start) and includes it once.
_pg_configure() {
  local conf="$LEADQ_PG_DATA/leadq.conf" tmp
  tmp="$(mktemp)"
  {
    echo "# Written by scripts/lib/services.sh on every start; edits are lost."
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $LEADQ_PG_PORT"
    echo "unix_socket_directories = '$LEADQ_PG_DATA'"
    echo "unix_socket_permissions = 0700"
    echo "password_encryption = 'scram-sha-256'"
    if [[ "$LEADQ_PROFILE" == test ]]; then
      # Throwaway data: trade durability for speed; many tests open pools in parallel.
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
      echo "max_connections = 300"
    else
      echo "max_connections = 100"
    fi
  } >"$tmp"
  install -m 600 "$tmp" "$conf"
  rm -f "$tmp"
  if ((EUID == 0)); then chown postgres: "$conf"; fi
  if ! grep -qx "include = 'leadq.conf'" "$LEADQ_PG_DATA/postgresql.conf"; then
    printf "\n# leadq private instance settings\ninclude = 'leadq.conf'\n" \
      >>"$LEADQ_PG_DATA/postgresql.conf"
  fi
}

# Creates (or corrects) the application role and database. Idempotent.
_pg_bootstrap() {
  local out rc=0
  out="$(_pg_run psql -X -q -v ON_ERROR_STOP=1 -h "$LEADQ_PG_DATA" -p "$LEADQ_PG_PORT" \
    -U postgres -d postgres 2>&1 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$LEADQ_DB_USER') THEN
    CREATE ROLE $LEADQ_DB_USER LOGIN PASSWORD '$LEADQ_DB_PASSWORD'
      NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION;
  ELSE
    ALTER ROLE $LEADQ_DB_USER LOGIN PASSWORD '$LEADQ_DB_PASSWORD'
      NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION;
  END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER %I', '$LEADQ_DB_NAME', '$LEADQ_DB_USER')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$LEADQ_DB_NAME')
\gexec
ALTER DATABASE $LEADQ_DB_NAME OWNER TO $LEADQ_DB_USER;
SQL
  )" || rc=$?
  if ((rc != 0)); then
    printf '%s\n' "$out" >&2
    svc_die "could not create the $LEADQ_DB_USER role/database"
  fi
  _pg_bootstrap_owner
  # Prove the application's own URL works over TCP with the password.
  if ! PGCONNECT_TIMEOUT=5 "$(pg_bindir)/psql" -X -q -tA "$LEADQ_DATABASE_URL" \
    -c 'SELECT 1' >/dev/null 2>&1; then
    svc_die "cannot log in as $LEADQ_DB_USER at 127.0.0.1:$LEADQ_PG_PORT"
  fi
}

# Creates (or corrects) the migration owner (CREATEDB, so the tests can make their databases
# as it). In the dev profile it also takes over the database and whatever the runtime role
# owned there before the roles were split (then `leadq migrate` grants the runtime role).
# The test profile's `leadq` database is left alone: other checkouts share that instance. (The
# ops profile's is handed over too: scripts/ops-test drops and recreates it as the owner.)
_pg_bootstrap_owner() {
  local out rc=0 take_over=""
  if [[ "$LEADQ_PROFILE" == dev || "$LEADQ_PROFILE" == ops ]]; then
    take_over="ALTER DATABASE $LEADQ_DB_NAME OWNER TO $LEADQ_DB_OWNER;
\\connect $LEADQ_DB_NAME
REASSIGN OWNED BY $LEADQ_DB_USER TO $LEADQ_DB_OWNER;"
  fi
  out="$(_pg_run psql -X -q -v ON_ERROR_STOP=1 -h "$LEADQ_PG_DATA" -p "$LEADQ_PG_PORT" \
    -U postgres -d postgres 2>&1 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$LEADQ_DB_OWNER') THEN
    CREATE ROLE $LEADQ_DB_OWNER LOGIN PASSWORD '$LEADQ_DB_OWNER_PASSWORD'
      NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION;
  ELSE
    ALTER ROLE $LEADQ_DB_OWNER LOGIN PASSWORD '$LEADQ_DB_OWNER_PASSWORD'
      NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION;
  END IF;
END
\$\$;
$take_over
SQL
  )" || rc=$?
  if ((rc != 0)); then
    printf '%s\n' "$out" >&2
    svc_die "could not create the $LEADQ_DB_OWNER role"
  fi
}

# reserve_service_ports: keeps the kernel from handing out the services' fixed ports as the
# local port of an outgoing connection. They lie in Linux's ephemeral range (32768-60999); a
# test's client socket that happens to get 55432 makes the next PostgreSQL start fail with
# "Address already in use" (seen once in CI). Needs root; CI calls it, a developer may.
reserve_service_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports
  local want="$LEADQ_DEV_PG_PORT-$LEADQ_OPS_PG_PORT,$LEADQ_DEV_REDIS_PORT-$LEADQ_OPS_REDIS_PORT"
  if [[ ! -w "$f" ]]; then
    svc_log "cannot reserve ports $want (no write access to $f); continuing"
    return 0
  fi
  local cur
  cur="$(cat "$f")"
  echo "${cur:+$cur,}$want" >"$f"
  svc_log "reserved ports $want against ephemeral use ($f: $(cat "$f"))"
}

# pg_start: starts (or reuses) the profile's PostgreSQL instance. Call svc_profile first.
pg_start() {
  ensure_postgres_installed
  mkdir -p "$LEADQ_RUN_DIR"
  _pg_choose_dir
  _pg_init
  if _pg_running; then
    svc_log "PostgreSQL ($LEADQ_PROFILE) already running on 127.0.0.1:$LEADQ_PG_PORT; reusing it"
    wait_for "PostgreSQL on 127.0.0.1:$LEADQ_PG_PORT (instance in $LEADQ_PG_DATA)" \
      "$LEADQ_SVC_TIMEOUT" "$LEADQ_PG_LOG" _pg_ready ||
      svc_die "the running PostgreSQL instance does not answer on port $LEADQ_PG_PORT"
  else
    if svc_port_in_use "$LEADQ_PG_PORT"; then
      svc_die "port $LEADQ_PG_PORT is taken by another process (not this project's $LEADQ_PROFILE PostgreSQL in $LEADQ_PG_DATA)"
    fi
    _pg_clear_stale_locks
    _pg_configure
    svc_log "starting PostgreSQL ($LEADQ_PROFILE) on 127.0.0.1:$LEADQ_PG_PORT, log $LEADQ_PG_LOG"
    # A bind failure is retried: the port may be the local end of a closing client socket
    # (see reserve_service_ports), which frees it within moments.
    local attempt
    for attempt in 1 2 3 4 5; do
      if _pg_run pg_ctl -D "$LEADQ_PG_DATA" -l "$LEADQ_PG_LOG" -w -t "$LEADQ_SVC_TIMEOUT" -s start; then
        break
      fi
      if [[ $attempt -lt 5 ]] && tail -n 20 "$LEADQ_PG_LOG" 2>/dev/null | grep -q 'Address already in use'; then
        svc_log "port $LEADQ_PG_PORT briefly in use by a client socket; retrying in 2 s"
        sleep 2
        continue
      fi
      svc_tail_log "$LEADQ_PG_LOG"
      svc_die "PostgreSQL did not start"
    done
    _SVC_STARTED_PG=1
    wait_for "PostgreSQL on 127.0.0.1:$LEADQ_PG_PORT" "$LEADQ_SVC_TIMEOUT" "$LEADQ_PG_LOG" \
      _pg_ready || svc_die "PostgreSQL started but does not accept connections"
  fi
  _pg_bootstrap
}

# pg_stop_instance: stops the profile's instance (whoever started it).
pg_stop_instance() {
  [[ -n "${LEADQ_PG_DATA:-}" ]] || return 0
  _pg_running || return 0
  svc_log "stopping PostgreSQL ($LEADQ_PROFILE)"
  if ! _pg_run pg_ctl -D "$LEADQ_PG_DATA" -w -t 30 -s -m fast stop; then
    svc_warn "fast shutdown failed; trying immediate"
    _pg_run pg_ctl -D "$LEADQ_PG_DATA" -w -t 30 -s -m immediate stop || true
  fi
}

# pg_stop_recorded: stops the profile's instance found through .run/<profile>/pg-location
# (for direct use, where no earlier pg_start set the folder variables).
pg_stop_recorded() {
  [[ -n "$(pg_bindir)" && -f "$LEADQ_RUN_DIR/pg-location" ]] || return 0
  LEADQ_PG_DATA="$(cat "$LEADQ_RUN_DIR/pg-location")"
  LEADQ_PG_DIR="$(dirname "$LEADQ_PG_DATA")"
  LEADQ_PG_LOG="$LEADQ_PG_DIR/postgres.log"
  pg_stop_instance
}

# pg_stop_if_started: stops PostgreSQL only if this shell started it.
pg_stop_if_started() {
  ((_SVC_STARTED_PG)) || return 0
  pg_stop_instance
  _SVC_STARTED_PG=0
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

_redis_ping() {
  [[ "$(redis-cli -h 127.0.0.1 -p "$LEADQ_REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

# Prints the pid from the profile's pid file if that process is alive and is redis-server.
_redis_pid() {
  local pid comm
  [[ -f "$LEADQ_REDIS_PIDFILE" ]] || return 1
  pid="$(tr -dc 0-9 <"$LEADQ_REDIS_PIDFILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  [[ "$comm" == redis-server* ]] || return 1
  printf '%s\n' "$pid"
}

# redis_start: starts (or reuses) the profile's Redis. Call svc_profile first.
redis_start() {
  ensure_redis_installed
  mkdir -p "$LEADQ_REDIS_DIR"
  if _redis_pid >/dev/null; then
    svc_log "Redis ($LEADQ_PROFILE) already running on 127.0.0.1:$LEADQ_REDIS_PORT; reusing it"
    wait_for "Redis on 127.0.0.1:$LEADQ_REDIS_PORT" "$LEADQ_SVC_TIMEOUT" "$LEADQ_REDIS_LOG" \
      _redis_ping || svc_die "the running Redis does not answer PING on port $LEADQ_REDIS_PORT"
    return 0
  fi
  rm -f "$LEADQ_REDIS_PIDFILE" # stale
  if svc_port_in_use "$LEADQ_REDIS_PORT"; then
    svc_die "port $LEADQ_REDIS_PORT is taken by another process (not this project's $LEADQ_PROFILE Redis; no live pid in $LEADQ_REDIS_PIDFILE)"
  fi
  local persistence=()
  if [[ "$LEADQ_PROFILE" == test ]]; then
    persistence=(--save "" --appendonly no)
  else
    persistence=(--save "" --appendonly yes --appendfsync everysec)
  fi
  if [[ "$LEADQ_PROFILE" == ops ]]; then
    # As in production: a memory limit, and refusals instead of evictions (a queue may not
    # lose keys); the live test's Redis alerts and panels read both.
    persistence+=(--maxmemory 256mb --maxmemory-policy noeviction)
  fi
  svc_log "starting Redis ($LEADQ_PROFILE) on 127.0.0.1:$LEADQ_REDIS_PORT, log $LEADQ_REDIS_LOG"
  if ! redis-server --port "$LEADQ_REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
    --daemonize yes --supervised no --pidfile "$LEADQ_REDIS_PIDFILE" \
    --logfile "$LEADQ_REDIS_LOG" --dir "$LEADQ_REDIS_DIR" "${persistence[@]}"; then
    svc_tail_log "$LEADQ_REDIS_LOG"
    svc_die "redis-server did not start"
  fi
  _SVC_STARTED_REDIS=1
  wait_for "Redis on 127.0.0.1:$LEADQ_REDIS_PORT to answer PONG" "$LEADQ_SVC_TIMEOUT" \
    "$LEADQ_REDIS_LOG" _redis_ping || svc_die "Redis did not come up"
  wait_for "Redis pid file $LEADQ_REDIS_PIDFILE" 10 "$LEADQ_REDIS_LOG" _redis_pid ||
    svc_die "Redis runs but wrote no pid file"
}

# redis_stop_instance: stops the profile's Redis (by the pid in its pid file).
redis_stop_instance() {
  [[ -n "${LEADQ_REDIS_PIDFILE:-}" ]] || return 0
  local pid
  pid="$(_redis_pid)" || return 0
  svc_log "stopping Redis ($LEADQ_PROFILE, pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    svc_warn "Redis (pid $pid) ignored SIGTERM for 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$LEADQ_REDIS_PIDFILE"
}

# redis_stop_if_started: stops Redis only if this shell started it.
redis_stop_if_started() {
  ((_SVC_STARTED_REDIS)) || return 0
  redis_stop_instance
  _SVC_STARTED_REDIS=0
}

# ---------------------------------------------------------------------------------------------
# Both together
# ---------------------------------------------------------------------------------------------

# services_start PROFILE: installs what is missing, then starts or reuses PostgreSQL and Redis.
# Afterwards LEADQ_DATABASE_URL and LEADQ_REDIS_URL hold the URLs for the profile.
# Callers should set `trap services_stop_started EXIT` (or call it from their own trap).
services_start() {
  svc_profile "$1"
  ensure_service_packages
  mkdir -p "$LEADQ_RUN_DIR"
  pg_start
  redis_start
  local shown="$LEADQ_DATABASE_URL"
  [[ "$LEADQ_PROFILE" == ops ]] && shown="${shown/:$LEADQ_DB_PASSWORD@/:***@}"
  svc_log "ready ($LEADQ_PROFILE): $shown  $LEADQ_REDIS_URL"
}

# services_stop_started: stops what this shell started, in reverse order. Never fails.
services_stop_started() {
  redis_stop_if_started || true
  pg_stop_if_started || true
}

# Did this shell start anything? (for messages)
services_started_any() {
  ((_SVC_STARTED_PG || _SVC_STARTED_REDIS))
}

# ---------------------------------------------------------------------------------------------
# Direct use: scripts/lib/services.sh start|stop|status dev|test
# ---------------------------------------------------------------------------------------------

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}:${2:-}" in
    start:dev | start:test | start:ops)
      services_start "$2"
      ;;
    stop:dev | stop:test | stop:ops)
      svc_profile "$2"
      pg_stop_recorded
      command -v redis-cli >/dev/null 2>&1 && redis_stop_instance
      ;;
    pg-start:chaos | pg-start:ops)
      svc_profile "$2"
      ensure_postgres_installed
      pg_start
      ;;
    pg-stop:chaos | pg-stop:ops)
      svc_profile "$2"
      pg_stop_recorded
      ;;
    redis-start:ops)
      svc_profile "$2"
      redis_start
      ;;
    redis-stop:ops)
      svc_profile "$2"
      redis_stop_instance
      ;;
    status:dev | status:test | status:ops)
      svc_profile "$2"
      rc=0
      if [[ -f "$LEADQ_RUN_DIR/pg-location" && -n "$(pg_bindir)" ]]; then
        LEADQ_PG_DATA="$(cat "$LEADQ_RUN_DIR/pg-location")"
        if _pg_running; then
          echo "postgres: running on 127.0.0.1:$LEADQ_PG_PORT ($LEADQ_PG_DATA)"
        else
          echo "postgres: stopped ($LEADQ_PG_DATA)"
          rc=3
        fi
      else
        echo "postgres: never started"
        rc=3
      fi
      if pid="$(_redis_pid)"; then
        echo "redis:    running on 127.0.0.1:$LEADQ_REDIS_PORT (pid $pid)"
      else
        echo "redis:    stopped"
        rc=3
      fi
      exit "$rc"
      ;;
    *)
      echo "usage: $0 start|stop|status dev|test|ops, $0 pg-start|pg-stop chaos|ops, or $0 redis-start|redis-stop ops" >&2
      exit 2
      ;;
  esac
fi
