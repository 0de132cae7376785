#!/usr/bin/env python3
"""
The fused model in a deployment runtime: ONNX Runtime's batch-1 latency of the
original task models run one after the other against the fused model, all
exported by `gmorph export`, timed alternately in the same process.

    /opt/gmorph-py/bin/python results/bench_onnx.py FUSED.onnx ORIG1.onnx ORIG2.onnx ... [--runs N] [--threads T]
        [--data DATA.h5]

Also checks that the fused model's outputs are the originals' tasks (by name).
Prints one Markdown table row per model and the ratio. With --data (a gmorph
dataset file holding every task), also each task's test accuracy in ONNX Runtime,
original against fused, inputs normalised as the models' gmorph.mean/std say.
"""
import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fused")
    ap.add_argument("originals", nargs="+")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data")
    a = ap.parse_args()
    fused = session(a.fused, a.threads)
    origs = [session(p, a.threads) for p in a.originals]
    shape = [1] + [d if isinstance(d, int) else 1 for d in fused.get_inputs()[0].shape[1:]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    fused_tasks = sorted(o.name for o in fused.get_outputs())
    orig_tasks = sorted(o.name for s in origs for o in s.get_outputs())
    assert fused_tasks == orig_tasks, f"fused outputs {fused_tasks} are not the originals' {orig_tasks}"

    def run_fused():
        fused.run(None, {"input": x})

    def run_origs():
        for s in origs:
            s.run(None, {"input": x})

    for _ in range(a.warmup):
        run_fused()
        run_origs()
    tf, to = [], []
    for _ in range(a.runs):  # alternate, so both see the same machine load
        t0 = time.perf_counter()
        run_origs()
        t1 = time.perf_counter()
        run_fused()
        t2 = time.perf_counter()
        to.append(t1 - t0)
        tf.append(t2 - t1)
    mo, mf = 1e3 * statistics.median(to), 1e3 * statistics.median(tf)
    print(f"| originals, one after the other ({len(origs)} sessions) | {mo:.3f} |")
    print(f"| fused ({a.fused}) | {mf:.3f} |")
    print(f"| ratio | {mo / mf:.2f}x |")
    print(f"ONNX Runtime {ort.__version__}, {a.threads} thread(s), batch 1, median of {a.runs} alternating runs "
          f"after {a.warmup} warm-up, tasks {', '.join(fused_tasks)}")
    if a.data:
        test_accuracies(a, fused, origs, [o.name for o in fused.get_outputs()])


def accuracy(sess, tasks, x, labels):
    hits = {t: 0 for t in tasks}
    for i in range(0, len(x), 256):
        outs = sess.run(tasks, {"input": x[i:i + 256]})
        for t, o in zip(tasks, outs):
            hits[t] += int((o.argmax(1) == labels[t][i:i + 256]).sum())
    return {t: hits[t] / len(x) for t in tasks}


def test_accuracies(a, fused, origs, tasks):
    import h5py
    meta = fused.get_modelmeta().custom_metadata_map
    mean = np.array([float(v) for v in meta["gmorph.mean"].split(",")], np.float32)
    std = np.array([float(v) for v in meta["gmorph.std"].split(",")], np.float32)
    with h5py.File(a.data, "r") as f:
        x = f["test"]["x"][()].astype(np.float32) * float(np.asarray(f.attrs["scale"]).reshape(-1)[0])
        labels = {t: f["test"]["y"][t][()] for t in tasks}
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    fa = accuracy(fused, tasks, x, labels)
    print()
    print("| task | original test % (ONNX Runtime) | fused test % (ONNX Runtime) |")
    print("|---|---|---|")
    for s in origs:
        t = s.get_outputs()[0].name
        oa = accuracy(s, [t], x, labels)[t]
        print(f"| {t} | {100 * oa:.2f} | {100 * fa[t]:.2f} |")
    print(f"({len(x)} test samples of {a.data})")


if __name__ == "__main__":
    main()
