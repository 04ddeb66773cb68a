"""Helpers shared by the benchmark scripts: matmul and conv GFLOP/s probes, a conv FLOP counter, CPU time.

Nothing here imports ganlab; the scripts import this file as ``common`` (they put
``benchmarks/`` on ``sys.path`` themselves).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_seconds(pids: list[int] | tuple[int, ...] = ()) -> float:
    """CPU time (user + system, all threads) of this process plus the live processes ``pids``.

    Other processes' times come from /proc/PID/stat (clock-tick resolution); a pid that has gone
    away counts 0. On a machine shared with other work this moves far less than wall time does.
    """
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of the line)
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-``repeats`` GFLOP/s of one ``n x n @ n x n`` matmul (2 n^3 FLOPs) on the CPU."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: first call allocates and picks the kernel
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def conv_gflops(threads: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of one DCGAN-sized conv forward (128 x 64 x 16 x 16 -> 128 x 128 x 8 x 8,
    4x4 stride 2) at ``threads`` torch threads; the caller's thread setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        conv = nn.Conv2d(64, 128, 4, 2, 1, bias=False)
        x = torch.randn(128, 64, 16, 16)
        best = float("inf")
        with torch.no_grad():
            conv(x)
            for _ in range(repeats):
                start = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - start)
        return 2 * 128 * (128 * 8 * 8) * (64 * 4 * 4) / best / 1e9
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class ConvFlops:
    """Forward FLOPs (2 x multiply-adds) per image of a network's convolutions, in layer order."""

    layers: tuple[tuple[str, float], ...]  # (module name, FLOPs per image)

    @property
    def total(self) -> float:
        return sum(f for _, f in self.layers)

    @property
    def first(self) -> float:
        """The first conv: its input (data or z) needs no gradient, so its backward is weight-only."""
        return self.layers[0][1]


def conv_flops(model: nn.Module, example: torch.Tensor) -> ConvFlops:
    """Count conv FLOPs per image with forward hooks, from the shapes one forward pass sees.

    Conv2d: MACs = output elements x (in_channels / groups) x kh x kw.
    ConvTranspose2d: MACs = input elements x (out_channels / groups) x kh x kw (every input
    element is scattered through the whole kernel). FLOPs = 2 x MACs. BatchNorm, activations,
    losses and the optimizer are elementwise and not counted.
    """
    counts: list[tuple[str, float]] = []
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            kh, kw = module.kernel_size
            if isinstance(module, nn.ConvTranspose2d):
                macs = inputs[0].numel() * module.out_channels // module.groups * kh * kw
            else:
                macs = output.numel() * module.in_channels // module.groups * kh * kw
            counts.append((name, 2.0 * macs / inputs[0].shape[0]))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not counts:
        raise ValueError(f"{type(model).__name__} has no Conv2d/ConvTranspose2d layers to count")
    return ConvFlops(tuple(counts))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_model() -> str:
    """The CPU's model name, for the record printed with each benchmark."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """1, 5 and 15-minute load averages: how busy the shared machine was during the run."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
