# shellcheck shell=bash
# slurm/lib.sh: the part slurm/caption.sbatch, slurm/nightly.sbatch and
# slurm/evaluate.sbatch share (sourced by them; not a job script itself).
# Functions and variables are prefixed rj_ / RJ_.
#
# What it does for a script:
#   rj_setup NAME ARGS...   finds radcap, checks the paths among ARGS (the
#                           radcap run options), works out ranks and threads
#                           and prints a header; exits 3 (nothing launched)
#                           with a message naming the option and the path
#                           when one is wrong
#   rj_launch ARGS...       runs `radcap run ARGS...` over the allocation (srun
#                           or mpirun) with the signal handling below; sets
#                           RJ_STATUS to radcap's exit status
#   rj_requeue_if_warned    after rj_launch: when Slurm's time-limit warning
#                           stopped the run, requeues the job (which continues
#                           the same run in the same database) and never returns
#   rj_resubmit SCRIPT BEGIN ARGS...  submits the script again for later
#   rj_with_job FILE ARGS...  a preset job file as the base of the arguments
#
# Signals. The scripts ask for `--signal=B:USR1@SECONDS`: SECONDS before the
# time limit Slurm sends SIGUSR1 to this batch shell only; the shell passes it
# on to the launcher (srun forwards it to every task, mpirun to every rank),
# the ranks finish and store the batches in hand and radcap exits 4; the shell
# then requeues the job. SIGTERM (scancel, scontrol requeue, the time limit
# itself) is sent by Slurm to every task directly, so the shell does not pass
# it on (a second SIGTERM would end radcap at once); it only waits. Under
# mpirun, Slurm's SIGTERM also reaches mpirun, which kills the ranks 1 s later:
# prefer srun, or rely on the USR1 warning.
#
# Parameters (environment; sbatch exports the submitter's environment):
#   RADCAP           the radcap program (default: ./radcap of the checkout that
#                    holds the submit directory, else the checkout of this
#                    script, else radcap on PATH)
#   RADCAP_LAUNCHER  srun (default when srun exists) or mpirun
#   RADCAP_SRUN_MPI  srun's --mpi plugin (default pmix: Debian's Open MPI
#                    speaks Slurm's PMIx; PMI-2 does not work with it)
#   RADCAP_MASTER    extra (default): start one rank more than the job's tasks
#                    (srun --overcommit) so that every task captions and rank 0,
#                    which only dispatches (1-2% of a core), shares the first
#                    node; task: rank 0 is one of the tasks (N tasks = N-1
#                    captioning ranks; one task = one process doing both)
#   RADCAP_THREADS   OpenMP threads of each captioning rank (default: the job's
#                    --cpus-per-task, else 1); exported as OMP_NUM_THREADS
#   RADCAP_REQUEUE   1 (default): requeue the job after the time-limit warning
#                    stopped it; 0: end with status 4 (run the job again to go on)
#   RADCAP_MAX_REQUEUES  requeue at most this many times (default 20), so a
#                    time limit too short for any progress does not loop forever
#   RADCAP_REQUEUE_MIN_SECONDS  do not requeue when the warning came sooner than
#                    this after the job started (default 60): the time limit is
#                    then shorter than the warning's lead time and a requeued
#                    job would stop again at once

rj_say() { echo "$RJ_NAME: $*"; }

# rj_with_job FILE ARGS...: sets RJ_ARGS to ARGS, preceded by --job FILE
# unless ARGS give a --job of their own (options after it override its keys).
rj_with_job() {
  local file=$1 a
  shift
  # shellcheck disable=SC2034 # read by the scripts
  RJ_ARGS=("$@")
  for a in "$@"; do
    case $a in --job|--job=*) return 0 ;; esac
  done
  # shellcheck disable=SC2034
  RJ_ARGS=(--job "$file" "$@")
}
rj_fail() { echo "$RJ_NAME: error: $*" >&2; exit 3; }

# The checkout folder that holds DIR (a folder with ./radcap and slurm/), or
# nothing.
rj_checkout_of() {
  local d=$1
  while [ -n "$d" ] && [ "$d" != / ]; do
    if [ -x "$d/radcap" ] && [ -f "$d/slurm/lib.sh" ]; then echo "$d"; return 0; fi
    d=$(dirname -- "$d")
  done
  return 1
}

