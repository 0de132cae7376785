#!/bin/sh
# gmorph-search as a sweep runs it, on a tiny Sprites zoo:
# - deterministic mode gives the same candidates, statuses, accuracies and best
#   with 1 process, 3 ranks (2 worker groups) and 5 ranks (4 groups)
#   (2 data-parallel groups of 2 complete the same sweep);
# - a 3-rank sweep killed with SIGKILL in the middle resumes from its
#   checkpoint, trains no candidate the checkpoint had finished, and ends with
#   the uninterrupted run's table and best;
# - when a worker rank is killed, the job ends and its checkpoint resumes;
# - a candidate past its time-out is dispatched once more, then failed;
# - a second command on a running sweep's folder is refused, naming who runs it,
#   and gmorph runs lists that sweep as running, then interrupted, then finished;
# - the same command run again continues the sweep in its run folder and ends
#   with the uninterrupted table; one that changes the threshold is refused by
#   name; --fresh starts over;
# - a warm-started sweep of another seed begins with the first sweep's held models and
#   trains none of its graphs; one over other models is refused by name;
# - a distillation set larger than GMORPH_MEMORY_GB is refused with an estimate;
# - a truncated checkpoint is refused with a message naming it, and the previous
#   one (search.h5.prev) still resumes.
# Usage: test_mpi_search.sh GMORPH GMORPH_SEARCH MPIEXEC
set -u
gm=$1
gs=$2
mpi="$3 --allow-run-as-root --oversubscribe"
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

# ---- a tiny zoo: three models on one Sprites set --------------------------------
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" frozen || exit 1

# The table without what depends on timing or placement (worker, latency, seconds), id order.
# With each fine-tuned candidate's learning curve from candidates.jsonl, which crossed MPI
# from its worker (or came back from the checkpoint on resume).
table() {
    cut -d, -f1-4,6-10,14,15,18- "$1/candidates.csv" | sort -t, -k1,1n
    python3 -c 'import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1])), key=lambda r: r["id"])
for r in rows: print("curve", r["id"], json.dumps(r.get("curve")))' "$1/candidates.jsonl"
}
best() { sed -n 's/.*(candidate \([0-9-]*\)).*/\1/p' "$1/summary.md"; }
same() { # name run_a run_b
    if [ -s "$2/candidates.csv" ] && [ -s "$3/candidates.csv" ] && [ -n "$(best "$2")" ] &&
        table "$2" >"$tmp/a" && table "$3" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b" && [ "$(best "$2")" = "$(best "$3")" ]; then
        ok "$1"
    else
        bad "$1"; diff "$tmp/a" "$tmp/b"; echo "best: $(best "$2") vs $(best "$3")"
    fi
}

"$gs" --config "$tmp/search.json" --out "$tmp/r1" 2>"$tmp/r1.err" >/dev/null
[ $? -eq 0 ] && [ "$(table "$tmp/r1" | grep -c "^[0-9]")" -ge 10 ] && ok "1-process deterministic sweep" || { bad "1-process sweep"; cat "$tmp/r1.err"; }
grep -q "passed" "$tmp/r1/candidates.csv" && ok "some candidate passed" || bad "no candidate passed"
grep -q '"curve": \[{"epoch": 0, "loss": null' "$tmp/r1/candidates.jsonl" && ok "learning curves in candidates.jsonl" ||
    bad "no learning curve in candidates.jsonl"
$mpi -np 3 "$gs" --config "$tmp/search.json" --out "$tmp/r3" 2>"$tmp/r3.err" >/dev/null || { bad "3 ranks exit code"; cat "$tmp/r3.err"; }
same "3 ranks (2 groups) agree with 1 process" "$tmp/r1" "$tmp/r3"
$mpi -np 5 "$gs" --config "$tmp/search.json" --out "$tmp/r5" 2>"$tmp/r5.err" >/dev/null || { bad "5 ranks exit code"; cat "$tmp/r5.err"; }
same "5 ranks (4 groups) agree with 1 process" "$tmp/r1" "$tmp/r5"
$mpi -np 5 "$gs" --config "$tmp/search.json" --out "$tmp/r5g" --group-size 2 2>"$tmp/r5g.err" >/dev/null \
    || { bad "5 ranks in groups of 2 exit code"; cat "$tmp/r5g.err"; }
