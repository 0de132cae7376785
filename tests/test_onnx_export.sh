#!/bin/sh
# gmorph export: model files as ONNX graphs, checked by onnx.checker and ONNX Runtime.
# For each of three models -- (a) a fused multi-task model from a short gmorph-search
# over the tiny zoo (shared blocks), (b) a single zoo model, (c) a model file holding
# every IR op and every exporter path (tests/onnx_export_model.c) --
# - `gmorph export M.h5 OUT.onnx --reference IO.h5` succeeds and prints its summary;
# - tests/onnx_check.py: onnx.checker (full check) passes and ONNX Runtime's outputs
#   equal gmorph's own on seeded inputs (relative error under 1e-4), for every task;
# - the graph has one output per task, in task order, named after the task
#   (sanitised and unique), [N, classes], and metadata gmorph.mean/std/tasks;
# - every block is computed once: as many Conv and Gemm nodes as the model file
#   has conv2d and linear ops (fused: a shared block's output feeds several nodes);
# - (c): every op type present, no Dropout node, a block no task reads left out.
# And: the same export twice gives identical bytes; a missing, damaged or non-HDF5
# model file is exit 2 naming the file; an output in a missing folder, or on a
# folder, fails naming it and leaves no temporary file; usage errors are exit 2.
# Usage: test_onnx_export.sh GMORPH PYTHON GMORPH-SEARCH ONNX_EXPORT_MODEL [all|nofused]
# nofused leaves out (a), whose search takes minutes under the sanitizers (ctest runs
# it as test_onnx_export_fused, in the release pass only).
set -u
gm=$1
py=$2
gs=$3
mk=$4
models=${5:-all}
here=$(cd "$(dirname "$0")" && pwd)
export OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

"$py" -c 'import onnx, onnxruntime, h5py, numpy' 2>/dev/null ||
    { echo "FAIL: $py lacks onnx, onnxruntime, h5py or numpy: run tests/install-deps.sh"; exit 1; }

# ---- the models ---------------------------------------------------------------------------
"$here/tiny-zoo.sh" "$gm" "$tmp" || exit 1
if [ "$models" = all ]; then
    # GMorph mode: its plain merges end the tiny sweep on a shared-block model, which
    # is what (a) exports; the default's stitch can make a layer-skipping, unshared
    # candidate the best one, as the tiny zoo's easy tasks allow.
    sed -i 's/^{$/{ "gmorph_mode": true,/' "$tmp/search.json"
    "$gs" --config "$tmp/search.json" --out "$tmp/run" >"$tmp/search.out" 2>&1 || { tail -20 "$tmp/search.out"; exit 1; }
    [ -f "$tmp/run/best.h5" ] || { tail -20 "$tmp/search.out"; echo "FAIL: the search kept no best model"; exit 1; }
    "$py" - "$tmp/run/best.h5" <<'EOF' || { echo "FAIL: best.h5 is not a fused model with shared blocks"; exit 1; }
import sys, collections, h5py
f = h5py.File(sys.argv[1], "r")
parents = collections.Counter(int(b.attrs["parent"][0]) for b in f["blocks"].values())
shared = [p for p, n in parents.items() if p >= 0 and n > 1]
print("     best.h5: %s, %d tasks, %d blocks, shared blocks %s" % (f.attrs["arch"].decode(), len(f["tasks"]),
      len(f["blocks"]), shared))
sys.exit(0 if shared and len(f["tasks"]) == 3 else 1)
EOF
fi
"$mk" "$tmp/allops.h5" || { echo "FAIL: onnx_export_model"; exit 1; }

