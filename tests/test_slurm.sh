#!/bin/sh
# The sbatch scripts on a real one-node Slurm (slurm/local-cluster.sh), with a
# tiny Sprites zoo and 3 ranks (2 worker groups):
# a. gmorph-search.sbatch runs a sweep to the end: results written, every
#    candidate settled;
# b. `scontrol requeue` in the middle: the job runs again, resumes from the
#    checkpoint (header says "(resumed)"), trains no candidate the checkpoint
#    had finished, and ends with the table and best of an uninterrupted run
#    (deterministic mode);
# c. a time limit: --signal=B:USR1@45 reaches rank 0 through the script and
#    srun, the checkpoint is written while the job still runs (the config
#    writes none otherwise), the job is killed at its limit, and the same
#    sbatch submitted again resumes and finishes the sweep;
# d. sweep-array.sbatch: one array task per table line, each in its own folder
#    with its own threshold.
# Exit 77 (skipped) when Slurm cannot run here: not root, packages missing.
# Starts the cluster unless it is up, and stops it at the end if it started it.
# Usage: test_slurm.sh GMORPH GMORPH_SEARCH [MPIEXEC]
set -u
gm=$1
gs=$2
mpi="${3:-mpirun} --allow-run-as-root --oversubscribe"
slurm=$(cd "$(dirname "$0")/../slurm" && pwd)
skip() {
    echo "test_slurm: skipped: $*"
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "starting a local Slurm needs root (slurm/local-cluster.sh)"
for c in sbatch srun scontrol squeue slurmctld slurmd munged h5dump; do
    command -v "$c" >/dev/null 2>&1 || skip "$c not found: apt-get install slurm-wlm munge hdf5-tools (tests/install-deps.sh)"
done
export GMORPH_SLURM_DIR="${GMORPH_SLURM_DIR:-/tmp/gmorph-slurm}"
export SLURM_CONF="$GMORPH_SLURM_DIR/slurm.conf"
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
export GMORPH_SEARCH="$gs" # the sbatch scripts' binary
started=0
if ! "$slurm/local-cluster.sh" status >/dev/null 2>&1; then
    "$slurm/local-cluster.sh" start >/dev/null
    rc=$?
    [ $rc -eq 2 ] && skip "slurm/local-cluster.sh cannot start Slurm here (its message above)"
    [ $rc -eq 0 ] || { echo "FAIL slurm/local-cluster.sh start (exit $rc)"; exit 1; }
    started=1
fi
tmp=$(mktemp -d)
cleanup() {
    [ -s "$tmp/jobs" ] && scancel $(cat "$tmp/jobs") 2>/dev/null
    [ $started -eq 1 ] && "$slurm/local-cluster.sh" stop 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
t0=$(date +%s)
el() { echo "$(($(date +%s) - t0)) s"; }

# ---- the tiny zoo and its sweeps (as test_mpi_search.sh) --------------------------------
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" || exit 1
config() { # ITERATIONS CHECKPOINT_EVERY THRESHOLD
    cat <<EOF
{
  "models": ["$tmp/colour.h5", "$tmp/scale.h5", "$tmp/shape.h5"],
  "threshold": $3, "iterations": $1, "seed": 3, "threads": 1,
  "finetune": {"samples": 2048, "val_samples": 256, "epochs": 6, "batch": 32, "lr": 0.003},
  "filter": {"curve": false}, "latency": {"warmup": 2, "runs": 10},
  "run": {"deterministic": true, "round": 4, "checkpoint_every": $2}
}
EOF
}
config 16 1 0.3 >"$tmp/small.json" # loose: candidates pass, so there is a best.h5
# Far more than fit in the time limit (a tight threshold: more epochs, fewer
# candidates filtered), and checkpoints only on signals and at the end.
config 1000 0 0.1 >"$tmp/long.json"

# The table without the columns that depend on timing or placement (found by name), in id order.
table() {
    awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) keep[i] = $i !~ /^(worker|latency_ms|base_latency_ms|speedup|seconds|finished_s)$/}
        {row = ""; for (i = 1; i <= NF; i++) if (keep[i]) row = row $i ","; print row}' "$1/candidates.csv" | sort -t, -k1,1n
}
best() { sed -n 's/.*(candidate \([0-9-]*\)).*/\1/p' "$1/summary.md"; }
finished() { # ids the checkpoint holds as finished (status != 0, pending)
    h5dump -y -w 0 -d /candidates/status "$1" 2>/dev/null | awk '/DATA \{/ {getline; print; exit}' | tr -d ' ' |
        tr ',' '\n' | awk 'NF && $1 != 0 {print NR - 1}'
}
next_id() { h5dump -a /next_id "$1" 2>/dev/null | sed -n 's/^ *(0): *//p'; }
# Every candidate 0..N-1 once in candidates.csv, none pending, and the results written.
settled() { # RUN N
    ids=$(tail -n +2 "$1/candidates.csv" 2>/dev/null | cut -d, -f1 | sort -n | tr '\n' ' ')
    [ "$ids" = "$(seq 0 $(($2 - 1)) | tr '\n' ' ')" ] && ! grep -q ',pending,' "$1/candidates.csv" &&
        [ -s "$1/summary.md" ] && [ -s "$1/best.h5" ]
}
# Ids a job's output reports as trained after its "(resumed)" header.
trained_after_resume() {
    awk '/^gmorph-search: .*\(resumed\)$/ {on = 1} on' "$1" |
        sed -n 's/^\[ *\([0-9]*\)\].* \(passed\|failed\|aborted\) .*/\1/p' | sort
}
submit() { # sbatch arguments: prints the job id (and notes it for the clean-up)
    sbatch --parsable "$@" | tee -a "$tmp/jobs"
}
state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n 1; }
wait_gone() { # JOBID SECONDS: until squeue no longer lists it
    w=0
    while [ -n "$(squeue -h -j "$1" 2>/dev/null)" ]; do
        [ $w -ge $(($2 * 2)) ] && return 1
        sleep 0.5
        w=$((w + 1))
    done
}
echo "zoo ready ($(el))"

