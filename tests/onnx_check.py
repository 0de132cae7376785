#!/usr/bin/env python3
"""Checks an ONNX model against gmorph's own outputs (from `gmorph export --reference`).

usage: onnx_check.py MODEL.onnx IO.h5 [--tol 1e-4]

1. onnx.checker.check_model(full_check=True): the schema, every node against its
   opset, and shape inference over the whole graph;
2. ONNX Runtime (CPUExecutionProvider) on IO.h5's "input";
3. each graph output against IO.h5's "output/<name>": relative error
   max |onnx - gmorph| / max |gmorph| must be under --tol. Every graph output must
   have a reference and every reference an output.
Prints one line per output and exits 0 when all pass, 1 otherwise (2: bad usage).
"""
import argparse
import sys

import h5py
import numpy as np
import onnx
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("io")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest relative error allowed (default 1e-4)")
    a = ap.parse_args()

    model = onnx.load(a.model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        print(f"FAIL onnx.checker: {e}")
        return 1
    print(f"ok   onnx.checker (full check): ir_version {model.ir_version}, opset "
          f"{max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")

    with h5py.File(a.io, "r") as f:
        x = np.asarray(f["input"], dtype=np.float32)
        refs = {k: np.asarray(v, dtype=np.float32) for k, v in f["output"].items()}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))

    ok = True
    for name in sorted(set(names) | set(refs)):
        if name not in refs or name not in got:
            print(f"FAIL {name}: {'no reference in ' + a.io if name not in refs else 'not a graph output'}")
            ok = False
            continue
        y, r = got[name], refs[name]
        if y.shape != r.shape:
            print(f"FAIL {name}: ONNX Runtime gives shape {y.shape}, gmorph {r.shape}")
            ok = False
            continue
        err = float(np.max(np.abs(y - r)) / max(float(np.max(np.abs(r))), 1e-30))
        good = err < a.tol and np.all(np.isfinite(y))
        ok &= bool(good)
        print(f"{'ok  ' if good else 'FAIL'} {name}: shape {list(y.shape)}, max relative error {err:.3g} "
              f"(tol {a.tol:g})")
    print(f"ONNX Runtime {ort.__version__} {'agrees' if ok else 'DISAGREES'} with gmorph on {x.shape[0]} inputs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
