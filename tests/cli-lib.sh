# Sourced by the command-line tests (test_*_cli.sh, test_cli.sh) after they set gm
# (the gmorph binary): a scratch folder $tmp removed on exit, a failure count
# $fails, run (gmorph's stdout and stderr into $tmp/out and $tmp/err) and check.
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
