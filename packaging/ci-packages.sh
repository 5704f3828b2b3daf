#!/usr/bin/env bash
# ci-packages.sh: the packaging checks of issue 8, as root on a Debian 12
# machine. Builds both packages, installs the .deb with dpkg, runs the
# unit's start sequence against the installed layout (under systemd when
# it is PID 1, otherwise by hand as the unit's user), drives one batch
# through every lane as that module's OS identity, runs selftest, checks
# that upgrade, removal and reinstallation keep the data and that purge
# removes it; then `systemd-analyze verify` on every unit, the exposure
# score of applianced.service (at most 2.0), lintian (no error, no
# warning that packaging/lintian-overrides does not list) and the .rpm's
# file list and scriptlets. Idempotent; leaves the package purged.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "ci-packages: run as root" >&2; exit 1; }

EXPOSURE_MAX=2.0
UNIT_DIR=/lib/systemd/system
SERVICE=$UNIT_DIR/applianced.service
UNITS=(applianced.service ransomeye.slice ransomeye-appliance.slice ransomeye-core.slice
    ransomeye-dpi.slice ransomeye-agents.slice)
STATE_DIR=/var/lib/ransomeye
CONFIG=/etc/ransomeye/applianced.toml
ENV_FILE=/etc/ransomeye/applianced.env
# Written after our own installation: a package installed by anyone else is
# never purged by this script.
CI_MARKER=/etc/ransomeye/.installed-by-ci-packages
# Instance name of the hand-started appliance, so that it cannot collide
# with another appliance (a test run) on a shared machine.
CI_INSTANCE=ci-packages
EVENTS_PER_MODULE=1000
PRODUCER_ID=7
# The producer library's examples: events per lane, and their producer ids.
LIBRARY_EVENTS=100000
PRODUCER_C=107
PRODUCER_PY=207
PRODUCER_LOAD=307

step() { echo; echo "ci-packages: == $*"; }
fail() { echo "ci-packages: FAIL: $*" >&2; exit 1; }
as_user() { local user=$1; shift; (cd / && runuser -u "$user" -- "$@"); }

