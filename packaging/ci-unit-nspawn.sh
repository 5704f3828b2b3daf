#!/usr/bin/env bash
# ci-unit-nspawn.sh: run the installed applianced.service under a real
# systemd with every hardening directive in force, on a host whose PID 1 is
# not systemd (CI VMs and containers). Called by packaging/ci-packages.sh
# after the .deb is installed and the host's cluster is stopped.
#
# How: the host's root is bound read-only, an overlay with a tmpfs upper
# layer goes on top (so nothing the container does reaches the host), and
# systemd-nspawn boots the host's own systemd in it with a private network
# namespace. The installed, enabled unit starts at boot. Then, inside:
# the unit is active after its selftest-before-start; one batch per lane as
# each module's OS identity; a refused cross-module peer; selftest of the
# running appliance, including the lane sandbox; MemoryDenyWriteExecute is
# in force (a JIT query fails when a session turns jit on) and jit = off
# by default; the online exposure score; restart and stop are clean (exit 0).
#
# nspawn's own seccomp filter would deny Landlock to everything in the
# container; --system-call-filter adds the three Landlock calls back, so that
# the unit's SystemCallFilter= is what decides.
set -euo pipefail

CONTAINER=ci-applianced
BOOT_TIMEOUT_S=120
EVENTS_PER_MODULE=500
PRODUCER_ID=11

step() { echo "ci-unit-nspawn: -- $*"; }
fail() { echo "ci-unit-nspawn: FAIL: $*" >&2; [ -n "${log:-}" ] && tail -n 30 "$log" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root"
if ! command -v systemd-nspawn >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd-container >/dev/null
fi
[ -f /lib/systemd/system/applianced.service ] || fail "install the .deb first"

root=$(mktemp -d /tmp/ci-unit-nspawn.XXXXXX)
log=$root/console.log
nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    for mount_point in "$root/merged" "$root/layer" "$root/lower"; do
        mountpoint -q "$mount_point" && umount "$mount_point"
    done
    rm -rf "$root"
    # nspawn leaves this behind when /run is not a tmpfs.
    rmdir "/run/systemd/nspawn/propagate/$CONTAINER" 2>/dev/null || true
}
trap cleanup EXIT

step "overlay root over the host's /"
mkdir -p "$root/lower" "$root/layer" "$root/merged"
mount --bind / "$root/lower"
mount -o remount,bind,ro "$root/lower"
mount -t tmpfs -o size=4g,mode=0755 tmpfs "$root/layer"
mkdir -p "$root/layer/upper" "$root/layer/work"
mount -t overlay overlay -o "lowerdir=$root/lower,upperdir=$root/layer/upper,workdir=$root/layer/work" "$root/merged"
m=$root/merged
# nspawn wants an empty /dev and /run; the host's rootfs has a few entries.
find "$m/dev" "$m/run" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
rm -rf "${m:?}${root}"
# Only what the test needs boots: mask the host's other services.
for unit in postgresql.service postgresql@15-main.service console-getty.service getty@tty1.service \
    apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
    dpkg-db-backup.timer fstrim.timer systemd-timesyncd.service; do
    ln -sf /dev/null "$m/etc/systemd/system/$unit"
done
systemd-id128 new > "$m/etc/machine-id"

step "boot systemd (systemd-nspawn)"
systemd-nspawn -D "$m" -M "$CONTAINER" --private-network --register=no --keep-unit \
    --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" -b \
    > "$log" 2>&1 &
nspawn_pid=$!
leader=""
for _ in $(seq 1 100); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || fail "the container's systemd did not start"
inside() { nsenter -t "$leader" -a -- "$@"; }
as_user() { local user=$1; shift; inside runuser -u "$user" -- "$@"; }
# Until the container's manager answers on its bus and has finished booting.
state=unknown
for _ in $(seq 1 $((BOOT_TIMEOUT_S * 2))); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited"
    sleep 0.5
done
case "$state" in running|degraded) ;; *) fail "boot did not finish in $BOOT_TIMEOUT_S s (state '$state')" ;; esac
echo "  container PID 1 is systemd ($(inside systemctl --version | head -n 1)); boot finished: $state"
if ! inside systemctl is-active --quiet applianced.service; then
    { inside systemctl status applianced.service --no-pager -l 2>&1 || true; } | tail -n 30
    { inside journalctl -u applianced.service -o cat --no-pager 2>&1 || true; } | tail -n 40
    fail "applianced.service is not active after boot"
fi

step "applianced.service started with its selftest before start"
inside systemctl show applianced.service -p ActiveState -p SubState -p MainPID -p ControlGroup -p Slice |
    sed 's/^/  /'
pre=$(inside journalctl -b -u applianced.service -o cat --no-pager)
grep -q '^Data-plane hardened. Ready to proceed to Phase B.$' <<< "$pre" || fail "no passing selftest in the start log"
grep -q 'applianced: ready: 4 lanes' <<< "$pre" || fail "supervisor never reported ready"
grep -m1 '^ok   lane sandbox' <<< "$pre" | cut -c1-120 | sed 's/^/  before start: /'
main_pid=$(inside systemctl show applianced.service -p MainPID --value)
inside grep -E '^(Uid|NoNewPrivs|Seccomp|CapEff|CapBnd):' "/proc/$main_pid/status" | sed 's/^/  supervisor /'
inside systemctl show applianced.service -p ExecStartPre -p ExecStartPost --no-pager |
    grep -o 'path=[^ ]* ; argv\[\]=[^;]*; .*status=[0-9]*' | sed 's/ ; ignore_errors.*status=/ -> status=/; s/^/  /' || true

