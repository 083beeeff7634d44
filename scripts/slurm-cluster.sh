#!/usr/bin/env bash
# A private single-node Slurm cluster from Debian's packages (slurm-wlm,
# munge), for the Slurm tests and for trying slurm/*.sbatch on one machine.
#
#   scripts/slurm-cluster.sh run DIR COMMAND [ARG...]
#       starts a cluster in DIR (created; must not exist or be empty), runs
#       COMMAND with SLURM_CONF pointing at it, stops the cluster's daemons
#       (also on error or Ctrl-C) and exits with COMMAND's status
#   scripts/slurm-cluster.sh start DIR
#       starts it and leaves it running; prints the `export SLURM_CONF=...`
#       line that points sbatch/squeue/srun/scancel at it
#   scripts/slurm-cluster.sh stop DIR
#       stops the daemons a `start DIR` started
#
# Exit status: COMMAND's (run), 0 (start, stop), 2 usage error, 75 the
# cluster cannot be brought up here (not root, packages missing, a daemon
# did not start); the reason is printed as "slurm-cluster: cannot ...".
#
# Nothing outside DIR is written or stopped: munged gets its own key, socket,
# PID and log files in DIR/munge; slurmctld and slurmd get DIR/slurm.conf
# (read with -f, and by the clients through SLURM_CONF), their own state,
# spool, PID and log files, and two TCP ports found free at start (so a
# cluster already running on this machine, ours or the system's, is left
# alone). The daemons are stopped by the PIDs they recorded, after checking
# that each PID still runs that daemon with DIR on its command line.
#
# Settings (environment):
#   SLURM_CLUSTER_CPUS      CPUs the node offers (default: slurmd -C's)
#   SLURM_CLUSTER_PORT      first port to try for slurmctld; slurmd gets the
#                           next one (default: 17000 + a number from our PID)
#   SLURM_CLUSTER_TIMEOUT   seconds to wait for the node to be idle (default 30)
#
# The settings come from what works with Debian 12's Slurm 22.05 without
# systemd or cgroups: proctrack/linuxproc, task/none, select/cons_tres with
# CR_Core, MpiDefault=pmix (Debian's Open MPI speaks Slurm's PMIx, not PMI-2),
# no accounting, MailProg=/bin/true, and a short credential lifetime
# (cred_expire) because a requeued job waits that long before it may start
# again (default 120 s).
set -euo pipefail

die_usage() { echo "usage: $0 run DIR COMMAND [ARG...] | start DIR | stop DIR" >&2; exit 2; }
cannot() { echo "slurm-cluster: cannot $*" >&2; exit 75; }
say() { echo "slurm-cluster: $*" >&2; }

# pid_is DIR PIDFILE NAME: prints the PID recorded in PIDFILE when that
# process is alive, is NAME and has DIR on its command line.
pid_is() {
  local dir=$1 file=$2 name=$3 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 < "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  echo "$pid"
}