apt_install() { # package...
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "ci-packages: apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's postgresql-15 would create and start a "main" cluster on
# localhost:5432; the appliance wants no TCP listener (as in .ci/run).
no_main_cluster() {
    local conf=/etc/postgresql-common/createcluster.conf
    grep -q '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "$conf" 2>/dev/null && return 0
    mkdir -p /etc/postgresql-common
    { grep -v '^[[:space:]]*create_main_cluster' "$conf" 2>/dev/null || true; echo 'create_main_cluster = false'; } > "$conf.new"
    mv "$conf.new" "$conf"
}

supervisor_pid=""
runuser_pid=""
stop_supervisor() {
    [ -n "$supervisor_pid" ] || return 0
    kill -TERM "$supervisor_pid" 2>/dev/null || true
    wait "$runuser_pid" 2>/dev/null || true
    supervisor_pid=""
}

purge_package() {
    if dpkg-query -W -f='${Status}' applianced 2>/dev/null | grep -q "ok \(installed\|config-files\|half\)"; then
        dpkg -P applianced >/dev/null
    fi
}

cleanup() {
    local rc=$?
    stop_supervisor
    if [ -e "$CI_MARKER" ] || [ "${purge_on_exit:-0}" = 1 ]; then
        /usr/libexec/applianced/applianced-setup stop >/dev/null 2>&1 || true
        rm -f "$CI_MARKER"
        purge_package || true
    fi
    rm -rf "${work:-/nonexistent-ci-packages}"
    [ $rc -eq 0 ] || echo "ci-packages: failed (exit $rc); the package was purged" >&2
}
trap cleanup EXIT
work=$(mktemp -d)

# ---------------------------------------------------------------------------
step "tools"
no_main_cluster
apt_install postgresql-15 lintian rpm dpkg-dev binutils systemd systemd-container
if dpkg-query -W -f='${Status}' applianced 2>/dev/null | grep -q "ok \(installed\|config-files\|half\)"; then
    [ -e "$CI_MARKER" ] || fail "applianced is installed and not by this script; remove it first (dpkg -P applianced purges its data)"
    echo "ci-packages: purging the package a previous run left installed"
    purge_on_exit=1
    /usr/libexec/applianced/applianced-setup stop >/dev/null 2>&1 || true
    purge_package
fi
[ ! -e "$STATE_DIR" ] || fail "$STATE_DIR exists without the package; move it away first"

# ---------------------------------------------------------------------------
step "build"
packaging/build-packages.sh
deb=$(ls target/packages/applianced_*.deb)
rpm_file=$(ls target/packages/applianced-*.rpm)

# ---------------------------------------------------------------------------
step "install the .deb"
purge_on_exit=1
if ! dpkg -i "$deb"; then
    echo "ci-packages: resolving dependencies with apt-get install -f"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -f -y -q --no-install-recommends >/dev/null
fi
dpkg-query -W -f='${Status}\n' applianced | grep -q "install ok installed" || fail "applianced is not installed"
touch "$CI_MARKER"

step "installed layout"
unit_user=$(sed -n 's/^User=//p' "$SERVICE")
[ "$unit_user" = ransomeye ] || fail "unit User= is '$unit_user'"
for user in ransomeye ransomeye-core ransomeye-dpi ransomeye-linux-agent ransomeye-windows-relay \
    ransomeye-lane-core ransomeye-lane-dpi ransomeye-lane-linux-agent ransomeye-lane-windows-agent; do
    getent passwd "$user" >/dev/null || fail "user $user missing"
done
for member in ransomeye ransomeye-core ransomeye-lane-core ransomeye-lane-dpi ransomeye-lane-linux-agent \
    ransomeye-lane-windows-agent; do
    id -nG "$member" | tr ' ' '\n' | grep -qx ransomeye-db || fail "$member is not in ransomeye-db"
done
echo "  users, lane identities and group ransomeye-db present"
check_mode() { # path mode owner
    local actual
    actual=$(stat -c '%a %U' "$1")
    [ "$actual" = "$2 $3" ] || fail "$1 is '$actual', expected '$2 $3'"
    echo "  $1 $actual"
}
check_mode "$STATE_DIR" 711 ransomeye
check_mode "$STATE_DIR/run" 755 ransomeye
check_mode "$STATE_DIR/log" 700 ransomeye
check_mode "$STATE_DIR/pgdata" 700 ransomeye
check_mode "$STATE_DIR/spool" 711 ransomeye
for module in core dpi linux_agent windows_agent; do
    check_mode "$STATE_DIR/spool/$module" 2750 "ransomeye-lane-${module//_/-}"
done
check_mode /usr/bin/applianced 755 root
check_mode "$CONFIG" 644 root
[ -f "$STATE_DIR/pgdata/PG_VERSION" ] || fail "postinst did not create the cluster"
grep -q '^APPLIANCED_RUN_ARGS=.*--peer-uid core=' "$ENV_FILE" || fail "$ENV_FILE lacks the module uids"
if as_user ransomeye /usr/lib/postgresql/15/bin/pg_ctl status -D "$STATE_DIR/pgdata" >/dev/null 2>&1; then
    fail "postinst left the cluster running"
fi
man -w applianced >/dev/null || fail "man page not installed"
for command in $(/usr/bin/applianced --help | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }'); do
    zcat /usr/share/man/man8/applianced.8.gz | grep -q "^\.SS \"$command\"" || fail "man page lacks command $command"
done
echo "  man page lists every command of applianced --help"

# ---------------------------------------------------------------------------
# The unit's commands, read from the installed unit file so that this is the
# sequence systemd would run: `-` (ignore failure) honoured, $VARIABLES
# expanded from the EnvironmentFile= and split into words as systemd does.
unit_commands() { sed -n "s/^$1=//p" "$SERVICE"; }
run_unit_command() { # command-line
    local line=$1 ignore=0
    case "$line" in -*) ignore=1; line=${line#-} ;; esac
    echo "  \$ $line"
    if as_user "$unit_user" /bin/sh -c "set -a; . '$ENV_FILE'; APPLIANCED_LOG=info; MAINPID='${supervisor_pid}'; exec $line"; then
        return 0
    fi
    [ $ignore = 1 ] && return 0
    return 1
}

pid1=$(ps -p 1 -o comm=)
if [ "$pid1" = systemd ]; then
    step "start the unit (systemd is PID 1)"
    systemctl daemon-reload
    systemctl start applianced.service || { journalctl -u applianced --no-pager | tail -50; fail "unit did not start"; }
    systemctl is-active applianced.service
    instance=default
    supervisor_pid=""
else
    step "start sequence by hand (PID 1 is '$pid1', not systemd), as user $unit_user"
    while IFS= read -r line; do
        run_unit_command "$line" || fail "ExecStartPre failed: $line"
    done < <(unit_commands ExecStartPre)
    start_line=$(unit_commands ExecStart)
    # As the unit starts it: its user, with CAP_SETUID and CAP_SETGID as
    # ambient capabilities (AmbientCapabilities=, CapabilityBoundingSet=).
    echo "  \$ setpriv (User=$unit_user, AmbientCapabilities=CAP_SETUID CAP_SETGID) $start_line --instance $CI_INSTANCE &"
    (cd / && exec setpriv --reuid="$unit_user" --regid="$unit_user" --init-groups \
        --inh-caps=-all,+setuid,+setgid --ambient-caps=-all,+setuid,+setgid --bounding-set=-all,+setuid,+setgid -- \
        /bin/sh -c "set -a; . '$ENV_FILE'; APPLIANCED_LOG=info; exec $start_line --instance $CI_INSTANCE") \
        > "$work/run.log" 2>&1 &
    runuser_pid=$!
    # setpriv and sh exec: the background job is the supervisor itself.
    supervisor_pid=$runuser_pid
    for _ in $(seq 1 50); do
        [ "$(ps -p "$supervisor_pid" -o comm= 2>/dev/null)" = applianced ] && break
        sleep 0.1
    done
    [ "$(ps -p "$supervisor_pid" -o comm= 2>/dev/null)" = applianced ] || { cat "$work/run.log"; fail "supervisor did not start"; }
    while IFS= read -r line; do
        run_unit_command "$line" || { cat "$work/run.log"; fail "ExecStartPost failed: $line"; }
    done < <(unit_commands ExecStartPost)
    grep -m1 'applianced: ready' "$work/run.log"
    instance=$CI_INSTANCE
fi

step "identities: each lane as its own user, no capability anywhere but the supervisor's permitted set"
if [ "$pid1" = systemd ]; then
    supervisor=$(systemctl show applianced.service -p MainPID --value)
else
    supervisor=$supervisor_pid
fi
caps() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }
[ "$(caps "$supervisor" CapEff)" = 0000000000000000 ] || fail "the supervisor keeps effective capabilities: $(caps "$supervisor" CapEff)"
[ "$(caps "$supervisor" CapAmb)" = 0000000000000000 ] || fail "the supervisor keeps ambient capabilities"
echo "  supervisor (pid $supervisor, $(ps -o user= -p "$supervisor")): CapEff 0, CapAmb 0, CapPrm $(caps "$supervisor" CapPrm)"
for module in core dpi linux_agent windows_agent; do
    lane=$(pgrep -P "$supervisor" -x "lane-${module:0:10}" || true)
    [ -n "$lane" ] || fail "no $module lane under the supervisor"
    user=$(ps -o user:40= -p "$lane" | tr -d ' ')
    expected=ransomeye-lane-${module//_/-}
    [ "$user" = "$expected" ] || fail "the $module lane runs as $user, not $expected"
    [ "$(caps "$lane" CapPrm)" = 0000000000000000 ] || fail "the $module lane holds capabilities"
    echo "  lane $module (pid $lane): user $user, CapPrm 0"
done

step "one batch through every lane, as each module's OS identity"
server_uid=$(id -u "$unit_user")
for pair in core=ransomeye-core dpi=ransomeye-dpi linux_agent=ransomeye-linux-agent windows_agent=ransomeye-windows-relay; do
    module=${pair%%=*}
    user=${pair#*=}
    as_user "$user" timeout 60 /usr/bin/applianced load --module "$module" --events "$EVENTS_PER_MODULE" \
        --producer-id "$PRODUCER_ID" --instance "$instance" --server-uid "$server_uid" > "$work/load.out" 2>&1 ||
        { cat "$work/load.out"; fail "load as $user on lane $module"; }
    echo "  $user: $(grep '^load:' "$work/load.out" | head -n 1 | cut -c1-110)"
done
if as_user ransomeye-dpi timeout 30 /usr/bin/applianced load --module core --events 1 --producer-id 8 \
    --instance "$instance" --server-uid "$server_uid" > "$work/load.out" 2>&1; then
    fail "ransomeye-dpi was admitted on the core lane"
fi
echo "  ransomeye-dpi on the core lane: refused ($(tail -n 1 "$work/load.out" | cut -c1-90))"

step "selftest of the running appliance (as $unit_user)"
as_user "$unit_user" /usr/bin/applianced selftest --config "$CONFIG" > "$work/selftest.out" 2>&1 ||
    { cat "$work/selftest.out"; fail "selftest of the running appliance"; }
grep -E '^(ok|FAIL) +lane' "$work/selftest.out" | cut -c1-150
tail -n 1 "$work/selftest.out"

step "monitoring as README's Monitor section shows it (as $unit_user)"
# The metrics socket, the same exposition from the state directory, and status once.
as_user "$unit_user" /usr/bin/applianced metrics --instance "$instance" > "$work/metrics.out" 2>&1 ||
    { cat "$work/metrics.out"; fail "applianced metrics --instance $instance"; }
grep -q '^applianced_lane_events_committed_total{lane="dpi"} ' "$work/metrics.out" && tail -n 1 "$work/metrics.out" | grep -qx '# EOF' ||
    { cat "$work/metrics.out"; fail "the metrics socket's exposition"; }
as_user "$unit_user" /usr/bin/applianced metrics --state-dir "$STATE_DIR" > "$work/metrics-dir.out" 2>&1 ||
    { cat "$work/metrics-dir.out"; fail "applianced metrics --state-dir"; }
as_user "$unit_user" /usr/bin/applianced status --state-dir "$STATE_DIR" --once > "$work/status.out" 2>&1 ||
    { cat "$work/status.out"; fail "applianced status --once"; }
echo "  metrics: $(grep -c '^applianced_' "$work/metrics.out") samples from @ransomeye/$instance/metrics; status:"
sed 's/^/    /' "$work/status.out"
# A module user is not admitted on the metrics socket: it gets no byte.
if as_user ransomeye-dpi /usr/bin/applianced metrics --instance "$instance" --server-uid "$server_uid" > "$work/metrics.out" 2>&1; then
    fail "ransomeye-dpi was served the metrics"
fi
echo "  ransomeye-dpi on the metrics socket: $(tail -n 1 "$work/metrics.out" | cut -c1-90)"

psql_admin() {
    as_user "$unit_user" psql -X -q -A -t -h "$STATE_DIR/run" -U ransomeye_admin -d ransomeye -c "$1"
}
# Rows of the CI producer across every module's event parents.
count_rows() { # [producer id, default $PRODUCER_ID]
    psql_admin "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format(
        'SELECT count(*) AS c FROM %s WHERE producer_id = ${1:-$PRODUCER_ID}', c.oid::regclass), false, true, '')))[1]::text::bigint), 0)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('core', 'dpi', 'linux_agent', 'windows_agent') AND c.relkind = 'p' AND NOT c.relispartition"
}
rows=$(count_rows)
expected_rows=$((4 * EVENTS_PER_MODULE))
[ "$rows" = "$expected_rows" ] || fail "$rows rows of producer $PRODUCER_ID, expected $expected_rows"
echo "  $rows rows of producer $PRODUCER_ID in PostgreSQL"
step "the producer library's packages: C and Python modules, $LIBRARY_EVENTS events per lane each"
# libransomeye-producer and -dev, installed as a module team would; the C
# example built with pkg-config, the Python example through the bindings
# (the system python3, whose path the -dev package extends), each run as
# the module's OS identity. Purged again at the end of this step.
apt_install gcc libc6-dev pkg-config python3
dpkg -i target/packages/libransomeye-producer_*.deb target/packages/libransomeye-producer-dev_*.deb >/dev/null ||
    fail "installing the producer library's packages"
