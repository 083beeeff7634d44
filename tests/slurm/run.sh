#!/usr/bin/env bash
# tests/slurm/run.sh: the batch scripts in slurm/ on a real single-node Slurm
# cluster (scripts/slurm-cluster.sh), with the tiny model of
# tests/fixtures/tiny and synthetic archives (radcap synth).
#
#   tests/slurm/run.sh            (from anywhere; as root)
#
# Exit status 0 when every test passes, 1 when one fails. Prints
# "SKIP: reason" and exits 0 when the machine cannot run a cluster (not
# root, slurm-wlm or munge missing, a daemon does not start) or the BERT
# vocabulary cannot be had.
#
# Environment: RADCAP (the program under test; default ./radcap of this
# checkout), RADCAP_SHARED_DIR (default ../shared: the vocabulary),
# RADCAP_SLURM_KEEP=1 keeps the work folder (default: removed when all pass),
# RADCAP_SLURM_TESTS (names of the tests to run, default all: caption
# interrupt_requeue interrupt_warning nightly evaluate wrong_path).
#
# The tests (each compares against a single-process `radcap run` of the same
# archive in the same way: image ids, captions and token ids, row by row):
#   caption            sbatch -n 2 caption.sbatch over 800 images: exit 0, one
#                      completed run, every image once, captions equal to the
#                      single-process run's, progress lines in the log
#   interrupt_requeue  a running job is requeued from outside (scontrol requeue:
#                      SIGTERM to every rank) when about 10% is stored; Slurm runs
#                      it again and it continues the same run: one run, resumed,
#                      every image exactly once with one attempt, same captions
#   interrupt_warning  the same with the time-limit warning instead (scancel
#                      --batch --signal=USR1, what --signal=B:USR1@300 sends): the
#                      script stops the run and requeues the job itself
#   nightly            nightly.sbatch with NIGHTLY_BEGIN=now+8: the first run
#                      captions 40 images and resubmits itself with --begin; 20
#                      images are added; the resubmitted job starts after the
#                      delay, captions only the 20 new ones (radcap run
#                      --since-last) and resubmits again; then a nightly job with
#                      an unusable checkpoint fails and does not resubmit
#   evaluate           evaluate.sbatch with the preset jobs/rocov2-validation.json
#                      and its variables (ROCOV2_DIR, RADCAP_DB, ...) over a
#                      40-image archive: exit 0, the run's captions and its
#                      corpus scores equal a single-process `radcap run`'s
#   wrong_path         caption.sbatch with a missing --checkpoint fails in seconds
#                      with status 3 and a message naming the option and the path
#                      in its log, before any srun; the same for a wrong path in a
#                      job file (radcap run --check)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

skip() { echo "SKIP: $*"; exit 0; }

if [ -z "${RADCAP_SLURM_INNER:-}" ]; then
  [ "$(id -u)" -eq 0 ] || skip "the Slurm tests need root (they start munged, slurmctld and slurmd)"
  for prog in munged slurmctld slurmd sbatch squeue scontrol scancel srun sqlite3; do
    command -v "$prog" >/dev/null 2>&1 ||
      skip "$prog is not installed (scripts/install-deps.sh installs slurm-wlm, munge and sqlite3 when it can)"
  done
  RADCAP=$(realpath -- "${RADCAP:-$repo/radcap}")
  # the test itself runs in its work folder: relative paths are resolved here
  RADCAP_SHARED_DIR=$(realpath -m -- "${RADCAP_SHARED_DIR:-$repo/../shared}")
  export RADCAP_SHARED_DIR
  [ -x "$RADCAP" ] || { echo "FAIL: $RADCAP is not built (make radcap)"; exit 1; }
  work=$(mktemp -d /tmp/radcap-slurm.XXXXXX)
  chmod 755 "$work"
  RADCAP_SLURM_INNER=$work RADCAP=$RADCAP "$repo/scripts/slurm-cluster.sh" run "$work/cluster" "$0"
  status=$?
  if [ $status -eq 75 ]; then
    rm -rf "$work"
    skip "no Slurm cluster could be started here (the reason is above)"
  fi
  if [ $status -eq 0 ] && [ "${RADCAP_SLURM_KEEP:-0}" != 1 ]; then rm -rf "$work"
  else echo "work folder kept: $work"; fi
  exit $status