rj_find_radcap() {
  local home
  if [ -n "${RADCAP:-}" ]; then
    if [ ! -f "$RADCAP" ] || [ ! -x "$RADCAP" ]; then rj_fail "RADCAP=$RADCAP is not an executable file"; fi
    RJ_RADCAP=$(realpath -- "$RADCAP")
  elif home=$(rj_checkout_of "${SLURM_SUBMIT_DIR:-$PWD}"); then
    RJ_RADCAP=$home/radcap
  elif [ -x "${RJ_HOME:-/nonexistent}/radcap" ]; then
    RJ_RADCAP=$RJ_HOME/radcap
  elif RJ_RADCAP=$(command -v radcap); then
    :
  else
    rj_fail "cannot find radcap: set RADCAP=/path/to/radcap, submit from the radcap checkout (where 'make' built ./radcap), or put radcap on PATH"
  fi
}

# rj_check_path OPTION PATH KIND: KIND is file (must be readable) or out (its
# folder must exist and be writable).
rj_check_path() {
  local opt=$1 path=$2 kind=$3 where=""
  [ "${path#/}" != "$path" ] || where=" (relative paths are taken from the submit directory, $PWD)"
  case $kind in
    file)
      [ -e "$path" ] || rj_fail "$opt $path: no such file or folder$where"
      [ -r "$path" ] || rj_fail "$opt $path: not readable$where" ;;
    out)
      local dir
      dir=$(dirname -- "$path")
      [ -d "$dir" ] || rj_fail "$opt $path: the folder $dir does not exist$where"
      [ -w "$dir" ] || rj_fail "$opt $path: the folder $dir is not writable$where"
      [ ! -e "$path" ] || [ -w "$path" ] || rj_fail "$opt $path: not writable$where" ;;
  esac
}

# Checks the paths among radcap run's options (--opt VALUE or --opt=VALUE),
# with a hint about relative paths; `radcap run --check` then checks the
# rest, the paths inside a --job file included.
rj_check_args() {
  local opt value kind inline
  while [ $# -gt 0 ]; do
    opt=$1
    shift
    case $opt in
      --*=*) value=${opt#*=} opt=${opt%%=*} inline=1 ;;
      *) value=${1-} inline=0 ;;
    esac
    case $opt in
      --manifest|--checkpoint|--vocab|--config|--job|--image-dir) kind="file" ;;
      --db) kind="out" ;;
      *) continue ;;
    esac
    [ "$inline" = 1 ] || [ $# -eq 0 ] || shift
    [ -n "$value" ] || rj_fail "$opt needs a value"
    rj_check_path "$opt" "$value" "$kind"
  done
}

rj_setup() {
  RJ_NAME=$1
  shift
  RJ_STATUS=3 RJ_WARNED=0 RJ_PID=""
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    rj_say "not inside a Slurm job (submit it with sbatch): running here"
  fi
  rj_find_radcap
  rj_check_args "$@"
  # radcap checks the rest (the paths inside a --job file, the model
  # configuration, the settings' values) without starting anything
  "$RJ_RADCAP" run --check "$@" >/dev/null || rj_fail "radcap run --check refused the settings (the reason is above)"
  RJ_TASKS=${SLURM_NTASKS:-1}
  RJ_CPUS=${SLURM_CPUS_PER_TASK:-1}
  RJ_THREADS=${RADCAP_THREADS:-$RJ_CPUS}
  case $RJ_THREADS in ''|*[!0-9]*|0) rj_fail "RADCAP_THREADS=$RJ_THREADS is not a positive number" ;; esac
  RJ_LAUNCHER=${RADCAP_LAUNCHER:-}
  if [ -z "$RJ_LAUNCHER" ]; then
    if command -v srun >/dev/null 2>&1 && [ -n "${SLURM_JOB_ID:-}" ]; then RJ_LAUNCHER=srun
    elif command -v mpirun >/dev/null 2>&1; then RJ_LAUNCHER=mpirun
    else RJ_LAUNCHER=none; fi
  fi
  case $RJ_LAUNCHER in srun|mpirun|none) ;; *) rj_fail "RADCAP_LAUNCHER=$RJ_LAUNCHER: use srun or mpirun" ;; esac
  command -v "$RJ_LAUNCHER" >/dev/null 2>&1 || [ "$RJ_LAUNCHER" = none ] ||
    rj_fail "RADCAP_LAUNCHER=$RJ_LAUNCHER: not found on PATH"
  case ${RADCAP_MASTER:-extra} in
    extra) RJ_RANKS=$((RJ_TASKS + 1)) ;;
    task) RJ_RANKS=$RJ_TASKS ;;
    *) rj_fail "RADCAP_MASTER=$RADCAP_MASTER: use extra or task" ;;
  esac
  [ "$RJ_LAUNCHER" != none ] || RJ_RANKS=1
  [ -z "${OMP_NUM_THREADS+set}" ] || RJ_OMP_ORIGINAL=$OMP_NUM_THREADS
  export OMP_NUM_THREADS=$RJ_THREADS
  trap 'rj_on_warning' USR1
  trap 'rj_on_term' TERM
  rj_say "job ${SLURM_JOB_ID:-none} (attempt $((${SLURM_RESTART_COUNT:-0} + 1))) on ${SLURM_JOB_NODELIST:-$(hostname)}:" \
    "$RJ_RANKS rank(s) ($((RJ_RANKS > 1 ? RJ_RANKS - 1 : 1)) captioning, $RJ_THREADS thread(s) each) via $RJ_LAUNCHER;" \
    "radcap: $RJ_RADCAP; folder: $PWD"
}

