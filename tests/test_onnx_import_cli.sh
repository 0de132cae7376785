#!/bin/sh
# gmorph import as a user meets it: help, exit codes, messages naming the file and
# node, the summary line, and the imported models scored by gmorph eval on a
# dataset made from the fixtures' inputs labelled with PyTorch's predictions
# (so 100% means gmorph predicts exactly what PyTorch does).
# Usage: test_onnx_import_cli.sh PATH_TO_GMORPH FIXTURES_DIR
set -u
gm=$1
fx=$2/onnx
. "$(dirname "$0")/cli-lib.sh"

run import --help;                        check "help" 0 $? "$tmp/out" "usage: gmorph import"
run import;                               check "no file" 2 $? "$tmp/err" "which ONNX file?"
run import "$fx/vgg.onnx";                check "no --out" 2 $? "$tmp/err" "--out is required"
run import "$fx/vgg.onnx" --out "$tmp/m.h5" --std 1,0x; check "bad --std" 2 $? "$tmp/err" "--std wants"
run import "$fx/vgg.onnx" --out "$tmp/m.h5" --mean 1,2; check "--mean per channel" 2 $? "$tmp/err" "2 mean values"
run import "$tmp/nowhere.onnx" --out "$tmp/m.h5"; check "missing file" 2 $? "$tmp/err" "nowhere.onnx: cannot open"
run import "$fx/expected.h5" --out "$tmp/m.h5"; check "not ONNX" 2 $? "$tmp/err" "not an ONNX model"
run import "$fx/refused_sigmoid.onnx" --out "$tmp/m.h5"
check "unsupported op" 2 $? "$tmp/err" 'node "/act/Sigmoid" (op Sigmoid) is not supported'
if [ -e "$tmp/m.h5" ]; then
    echo "FAIL a refused import wrote m.h5"; fails=$((fails + 1))
else
    echo "ok   nothing written on failure"
fi

for model in vgg resnet vgg_matmul resnet_bn; do
    # vgg_matmul carries gmorph.mean/std metadata for other data: the fixtures' inputs are normalised already
    norm=""
    [ "$model" = vgg_matmul ] && norm="--mean 0,0,0 --std 1,1,1"
    # shellcheck disable=SC2086
    run import "$fx/$model.onnx" --out "$tmp/$model.h5" --task pred $norm
    check "import $model" 0 $? "$tmp/out" "task \"pred\" (10 classes)"
    grep -q "input 3x32x32" "$tmp/out" || { echo "FAIL no input shape"; cat "$tmp/out"; fails=$((fails + 1)); }
    run data import --out "$tmp/$model.data.h5" --name onnx-fixture --split "test=$fx/expected.h5:/$model/x" \
        --label "test:pred=$fx/expected.h5:/$model/labels" --classes pred=10
    check "dataset of $model's inputs" 0 $? "$tmp/out" "wrote"
    run eval "$tmp/$model.h5" --data "$tmp/$model.data.h5" --no-latency --threads 1
    check "eval $model agrees with PyTorch" 0 $? "$tmp/out" "pred .*test accuracy 100.00%"
done
run import "$fx/vgg_matmul.onnx" --out "$tmp/meta.h5"
check "default task name: the graph output's" 0 $? "$tmp/out" "task \"logits\""

# --data: scored on import and recorded, so eval needs no --data
run import "$fx/vgg.onnx" --task pred --data "$tmp/vgg.data.h5" --out "$tmp/scored.h5"
check "import --data scores the model" 0 $? "$tmp/out" "test accuracy 100.00% (recorded in"
run eval "$tmp/scored.h5" --no-latency --threads 1
check "the model file names its dataset" 0 $? "$tmp/out" "pred .*test accuracy 100.00%.*vgg.data.h5"
run import "$fx/vgg.onnx" --data "$tmp/vgg.data.h5" --out "$tmp/x.h5"
check "import --data without the task" 2 $? "$tmp/err" 'has no task "logits" (name the model.s task with --task)'
[ ! -e "$tmp/x.h5" ] || { echo "FAIL a refused import wrote its model file"; fails=$((fails + 1)); }
run import "$fx/vgg.onnx" --task pred --data "$tmp/none.h5" --out "$tmp/x.h5"
check "import --data of a missing file" 2 $? "$tmp/err" "none.h5"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all gmorph import checks passed"