examples=/usr/share/doc/libransomeye-producer-dev/examples
bin_dir=$(mktemp -d)
chmod 755 "$bin_dir"
# shellcheck disable=SC2046 # pkg-config prints separate flags
cc -O2 -Wall -Werror -o "$bin_dir/send_events" "$examples/send_events.c" $(pkg-config --cflags --libs ransomeye-producer) ||
    fail "the C example does not build against the installed -dev package"
for pair in core=ransomeye-core dpi=ransomeye-dpi linux_agent=ransomeye-linux-agent windows_agent=ransomeye-windows-relay; do
    module=${pair%%=*}
    user=${pair#*=}
    as_user "$user" timeout 300 "$bin_dir/send_events" --module "$module" --events "$LIBRARY_EVENTS" \
        --producer-id "$PRODUCER_C" --instance "$instance" --server-uid "$server_uid" > "$work/c.out" 2>&1 ||
        { cat "$work/c.out"; fail "C example as $user on lane $module"; }
    as_user "$user" timeout 300 /usr/bin/python3 "$examples/send_events.py" --module "$module" --events "$LIBRARY_EVENTS" \
        --producer-id "$PRODUCER_PY" --instance "$instance" --server-uid "$server_uid" > "$work/py.out" 2>&1 ||
        { cat "$work/py.out"; fail "Python example as $user on lane $module"; }
    # applianced load beside it, for the Python example's events/s against load's.
    as_user "$user" timeout 300 /usr/bin/applianced load --module "$module" --events "$LIBRARY_EVENTS" \
        --producer-id "$PRODUCER_LOAD" --instance "$instance" --server-uid "$server_uid" > "$work/load.out" 2>&1 ||
        { cat "$work/load.out"; fail "load as $user on lane $module"; }
    load_rate=$(sed -n 's/.* rate=\([0-9]*\) events\/s.*/\1/p' "$work/load.out" | head -n 1)
    py_rate=$(sed -n 's/.*events\/s=\([0-9]*\).*/\1/p' "$work/py.out" | head -n 1)
    ratio=$(awk -v p="${py_rate:-0}" -v l="${load_rate:-0}" 'BEGIN { if (l > 0) printf "%.2f", p / l; else print "?" }')
    echo "  $module: C $(cat "$work/c.out"); Python $(cat "$work/py.out"); applianced load events/s=$load_rate; Python/load=$ratio"
done
for producer in "$PRODUCER_C" "$PRODUCER_PY" "$PRODUCER_LOAD"; do
    rows=$(count_rows "$producer")
    [ "$rows" = "$((4 * LIBRARY_EVENTS))" ] || fail "$rows rows of producer $producer, expected $((4 * LIBRARY_EVENTS))"
    echo "  $rows rows of producer $producer in PostgreSQL"
done
# A sample row of each producer and module, every column but the event
# time compared with the value the examples give (their rule, in one place here).
sample_sql=$(/usr/bin/python3 - "$PRODUCER_C" "$PRODUCER_PY" <<'PY'
import sys
tables = {"core": "detections", "dpi": "flows", "linux_agent": "process_events", "windows_agent": "process_events"}
checks = []
for producer in sys.argv[1:]:
    for module, table in tables.items():
        checks.append(f"SELECT '{module}.{table} {producer}', to_jsonb(t) FROM {module}.{table} t "
                      f"WHERE producer_id = {producer} AND producer_seq = 4242")
print(" UNION ALL ".join(checks))
PY
)
psql_admin "$sample_sql" > "$work/sample.out" || fail "reading the sample rows"
/usr/bin/python3 - "$work/sample.out" <<'PY' || fail "a sample row differs from what the example sent"
import ipaddress, json, sys
seq = 4242
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert len(lines) == 8, f"{len(lines)} sample rows, expected 8"
common = {"producer_id", "producer_epoch", "producer_seq", "source_id", "event_time", "ingest_time"}
for line in lines:
    name, row = line.split("|", 1)
    row = json.loads(row)
    for column, value in row.items():
        if column in common or (isinstance(value, str) and value[:4].isdigit() and "T" in value[:11]):
            continue  # the common columns, and timestamps (the example's clock)
        if isinstance(value, int):
            ok = value in (seq % 3, seq % 65536, seq)
        elif isinstance(value, float):
            ok = abs(value - (seq % 100) / 100) < 1e-6
        elif isinstance(value, str) and value.startswith("example-"):
            ok = value == f"example-{seq}"
        elif isinstance(value, str) and value.startswith("10."):
            ok = ipaddress.ip_interface(value).ip == ipaddress.ip_address(f"10.{(seq >> 16) & 255}.{(seq >> 8) & 255}.{seq & 255}")
        else:
            data = bytes(((seq >> ((b % 8) * 8)) & 0xFF) ^ b for b in range(16))
            ok = value in (data.hex(), "\\x" + data.hex(), str(__import__("uuid").UUID(bytes=data)))
        assert ok, f"{name}: {column} = {value!r}"
print("  sample rows: every column matches what the examples sent (8 rows)")
PY
dpkg --purge libransomeye-producer-dev libransomeye-producer >/dev/null
echo "  producer library packages purged"

jit=$(psql_admin "SHOW jit")
# MemoryDenyWriteExecute=yes makes every JIT-compiled query fail.
[ "$jit" = off ] || fail "jit = $jit in the cluster the unit started; MemoryDenyWriteExecute=yes needs off"
echo "  jit = off"

step "stop"
if [ "$pid1" = systemd ]; then
    systemctl stop applianced.service
else
    kill -TERM "$supervisor_pid"
    # runuser exits with the supervisor's status.
    rc=0
    wait "$runuser_pid" || rc=$?
    supervisor_pid=""
    [ $rc -eq 0 ] || { tail -n 20 "$work/run.log"; fail "supervisor exited $rc on SIGTERM"; }
    echo "  supervisor exited 0 on SIGTERM"
    while IFS= read -r line; do
        run_unit_command "$line" || fail "ExecStopPost failed: $line"
    done < <(unit_commands ExecStopPost)
fi
if as_user ransomeye /usr/lib/postgresql/15/bin/pg_ctl status -D "$STATE_DIR/pgdata" >/dev/null 2>&1; then
    fail "cluster still running after stop"
fi

# Without systemd as PID 1 the sequence above ran by hand, outside the
# unit's sandbox; boot a systemd in a throwaway container to run the unit
# itself, hardening and all (CI_PACKAGES_NSPAWN=0 skips this, loudly).
if [ "$pid1" != systemd ]; then
    if [ "${CI_PACKAGES_NSPAWN:-1}" = 1 ]; then
        step "the unit under systemd (systemd-nspawn)"
        packaging/ci-unit-nspawn.sh
    else
        step "SKIPPED: the unit under systemd (CI_PACKAGES_NSPAWN=0); its hardening was not exercised"
    fi
fi

# ---------------------------------------------------------------------------
step "systemd-analyze verify (every unit)"
verify_args=()
for unit in "${UNITS[@]}"; do verify_args+=("$UNIT_DIR/$unit"); done
if ! systemd-analyze verify "${verify_args[@]}" > "$work/verify.out" 2>&1 || [ -s "$work/verify.out" ]; then
    cat "$work/verify.out"
    fail "systemd-analyze verify"
fi
echo "  ${UNITS[*]}: no findings"

step "systemd-analyze security --offline=yes applianced.service"
systemd-analyze security --offline=yes "$SERVICE" > "$work/security.out" 2>&1 || true
grep '✗' "$work/security.out" | sed 's/  */ /g' | sed 's/^/  /'
score=$(sed -n 's/.*Overall exposure level for applianced.service: \([0-9.]*\).*/\1/p' "$work/security.out")
[ -n "$score" ] || { cat "$work/security.out"; fail "no exposure score"; }
awk -v s="$score" -v max="$EXPOSURE_MAX" 'BEGIN { exit !(s <= max) }' || fail "exposure $score > $EXPOSURE_MAX"
echo "  exposure level $score (limit $EXPOSURE_MAX)"

step "lintian"
lintian --pedantic --display-info --show-overrides "$deb" 2>&1 | grep -v '^running with root privileges' | tee "$work/lintian.out" || true
if grep -q '^[EW]: ' "$work/lintian.out"; then
    fail "lintian reported errors or warnings that packaging/lintian-overrides does not list"
fi
echo "  no errors, no unlisted warnings ($(grep -c '^O: ' "$work/lintian.out" || true) overridden, $(grep -c '^I: ' "$work/lintian.out" || true) info)"
lintian --pedantic --display-info --show-overrides target/packages/libransomeye-producer_*.deb \
    target/packages/libransomeye-producer-dev_*.deb 2>&1 | grep -v '^running with root privileges' | tee "$work/lintian-lib.out" || true
if grep -q '^[EW]: ' "$work/lintian-lib.out"; then
    fail "lintian reported errors or warnings on the producer library's packages"
fi
echo "  producer library packages: no errors, no warnings ($(grep -c '^O: ' "$work/lintian-lib.out" || true) overridden: the package name the module teams rely on)"

# ---------------------------------------------------------------------------
step "the .rpm: file list"
rpm -qlp "$rpm_file" | tee "$work/rpm-files.out"
cat > "$work/rpm-files.expected" <<'EOF'
/etc/ransomeye
/etc/ransomeye/applianced.toml
/usr/bin/applianced
/usr/lib/systemd/system/applianced.service
/usr/lib/systemd/system/ransomeye-agents.slice
/usr/lib/systemd/system/ransomeye-appliance.slice
/usr/lib/systemd/system/ransomeye-core.slice
/usr/lib/systemd/system/ransomeye-dpi.slice
/usr/lib/systemd/system/ransomeye.slice
/usr/lib/sysusers.d/applianced.conf
/usr/lib/tmpfiles.d/applianced.conf
/usr/libexec/applianced
/usr/libexec/applianced/applianced-setup
/usr/share/doc/applianced
/usr/share/doc/applianced/SYSTEMD.md
/usr/share/doc/applianced/copyright
/usr/share/man/man8/applianced.8.gz
EOF
diff -u "$work/rpm-files.expected" "$work/rpm-files.out" || fail "rpm file list differs"
[ "$(rpm -qp --configfiles "$rpm_file")" = /etc/ransomeye/applianced.toml ] || fail "rpm config files"
# Same binary, unit and helper as the .deb (rpm --dump shows SHA-256 digests).
for pair in "usr/bin/applianced=/usr/bin/applianced" \
    "lib/systemd/system/applianced.service=/usr/lib/systemd/system/applianced.service" \
    "usr/libexec/applianced/applianced-setup=/usr/libexec/applianced/applianced-setup"; do
    deb_path=${pair%%=*}
    rpm_path=${pair#*=}
    deb_sum=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$deb_path" | sha256sum | cut -d' ' -f1)
    rpm_sum=$(rpm -qp --dump "$rpm_file" | awk -v p="$rpm_path" '$1 == p { print $4 }')
    [ "$deb_sum" = "$rpm_sum" ] || fail "$rpm_path differs between the .deb and the .rpm"
done
echo "  binary, unit and helper identical to the .deb's"

step "the .rpm: scriptlets"
rpm -qp --scripts "$rpm_file" | tee "$work/rpm-scripts.out"
expect_script() { # scriptlet-header pattern
    awk -v h="$1" '/scriptlet \(using/ { on = index($0, h) == 1 } on' "$work/rpm-scripts.out" | grep -q -- "$2" ||
        fail "rpm $1 scriptlet lacks '$2'"
}
expect_script "preinstall" "systemctl stop applianced.service"
expect_script "postinstall" "/usr/libexec/applianced/applianced-setup install"
expect_script "preuninstall" "disable --now applianced.service"
expect_script "preuninstall" "/usr/libexec/applianced/applianced-setup stop"
expect_script "posttrans" "systemctl start applianced.service"
if awk '/^postuninstall scriptlet/ { on = 1; next } /scriptlet \(using/ { on = 0 } on' "$work/rpm-scripts.out" | grep -q 'rm -rf'; then
    fail "rpm %postun deletes data"
fi
rpm -qpR "$rpm_file" | grep -q 'postgresql15-server or postgresql-server' || fail "rpm lacks the PostgreSQL requirement"
echo "  pre stops, post installs, preun disables and stops, posttrans starts, postun keeps the data"
# The -devel .rpm puts the Python bindings on the system python3's path: its
# scriptlets, run here against a stand-in python3 whose site-packages is a
# scratch directory (no RPM host to install on).
dev_rpm=$(ls target/packages/libransomeye-producer-devel-*.rpm)
rpm -qp --scripts "$dev_rpm" > "$work/dev-scripts.out"
scriptlet() { awk -v h="$1" '/scriptlet \(using/ { on = index($0, h) == 1; next } on' "$work/dev-scripts.out"; }
install -d "$work/fake-bin" "$work/site"
printf '#!/bin/sh\necho %s\n' "$work/site" > "$work/fake-bin/python3"
chmod 755 "$work/fake-bin/python3"
PATH="$work/fake-bin:$PATH" sh -c "$(scriptlet postinstall)" sh 1
[ "$(cat "$work/site/ransomeye_producer.pth" 2>/dev/null)" = /usr/share/ransomeye-producer/python ] ||
    fail "the -devel .rpm's %post does not add the bindings to python3's path"
PATH="$work/fake-bin:$PATH" sh -c "$(scriptlet postuninstall)" sh 1
[ -e "$work/site/ransomeye_producer.pth" ] || fail "the -devel .rpm's %postun removed the path on an upgrade"
PATH="$work/fake-bin:$PATH" sh -c "$(scriptlet postuninstall)" sh 0
[ ! -e "$work/site/ransomeye_producer.pth" ] || fail "the -devel .rpm's %postun left the path on erase"
echo "  -devel: post adds ransomeye_producer.pth to python3's site-packages, postun removes it on erase only"

# ---------------------------------------------------------------------------
# Data survives an upgrade (reinstalling runs prerm upgrade + postinst
# configure with the old version), a removal, and a fresh install over the
# kept state; purge deletes it.
rows_after() { # what
    local rows
    if [ "$pid1" = systemd ]; then
        # postinst started the service again; it serves the cluster.
        systemctl is-active --quiet applianced.service || fail "after $1: applianced.service is not active"
        rows=$(count_rows)
    else
        as_user "$unit_user" /usr/bin/applianced init --state-dir "$STATE_DIR" >/dev/null
        rows=$(count_rows)
        as_user "$unit_user" /usr/bin/applianced stop --state-dir "$STATE_DIR" >/dev/null
    fi
    [ "$rows" = "$expected_rows" ] || fail "after $1: $rows rows, expected $expected_rows"
    echo "  after $1: $rows rows kept"
}
env_before=$(md5sum < "$ENV_FILE")
echo "# edited by ci-packages" >> "$CONFIG"

step "upgrade (dpkg -i over the installed package)"
dpkg -i "$deb" >/dev/null
rows_after "upgrade"
grep -q '^# edited by ci-packages' "$CONFIG" || fail "upgrade replaced the edited conffile"
[ "$(md5sum < "$ENV_FILE")" = "$env_before" ] || fail "upgrade rewrote $ENV_FILE"
echo "  edited $CONFIG and $ENV_FILE kept"

step "remove (dpkg -r)"
dpkg -r applianced >/dev/null
[ ! -e /usr/bin/applianced ] || fail "binary still installed"
[ -f "$STATE_DIR/pgdata/PG_VERSION" ] || fail "removal deleted the cluster"
[ -f "$CONFIG" ] || fail "removal deleted the conffile"
echo "  binary gone; $STATE_DIR and $CONFIG kept"

step "reinstall over the kept state"
dpkg -i "$deb" >/dev/null
rows_after "reinstall"

step "purge (dpkg -P)"
rm -f "$CI_MARKER"
dpkg -P applianced >/dev/null
[ ! -e "$STATE_DIR" ] || fail "purge left $STATE_DIR"
[ ! -e /etc/ransomeye ] || fail "purge left /etc/ransomeye: $(ls -A /etc/ransomeye)"
echo "  $STATE_DIR and /etc/ransomeye removed; users kept: $(getent passwd ransomeye-core | cut -d: -f1)"

step "packages"
ls -l "$deb" "$rpm_file" | awk '{ print "  " $5 " bytes  " $9 }'
echo
echo "ci-packages: all packaging checks passed"