stop_cluster() {
  local dir=$1 pids=() pid i spec
  # jobs first, so that none is left running without its daemons
  if pid_is "$dir" "$dir/slurm/slurmctld.pid" slurmctld >/dev/null; then
    local jobs
    jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF=$dir/slurm.conf scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [ -z "$(SLURM_CONF=$dir/slurm.conf squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  # a step daemon inherits slurmd's environment, which names our slurm.conf
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    if { tr '\0' '\n' < "/proc/$pid/environ" | grep -qxF -- "SLURM_CONF=$dir/slurm.conf"; } 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for spec in "slurmd:slurm/slurmd.pid" "slurmctld:slurm/slurmctld.pid" "munged:munge/munged.pid"; do
    pid=$(pid_is "$dir" "$dir/${spec#*:}" "${spec%%:*}") || continue
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for ((i = 0; i < 100; i++)); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; done
  [ ${#pids[@]} -eq 0 ] || say "stopped ${#pids[@]} daemon(s) of $dir (PIDs ${pids[*]})"
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

start_cluster() {
  local dir=$1
  [ "$(id -u)" -eq 0 ] || cannot "start a cluster: needs root (munged runs as the munge user, slurmd as root)"
  local prog
  for prog in munged slurmctld slurmd sbatch squeue srun scontrol sinfo ss; do
    command -v "$prog" >/dev/null 2>&1 || cannot "start a cluster: $prog is not installed (apt-get install slurm-wlm munge)"
  done
  id munge >/dev/null 2>&1 || cannot "start a cluster: there is no munge user (apt-get install munge)"
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    say "$dir is not empty (a cluster already there? stop it with: $0 stop $dir)"; exit 2
  fi
  mkdir -p "$dir"
  # munged refuses a key or socket whose folders others could replace: the
  # cluster folder is root's and readable, munge/ is munge's own
  chmod 755 "$dir"
  mkdir -p "$dir/munge" "$dir/slurm/state" "$dir/slurm/spool" "$dir/log"
  chown munge:munge "$dir/munge"
  chmod 755 "$dir/munge"
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
  chown munge:munge "$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"

  local sock=$dir/munge/munge.socket
  setpriv --reuid munge --regid munge --init-groups -- munged --socket="$sock" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
    || cannot "start munged (its log: $dir/munge/munged.log)"

  local port=${SLURM_CLUSTER_PORT:-$((17000 + ($$ % 500) * 2))} tries
  for ((tries = 0; tries < 50; tries++)); do
    port_free "$port" && port_free $((port + 1)) && break
    port=$((port + 2))
  done
  { port_free "$port" && port_free $((port + 1)); } || cannot "find two free TCP ports for slurmctld and slurmd"

  local node cpus mem
  node=$(hostname -s)
  read -r cpus mem < <(slurmd -C | awk '/^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2] } } END { print c, m }')
  { [ -n "$cpus" ] && [ -n "$mem" ]; } || cannot "read this machine's CPUs and memory from slurmd -C"
  cpus=${SLURM_CLUSTER_CPUS:-$cpus}

  cat > "$dir/slurm.conf" <<EOF
# Written by scripts/slurm-cluster.sh: a private one-node cluster.
ClusterName=radcaptest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=5
StateSaveLocation=$dir/slurm/state
SlurmdSpoolDir=$dir/slurm/spool/%n
SlurmctldPidFile=$dir/slurm/slurmctld.pid
SlurmdPidFile=$dir/slurm/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF" || cannot "start slurmctld (its log: $dir/log/slurmctld.log)"
  slurmd -f "$SLURM_CONF" -N "$node" || cannot "start slurmd (its log: $dir/log/slurmd.log)"

  local state="" i
  for ((i = 0; i < ${SLURM_CLUSTER_TIMEOUT:-30} * 5; i++)); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
    case $state in idle|mixed|allocated) break ;; esac
    sleep 0.2
  done
  case $state in
    idle|mixed|allocated) ;;
    *) tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
       cannot "bring node $node up (state '${state:-none}'; logs in $dir/log)" ;;
  esac
  say "cluster up in $dir: node $node, $cpus CPUs, ports $port-$((port + 1)), SLURM_CONF=$SLURM_CONF"
}

[ $# -ge 2 ] || die_usage
action=$1
dir=$(realpath -m -- "$2")
shift 2
case $action in
  start)
    [ $# -eq 0 ] || die_usage
    # shellcheck disable=SC2154 # rc is assigned in the trap itself
    trap 'rc=$?; [ "$rc" -eq 0 ] || stop_cluster "$dir"' EXIT
    start_cluster "$dir"
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
  stop)
    [ $# -eq 0 ] || die_usage
    [ -d "$dir" ] || { say "no cluster folder $dir"; exit 2; }
    stop_cluster "$dir"
    ;;
  run)
    [ $# -ge 1 ] || die_usage
    trap 'stop_cluster "$dir"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster "$dir"
    export SLURM_CONF=$dir/slurm.conf
    set +e
    "$@"
    exit $?
    ;;
  *) die_usage ;;
esac
