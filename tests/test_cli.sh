#!/bin/sh
# The gmorph train, eval and zoo commands as a user meets them: help, exit
# codes, clear errors, a short real training run on a tiny Sprites set, an
# interrupted training resumed by rerunning the same command, evaluation of the
# model file, and a smoke-scale zoo build. Usage: test_cli.sh PATH_TO_GMORPH
set -u
gm=$1
. "$(dirname "$0")/cli-lib.sh"
num() { sed -n "s/.*$1 *\([0-9.]*\)%.*/\1/p" "$tmp/out" | tail -1; }

run --help;                         check "help" 0 $? "$tmp/out" "usage: gmorph"
run train --help;                   check "train help" 0 $? "$tmp/out" "--widths"
run eval --help;                    check "eval help" 0 $? "$tmp/out" "--split"
run zoo --help;                     check "zoo help" 0 $? "$tmp/out" "--scale"
run;                                check "no command" 2 $? "$tmp/err" "usage"
run frobnicate;                     check "unknown command" 2 $? "$tmp/err" 'unknown command "frobnicate"'
run train --data x.h5;              check "train without --out" 2 $? "$tmp/err" "--out are required"
run train --data x.h5 --out m.h5 --epochs 0; check "epochs out of range" 2 $? "$tmp/err" "--epochs must be an integer"
run train --data x.h5 --out m.h5 --widths 8,x; check "bad widths" 2 $? "$tmp/err" "--widths wants"
run train --data "$tmp/nowhere.h5" --out "$tmp/m.h5"; check "missing data" 2 $? "$tmp/err" "no such file"

d="$tmp/sprites.h5"
run data sprites --out "$d" --size 16 --train 2048 --val 256 --test 256
check "tiny sprites" 0 $? "$tmp/out" "wrote"
run train --data "$d" --out "$tmp/m.h5";  check "several tasks need --task" 2 $? "$tmp/err" "choose one with --task"
run train --data "$d" --task hue --out "$tmp/m.h5"; check "unknown task" 2 $? "$tmp/err" 'no task "hue"'
run train --data "$d" --task shape --arch alexnet --out "$tmp/m.h5"
check "unknown arch" 2 $? "$tmp/err" 'unknown architecture "alexnet"'
run train --data "$d" --task colour --limit 10 --out "$tmp/m.h5" --quiet
check "fewer samples than a batch" 2 $? "$tmp/err" "fewer than one batch of 64"
head -c 20000 "$d" > "$tmp/cut.h5"
run train --data "$tmp/cut.h5" --task colour --out "$tmp/m.h5"
check "truncated dataset" 2 $? "$tmp/err" "truncated"

# A real run: 6 colours (chance 16.7%) must be learnt well above chance.
run train --data "$d" --task colour --widths 8,16 --epochs 6 --batch 32 --lr 3e-3 --threads 2 --out "$tmp/m.h5"
check "short training run" 0 $? "$tmp/out" "test accuracy"
acc=$(num "test accuracy")
if [ -n "$acc" ] && awk "BEGIN{exit !($acc > 60)}"; then echo "ok   accuracy $acc% > 60%"
else echo "FAIL accuracy '$acc'"; cat "$tmp/out"; fails=$((fails + 1)); fi
grep -q "epoch 6/6" "$tmp/err" && echo "ok   progress lines" || { echo "FAIL no progress"; cat "$tmp/err"; fails=$((fails + 1)); }

run eval "$tmp/m.h5" --runs 20;     check "eval" 0 $? "$tmp/out" "batch-1 latency"
eacc=$(num "test accuracy")
[ "$eacc" = "$acc" ] && echo "ok   eval agrees with train ($eacc%)" || { echo "FAIL eval $eacc% vs train $acc%"; fails=$((fails + 1)); }
run eval "$tmp/m.h5" --split val --no-latency; check "eval on val" 0 $? "$tmp/out" "val accuracy"
run eval "$tmp/m.h5" --split dev;   check "eval bad split" 2 $? "$tmp/err" "dev"
run eval "$d";                      check "eval a dataset file" 2 $? "$tmp/err" "not a gmorph model file"
run eval "$tmp/cut.h5";             check "eval truncated" 2 $? "$tmp/err" "truncated"

# Interrupted by SIGTERM, then the same command resumes and finishes.
cmd="train --data $d --task shape --widths 8,16 --epochs 40 --limit 1024 --batch 32 --threads 1 --out $tmp/r.h5 --checkpoint-every 0.2"
"$gm" $cmd >"$tmp/out" 2>"$tmp/err" &
pid=$!
# Stop it once training runs (its first progress line), not after a fixed
# delay: on a loaded machine start-up alone can take longer than a second.
for _ in $(seq 600); do grep -q "epoch 1/" "$tmp/err" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -TERM $pid
wait $pid
rc=$?
if [ $rc -eq 0 ]; then echo "SKIPPED resume: the run finished before SIGTERM"
else
    check "SIGTERM saves state" 1 $rc "$tmp/err" "run the same command again to resume"
    run $cmd;                       check "resumed run" 0 $? "$tmp/err" "resumed at epoch"
    run $cmd --batch 64;            check "resume with other options" 2 $? "$tmp/err" "--batch 32"
fi

# A smoke-scale zoo from a small config: datasets made, models trained, table written.
cat > "$tmp/zoo.json" <<'JSON'
{"name": "tiny", "datasets": [{"name": "sp", "maker": "sprites", "args": ["--size", "16"]}],
 "models": [{"name": "colour", "dataset": "sp", "task": "colour", "arch": "vgg11", "widths": [8, 16],
             "epochs": 50, "min_test_accuracy": 0.3},
            {"name": "scale", "dataset": "sp", "task": "scale", "arch": "resnet8", "widths": [8, 16],
             "epochs": 3, "min_test_accuracy": 0.0}]}
JSON
run zoo "$tmp/zoo.json" --out "$tmp/zoo/nested" --scale 0.05 --epochs 3 --threads 2 --quiet
check "zoo smoke build" 0 $? "$tmp/zoo/nested/zoo.md" "| colour | sp/colour | vgg11 8,16 |"
run zoo "$tmp/zoo.json" --out "$tmp/zoo/nested" --scale 0.05 --epochs 3 --quiet
check "zoo rerun keeps what exists" 0 $? "$tmp/err" "model $tmp/zoo/nested/colour.h5 exists: kept"
echo '{"name": "x", "datasets": [], "models": [{"name": "a", "dataset": "nope"}]}' > "$tmp/bad.json"
run zoo "$tmp/bad.json" --out "$tmp/zoo2"; check "zoo bad config" 2 $? "$tmp/err" 'missing \\"task\\"\|missing "task"'
exit $((fails > 0))