# ---- export and check one model --------------------------------------------------------------
# check NAME MODEL.h5 "OUTPUT,NAMES"
check() {
    name=$1 model=$2 want=$3
    onnx=$tmp/$name.onnx io=$tmp/$name.io.h5
    if ! "$gm" export "$model" "$onnx" --reference "$io" --samples 32 --seed 5 >"$tmp/out" 2>"$tmp/err"; then
        bad "$name: gmorph export failed"
        cat "$tmp/out" "$tmp/err"
        return
    fi
    grep -q "^gmorph export: $onnx: [0-9]* nodes, [0-9]* initializers, [0-9]* parameters .*, $(echo "$want" |
        tr ',' '\n' | wc -l) outputs\? (" "$tmp/out" && ok "$name: exported, summary printed" ||
        { bad "$name: summary line"; cat "$tmp/out"; }
    "$py" "$here/onnx_check.py" "$onnx" "$io" --tol 1e-4 >"$tmp/check" 2>&1 && ok "$name: onnx.checker and ONNX Runtime" ||
        bad "$name: onnx_check.py"
    sed 's/^/     /' "$tmp/check"
    "$py" - "$onnx" "$model" "$want" <<'EOF' && ok "$name: outputs, metadata, each block once" || bad "$name: graph structure"
import sys, h5py, onnx
m = onnx.load(sys.argv[1])
f = h5py.File(sys.argv[2], "r")
want = sys.argv[3].split(",")
g, errs = m.graph, []
outs = [o.name for o in g.output]
if outs != want: errs.append("outputs %s, want %s" % (outs, want))
for o, k in zip(g.output, sorted(f["tasks"])):
    dims = [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
    if dims != ["N", int(f["tasks"][k].attrs["classes"][0])]: errs.append("%s: dims %s" % (o.name, dims))
dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
if g.input[0].name != "input" or dims != ["N"] + [int(v) for v in f.attrs["input"]]:
    errs.append("input %s %s" % (g.input[0].name, dims))
meta = {p.key: p.value for p in m.metadata_props}
fl = lambda s: [float(v) for v in s.split(",")]
if meta.get("gmorph.tasks") != ",".join(want): errs.append("gmorph.tasks %r" % meta.get("gmorph.tasks"))
for k in ("mean", "std"):
    if max(abs(a - b) for a, b in zip(fl(meta["gmorph." + k]), f.attrs[k])) > 1e-6 or \
       len(fl(meta["gmorph." + k])) != len(f.attrs[k]):
        errs.append("gmorph.%s %s" % (k, meta["gmorph." + k]))
if m.producer_name != "gmorph" or not m.producer_version: errs.append("producer %s %s" % (m.producer_name, m.producer_version))
# Blocks a task reads, each exported once.
parent = {int(k): int(b.attrs["parent"][0]) for k, b in f["blocks"].items()}
needed = set()
for t in f["tasks"].values():
    b = int(t.attrs["head"][0])
    while b >= 0:
        needed.add(b)
        b = parent[b]
ops = [op.attrs["kind"].decode() for k, b in f["blocks"].items() if int(k) in needed for op in b.values()]
types = [n.op_type for n in g.node]
for kind, onnx_type in (("conv2d", "Conv"), ("linear", "Gemm"), ("batchnorm2d", "BatchNormalization"),
                        ("add", "Add"), ("upsample", "Resize")):
    if ops.count(kind) != types.count(onnx_type):
        errs.append("%d %s ops but %d %s nodes" % (ops.count(kind), kind, types.count(onnx_type), onnx_type))
if "Dropout" in types: errs.append("a Dropout node")
# A shared block: its output feeds nodes of more than one child block.
kids = {}
for b, p in parent.items():
    if b in needed and p >= 0: kids.setdefault(p, []).append(b)
for p, ks in kids.items():
    if len(ks) < 2: continue
    last = [n for n in g.node if n.name.startswith("b%d." % p)][-1].output[0]
    readers = {n.name.split(".")[0] for n in g.node if last in n.input}
    if len(readers) < 2: errs.append("block %d's output feeds only %s" % (p, readers))
    print("     block %d, shared by blocks %s: %s feeds %s" % (p, ks, last, sorted(readers)))
print("     %d nodes: %s" % (len(types), ", ".join("%s %d" % (t, types.count(t)) for t in sorted(set(types)))))
for e in errs: print("     " + e)
sys.exit(1 if errs else 0)
EOF
}

[ "$models" = all ] && check fused "$tmp/run/best.h5" "colour,scale,shape"
check single "$tmp/shape.h5" "shape"
check allops "$tmp/allops.h5" "colour_hue_2,input_2,shape,scale"
"$py" - "$tmp/allops.onnx" <<'EOF' && ok "allops: every op type, AveragePool counts padding, Resize floor, unread block left out" ||
import sys, onnx
g = onnx.load(sys.argv[1]).graph
types = {n.op_type for n in g.node}
want = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "Flatten",
        "Add", "Resize", "Reshape", "Identity"}
