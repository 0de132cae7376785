#!/bin/sh
# The folders' include order (README.md, "Architecture"): every #include "..." in
# common/, worker/, datasets/ and coordinator/ names a header of its own folder or of
# one before it, so no folder depends on a folder after it:
#   common/base < engine < {cpu, cuda, formats} ; formats < {fusion, onnx}
#   common < worker < datasets ; worker < coordinator
# and nothing is left in common/ itself. Also: every gmorph subcommand is
# gm_cmd_<name>.c, found from its name. Usage: test_layout.sh [SOURCE_DIR]
set -u
cd "${1:-$(dirname "$0")/..}" || exit 1
fails=0
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

# The folders a folder may include from (its own first).
allowed() {
    case $1 in
    common/base) echo "common/base" ;;
    common/engine) echo "common/engine common/base" ;;
    common/cpu) echo "common/cpu common/engine common/base" ;;
    common/cuda) echo "common/cuda common/engine common/base" ;;
    common/formats) echo "common/formats common/engine common/base" ;;
    common/fusion) echo "common/fusion common/formats common/engine common/base" ;;
    common/onnx) echo "common/onnx common/formats common/engine common/base" ;;
    worker) echo "worker common/base common/engine common/cpu common/cuda common/formats common/fusion common/onnx" ;;
    datasets) echo "datasets worker common/base common/engine common/cpu common/cuda common/formats common/fusion common/onnx" ;;
    coordinator) echo "coordinator worker common/base common/engine common/cpu common/cuda common/formats common/fusion common/onnx" ;;
    *) echo "" ;;
    esac
}

loose=$(find common -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \))
[ -z "$loose" ] || bad "common/ itself holds code (it belongs in a subfolder): $loose"

checked=0
for f in $(find common worker datasets coordinator -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort); do
    dir=$(dirname "$f")
    ok=$(allowed "$dir")
    [ -n "$ok" ] || { bad "$f: in $dir, which has no place in the order"; continue; }
    for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        checked=$((checked + 1))
        [ "$h" = onnx.pb-c.h ] && [ "$dir" = common/onnx ] && continue # generated at build time
        [ "$h" = gm_tb_event.pb-c.h ] && [ "$dir" = coordinator ] && continue # generated at build time
        found=""
        for d in $ok; do
            [ -e "$d/$h" ] && { found=$d; break; }
        done
        [ -n "$found" ] && continue
        where=$(find common worker datasets coordinator -name "$h" -type f | head -1)
        bad "$f includes \"$h\" (${where:-nowhere}), outside what $dir may include: $ok"
    done
done
echo "$checked includes checked"

# Each subcommand gmorph.c dispatches to has its gm_cmd_<name>.c.
for name in $(sed -n 's/^ *{"\([a-z]*\)", ".*gm_cmd_\([a-z]*\)},$/\1 \2/p' coordinator/gmorph.c | awk '$1 == $2 {print $1}'); do
    n=$(find common worker datasets coordinator -name "gm_cmd_$name.c" | wc -l)
    [ "$n" -eq 1 ] || bad "gmorph $name: $n files named gm_cmd_$name.c"
    grep -q "int gm_cmd_$name(int argc, char \*\*argv); */\* [a-z]*/gm_cmd_$name.c \*/" common/base/gm_cli.h ||
        bad "gm_cli.h does not say where gm_cmd_$name is"
    cmds="${cmds:-} $name"
done
[ "$(echo ${cmds:-} | wc -w)" -eq "$(grep -c '^    {"' coordinator/gmorph.c)" ] || bad "not every subcommand is gm_cmd_<its name>"
echo "subcommands:${cmds:-}"

[ $fails -eq 0 ] && echo "all passed" && exit 0
echo "$fails failed"
exit 1
