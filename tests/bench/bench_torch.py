#!/usr/bin/python3
"""PyTorch peer of gmorph-bench: the same network, threads, batch and method.

usage: bench_torch.py train ARCH_JSON THREADS

ARCH_JSON is what `gmorph-bench arch ...` prints, so both sides build exactly the
same layers (chain blocks become nn.Sequential, residual blocks a small module
that follows the same wiring). Prints one JSON line like gmorph-bench train.
"""
import json
import resource
import sys
import time

import torch
import torch.nn as nn

BATCH, WARMUP, STEPS, ROUNDS = 64, 5, 12, 3


def make_op(o):
    kind = o["op"]
    if kind == "conv2d":
        return nn.Conv2d(o["cin"], o["cout"], o["k"], o["stride"], o["pad"], bias=bool(o["bias"]))
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(o["c"])
    if kind == "relu":
        return nn.ReLU()
    if kind == "maxpool2d":
        return nn.MaxPool2d(o["k"], o["stride"], o["pad"])
    if kind == "avgpool2d":
        return nn.AvgPool2d(o["k"], o["stride"], o["pad"])
    if kind == "globalavgpool":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "linear":
        return nn.Linear(o["in"], o["out"], bias=bool(o["bias"]))
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(o["p"])
    if kind == "add":
        return None
    raise ValueError("unknown op " + kind)


class Wired(nn.Module):
    """A block whose ops read earlier ops' outputs (a residual BasicBlock)."""

    def __init__(self, ops):
        super().__init__()
        self.src = [o["src"] for o in ops]
        self.is_add = [o["op"] == "add" for o in ops]
        self.ops = nn.ModuleList([make_op(o) or nn.Identity() for o in ops])

    def forward(self, x):
        outs = []
        for op, src, is_add in zip(self.ops, self.src, self.is_add):
            a = x if src[0] < 0 else outs[src[0]]
            if is_add:
                outs.append(a + (x if src[1] < 0 else outs[src[1]]))
            else:
                outs.append(op(a))
        return outs[-1]


def build(arch):
    blocks = []
    for b in arch["blocks"]:
        chain = all(o["src"][0] == i - 1 and o["op"] != "add" for i, o in enumerate(b["ops"]))
        blocks.append(nn.Sequential(*[make_op(o) for o in b["ops"]]) if chain else Wired(b["ops"]))
    # GAP output is (N,C,1,1); gmorph treats it as a vector, so flatten before a head
    seq = []
    for blk, spec in zip(blocks, arch["blocks"]):
        if spec["ops"][0]["op"] == "linear":
            seq.append(nn.Flatten())
        seq.append(blk)
    return nn.Sequential(*seq)


def median(v):
    return sorted(v)[len(v) // 2]


def train(arch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net = build(arch)
    assert sum(p.numel() for p in net.parameters()) == arch["params"], "architectures differ"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    c, h, w = arch["input"]
    x = torch.randn(BATCH, c, h, w)
    y = torch.randint(0, arch["classes"], (BATCH,))
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    rates = []
    for r in range(-1, ROUNDS):
        t0 = time.perf_counter()
        for _ in range(WARMUP if r < 0 else STEPS):
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
        if r >= 0:
            rates.append(STEPS * BATCH / (time.perf_counter() - t0))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    net.eval()
    x1 = torch.randn(1, c, h, w)
    times = []
    with torch.no_grad():
        for i in range(20 + 201):
            t0 = time.perf_counter()
            net(x1)
            if i >= 20:
                times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "pytorch " + torch.__version__, "threads": threads,
                      "images_per_s": round(median(rates), 1), "latency_ms": round(median(times) * 1e3, 4),
                      "peak_mb": round((rss1 - rss0) / 1024.0, 1), "params": arch["params"]}))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "train":
        sys.exit(__doc__)
    train(json.loads(open(sys.argv[2]).read() if sys.argv[2] != "-" else sys.stdin.read()), int(sys.argv[3]))
