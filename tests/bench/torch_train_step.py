#!/usr/bin/env python3
"""PyTorch peer of bench_cuda_train: the same network, batch and optimiser on the GPU.

usage: torch_train_step.py [--arch vgg13] [--widths 16,32,64,64] [--input 1,36,36]
                           [--classes 10] [--batch 256] [--tf32 0|1] [--warmup 10]
                           [--steps 50] [--benchmark 0|1] [--spec]

The network is built from the same rules as common/engine/gm_models.c (presets, stage
layout, which convolutions carry a bias, where pooling stops, the hidden linear
layers with dropout 0.5, ResNet BasicBlocks with 1x1 shortcuts), first as a plain
layer list (--spec prints it with its parameter count, no torch needed), then as
torch modules. Random inputs and labels on the GPU; each step is forward,
cross-entropy, zero_grad (set_to_none=False, as gmorph zeroes its gradients),
backward and Adam (lr 1e-3), timed between CUDA events. Like gmorph, whose loss
returns to the host, every step reads loss.item(); images_per_s_no_sync is the
same without that read. --tf32 sets torch.backends.cuda.matmul.allow_tf32 and
torch.backends.cudnn.allow_tf32; --benchmark 1 lets cuDNN time its algorithms
(the default 0 uses its heuristics, as gmorph does).
"""
import argparse
import json
import sys


def ints(s):
    return [int(v) for v in s.split(",") if v]


# ---- the architecture, as gm_models.c builds it -----------------------------------

def vgg_preset(depth, widths):
    """gm_vgg_preset: convs per stage from the last len(widths) of VGG's four stages."""
    table = {11: [1, 1, 3, 3], 13: [2, 2, 3, 3]}
    n = len(widths)
    convs = table[depth][4 - n:]
    convs[-1] += (depth - 3) - sum(convs)
    return convs, 2 * widths[-1], 0.5


def resnet_preset(depth, widths):
    """gm_resnet_preset: (depth - 2) / 2 BasicBlocks, extra ones to the early stages."""
    nblocks = (depth - 2) // 2
    n = min(len(widths), nblocks)
    if nblocks > 2 * n:
        raise ValueError("resnet depth %d needs more stages" % depth)
    return widths[:n], [1 + (s < nblocks - n) for s in range(n)]


def conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def dense(blocks, cur, out, relu, dropout):
    """gm_block_linear / gm_block_head: (flatten) linear (+relu) (+dropout)."""
    c, h, w = cur
    ops = []
    if h != 1 or w != 1:
        ops.append({"op": "flatten"})
    ops.append({"op": "linear", "in": c * h * w, "out": out, "bias": 1})
    if relu:
        ops.append({"op": "relu"})
    if dropout > 0:
        ops.append({"op": "dropout", "p": dropout})
    blocks.append({"kind": "chain", "ops": ops})
    return (out, 1, 1)


def spec(arch, widths, inp, classes):
    """The layer list: blocks of ops, with the shapes gm_block_infer would give."""
    blocks, cur = [], tuple(inp)
    if arch.startswith("vgg"):
        convs, fc, dropout = vgg_preset(int(arch[3:]), widths)
        for st, width in enumerate(widths):
            for _ in range(convs[st]):
                blocks.append({"kind": "chain", "ops": [
                    {"op": "conv2d", "cin": cur[0], "cout": width, "k": 3, "stride": 1, "pad": 1, "bias": 0},
                    {"op": "batchnorm2d", "c": width}, {"op": "relu"}]})
                cur = (width, cur[1], cur[2])
            if cur[1] >= 2 and cur[2] >= 2:
                blocks.append({"kind": "chain", "ops": [{"op": "maxpool2d", "k": 2, "stride": 2, "pad": 0}]})
                cur = (cur[0], conv_out(cur[1], 2, 2, 0), conv_out(cur[2], 2, 2, 0))
        cur = dense(blocks, cur, fc, True, dropout)
        cur = dense(blocks, cur, fc, True, dropout)
        dense(blocks, cur, classes, False, 0)
    elif arch.startswith("resnet"):
        widths, per_stage = resnet_preset(int(arch[6:]), widths)
        blocks.append({"kind": "chain", "ops": [
            {"op": "conv2d", "cin": cur[0], "cout": widths[0], "k": 3, "stride": 1, "pad": 1, "bias": 0},
            {"op": "batchnorm2d", "c": widths[0]}, {"op": "relu"}]})
        cur = (widths[0], cur[1], cur[2])
        for st, width in enumerate(widths):
            for i in range(per_stage[st]):
                stride = 2 if st > 0 and i == 0 else 1
                blocks.append({"kind": "basic", "cin": cur[0], "cout": width, "stride": stride})
                cur = (width, conv_out(cur[1], 3, stride, 1), conv_out(cur[2], 3, stride, 1))
        blocks.append({"kind": "chain", "ops": [{"op": "globalavgpool"}]})
        cur = (cur[0], 1, 1)
        dense(blocks, cur, classes, False, 0)
    else:
        raise ValueError("unknown architecture " + arch)
    return blocks


