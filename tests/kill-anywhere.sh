#!/bin/sh
# Kill anywhere: a deterministic 3-rank sweep on the tiny Sprites zoo is killed with
# SIGKILL (every rank and mpirun at once, as a node failure would) at KILLS random
# moments, each time restarted with the same command, then left to finish. The final
# table and best must equal the uninterrupted run's, and no candidate that a
# checkpoint held as finished may be trained again after it. Each kill is classed by
# what the run folder shows at that moment: before the first checkpoint, while a
# checkpoint is being written (search.h5.tmp present), or between checkpoints
# (fine-tuning). Prints one line per kill and the totals (results/reliability.md).
# Usage: kill-anywhere.sh GMORPH GMORPH_SEARCH MPIEXEC [KILLS] [SEED]
set -u
gm=$1
gs=$2
mpi="$3 --allow-run-as-root --oversubscribe"
kills=${4:-20}
seed=${5:-1}
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'pkill -9 -f -- "--out $tmp/" 2>/dev/null; rm -rf "$tmp"' EXIT
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" frozen >/dev/null 2>&1 || { echo "FAIL the tiny zoo"; exit 1; }
table() { cut -d, -f1-4,6-10,14,15,18- "$1/candidates.csv" | sort -t, -k1,1n; }
best() { sed -n 's/.*(candidate \([0-9-]*\)).*/\1/p' "$1/summary.md"; }
finished() { # ids the checkpoint holds as finished
    h5dump -y -w 0 -d /candidates/status "$1" 2>/dev/null | awk '/DATA \{/ {getline; print; exit}' | tr -d ' ' |
        tr ',' '\n' | awk 'NF && $1 != 0 {print NR - 1}'
}

t0=$(date +%s.%N)
$mpi -np 3 "$gs" --config "$tmp/search.json" --out "$tmp/ref" >/dev/null 2>"$tmp/ref.err" || { cat "$tmp/ref.err"; exit 1; }
span=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
echo "uninterrupted: $(table "$tmp/ref" | grep -c '^[0-9]') candidates in ${span}s, best $(best "$tmp/ref")"

# Random delays from a seeded stream (awk's srand), within the uninterrupted run's span.
# Random delays from a seeded stream (awk's srand), within the uninterrupted run's span.
delays=$(awk -v n="$kills" -v s="$seed" -v span="$span" 'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%.2f\n", rand() * span }')
before=0 writing=0 between=0 again=0 k=0 runs=0 wrong=0
# A run that ends before its kill is compared with the uninterrupted one, and the next starts afresh.
compare() {
    runs=$((runs + 1))
    table "$tmp/ref" >"$tmp/a"
    table "$tmp/run" >"$tmp/b"
    if cmp -s "$tmp/a" "$tmp/b" && [ "$(best "$tmp/ref")" = "$(best "$tmp/run")" ]; then
        echo "     run $runs ended equal to the uninterrupted one"
    else
        wrong=$((wrong + 1))
        echo "FAIL run $runs ended unlike the uninterrupted one"
        diff "$tmp/a" "$tmp/b"
    fi
    rm -rf "$tmp/run"
}
for d in $delays; do
    k=$((k + 1))
    [ -f "$tmp/run/search.h5" ] && finished "$tmp/run/search.h5" | sort >"$tmp/held" || : >"$tmp/held"
    $mpi -np 3 "$gs" --config "$tmp/search.json" --out "$tmp/run" >/dev/null 2>"$tmp/run.err.$k" &
    pid=$!
    sleep "$d"
    if [ ! -f "$tmp/run/search.h5" ]; then phase="before the first checkpoint"
    elif [ -f "$tmp/run/search.h5.tmp" ]; then phase="during a checkpoint write"
    else phase="between checkpoints"; fi
    if kill -0 "$pid" 2>/dev/null; then
        pkill -9 -f -- "--out $tmp/run" 2>/dev/null
        wait "$pid" 2>/dev/null
        ended=""
    else
        wait "$pid"
        ended=$?
    fi
    sed -n 's/^\[ *\([0-9]*\)\].* \(passed\|failed\|aborted\) .*/\1/p' "$tmp/run.err.$k" | sort >"$tmp/trained"
    n=$(comm -12 "$tmp/held" "$tmp/trained" | wc -l)
    again=$((again + n))
    if [ -n "$ended" ]; then
        echo "run ended (exit $ended) before kill $k at ${d}s; $(wc -l <"$tmp/trained") trained, $n of them again"
        compare
        continue
    fi
    case $phase in
    before*) before=$((before + 1)) ;;
    during*) writing=$((writing + 1)) ;;
    *) between=$((between + 1)) ;;
    esac
    echo "kill $k at ${d}s: $phase; $(wc -l <"$tmp/held") finished before, $(wc -l <"$tmp/trained") trained in this run, $n of them again"
done
[ -f "$tmp/run/search.h5" ] && finished "$tmp/run/search.h5" | sort >"$tmp/held" || : >"$tmp/held"
$mpi -np 3 "$gs" --config "$tmp/search.json" --out "$tmp/run" >/dev/null 2>"$tmp/run.err.end" || { echo "FAIL the final run"; cat "$tmp/run.err.end"; exit 1; }
sed -n 's/^\[ *\([0-9]*\)\].* \(passed\|failed\|aborted\) .*/\1/p' "$tmp/run.err.end" | sort >"$tmp/trained"
again=$((again + $(comm -12 "$tmp/held" "$tmp/trained" | wc -l)))
compare
echo "$((before + writing + between)) kills ($before before the first checkpoint, $writing during a checkpoint write, $between between checkpoints) over $runs runs"
if [ "$wrong" -eq 0 ] && [ "$again" -eq 0 ]; then
    echo "ok   every run ended with the uninterrupted run's table and best; no finished candidate trained again"
else
    echo "FAIL $wrong runs ended otherwise, $again finished candidates trained again"
    exit 1
fi