# ---- a. a sweep to the end ---------------------------------------------------------------
id=$(submit -n 3 -c 1 --time=10 --output="$tmp/a.out" "$slurm/gmorph-search.sbatch" "$tmp/small.json" "$tmp/ra" \
    --iterations 4)
wait_gone "$id" 300 || bad "a: job $id still in the queue after 300 s"
[ "$(state "$id")" = COMPLETED ] && settled "$tmp/ra" 4 && grep -q "ended with exit code 0" "$tmp/a.out" &&
    ok "a: sbatch sweep of 3 ranks completes: summary.md, best.h5, 4 candidates settled ($(el))" ||
    { bad "a: sweep under sbatch (job state $(state "$id"))"; cat "$tmp/a.out"; }

# ---- b. requeue in the middle, against an uninterrupted run ---------------------------------
$mpi -np 3 "$gs" --config "$tmp/small.json" --out "$tmp/ref" >/dev/null 2>"$tmp/ref.err" ||
    { bad "b: the uninterrupted run"; cat "$tmp/ref.err"; }
id=$(submit -n 3 -c 1 --time=10 --output="$tmp/b.out" "$slurm/gmorph-search.sbatch" "$tmp/small.json" "$tmp/rb")
n=0
w=0
while [ "$n" -lt 4 ] && [ $w -lt 600 ] && [ -n "$(squeue -h -j "$id" 2>/dev/null)" ]; do
    sleep 0.2
    w=$((w + 1))
    [ -f "$tmp/rb/search.h5" ] && n=$(finished "$tmp/rb/search.h5" | wc -l)
done
scontrol requeue "$id" || bad "b: scontrol requeue $id"
# A requeued job waits about two minutes before it may start again: release it once it is pending.
w=0
while [ "$(state "$id")" != PENDING ] && [ $w -lt 120 ]; do
    sleep 0.5
    w=$((w + 1))
done
finished "$tmp/rb/search.h5" | sort >"$tmp/b_before"
nb=$(wc -l <"$tmp/b_before")
scontrol update JobId="$id" StartTime=now || bad "b: releasing the requeued job"
[ "$nb" -ge 4 ] && [ "$nb" -lt 16 ] && ok "b: requeued in the middle ($nb of 16 finished in the checkpoint, $(el))" ||
    bad "b: requeue came too late or too early ($nb finished)"
wait_gone "$id" 300 || bad "b: job $id still in the queue after 300 s"
restarts=$(scontrol show job "$id" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
[ "$(state "$id")" = COMPLETED ] && [ "$restarts" = 1 ] && grep -q '^gmorph-search: .*(resumed)$' "$tmp/b.out" &&
    grep -q "restart 1.*resuming" "$tmp/b.out" && settled "$tmp/rb" 16 &&
    ok "b: the requeued job resumed and finished: each of 16 candidates once, none pending ($(el))" ||
    { bad "b: requeued job (state $(state "$id"), restarts $restarts)"; cat "$tmp/b.out"; }
trained_after_resume "$tmp/b.out" >"$tmp/b_after"
again=$(comm -12 "$tmp/b_before" "$tmp/b_after" | wc -l)
[ "$again" -eq 0 ] && [ -s "$tmp/b_after" ] && ok "b: no candidate the checkpoint had finished trained again" ||
    bad "b: $again finished candidates trained again"
if [ -s "$tmp/ref/candidates.csv" ] && [ -s "$tmp/rb/candidates.csv" ] && table "$tmp/ref" >"$tmp/t1" &&
    table "$tmp/rb" >"$tmp/t2" && cmp -s "$tmp/t1" "$tmp/t2" && [ -n "$(best "$tmp/ref")" ] &&
    [ "$(best "$tmp/ref")" = "$(best "$tmp/rb")" ]; then
    ok "b: the requeued sweep equals the uninterrupted one (table and best)"
else
    bad "b: requeued sweep differs"
    diff "$tmp/t1" "$tmp/t2"
    echo "best: $(best "$tmp/ref") vs $(best "$tmp/rb")"
fi

# ---- c. the time limit: SIGUSR1 checkpoint, killed, submitted again ---------------------------
# Slurm checks limits every half minute or so: with --time=2 and @45 the signal
# comes 45 to 75 s in (the sweep runs by then) and the kill 120 to 150 s in.
id=$(submit -n 3 -c 1 --time=2 --signal=B:USR1@45 --output="$tmp/c.out" "$slurm/gmorph-search.sbatch" \
    "$tmp/long.json" "$tmp/rc")
seen=""
w=0
while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ] && [ $w -lt 480 ]; do
    if [ -z "$seen" ] && [ -f "$tmp/rc/search.h5" ]; then
        seen="$(date +%s) $(squeue -h -j "$id" -o %T) $(finished "$tmp/rc/search.h5" | wc -l)"
    fi
    sleep 0.5
    w=$((w + 1))