fi

# ---- inside the cluster (SLURM_CONF is set) ---------------------------------
work=$RADCAP_SLURM_INNER
cd "$work" || exit 1
tiny=$repo/tests/fixtures/tiny
vocab=$(realpath -m -- "${RADCAP_SHARED_DIR:-$repo/../shared}/vocab/bert-base-uncased-vocab.txt")
if [ ! -f "$vocab" ]; then
  vocab=$work/vocab.txt
  "$repo/scripts/fetch-vocab.sh" "$vocab" >/dev/null 2>&1 || skip "no BERT vocabulary (../shared/vocab or scripts/fetch-vocab.sh)"
fi
model=(--checkpoint "$tiny/model.bin" --config "$tiny/config.json" --vocab "$vocab")
export RADCAP

failures=0 current=""
fail() { echo "FAIL [$current]: $*"; failures=$((failures + 1)); return 1; }
check() { # check DESCRIPTION COMMAND...: runs COMMAND, a failure names DESCRIPTION
  local what=$1
  shift
  "$@" || fail "$what"
}
eq() { [ "$1" = "$2" ] || { echo "    got '$1', expected '$2'"; return 1; }; }
q() { sqlite3 -batch -noheader "$@"; }

# submit ENV=VALUE... -- SBATCH-ARGS...: prints the job id
submit() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" sbatch --parsable "$@" | cut -d';' -f1
}
# waits until job $1 has left the queue (at most $2 seconds); 1 on timeout
wait_gone() {
  local id=$1 limit=$2 start=$SECONDS
  while [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ]; do
    [ $((SECONDS - start)) -lt "$limit" ] || { fail "job $id still queued after $limit s"; scancel "$id"; return 1; }
    sleep 0.3
  done
}
job_field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
log_of() { job_field "$1" StdOut; }