rj_on_warning() {
  RJ_WARNED=1
  RJ_WARNED_AT=$SECONDS
  rj_say "SIGUSR1 (the time-limit warning, or scancel --batch --signal=USR1): stopping the run cleanly"
  [ -z "$RJ_PID" ] || kill -USR1 "$RJ_PID" 2>/dev/null || true
}

rj_on_term() {
  [ "${RJ_REQUEUING:-0}" = 1 ] || rj_say "SIGTERM: Slurm is ending the job; the ranks got it too and stop cleanly"
}

rj_launch() {
  local cmd=()
  case $RJ_LAUNCHER in
    srun)
      cmd=(srun --mpi="${RADCAP_SRUN_MPI:-pmix}" --ntasks="$RJ_RANKS" --cpus-per-task="$RJ_CPUS" --kill-on-bad-exit=0)
      [ "$RJ_RANKS" -le "$RJ_TASKS" ] || cmd+=(--overcommit) ;;
    mpirun)
      cmd=(mpirun -np "$RJ_RANKS" --oversubscribe)
      if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
      fi ;;
  esac
  cmd+=("$RJ_RADCAP" run "$@")
  rj_say "running: ${cmd[*]}"
  if [ "$RJ_WARNED" = 1 ]; then
    RJ_STATUS=4
    return
  fi
  # in the background, so that the traps run while it works (bash runs a
  # trap only between commands); wait returns early for each trapped signal
  "${cmd[@]}" &
  RJ_PID=$!
  while :; do
    wait "$RJ_PID"
    RJ_STATUS=$?
    kill -0 "$RJ_PID" 2>/dev/null || break
  done
  RJ_PID=""
  rj_say "radcap run ended with status $RJ_STATUS ($(rj_status_text "$RJ_STATUS"))"
}

rj_status_text() {
  case $1 in
    0) echo "every image captioned" ;;
    1) echo "completed, some images failed: their errors are in the database" ;;
    2) echo "usage error" ;;
    3) echo "could not run: see the messages above" ;;
    4) echo "interrupted; the same command continues the run" ;;
    *) echo "killed or failed" ;;
  esac
}

rj_requeue_if_warned() {
  [ "$RJ_STATUS" = 4 ] && [ "$RJ_WARNED" = 1 ] && [ "${RADCAP_REQUEUE:-1}" = 1 ] || return 0
  local restarts=${SLURM_RESTART_COUNT:-0} max=${RADCAP_MAX_REQUEUES:-20} least=${RADCAP_REQUEUE_MIN_SECONDS:-60}
  if [ "${RJ_WARNED_AT:-0}" -lt "$least" ]; then
    rj_say "not requeueing: the warning came ${RJ_WARNED_AT:-0} s after the start (less than RADCAP_REQUEUE_MIN_SECONDS=$least)," \
      "so the time limit leaves no time to work; ask for a longer --time or an earlier --signal=B:USR1@SECONDS"
    return 0
  fi
  if [ "$restarts" -ge "$max" ]; then
    rj_say "not requeueing: already requeued $restarts times (RADCAP_MAX_REQUEUES=$max); submit the same job again to continue"
    return 0
  fi
  rj_say "requeueing job $SLURM_JOB_ID: it continues the same run in the same database"
  RJ_REQUEUING=1
  if scontrol requeue "$SLURM_JOB_ID"; then
    # Slurm ends this shell now; the job runs again when it is scheduled
    sleep 600 &
    wait $! 2>/dev/null
    exit 4
  fi
  RJ_REQUEUING=0
  rj_say "scontrol requeue failed (was the job submitted with --no-requeue?); submit the same job again to continue"
}