done
set -- $seen
usr1=$(sed -n 's/^gmorph-search.sbatch: \(.*\): SIGUSR1.*/\1/p' "$tmp/c.out" | head -n 1)
usr1_s=$(date -d "${usr1:-never}" +%s 2>/dev/null || echo 0)
[ -n "$usr1" ] && [ $# -eq 3 ] && [ "$2" = RUNNING ] && [ "$3" -ge 1 ] && [ "$1" -ge "$usr1_s" ] &&
    ok "c: SIGUSR1 at $usr1: checkpoint written while the job ran, $3 candidates finished in it" ||
    { bad "c: no checkpoint on SIGUSR1 (signal at '${usr1}', search.h5 first seen: '$seen')"; cat "$tmp/c.out"; }
[ "$(state "$id")" = TIMEOUT ] && grep -q "DUE TO TIME LIMIT" "$tmp/c.out" &&
    ok "c: the job was killed at its time limit ($(el))" ||
    { bad "c: not ended by the time limit (state $(state "$id"))"; cat "$tmp/c.out"; }
finished "$tmp/rc/search.h5" | sort >"$tmp/c_before"
next=$(next_id "$tmp/rc/search.h5")
total=$((${next:-0} + 4))
# The same job again; --iterations (a new total) keeps the rest of the sweep short.
id=$(submit -n 3 -c 1 --time=10 --output="$tmp/c2.out" "$slurm/gmorph-search.sbatch" "$tmp/long.json" "$tmp/rc" \
    --iterations "$total")
wait_gone "$id" 300 || bad "c: job $id still in the queue after 300 s"
trained_after_resume "$tmp/c2.out" >"$tmp/c_after"
again=$(comm -12 "$tmp/c_before" "$tmp/c_after" | wc -l)
[ "$(state "$id")" = COMPLETED ] && grep -q '^gmorph-search: .*(resumed)$' "$tmp/c2.out" && [ -n "$next" ] &&
    settled "$tmp/rc" "$total" && [ "$again" -eq 0 ] &&
    ok "c: submitted again, it resumed and finished the sweep ($total candidates, none trained twice, $(el))" ||
    { bad "c: the resubmitted job (state $(state "$id"), $again trained twice)"; cat "$tmp/c2.out"; }

# ---- d. a job array over a table ---------------------------------------------------------------
printf '# name config threshold\nloose %s 0.5\ntight %s 0.4\n' "$tmp/small.json" "$tmp/small.json" >"$tmp/table"
id=$(export GMORPH_SWEEP_TABLE="$tmp/table" GMORPH_SWEEP_OUT="$tmp/sweep" GMORPH_SBATCH="$slurm/gmorph-search.sbatch" &&
    submit --array=0-1 -n 3 -c 1 --time=10 --output="$tmp/d-%a.out" "$slurm/sweep-array.sbatch" --iterations 2)
wait_gone "$id" 300 || bad "d: array $id still in the queue after 300 s"
[ "$(state "${id}_0")" = COMPLETED ] && [ "$(state "${id}_1")" = COMPLETED ] &&
    settled "$tmp/sweep/loose" 2 && settled "$tmp/sweep/tight" 2 &&
    grep -q "threshold 0.500" "$tmp/sweep/loose/summary.md" && grep -q "threshold 0.400" "$tmp/sweep/tight/summary.md" &&
    ok "d: job array: one folder and threshold per table line ($(el))" ||
    { bad "d: job array"; cat "$tmp"/d-*.out; }

[ $fails -eq 0 ] && echo "all passed ($(el))" || echo "$fails failed ($(el))"
[ $fails -eq 0 ]