# same_as_reference DB RUN REFDB: every row of run RUN equals the reference's
# row of the same image (caption and token ids); prints the differences
same_as_reference() {
  local db=$1 run=$2 ref=$3 diff
  diff=$(q "$db" "ATTACH '$ref' AS ref;
    SELECT a.image_id FROM items a LEFT JOIN ref.items b ON b.image_id = a.image_id
    WHERE a.run_id = $run AND (b.image_id IS NULL OR a.caption IS NOT b.caption OR a.token_ids IS NOT b.token_ids
                               OR a.status <> 'ok' OR b.status <> 'ok') LIMIT 5;")
  [ -z "$diff" ] || { echo "    rows that differ from the single-process run: $diff"; return 1; }
}

# a complete run: one run, completed, every image of the reference once, ok,
# one attempt each, and the reference's captions
check_complete_run() {
  local db=$1 ref=$2 total
  total=$(q "$ref" "SELECT count(*) FROM items")
  check "one run in the database" eq "$(q "$db" "SELECT count(*) FROM runs")" 1
  check "the run completed" eq "$(q "$db" "SELECT status FROM runs")" completed
  check "every image once" eq "$(q "$db" "SELECT count(*), count(DISTINCT image_id) FROM items")" "$total|$total"
  check "every image ok, one attempt each" eq \
    "$(q "$db" "SELECT count(*) FROM items WHERE status = 'ok' AND attempts = 1")" "$total"
  check "the run's counts" eq "$(q "$db" "SELECT n_total, n_ok, n_error FROM runs")" "$total|$total|0"
  check "captions equal the single-process run's" same_as_reference "$db" 1 "$ref"
}

begin_test() { current=$1; t_start=$SECONDS; echo "== $current"; }
end_test() { echo "   $current: $((SECONDS - t_start)) s"; }

wanted() { [[ " ${RADCAP_SLURM_TESTS:-caption interrupt_requeue interrupt_warning nightly evaluate wrong_path} " == *" $1 "* ]]; }

# ---- fixtures ---------------------------------------------------------------
t0=$SECONDS
"$RADCAP" synth --out "$work/archive" --count 800 --seed 11 >/dev/null || { echo "FAIL: radcap synth"; exit 1; }
manifest=$work/archive/valid_captions.csv
env -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u PMI_RANK "$RADCAP" run --manifest "$manifest" --db "$work/reference.db" \
  "${model[@]}" --no-score --quiet --threads 1 >/dev/null || { echo "FAIL: the single-process reference run"; exit 1; }
echo "fixtures: 800 images and their single-process run in $((SECONDS - t0)) s"

caption_args=(--manifest "$manifest" "${model[@]}")

# ---- caption: 2 tasks, compared with the single-process run ---------------------
if wanted caption; then
  begin_test caption
  id=$(submit -- -n 2 "$repo/slurm/caption.sbatch" "${caption_args[@]}" --db "$work/caption.db" --progress-interval 1)
  if wait_gone "$id" 90; then
    log=$(log_of "$id")
    check "job state COMPLETED, exit 0" eq "$(job_field "$id" JobState) $(job_field "$id" ExitCode)" "COMPLETED 0:0"
    check_complete_run "$work/caption.db" "$work/reference.db"
    check "2 tasks = 2 captioning ranks and the master (log)" grep -q "on 2 worker ranks" "$log"
    check "progress lines in the log" grep -q "INFO  progress [0-9]*/800" "$log"
  fi
  end_test
fi

# ---- interrupting: requeue from outside, and the time-limit warning -----------
# RADCAP_MASTER=task and 1 thread: one captioning rank, so the run lasts long
# enough to be caught part way
interrupt_test() {
  local name=$1 db=$work/$1.db id log stored=0 start
  begin_test "$name"
  # (the warning comes a few seconds after the start here, which a real
  # time limit would not do: RADCAP_REQUEUE_MIN_SECONDS=0 allows the requeue)
  id=$(submit RADCAP_MASTER=task RADCAP_THREADS=1 RADCAP_REQUEUE_MIN_SECONDS=0 -- -n 2 "$repo/slurm/caption.sbatch" "${caption_args[@]}" \
         --db "$db" --batch 4 --progress-interval 1)
  start=$SECONDS
  while [ $((SECONDS - start)) -lt 60 ]; do
    [ -f "$db" ] && stored=$(q "$db" "SELECT count(*) FROM items" 2>/dev/null || echo 0)
    [ "${stored:-0}" -lt 80 ] || break
    sleep 0.1
  done
  [ "${stored:-0}" -ge 80 ] || { fail "the job stored no 80 images within 60 s"; scancel "$id"; return; }
  case $name in
    interrupt_requeue) scontrol requeue "$id" ;;
    interrupt_warning) scancel --batch --signal=USR1 "$id" ;;
  esac
  echo "   interrupted with $stored of 800 stored"
  wait_gone "$id" 120 || return
  log=$(log_of "$id")
  check "the first attempt was interrupted before the end" grep -q "run 1 interrupted: [0-9]* of 800 images done" "$log"
  check "a second attempt ran" grep -q "(attempt 2)" "$log"
  [ "$name" != interrupt_warning ] || check "the script requeued itself" grep -q "requeueing job $id" "$log"
  check "job state COMPLETED, exit 0" eq "$(job_field "$id" JobState) $(job_field "$id" ExitCode)" "COMPLETED 0:0"
  check "the run was resumed, not started again" eq "$(q "$db" "SELECT n_resumes >= 1 FROM runs")" 1
  check_complete_run "$db" "$work/reference.db"
  end_test
}
wanted interrupt_requeue && interrupt_test interrupt_requeue
wanted interrupt_warning && interrupt_test interrupt_warning

