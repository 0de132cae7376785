#!/bin/sh
# The gmorph command as a user meets it: help, exit codes, clear errors, and a
# short real training run on Fashion-MNIST. Usage: test_cli.sh PATH_TO_GMORPH
set -u
gm=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # name expected_rc actual_rc [file pattern]
    if [ "$3" -ne "$2" ]; then
        echo "FAIL $1: exit code $3, expected $2"; cat "$tmp/out" "$tmp/err"; fails=$((fails + 1)); return
    fi
    if [ $# -ge 5 ] && ! grep -q -- "$5" "$4"; then
        echo "FAIL $1: \"$5\" not in $4:"; cat "$4"; fails=$((fails + 1)); return
    fi
    echo "ok   $1"
}
run() { "$gm" "$@" >"$tmp/out" 2>"$tmp/err"; }

run --help;                         check "help" 0 $? "$tmp/out" "usage: gmorph"
run train --help;                   check "train help" 0 $? "$tmp/out" "--widths"
run;                                check "no command" 2 $? "$tmp/err" "usage"
run frobnicate;                     check "unknown command" 2 $? "$tmp/err" 'unknown command "frobnicate"'
run train --epochs 0;               check "epochs out of range" 2 $? "$tmp/err" "--epochs must be an integer"
run train --widths 8,x;             check "bad widths" 2 $? "$tmp/err" "--widths wants"
run train --arch alexnet --data /usr/share/datasets/fashion-mnist --limit 64
check "unknown arch" 2 $? "$tmp/err" 'unknown architecture "alexnet"'
run train --data "$tmp/nowhere";    check "missing data" 2 $? "$tmp/err" "cannot open"
head -c 1000 /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz > "$tmp/train-images-idx3-ubyte.gz"
run train --data "$tmp";            check "truncated data" 2 $? "$tmp/err" "truncated or corrupt"

if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    run train --limit 10 --quiet;   check "fewer images than a batch" 2 $? "$tmp/err" "fewer than one batch of 64"
    run train --limit 3072 --epochs 2 --widths 8,16,32 --threads 2 --quiet
    rc=$?
    check "short training run" 0 $rc "$tmp/out" "test accuracy"
    # 2 epochs over 3072 images reach well above the 10% of chance
    acc=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' "$tmp/out")
    if [ -n "$acc" ] && awk "BEGIN{exit !($acc > 60)}"; then echo "ok   accuracy $acc% > 60%"
    else echo "FAIL accuracy '$acc'"; cat "$tmp/out"; fails=$((fails + 1)); fi
else
    echo "SKIPPED short training run: dataset-fashion-mnist is not installed"
fi
exit $((fails > 0))