step "each lane as its own identity, without capabilities"
caps() { inside sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }
[ "$(caps "$main_pid" CapEff)" = 0000000000000000 ] || fail "the supervisor keeps effective capabilities"
[ "$(caps "$main_pid" CapAmb)" = 0000000000000000 ] || fail "the supervisor keeps ambient capabilities"
postmaster=$(inside head -n 1 /var/lib/ransomeye/pgdata/postmaster.pid)
[ "$(caps "$postmaster" CapPrm)" = 0000000000000000 ] || fail "PostgreSQL holds capabilities: $(caps "$postmaster" CapPrm)"
echo "  supervisor CapEff 0, CapAmb 0; postmaster (pid $postmaster) CapPrm 0"
for module in core dpi linux_agent windows_agent; do
    lane=$(inside pgrep -P "$main_pid" -x "lane-${module:0:10}" || true)
    [ -n "$lane" ] || fail "no $module lane under the supervisor"
    user=$(inside ps -o user:40= -p "$lane" | tr -d ' ')
    [ "$user" = "ransomeye-lane-${module//_/-}" ] || fail "the $module lane runs as $user"
    [ "$(caps "$lane" CapPrm)" = 0000000000000000 ] || fail "the $module lane holds capabilities"
    echo "  lane $module: user $user, CapPrm 0"
done

step "one batch per lane, as each module's OS identity"
server_uid=$(inside id -u ransomeye)
for pair in core=ransomeye-core dpi=ransomeye-dpi linux_agent=ransomeye-linux-agent windows_agent=ransomeye-windows-relay; do
    module=${pair%%=*}
    user=${pair#*=}
    out=$(as_user "$user" timeout 60 /usr/bin/applianced load --module "$module" --events "$EVENTS_PER_MODULE" \
        --producer-id "$PRODUCER_ID" --server-uid "$server_uid" 2>&1) || { echo "$out"; fail "load as $user"; }
    echo "  $user: $(grep '^load:' <<< "$out" | cut -c1-100)"
done
if as_user ransomeye-core timeout 30 /usr/bin/applianced load --module dpi --events 1 --producer-id 12 \
    --server-uid "$server_uid" >/dev/null 2>&1; then
    fail "ransomeye-core was admitted on the dpi lane"
fi
echo "  ransomeye-core on the dpi lane: refused"

step "selftest of the running unit (as ransomeye)"
out=$(as_user ransomeye /usr/bin/applianced selftest --config /etc/ransomeye/applianced.toml 2>&1) ||
    { echo "$out"; fail "selftest of the running unit"; }
grep -E '^ok +lane' <<< "$out" | cut -c1-160 | sed 's/^/  /'

step "MemoryDenyWriteExecute= is in force, and jit = off"
psql_admin() {
    as_user ransomeye psql -X -q -A -t -h /var/lib/ransomeye/run -U ransomeye_admin -d ransomeye "$@" 2>&1
}
jit=$(psql_admin -c "SHOW jit")
[ "$jit" = off ] || fail "jit = $jit in the running cluster"
query="SELECT sum(x) FROM generate_series(1, 100000) AS x"
out=$(psql_admin -c "SET jit_above_cost = 0" -c "$query") || fail "a query with jit = off failed: $out"
echo "  jit = off; a query over jit_above_cost = 0 runs: $out"
if out=$(psql_admin -c "SET jit = on" -c "SET jit_above_cost = 0" -c "$query"); then
    fail "a JIT-compiled query succeeded: MemoryDenyWriteExecute= is not in force"
fi
echo "  with jit = on it fails, as MemoryDenyWriteExecute= makes it: $(grep -m1 -o 'ERROR: .*' <<< "$out" | cut -c1-80)"

step "exposure score, online"
inside systemd-analyze security applianced.service 2>&1 | tail -n 1 | sed 's/^/  /'

step "restart and stop"
inside systemctl restart applianced.service || fail "restart"
inside systemctl is-active --quiet applianced.service || fail "not active after restart"
inside systemctl stop applianced.service
result=$(inside systemctl show applianced.service -p Result --value)
status=$(inside systemctl show applianced.service -p ExecMainStatus --value)
[ "$result" = success ] && [ "$status" = 0 ] || fail "stop: Result=$result ExecMainStatus=$status"
if as_user ransomeye /usr/lib/postgresql/15/bin/pg_ctl status -D /var/lib/ransomeye/pgdata >/dev/null 2>&1; then
    fail "PostgreSQL still running after systemctl stop"
fi
inside journalctl -b -u applianced.service -o cat --no-pager | grep -c 'lane stopped' |
    sed 's/^/  lanes drained on stop: /'
echo "  Result=$result, supervisor exit status $status, PostgreSQL stopped"

echo "ci-unit-nspawn: the unit runs under systemd with its hardening"