# ---- nightly chain ------------------------------------------------------------
# next_job LOG: the job id the nightly script resubmitted, from its log
next_job() { sed -n 's/.*resubmitted as job \([0-9]*\).*/\1/p' "$1" | tail -1; }
if wanted nightly; then
  begin_test nightly
  night=$work/nightly
  "$RADCAP" synth --out "$night" --count 40 --seed 21 --size 128x128 >/dev/null
  "$RADCAP" synth --out "$work/more" --split extra --count 20 --seed 22 --size 128x128 >/dev/null
  nargs=(--manifest "$night/valid_captions.csv" "${model[@]}" --db "$work/nightly.db")
  if [[ $("$RADCAP" run --help) != *--since-last* ]]; then
    fail "radcap run has no --since-last yet (the nightly chain needs it)"
  else
    first=$(submit NIGHTLY_BEGIN=now+8 -- -n 1 "$repo/slurm/nightly.sbatch" "${nargs[@]}")
    if wait_gone "$first" 60; then
      log=$(log_of "$first")
      second=$(next_job "$log")
      check "the first run completed" eq "$(job_field "$first" ExitCode)" 0:0
      check "the first run captioned the 40 images" grep -q "this session: 40 images" "$log"
      check "the first job resubmitted itself" test -n "$second"
      check "the resubmitted job waits for its begin time" eq "$(squeue -h -j "${second:-0}" -o '%T %r')" "PENDING BeginTime"
      # 20 new images arrive in the archive before the next night
      mv "$work/more/extra/"* "$night/valid/"
      tail -n +2 "$work/more/extra_captions.csv" >> "$night/valid_captions.csv"
      env -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u PMI_RANK "$RADCAP" run --manifest "$night/valid_captions.csv" \
        --db "$work/nightly-reference.db" "${model[@]}" --no-score --quiet --threads 1 >/dev/null
      if [ -n "$second" ] && wait_gone "$second" 60; then
        log2=$(log_of "$second")
        third=$(next_job "$log2")
        check "the second run completed" eq "$(job_field "$second" ExitCode)" 0:0
        check "the second run captioned only the 20 new images" grep -q "this session: 20 images" "$log2"
        check "two completed runs" eq "$(q "$work/nightly.db" "SELECT group_concat(status) FROM runs")" completed,completed
        run2=$(q "$work/nightly.db" "SELECT max(id) FROM runs")
        check "the new images are in the second run, with the single-process captions" eq \
          "$(q "$work/nightly.db" "ATTACH '$work/nightly-reference.db' AS ref;
             SELECT count(*) FROM items a JOIN ref.items b USING (image_id)
             WHERE a.run_id = $run2 AND a.image_id LIKE '%extra%' AND a.status = 'ok'
               AND a.caption IS b.caption AND a.token_ids IS b.token_ids")" 20
        check "the second job resubmitted itself" test -n "$third"
        [ -z "$third" ] || scancel "$third"
      fi
    fi
    # a broken setup (the checkpoint is not a model) must not loop
    broken=$(submit NIGHTLY_BEGIN=now+8 -- -n 1 "$repo/slurm/nightly.sbatch" --manifest "$night/valid_captions.csv" \
               --checkpoint "$vocab" --config "$tiny/config.json" --vocab "$vocab" --db "$work/nightly.db")
    if wait_gone "$broken" 60; then
      log=$(log_of "$broken")
      check "the broken job failed with status 3" eq "$(job_field "$broken" ExitCode)" 3:0
      check "it says it does not resubmit" grep -q "not resubmitting after this failure" "$log"
      check "no job was resubmitted" eq "$(squeue -h -n radcap-nightly -o %i)" ""
    fi
  fi
  end_test