attr = lambda n, k: next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == k), None)
errs = ["missing %s" % t for t in sorted(want - types)]
errs += ["%s without count_include_pad" % n.name for n in g.node if n.op_type == "AveragePool" and attr(n, "count_include_pad") != 1]
errs += ["%s: %s" % (n.name, [attr(n, k) for k in ("mode", "coordinate_transformation_mode", "nearest_mode")])
         for n in g.node if n.op_type == "Resize" and [attr(n, k) for k in ("mode", "coordinate_transformation_mode", "nearest_mode")]
         != [b"nearest", b"asymmetric", b"floor"]]
errs += ["block 8 exported (%s)" % n.name for n in g.node if n.name.startswith("b8.")]
errs += ["%s: not a readable name" % i.name for i in g.initializer if not i.name.startswith("b")]
for e in errs: print("     " + e)
sys.exit(1 if errs else 0)
EOF
    bad "allops: op coverage"

# ---- determinism ------------------------------------------------------------------------------
again="$tmp/allops.h5 $tmp/allops.onnx"
[ "$models" = all ] && again="$tmp/run/best.h5 $tmp/fused.onnx"
set -- $again
"$gm" export "$1" "$tmp/again.onnx" >/dev/null 2>&1 && cmp -s "$2" "$tmp/again.onnx" &&
    ok "the same export twice: identical bytes" || bad "export is not reproducible"

# ---- bad input ---------------------------------------------------------------------------------
expect_fail() { # what want_rc path_in_message command...
    what=$1 want=$2 path=$3
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq "$want" ] && grep -qF "$path" "$tmp/err" && ok "$what: exit $rc, named" ||
        { bad "$what: exit $rc (want $want)"; cat "$tmp/err"; }
}
expect_fail "missing model file" 2 "$tmp/nothere.h5" "$gm" export "$tmp/nothere.h5" "$tmp/x.onnx"
size=$(stat -c %s "$tmp/colour.h5")
head -c $((size / 2)) "$tmp/colour.h5" >"$tmp/trunc.h5"
expect_fail "truncated model file" 2 "$tmp/trunc.h5" "$gm" export "$tmp/trunc.h5" "$tmp/x.onnx"
echo "not a model" >"$tmp/text.h5"
expect_fail "not an HDF5 file" 2 "$tmp/text.h5" "$gm" export "$tmp/text.h5" "$tmp/x.onnx"
expect_fail "a dataset file, not a model" 2 "$tmp/sprites.h5" "$gm" export "$tmp/sprites.h5" "$tmp/x.onnx"
[ ! -e "$tmp/x.onnx" ] && [ ! -e "$tmp/x.onnx.tmp" ] && ok "no output after bad model files" || bad "output left behind"
expect_fail "output in a missing folder" 2 "$tmp/nodir/x.onnx" "$gm" export "$tmp/colour.h5" "$tmp/nodir/x.onnx"
[ ! -e "$tmp/nodir" ] && ok "missing folder: nothing created" || bad "missing folder: $(ls -R "$tmp/nodir")"
mkdir "$tmp/adir"
expect_fail "output path is a folder" 2 "$tmp/adir" "$gm" export "$tmp/colour.h5" "$tmp/adir"
[ ! -e "$tmp/adir.tmp" ] && [ -z "$(ls "$tmp/adir")" ] && ok "folder output: no temporary file left" ||
    bad "folder output: $(ls -d "$tmp"/adir*)"
"$gm" export --help >"$tmp/out" 2>&1 && grep -q "usage: gmorph export" "$tmp/out" && grep -q -- "--reference" "$tmp/out" &&
    ok "--help: exit 0" || bad "--help"
for args in "" "$tmp/colour.h5" "$tmp/colour.h5 $tmp/y.onnx --samples 4" "$tmp/colour.h5 $tmp/y.onnx --reference $tmp/io.h5 --samples 0" \
    "$tmp/colour.h5 $tmp/y.onnx --bogus"; do
    # shellcheck disable=SC2086 # word splitting intended
    "$gm" export $args >/dev/null 2>"$tmp/err"
    rc=$?
    [ $rc -eq 2 ] && [ ! -e "$tmp/y.onnx" ] && ok "usage error (${args:-no arguments}): exit 2" || bad "usage '$args': exit $rc"
done

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
