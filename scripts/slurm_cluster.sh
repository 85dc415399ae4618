#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for tests/test_slurm.py and for trying the Slurm
# backend by hand: Debian's munge + slurm-wlm (apt), one slurmctld and one slurmd, all of them with
# a config, ports, state, spool, logs and munge socket of their own under STATE_DIR, so it stays
# apart from any other Slurm or munge on the machine.
#
#   scripts/slurm_cluster.sh install                # apt-get install munge + slurm-wlm when missing
#   scripts/slurm_cluster.sh start  [STATE_DIR]     # install, write the config, start, wait for idle
#   scripts/slurm_cluster.sh status [STATE_DIR]     # daemons alive? sinfo
#   scripts/slurm_cluster.sh stop   [STATE_DIR]     # stop the daemons this script started (pid files)
#
# STATE_DIR defaults to /tmp/lightning-lab-slurm. `start` ends by printing the one line that points
# the Slurm commands at this cluster:   export SLURM_CONF=STATE_DIR/slurm.conf
# Environment: SLURM_CLUSTER_CPUS (CPUs the node offers; default max(nproc, 4): a 2-task job and a
#   1-task job fit side by side even on 2 cores), SLURM_CLUSTER_PORT (slurmctld's port; slurmd takes
#   the next one; default: two free ports). Needs root (apt, and slurmd runs jobs as any user).
set -euo pipefail

COMMAND="${1:-}"
STATE_DIR="${2:-/tmp/lightning-lab-slurm}"
PACKAGES=(munge slurm-wlm)
say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------- install
slurm_version() {  # without a config `sbatch --version` fails; ask dpkg (or say unknown)
    dpkg-query -W -f 'slurm ${Version}' slurm-client 2>/dev/null || echo "slurm: version unknown"
}

install_packages() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null; then
        say "munge and slurm-wlm: present ($(slurm_version))"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "installing munge and slurm-wlm needs root (apt-get install ${PACKAGES[*]})"
    command -v apt-get >/dev/null || die "needs apt-get (Debian/Ubuntu) to install ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local log
    log="$(mktemp -t slurm_cluster_install.XXXXXX.log)"
    # Update the package lists only when apt does not know slurm-wlm yet (a fresh image has none).
    if ! apt-cache show slurm-wlm >/dev/null 2>&1; then
        say "apt-get update"
        apt-get update -qq >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
    fi
    say "apt-get install ${PACKAGES[*]} (log: $log)"
    if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1; then
        # stale lists (a package version no longer on the mirror): refresh once and retry
        apt-get update -qq >>"$log" 2>&1
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1 \
            || { tail -n 30 "$log" >&2; exit 1; }
    fi
    command -v sbatch >/dev/null || die "apt installed slurm-wlm but sbatch is not on PATH"
    say "installed munge and slurm-wlm ($(slurm_version))"
}

# ------------------------------------------------------------------------------------- config
free_port_pair() {  # a port P where P and P+1 are both free
    python3 - <<'EOF'
import socket
for _ in range(200):
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        if port > 65000:
            continue
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        print(port)
        break
EOF
}