# Data-parallel fine-tuning sums gradients in another order, and Adam turns an
# exactly-zero L1 gradient's rounding residue into a step: a candidate near the
# threshold may land on the other side (test_dp checks the equality itself).
# Here: the sweep completes with every candidate settled.
[ "$(table "$tmp/r5g" | grep -c "^[0-9]")" -eq "$(table "$tmp/r1" | grep -c "^[0-9]")" ] && ! grep -q pending "$tmp/r5g/candidates.csv" &&
    [ -n "$(best "$tmp/r5g")" ] && ok "2 data-parallel groups of 2 complete the sweep" || bad "groups of 2"
$mpi -np 4 "$gs" --config "$tmp/search.json" --out "$tmp/x" --group-size 2 2>"$tmp/err" >/dev/null
[ $? -eq 2 ] && grep -q "do not split into groups of 2" "$tmp/err" && ok "ranks that do not split refused" \
    || { bad "uneven groups"; cat "$tmp/err"; }

# ---- warm start: another seed begins with r1's models and trains none of its graphs ----
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(d + '/search.json'))
c['seed'] = 4
c['warm_start'] = [d + '/r1/search.h5']
json.dump(c, open(d + '/warm.json', 'w'))
c['models'] = [c['models'][1], c['models'][0], c['models'][2]]
json.dump(c, open(d + '/warm-other.json', 'w'))
PY
"$gs" --config "$tmp/warm.json" --out "$tmp/rw" 2>"$tmp/rw.err" >/dev/null || { bad "warm-started sweep"; cat "$tmp/rw.err"; }
# Rows of iteration -1 are the earlier sweep's held models (elites, Pareto set, best) that
# fit the threshold; every graph the new sweep trained is new to the earlier one.
/usr/bin/python3 - "$tmp/r1/search.h5" "$tmp/rw/search.h5" <<'PY' && ok "warm start: begins with the earlier elites, trains none of its graphs" || bad "warm start"
import sys, h5py
a, b = (h5py.File(p, 'r') for p in sys.argv[1:])
col = lambda f, k: list(f['candidates'][k][()])
tuned = lambda f: [i for i, s in enumerate(col(f, 'status')) if s in (1, 2, 3)]
held = set(int(i) for i in list(a.attrs['elite_ids']) + list(a.attrs.get('pareto_ids', [])) + [a.attrs['best_id']] if i >= 0)
held = {col(a, 'location')[i] for i in held if col(a, 'worst_drop')[i] <= 0.1}
it = col(b, 'iteration')
adopted = {col(b, 'location')[i] for i in range(len(it)) if it[i] == -1}
assert adopted == held and len(held) > 0, (adopted, held)
seen = {col(a, 'location')[i] for i in tuned(a)}
passed_top = {col(a, 'topology')[i] for i in tuned(a) if col(a, 'status')[i] == 1}
new = [i for i in tuned(b) if it[i] >= 0]
assert new, 'the warm-started sweep trained nothing'
assert not any(col(b, 'location')[i] in seen or col(b, 'topology')[i] in passed_top for i in new)
print('     %d adopted, %d trained, all new' % (len(adopted), len(new)))
PY
"$gs" --config "$tmp/warm-other.json" --out "$tmp/rwo" 2>"$tmp/err" >/dev/null
[ $? -eq 2 ] && grep -q 'warm_start .*r1/search.h5: task 0 is "colour" there, "scale" here' "$tmp/err" &&
    ok "warm start from a sweep over other models refused by name" || { bad "warm start refusal"; cat "$tmp/err"; }

# ---- a distillation set larger than the memory a rank may use: refused with an estimate ----
GMORPH_MEMORY_GB=0.001 "$gs" --config "$tmp/search.json" --out "$tmp/rmem" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q 'distillation set: 2048 samples of 768 values .* need 0.01 GiB, more than GMORPH_MEMORY_GB' "$tmp/err" &&
    ok "a distillation set over the memory limit refused with an estimate (exit $rc)" || { bad "memory estimate (exit $rc)"; cat "$tmp/err"; }