fi

# ---- evaluation with the preset job file ----------------------------------------
if wanted evaluate; then
  begin_test evaluate
  "$RADCAP" synth --out "$work/rocov2" --count 40 --seed 31 --size 128x128 >/dev/null
  env -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u PMI_RANK "$RADCAP" run --manifest "$work/rocov2/valid_captions.csv" \
    --db "$work/evaluate-reference.db" "${model[@]}" --quiet --threads 1 >/dev/null
  id=$(submit ROCOV2_DIR="$work/rocov2" RADCAP_CHECKPOINT="$tiny/model.bin" RADCAP_VOCAB="$vocab" \
         RADCAP_DB="$work/evaluate.db" -- -n 2 "$repo/slurm/evaluate.sbatch" --config "$tiny/config.json")
  if wait_gone "$id" 60; then
    log=$(log_of "$id")
    check "job state COMPLETED, exit 0" eq "$(job_field "$id" JobState) $(job_field "$id" ExitCode)" "COMPLETED 0:0"
    check "the preset job file was used" grep -qF -- "--job $repo/jobs/rocov2-validation.json" "$log"
    check_complete_run "$work/evaluate.db" "$work/evaluate-reference.db"
    scores="SELECT group_concat(metric || '=' || value, ' ') FROM (SELECT * FROM corpus_scores ORDER BY metric)"
    got=$(q "$work/evaluate.db" "$scores")
    check "corpus scores stored" test -n "$got"
    check "corpus scores equal the single-process run's" eq "$got" "$(q "$work/evaluate-reference.db" "$scores")"
    check "the scores are in the log" grep -q "scores over 40 images: BLEU-1" "$log"
  fi
  end_test
fi

# ---- a wrong path fails fast, before srun -------------------------------------
if wanted wrong_path; then
  begin_test wrong_path
  t=$SECONDS
  id=$(submit -- -n 2 "$repo/slurm/caption.sbatch" --manifest "$manifest" --checkpoint "$work/missing/model.bin" \
         --config "$tiny/config.json" --vocab "$vocab" --db "$work/wrong.db")
  if wait_gone "$id" 30; then
    log=$(log_of "$id")
    check "job state FAILED with status 3" eq "$(job_field "$id" JobState) $(job_field "$id" ExitCode)" "FAILED 3:0"
    check "the log names the option and the path" \
      grep -qF "caption.sbatch: error: --checkpoint $work/missing/model.bin: no such file" "$log"
    check "nothing was launched" bash -c "! grep -q 'running: ' '$log'"
    check "it failed within 10 s of submission" test $((SECONDS - t)) -le 10
    check "no database was created" test ! -e "$work/wrong.db"
  fi
  # a wrong path inside a job file: radcap run --check names the key
  printf '{"manifest": "%s", "checkpoint": "missing/model.bin", "config": "%s", "vocab": "%s", "db": "%s"}\n' \
    "$manifest" "$tiny/config.json" "$vocab" "$work/wrong-job.db" > "$work/wrong-job.json"
  id=$(submit -- -n 2 "$repo/slurm/caption.sbatch" --job "$work/wrong-job.json")
  if wait_gone "$id" 30; then
    log=$(log_of "$id")
    check "job file: job state FAILED with status 3" eq "$(job_field "$id" JobState) $(job_field "$id" ExitCode)" "FAILED 3:0"
    check "job file: the log names the key and the path" \
      grep -qF "radcap run: checkpoint $work/missing/model.bin: No such file or directory" "$log"
    check "job file: nothing was launched" bash -c "! grep -q 'running: ' '$log'"
    check "job file: no database was created" test ! -e "$work/wrong-job.db"
  fi
  end_test
fi

if [ $failures -ne 0 ]; then
  echo "slurm tests: $failures check(s) failed; logs in $work (radcap-*.out, cluster/log)"
  exit 1
fi
echo "slurm tests: all passed"