write_config() {
    local host cpus port mem
    host="$(hostname -s)"
    cpus="${SLURM_CLUSTER_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}"
    port="${SLURM_CLUSTER_PORT:-$(free_port_pair)}"
    [ -n "$port" ] || die "found no free pair of TCP ports for slurmctld and slurmd"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    mkdir -p "$STATE_DIR"/{ctld,spool,log,run,munge}
    chmod 0755 "$STATE_DIR" "$STATE_DIR/munge"
    if [ ! -s "$STATE_DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$STATE_DIR/munge/munge.key"
    fi
    # SlurmdParameters=config_overrides: the node offers CPUs=$cpus even where fewer cores exist
    # (jobs here are small tests; a 2-task DDP job must schedule next to a 1-task reference run).
    # No cgroup.conf: proctrack/linuxproc and task/none need none (CgroupPlugin=disabled would stop
    # slurmd 22.05 from starting). No accounting database: squeue/scontrol follow the jobs.
    cat >"$STATE_DIR/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node test cluster on localhost.
ClusterName=lightninglab
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxJobCount=10000
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# ------------------------------------------------------------------------------------- daemons
pid_alive() {  # pid_alive PIDFILE: the process named in PIDFILE is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_cluster() {
    install_packages
    [ "$(id -u)" -eq 0 ] || die "starting the test cluster needs root (SlurmUser=root, munged --force)"
    if pid_alive "$STATE_DIR/run/slurmctld.pid"; then
        say "already running in $STATE_DIR"
        echo "export SLURM_CONF=$STATE_DIR/slurm.conf"
        return 0
    fi
    write_config
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    local log="$STATE_DIR/log"
    munged --force --socket="$STATE_DIR/munge/munge.socket" --key-file="$STATE_DIR/munge/munge.key" \
        --pid-file="$STATE_DIR/run/munged.pid" --seed-file="$STATE_DIR/munge/munge.seed" \
        --log-file="$log/munged.log" >>"$log/start.log" 2>&1 \
        || { tail -n 20 "$log/munged.log" "$log/start.log" >&2 2>/dev/null; die "munged did not start"; }
    # -c: a clean start (no jobs left over from a previous cluster in this STATE_DIR)
    slurmctld -c -f "$SLURM_CONF" >>"$log/start.log" 2>&1 \
        || { tail -n 20 "$log/slurmctld.log" >&2 2>/dev/null; die "slurmctld did not start"; }
    slurmd -f "$SLURM_CONF" >>"$log/start.log" 2>&1 \
        || { tail -n 20 "$log/slurmd.log" >&2 2>/dev/null; die "slurmd did not start"; }
    local state=""
    for _ in $(seq 1 60); do
        state="$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)"
        [ "$state" = "idle" ] && break
        sleep 0.5
    done
    if [ "$state" != "idle" ]; then
        tail -n 20 "$log/slurmctld.log" "$log/slurmd.log" >&2 2>/dev/null || true
        die "the node is '${state:-unknown}', not idle, after 30 s (logs in $log)"
    fi
    say "cluster up in $STATE_DIR: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_cluster() {
    local daemon pidfile pid stopped=0
    if pid_alive "$STATE_DIR/run/slurmctld.pid"; then
        # Cancel what still runs first, so no job's processes outlive the cluster.
        export SLURM_CONF="$STATE_DIR/slurm.conf"
        local jobs
        jobs="$(squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            say "cancelling job(s) $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
        fi
    fi
    local pids=()
    for daemon in slurmd slurmctld munged; do
        pidfile="$STATE_DIR/run/$daemon.pid"
        pid_alive "$pidfile" || continue
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" && pids+=("$pid") && stopped=$((stopped + 1))
    done
    for pid in "${pids[@]}"; do  # all were asked at once; give each up to 10 s, then kill it
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    done
    rm -f "$STATE_DIR"/run/*.pid
    say "stopped $stopped daemon(s) of $STATE_DIR"
}

status_cluster() {
    local daemon rc=0
    for daemon in munged slurmctld slurmd; do
        if pid_alive "$STATE_DIR/run/$daemon.pid"; then
            say "$daemon: running (pid $(cat "$STATE_DIR/run/$daemon.pid"))"
        else
            say "$daemon: not running"; rc=1
        fi
    done
    if [ "$rc" -eq 0 ]; then
        SLURM_CONF="$STATE_DIR/slurm.conf" sinfo
        echo "export SLURM_CONF=$STATE_DIR/slurm.conf"
    fi
    return "$rc"
}

case "$COMMAND" in
    install) install_packages ;;
    start) start_cluster ;;
    stop) stop_cluster ;;
    status) status_cluster ;;
    *) die "usage: $0 install | start [STATE_DIR] | stop [STATE_DIR] | status [STATE_DIR]" ;;
esac