# ---- time-outs: a candidate past --timeout goes to another group once, then fails ------
sed 's/"deterministic": true/"deterministic": false/' "$tmp/search.json" >"$tmp/async.json"
$mpi -np 5 "$gs" --config "$tmp/async.json" --out "$tmp/rt" --iterations 2 --timeout 0.05 2>"$tmp/rt.err" >/dev/null
rc=$?
[ $rc -eq 0 ] && grep -q "timed out twice" "$tmp/rt.err" && ! grep -q pending "$tmp/rt/candidates.csv" &&
    ok "time-outs: dispatched again, then failed; the sweep ends" || { bad "time-outs (exit $rc)"; cat "$tmp/rt.err"; }
$mpi -np 5 "$gs" --config "$tmp/search.json" --out "$tmp/rt2" --iterations 2 --timeout 0.05 2>"$tmp/rt2.err" >/dev/null
rc=$?
[ $rc -eq 0 ] && grep -q "timed out twice" "$tmp/rt2.err" &&
    ! grep -q pending "$tmp/rt2/candidates.csv" && ok "time-outs in deterministic mode" || { bad "deterministic time-outs (exit $rc)"; cat "$tmp/rt2.err"; }

# ---- SIGKILL in the middle, then resume ------------------------------------------------
finished() { # ids the checkpoint holds as finished (status != 0, pending)
    h5dump -y -w 0 -d /candidates/status "$1" 2>/dev/null | awk '/DATA \{/ {getline; print; exit}' | tr -d ' ' |
        tr ',' '\n' | awk 'NF && $1 != 0 {print NR - 1}'
}
$mpi -np 3 "$gs" --config "$tmp/search.json" --out "$tmp/rk" >/dev/null 2>"$tmp/rk.err" &
pid=$!
n=0
second=untried
while [ "$n" -lt 4 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    [ -f "$tmp/rk/search.h5" ] && n=$(finished "$tmp/rk/search.h5" | wc -l)
    if [ "$second" = untried ] && [ "$n" -ge 1 ]; then # the same command while it runs: refused, not resumed
        "$gs" --config "$tmp/search.json" --out "$tmp/rk" >/dev/null 2>"$tmp/second.err"
        second=$?
        "$gm" runs "$tmp" >"$tmp/runs.running"
    fi
done
[ "$second" = 2 ] && grep -q "another gmorph-search (pid [0-9]* on .*) is running in $tmp/rk/" "$tmp/second.err" &&
    ok "a second sweep in a running sweep's folder is refused" || { bad "second sweep: $second"; cat "$tmp/second.err"; }
pkill -9 -f -- "--out $tmp/rk" # every rank and mpirun at once, as a node failure would
wait "$pid" 2>/dev/null
sleep 1
"$gm" runs "$tmp" --json >"$tmp/runs.killed"
finished "$tmp/rk/search.h5" >"$tmp/done_before"
nb=$(wc -l <"$tmp/done_before")
[ "$nb" -ge 4 ] && [ "$nb" -lt "$(table "$tmp/r1" | grep -c "^[0-9]")" ] && ok "killed in the middle ($nb finished in the checkpoint)" \
    || bad "kill came too late or too early ($nb finished)"
$mpi -np 3 "$gs" --resume "$tmp/rk/search.h5" 2>"$tmp/rk2.err" >/dev/null || { bad "resume exit code"; cat "$tmp/rk2.err"; }
sed -n 's/^\[ *\([0-9]*\)\].* \(passed\|failed\|aborted\) .*/\1/p' "$tmp/rk2.err" >"$tmp/trained_after"
sort "$tmp/done_before" >"$tmp/db"
sort "$tmp/trained_after" >"$tmp/ta"
again=$(comm -12 "$tmp/db" "$tmp/ta" | wc -l)
[ "$again" -eq 0 ] && [ -s "$tmp/trained_after" ] && ok "no finished candidate trained again" \
    || { bad "$again finished candidates trained again"; cat "$tmp/rk2.err"; }
same "resumed sweep equals the uninterrupted one" "$tmp/r1" "$tmp/rk"
# gmorph runs told the three states apart: running (the lock held), interrupted, finished
grep -q "^$tmp/rk  *running  *colour,scale,shape  *0.100 " "$tmp/runs.running" &&
    grep -q "^$tmp/r1  *finished " "$tmp/runs.running" &&
    python3 -c 'import json, sys; r = {x["run"]: x for x in json.load(open(sys.argv[1]))}; k = r[sys.argv[2] + "/rk"]; assert k["state"] == "interrupted" and k["candidates"] >= 4' "$tmp/runs.killed" "$tmp" &&
    "$gm" runs "$tmp/rk" | grep -q "^$tmp/rk  *finished " &&
    ok "gmorph runs: running, interrupted, finished" || { bad "gmorph runs"; cat "$tmp/runs.running" "$tmp/runs.killed"; }

# ---- one worker rank dies: Open MPI ends the job, the checkpoint resumes ------------
$mpi -np 3 "$gs" --config "$tmp/async.json" --out "$tmp/rd" >/dev/null 2>"$tmp/rd.err" &
pid=$!
n=0
while [ "$n" -lt 2 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    [ -f "$tmp/rd/search.h5" ] && n=$(finished "$tmp/rd/search.h5" | wc -l)
done
worker=$(pgrep -f -- "--out $tmp/rd" | while read -r p; do
    case "$(cat /proc/"$p"/cmdline 2>/dev/null | tr '\0' ' ')" in "$gs"*) echo "$p" ;; esac; done | tail -1)
[ -n "$worker" ] && kill -9 "$worker"
wait "$pid"
rc=$?
[ $rc -ne 0 ] && ok "a dead worker rank ends the job (exit $rc)" || bad "a dead worker rank: exit $rc"
$mpi -np 3 "$gs" --resume "$tmp/rd/search.h5" >/dev/null 2>"$tmp/err" && ! grep -q pending "$tmp/rd/candidates.csv" &&
    [ "$(table "$tmp/rd" | grep -c "^[0-9]")" -ge 10 ] && ok "its checkpoint resumes and the sweep finishes" || { bad "resume after a dead rank"; cat "$tmp/err"; }

# ---- the same command again ----------------------------------------------------------
# It continues the sweep in its run folder: stopped after one round, then run
# with the config's 10 iterations, it ends with the uninterrupted table.
"$gs" --config "$tmp/search.json" --out "$tmp/ra" --iterations 4 >/dev/null 2>"$tmp/err" || bad "first round"
"$gs" --config "$tmp/search.json" --out "$tmp/ra" >/dev/null 2>"$tmp/ra.err"
[ $? -eq 0 ] && grep -q "(resumed)" "$tmp/ra.err" && ok "the same command again resumes" || { bad "rerun"; cat "$tmp/ra.err"; }
same "the rerun ends with the uninterrupted run's table and best" "$tmp/r1" "$tmp/ra"
"$gs" --config "$tmp/search.json" --out "$tmp/ra" --threshold 0.2 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q 'threshold: 0.1 against 0.2' "$tmp/err" && table "$tmp/ra" | cmp -s - "$tmp/b" &&
    ok "a rerun with another threshold is refused by name" || { bad "rerun with another threshold"; cat "$tmp/err"; }
"$gs" --config "$tmp/search.json" --out "$tmp/ra" --iterations 4 --fresh >/dev/null 2>"$tmp/err"
[ $? -eq 0 ] && grep -q "starting over" "$tmp/err" && ! grep -q "(resumed)" "$tmp/err" &&
    [ "$(table "$tmp/ra" | grep -c '^[0-9]')" -le 4 ] && ok "--fresh starts over" || { bad "--fresh"; cat "$tmp/err"; }

# ---- a damaged checkpoint --------------------------------------------------------------
cp -r "$tmp/rk" "$tmp/rc" || bad "no run folder to damage"
size=$(stat -c %s "$tmp/rc/search.h5")
truncate -s $((size / 2)) "$tmp/rc/search.h5"
"$gs" --resume "$tmp/rc/search.h5" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "$tmp/rc/search.h5" "$tmp/err" && ok "truncated checkpoint refused by name" \
    || { bad "truncated checkpoint: exit $rc"; cat "$tmp/err"; }
[ -f "$tmp/rc/search.h5.prev" ] && "$gs" --resume "$tmp/rc/search.h5.prev" >/dev/null 2>"$tmp/err" \
    && ok "the previous checkpoint still resumes" || { bad "previous checkpoint"; cat "$tmp/err"; }
"$gs" --resume "$tmp/rc/search.h5" --threshold 0.1 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "checkpoint's config" "$tmp/err" && ok "resume refuses a changed config" || bad "resume with --threshold"

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
