#!/usr/bin/python3
"""Foundation benchmark: gmorph against PyTorch on the same networks, same run.

usage: results/bench_foundation.py BUILD_DIR [--repeats N] [--out results/foundation.md]

For every cell (network x input x threads) it alternates gmorph and PyTorch runs
`repeats` times, so both see the same machine noise, and reports the medians and
their ratio. Then it measures the share of OpenBLAS's own sgemm peak that every
convolution reaches (gmorph-bench gemm). Writes a Markdown table with the exact
command and commit.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH = os.path.join(HERE, "..", "tests", "bench", "bench_torch.py")
NETS = [  # name, arch, widths, input, classes
    ("VGG-11-style", "vgg11", "32,64,128,128", "1,28,28", 10),
    ("VGG-11-style", "vgg11", "32,64,128,128", "3,32,32", 10),
    ("ResNet-10-style", "resnet10", "16,32,64,128", "1,28,28", 10),
    ("ResNet-10-style", "resnet10", "16,32,64,128", "3,32,32", 10),
]


CHILD_ENV = dict(os.environ)


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=CHILD_ENV).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=os.path.join(HERE, "foundation.md"))
    ap.add_argument("--keep-blas-core", action="store_true",
                    help="keep OPENBLAS_CORETYPE from the environment (default: let OpenBLAS detect the CPU)")
    args = ap.parse_args()
    if not args.keep_blas_core:
        CHILD_ENV.pop("OPENBLAS_CORETYPE", None)
    bench = os.path.join(args.build, "gmorph-bench")
    env_note = os.environ.get("OMP_WAIT_POLICY", "default")
    rows, shares = [], []
    for name, arch, widths, shape, classes in NETS:
        spec = run_json([bench, "arch", arch, widths, shape, str(classes)])[0]
        spec_path = "/tmp/gmorph-bench-arch.json"
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        for threads in [int(t) for t in args.threads.split(",")]:
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours += run_json([bench, "train", arch, widths, shape, str(classes), str(threads)])
                theirs += run_json(["/usr/bin/python3", TORCH, "train", spec_path, str(threads)])
            med = lambda v, k: statistics.median(x[k] for x in v)
            row = dict(net=name, input=shape.replace(",", "x"), threads=threads, params=spec["params"],
                       mflop=ours[0]["mflop"],
                       g_ips=med(ours, "images_per_s"), t_ips=med(theirs, "images_per_s"),
                       g_lat=med(ours, "latency_ms"), t_lat=med(theirs, "latency_ms"),
                       g_mem=med(ours, "peak_mb"), t_mem=med(theirs, "peak_mb"),
                       torch=theirs[0]["impl"], blas=ours[0]["blas_core"])
            rows.append(row)
            print(json.dumps(row), flush=True)
        if shape == "3,32,32" or arch.startswith("vgg"):
            shares.append((name, shape, run_json([bench, "gemm", arch, widths, shape, str(classes), "1"])))
    write(args, rows, shares, env_note)


def write(args, rows, shares, env_note):
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write("# Foundation benchmark: gmorph CPU engine against PyTorch\n\n")
        f.write("Made by `results/bench_foundation.py %s --repeats %d%s` at commit `%s`%s on %s, %s, %d cores.\n\n" % (
            args.build, args.repeats, " --keep-blas-core" if args.keep_blas_core else "", commit, " (with local changes)" if dirty else "",
            time.strftime("%Y-%m-%d"), platform.processor() or platform.machine(), os.cpu_count()))
        f.write("OpenBLAS kernels: %s (%s). " % (rows[0]["blas"] if rows else "?",
                "OPENBLAS_CORETYPE as in the environment" if args.keep_blas_core else
                "detected by OpenBLAS; OPENBLAS_CORETYPE removed from the environment"))
        f.write("Each cell alternates %d gmorph runs and %d PyTorch runs (%s) in the same session; "
                "the numbers are medians. Training: batch 64, forward + backward + Adam step, images/s "
                "(higher is better). Latency: batch 1, eval mode, median of 201 after 20 warm-up runs "
                "(lower is better). Memory: growth of peak RSS from before building the network to after "
                "the training steps.\n\n" % (args.repeats, args.repeats, rows[0]["torch"] if rows else "?"))
        f.write("| network | input | threads | MFLOP/img | train img/s gmorph | PyTorch | ratio | "
                "latency ms gmorph | PyTorch | speed-up | peak MB gmorph | PyTorch |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| %s | %s | %d | %.1f | %.0f | %.0f | **%.2fx** | %.3f | %.3f | **%.2fx** | %.0f | %.0f |\n" % (
                r["net"], r["input"], r["threads"], r["mflop"], r["g_ips"], r["t_ips"],
                r["g_ips"] / r["t_ips"], r["g_lat"], r["t_lat"], r["t_lat"] / r["g_lat"], r["g_mem"], r["t_mem"]))
        f.write("\n## Convolutions against OpenBLAS's own sgemm peak (1 thread, batch 64)\n\n")
        f.write("Share = the layer's GFLOP/s over a 1024x1024x1024 `cblas_sgemm` measured in the same "
                "process; backward counts 2x the forward FLOPs (input and weight gradients).\n\n")
        for name, shape, lines in shares:
            peak = lines[0]["sgemm_peak_gflops"]
            f.write("**%s, input %s** (sgemm peak %.0f GFLOP/s)\n\n" % (name, shape.replace(",", "x"), peak))
            f.write("| layer | in | out | k/s | MFLOP (batch) | fwd GFLOP/s | fwd share | bwd GFLOP/s | bwd share |\n")
            f.write("|---|---|---|---|---|---|---|---|---|\n")
            for l in lines[1:]:
                f.write("| %d.%d | %s | %s | %d/%d | %.0f | %.0f | %.0f%% | %.0f | %.0f%% |\n" % (
                    l["block"], l["op"], "x".join(map(str, l["in"])), "x".join(map(str, l["out"])), l["k"],
                    l["stride"], l["mflop"], l["fwd_gflops"], 100 * l["fwd_share"], l["bwd_gflops"],
                    100 * l["bwd_share"]))
            f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
