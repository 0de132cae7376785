#!/usr/bin/python3
"""
Trains one small PyTorch classifier on one task of a gmorph dataset file and
exports it with torch.onnx: the start of the path "your PyTorch models -> gmorph
search -> ONNX Runtime" that README.md documents and tests/test_onnx_e2e.sh runs.

    torch_tasks.py DATA.h5 TASK vgg|resnet OUT.onnx [--epochs N] [--seed S]

The network reads the input the way gmorph feeds its own models,
(x * scale - mean[c]) / std[c] with the file's attributes, and prints those
mean and std for `gmorph import --mean ... --std ...`, so gmorph evaluates and
fine-tunes the imported model on the same input it was trained on.
Needs torch and h5py (Debian: python3-torch python3-h5py).
"""
import argparse
import sys

import h5py
import numpy as np
import torch
from torch import nn


def vgg(c, classes, hw):
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (hw // 4) ** 2, 32), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(32, classes))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def resnet(c, classes, hw):
    del hw
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Basic(8, 8, 1), Basic(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def split(f, name, task, scale, mean, std):
    x = f[name]["x"][()].astype(np.float32) * scale
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    return torch.from_numpy(x), torch.from_numpy(f[name]["y"][task][()].astype(np.int64))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data"), ap.add_argument("task"), ap.add_argument("arch", choices=["vgg", "resnet"])
    ap.add_argument("out"), ap.add_argument("--epochs", type=int, default=4), ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    with h5py.File(a.data, "r") as f:
        tasks = f.attrs["tasks"]
        tasks = (tasks.decode() if isinstance(tasks, bytes) else str(tasks)).split(",")
        if a.task not in tasks:
            sys.exit(f"torch_tasks.py: {a.data} has tasks {','.join(tasks)}, not {a.task}")
        classes = int(f.attrs["classes"][tasks.index(a.task)])
        shape = [int(v) for v in f.attrs["shape"]]
        scale = float(f.attrs["scale"])
        mean = np.asarray(f.attrs["mean"], np.float32)
        std = np.asarray(f.attrs["std"], np.float32)
        xtr, ytr = split(f, "train", a.task, scale, mean, std)
        xva, yva = split(f, "val", a.task, scale, mean, std)
    net = (vgg if a.arch == "vgg" else resnet)(shape[0], classes, shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xva).argmax(1) == yva).float().mean().item()
        print(f"{a.task} {a.arch} epoch {epoch + 1}/{a.epochs}: val accuracy {100 * acc:.2f}%", file=sys.stderr)
    net.eval()
    torch.onnx.export(net, xva[:1], a.out, input_names=["input"], output_names=[a.task],
                      dynamic_axes={"input": {0: "N"}, a.task: {0: "N"}}, opset_version=13)
    # What `gmorph import` needs to feed the model the input it was trained on.
    print("--mean " + ",".join(f"{v:.9g}" for v in mean) + " --std " + ",".join(f"{v:.9g}" for v in std))


if __name__ == "__main__":
    main()