# rj_log_pattern PATH: this job's log file name as a pattern for the next
# job: the last occurrence of the job's number in the file's own name
# becomes %j (the folder is kept as it is, even if the number appears in it).
rj_log_pattern() {
  local dir base
  dir=$(dirname -- "$1")
  base=$(basename -- "$1")
  base=$(sed "s/\(.*\)$SLURM_JOB_ID/\1%j/" <<<"$base")
  echo "$dir/$base"
}

# rj_resubmit SCRIPT BEGIN ARGS...: submits SCRIPT ARGS... again with
# sbatch --begin=BEGIN and the resources of this job (nodes, tasks, CPUs per
# task, memory, time limit, partition, account, job name, log file pattern,
# submit directory), plus $NIGHTLY_SBATCH_ARGS (split on spaces). Submits
# nothing when a pending job of the same name and user already waits (a second
# chain is not started). Returns 1 when sbatch fails.
rj_resubmit() {
  local script=$1 begin=$2
  shift 2
  local opts=(--parsable --begin="$begin" --job-name="${SLURM_JOB_NAME:-radcap-nightly}"
              --chdir="${SLURM_SUBMIT_DIR:-$PWD}" --nodes="${SLURM_JOB_NUM_NODES:-1}" --ntasks="$RJ_TASKS")
  local v info limit out err
  [ -z "${SLURM_CPUS_PER_TASK:-}" ] || opts+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  [ -z "${SLURM_NTASKS_PER_NODE:-}" ] || opts+=(--ntasks-per-node="$SLURM_NTASKS_PER_NODE")
  [ -z "${SLURM_MEM_PER_NODE:-}" ] || opts+=(--mem="${SLURM_MEM_PER_NODE}M")
  [ -z "${SLURM_MEM_PER_CPU:-}" ] || opts+=(--mem-per-cpu="${SLURM_MEM_PER_CPU}M")
  for v in partition:SLURM_JOB_PARTITION account:SLURM_JOB_ACCOUNT qos:SLURM_JOB_QOS; do
    local var=${v#*:}
    case ${!var:-} in ''|'(null)') ;; *) opts+=("--${v%%:*}=${!var}") ;; esac
  done
  limit=$(squeue -h -j "$SLURM_JOB_ID" -o %l 2>/dev/null)
  case $limit in ''|UNLIMITED|INVALID|NOT_SET) ;; *) opts+=(--time="$limit") ;; esac
  info=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null)
  out=$(sed -n 's/^ *StdOut=//p' <<<"$info")
  err=$(sed -n 's/^ *StdErr=//p' <<<"$info")
  # the log's name pattern: this job's number becomes %j again
  [ -z "$out" ] || opts+=(--output="$(rj_log_pattern "$out")")
  [ -z "$err" ] || [ "$err" = "$out" ] || opts+=(--error="$(rj_log_pattern "$err")")
  # shellcheck disable=SC2206
  [ -z "${NIGHTLY_SBATCH_ARGS:-}" ] || opts+=($NIGHTLY_SBATCH_ARGS)

  local waiting
  waiting=$(squeue -h -u "$(id -un)" -n "${SLURM_JOB_NAME:-radcap-nightly}" -t PENDING -o %i 2>/dev/null | grep -vx "$SLURM_JOB_ID")
  if [ -n "$waiting" ]; then
    rj_say "not resubmitting: job(s) $(tr '\n' ' ' <<<"$waiting")of the same name already wait to run"
    return 0
  fi
  # the new job gets its own SLURM_* variables and this job's original
  # OMP_NUM_THREADS; SLURM_CONF still says which cluster
  local unset_env=() name
  for name in ${!SLURM_@}; do [ "$name" = SLURM_CONF ] || unset_env+=(-u "$name"); done
  if [ -n "${RJ_OMP_ORIGINAL+set}" ]; then export OMP_NUM_THREADS=$RJ_OMP_ORIGINAL; else unset_env+=(-u OMP_NUM_THREADS); fi
  local id
  if id=$(env "${unset_env[@]}" sbatch "${opts[@]}" "$script" "$@"); then
    rj_say "resubmitted as job $id, to start at $begin: sbatch ${opts[*]} $script $*"
    return 0
  fi
  rj_say "resubmitting failed: sbatch ${opts[*]} $script $*"
  return 1
}
