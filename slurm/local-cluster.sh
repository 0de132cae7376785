#!/bin/sh
# A one-node Slurm on this machine, for trying the sbatch scripts and for the
# tests: munged with its own key, slurmctld and slurmd, everything (config,
# key, state, logs, pid files) in one state folder.
#
#   slurm/local-cluster.sh start    # as root; waits until the node is idle
#   export SLURM_CONF=/tmp/gmorph-slurm/slurm.conf   # start prints this line
#   sbatch ...; squeue; scontrol show job ID
#   slurm/local-cluster.sh status   # exit 0 when up
#   slurm/local-cluster.sh stop     # cancels the jobs, ends the daemons
#
# Environment: GMORPH_SLURM_DIR (state folder, default /tmp/gmorph-slurm),
# GMORPH_SLURM_CPUS (CPUs the node offers, default 8: config_overrides lets a
# 2-core machine run 8 tasks), GMORPH_SLURM_PORT (slurmctld's port, default
# 6817; slurmd takes the next one).
#
# Needs root and the Debian packages slurm-wlm and munge. Exit codes: 0 done,
# 1 a daemon did not come up (its log is printed), 2 cannot run here (not root,
# packages missing, bad usage), 3 (status) not running.
set -u

dir=${GMORPH_SLURM_DIR:-/tmp/gmorph-slurm}
cpus=${GMORPH_SLURM_CPUS:-8}
port=${GMORPH_SLURM_PORT:-6817}
host=$(hostname -s)
conf=$dir/slurm.conf
me=local-cluster.sh

say() { echo "$me: $*" >&2; }

# The pid in FILE when that process is alive.
alive() {
    [ -s "$1" ] || return 1
    p=$(cat "$1" 2>/dev/null)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

running() {
    alive "$dir/munge/munged.pid" >/dev/null && alive "$dir/slurmctld.pid" >/dev/null && alive "$dir/slurmd.pid" >/dev/null
}

check_host() {
    if [ "$(id -u)" -ne 0 ]; then
        say "must run as root (slurmd starts jobs as any user)"
        exit 2
    fi
    for c in munged slurmctld slurmd sbatch srun scontrol sinfo; do
        if ! command -v "$c" >/dev/null 2>&1; then
            say "$c not found: apt-get install slurm-wlm munge (tests/install-deps.sh)"
            exit 2
        fi
    done
    if ! id munge >/dev/null 2>&1; then
        say "no munge user: apt-get install munge"
        exit 2
    fi
}

write_conf() {
    # munged wants its folder writable by munge alone and enterable by all (the socket).
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    chmod 755 "$dir" "$dir/munge"
    chown munge:munge "$dir/munge"
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
        chown munge:munge "$dir/munge/munge.key"
        chmod 400 "$dir/munge/munge.key"
    fi
    cat >"$conf" <<EOF
# Written by slurm/local-cluster.sh: one node, $cpus CPUs, everything under $dir.
ClusterName=gmorph
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups here (containers, gVisor): plain process tracking, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Open MPI under srun needs PMIx (pmi2 and none fail).
MpiDefault=pmix
# The node line's CPUs win over what slurmd finds.
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# SIGTERM at a time limit or requeue, SIGKILL this many seconds later.
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

# Prints the daemon's log and fails.
died() {
    say "$1 did not start; the end of $2:"
    tail -n 20 "$2" >&2 2>/dev/null
    exit 1
}

start() {
    check_host
    if running && [ -s "$conf" ]; then
        say "already running ($conf)"
        echo "export SLURM_CONF=$conf"
        return 0
    fi
    stop_daemons # whatever half of it is left from before
    write_conf
    export SLURM_CONF="$conf"
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        || died munged "$dir/munge/munged.log"
    slurmctld -f "$conf" || died slurmctld "$dir/log/slurmctld.log"
    slurmd -f "$conf" -N "$host" || died slurmd "$dir/log/slurmd.log"
    # The node registers within about a second; a node left down by an earlier run is resumed.
    i=0
    while [ $i -lt 60 ]; do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null)
        case $state in
        idle* | mixed* | allocated*) break ;;
        down* | drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null ;;
        esac
        sleep 0.5
        i=$((i + 1))
    done
    [ $i -lt 60 ] || died "the node (state '$state')" "$dir/log/slurmd.log"
    say "up: node $host with $cpus CPUs, partition local; state in $dir"
    echo "export SLURM_CONF=$conf"
}

# Ends each daemon by its pid file, waiting for it to go.
stop_one() { # NAME PIDFILE
    p=$(alive "$2") || return 0
    kill "$p" 2>/dev/null
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    say "$1 ($p) stopped"
}

stop_daemons() {
    stop_one slurmd "$dir/slurmd.pid"
    stop_one slurmctld "$dir/slurmctld.pid"
    stop_one munged "$dir/munge/munged.pid"
}

stop() {
    check_host
    if alive "$dir/slurmctld.pid" >/dev/null; then
        # Jobs first: a step outlives slurmd otherwise.
        SLURM_CONF="$conf" scancel --quiet --partition=local 2>/dev/null
        i=0
        while [ -n "$(SLURM_CONF="$conf" squeue -h -t running,completing 2>/dev/null)" ] && [ $i -lt 60 ]; do
            sleep 0.5
            i=$((i + 1))
        done
    fi
    stop_daemons
}

status() {
    if running; then
        echo "running: munged $(alive "$dir/munge/munged.pid"), slurmctld $(alive "$dir/slurmctld.pid"), slurmd $(alive "$dir/slurmd.pid")"
        SLURM_CONF="$conf" sinfo
        SLURM_CONF="$conf" squeue
        echo "export SLURM_CONF=$conf"
        return 0
    fi
    echo "not running (state folder $dir)"
    return 3
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $me start|stop|status" >&2
    exit 2
    ;;
esac