def spec_params(blocks):
    def op_params(o):
        if o["op"] == "conv2d":
            return o["cout"] * o["cin"] * o["k"] * o["k"] + (o["cout"] if o["bias"] else 0)
        if o["op"] == "batchnorm2d":
            return 2 * o["c"]
        if o["op"] == "linear":
            return o["out"] * o["in"] + (o["out"] if o["bias"] else 0)
        return 0

    total = 0
    for b in blocks:
        if b["kind"] == "basic":
            ci, co = b["cin"], b["cout"]
            total += co * ci * 9 + 2 * co + co * co * 9 + 2 * co
            if b["stride"] != 1 or ci != co:
                total += co * ci + 2 * co
        else:
            total += sum(op_params(o) for o in b["ops"])
    return total


# ---- torch ----------------------------------------------------------------------------

def build(blocks):
    import torch.nn as nn

    class Basic(nn.Module):
        """gm_block_basic: conv-BN-ReLU-conv-BN, identity or 1x1-conv-BN shortcut, add, ReLU."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + (x if self.short is None else self.short(x)))

    def op(o):
        k = o["op"]
        if k == "conv2d":
            return nn.Conv2d(o["cin"], o["cout"], o["k"], o["stride"], o["pad"], bias=bool(o["bias"]))
        if k == "batchnorm2d":
            return nn.BatchNorm2d(o["c"])  # eps 1e-5, momentum 0.1, as gm_op_batchnorm2d
        if k == "relu":
            return nn.ReLU()
        if k == "maxpool2d":
            return nn.MaxPool2d(o["k"], o["stride"], o["pad"])
        if k == "globalavgpool":
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # gmorph's (C,1,1) is a vector
        if k == "flatten":
            return nn.Flatten()
        if k == "linear":
            return nn.Linear(o["in"], o["out"], bias=bool(o["bias"]))
        if k == "dropout":
            return nn.Dropout(o["p"])
        raise ValueError("unknown op " + k)

    layers = []
    for b in blocks:
        if b["kind"] == "basic":
            layers.append(Basic(b["cin"], b["cout"], b["stride"]))
        else:
            layers.extend(op(o) for o in b["ops"])
    return nn.Sequential(*layers)


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def bench(args, blocks):
    import torch
    import torch.nn as nn

    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.benchmark = bool(args.benchmark)
    torch.manual_seed(1)
    dev = torch.device("cuda")
    net = build(blocks).to(dev)
    params = sum(p.numel() for p in net.parameters())
    assert params == spec_params(blocks), "the torch net and the layer list disagree"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    c, h, w = args.input
    x = torch.randn(args.batch, c, h, w, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    net.train()

    def run(sync):
        times = []
        for i in range(args.warmup + args.steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(net(x), y)
            if sync:
                loss.item()
            loss.backward()
            opt.step()
            end.record()
            end.synchronize()
            if i >= args.warmup:
                times.append(start.elapsed_time(end))
        return median(times), float(loss.item())

    ms, last = run(True)
    ms_nosync, _ = run(False)
    print(json.dumps({
        "impl": "pytorch " + torch.__version__, "device": torch.cuda.get_device_name(dev),
        "cudnn": torch.backends.cudnn.version(), "arch": args.arch, "input": args.input,
        "classes": args.classes, "batch": args.batch, "tf32": int(bool(args.tf32)),
        "benchmark": int(bool(args.benchmark)), "params": params, "steps": args.steps,
        "step_ms": round(ms, 3), "images_per_s": round(args.batch / (ms * 1e-3), 1),
        "images_per_s_no_sync": round(args.batch / (ms_nosync * 1e-3), 1), "last_loss": round(last, 4)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="vgg13")
    ap.add_argument("--widths", type=ints, default=[16, 32, 64, 64])
    ap.add_argument("--input", type=ints, default=[1, 36, 36])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tf32", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--benchmark", type=int, default=0)
    ap.add_argument("--spec", action="store_true", help="print the layer list and its parameter count; no torch")
    args = ap.parse_args()
    if len(args.input) != 3:
        sys.exit("--input must be C,H,W")
    blocks = spec(args.arch, args.widths[:4], args.input, args.classes)
    if args.spec:
        print(json.dumps({"params": spec_params(blocks), "blocks": blocks}))
        return
    bench(args, blocks)


if __name__ == "__main__":
    main()
