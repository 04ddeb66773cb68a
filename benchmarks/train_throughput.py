"""Training throughput: ganlab's Trainer vs a pytorch/examples-style DCGAN loop, on CIFAR-10 JPEGs.

    .venv/bin/python benchmarks/train_throughput.py                  # 32x32, ~2.5-3 min
    .venv/bin/python benchmarks/train_throughput.py --image-size 64  # 64x64, ~4.5-5 min

Steps per round follow the step times seen so far (rounds of about 3 s per side) and rounds go on
until --budget seconds of timed steps (at least 3), so the run time stays about the same whatever
the machine's speed (or give --steps / --rounds).

ganlab side: ``ganlab.model.training.Trainer`` (dataset cifar10, decoded once into a uint8 tensor by
``load_split``); each timed step is what ``fit()`` does per batch: index the uint8 tensor with the
epoch's shuffled batch indices, ``to_unit_range``, ``train_step``. The one-time decode is timed
and printed separately; it is not in the steady-state rate. fit()'s per-step bookkeeping (history
lists, log.jsonl line, tqdm) and its end-of-epoch checkpoints are not timed.

baseline side: the loop the common DCGAN examples (pytorch/examples dcgan/main.py) use, written
here: ImageFolder + per-image PIL transforms (Resize, CenterCrop, ToTensor, Normalize) through a
DataLoader, ganlab.model.networks' G and D with a Sigmoid appended to D and nn.BCELoss, the same Adam
settings; per step D(real) backward, fake = G(z), D(fake.detach()) backward, D step, then
D(fake) backward into all parameters (D's weight gradients are computed and thrown away) and the
G step. The DataLoader is tried with num_workers 2 (a typical run on this 2-core machine) and 0;
the ratio is taken against whichever ganlab gains least against, so the baseline is not handicapped.

Both sides train the same architecture at the same batch size with torch.set_num_threads(cores)
(--threads to change it), and are timed for the same number of steps in alternating rounds
(A B C, C B A, A B C, ...) after warm-up steps; the median round per side is reported. ganlab
runs between the baselines, so every round gives ganlab / baseline ratios of measurements adjacent
in time; the reported ratio is the median of those per-round ratios (the ratio of the per-side
medians is printed too), which drift on a shared machine hits far less than either side's rate.
A DataLoader with worker processes runs last in one round and first in the next: the batches its
workers prefetch between its rounds are then decoded in its own time, not in another side's.
Exit status is 0 whether or not the targets are met: this script reports, tests do not time.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ConvFlops,
    conv_flops,
    conv_gflops,
    cpu_count,
    cpu_model,
    cpu_seconds,
    load_average,
    matmul_gflops,
    median,
)

# ratio ganlab / baseline images per second that the issue asks for, by image size
TARGETS = {32: 1.1, 64: 1.0}
# seconds of timed steps (all sides together) after which auto --rounds stops, by image size
BUDGET_S = {32: 120, 64: 200}
WARMUP = {32: 2, 64: 1}  # default --warmup: one step pays the one-time set-up; 64x64 steps are slow
ROUND_S = 3.0  # auto --steps: enough steps that the slowest side's round lasts about this long (short rounds:
#                 more, tighter-paired rounds on a machine whose load swings)
MIN_AUTO_STEPS, MAX_AUTO_STEPS, MIN_AUTO_ROUNDS, MAX_AUTO_ROUNDS = 1, 30, 3, 40
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=32, choices=(32, 64))
    p.add_argument("--steps", type=int, default=None,
                   help=f"timed steps per side per round, the same for every side (default: auto, enough for "
                        f"~{ROUND_S:.0f} s of the slowest side by the previous round's (or the warm-up's) step times, "
                        f"{MIN_AUTO_STEPS}..{MAX_AUTO_STEPS})")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"alternating rounds (default: auto, until --budget seconds of timed steps, "
                        f"{MIN_AUTO_ROUNDS}..{MAX_AUTO_ROUNDS}); the median round per side is reported")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed steps (all sides) after which auto --rounds stops (default 120 at 32x32, "
                        "200 at 64x64)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per side before the first round (default 2 at 32x32, 1 at 64x64); the first "
                        "pays one-time set-up; the auto choices use the later ones' time, else the first's")
    p.add_argument("--round-warmup", type=int, default=0,
                   help="untimed steps per side before each later round (default 0; everything is warm by then)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ngf", type=int, default=64, help="G width (D uses --ndf, default the same)")
    p.add_argument("--ndf", type=int, default=None)
    p.add_argument("--limit", type=int, default=5120,
                   help="images ganlab decodes (default 5120 = 40 full batches of 128, so no ragged last batch)")
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "cifar10-jpg"),
                   help="CIFAR-10 as train/<class>/*.jpg (default ../shared/data/cifar10-jpg from the repository)")
    p.add_argument("--baseline-workers", default="2,0",
                   help="comma-separated DataLoader num_workers values to try for the baseline (default 2,0)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: the core count)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N ganlab steps and N steps of the faster baseline with torch.profiler")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.ndf = args.ndf or args.ngf
    args.budget = args.budget if args.budget is not None else BUDGET_S[args.image_size]
    args.warmup = args.warmup if args.warmup is not None else WARMUP[args.image_size]
    args.baseline_workers = sorted({int(w) for w in args.baseline_workers.split(",") if w.strip()})
    if ((args.steps is not None and args.steps < 1) or (args.rounds is not None and args.rounds < 1)
            or args.warmup < 1 or args.round_warmup < 0 or not args.baseline_workers
            or min(args.baseline_workers) < 0):
        p.error("--steps, --rounds and --warmup must be >= 1, --round-warmup >= 0, --baseline-workers non-empty")
    return args


# ----------------------------------------------------------------------------- the two sides

class GanlabSide:
    """ganlab's Trainer, stepped the way Trainer.fit() steps it."""

    name = "ganlab"

    def __init__(self, args: argparse.Namespace, out: str):
        import ganlab
        from ganlab.defaults import TrainOptions
        from ganlab.model import training

        # Time load_split (the one-time decode) on its own, without touching ganlab's files.
        real_load_split, self.decode_s = training.load_split, 0.0

        def timed_load_split(*a, **kw):
            start = time.perf_counter()
            try:
                return real_load_split(*a, **kw)
            finally:
                self.decode_s = time.perf_counter() - start

        options = TrainOptions(dataset="cifar10", data_root=args.data_root, image_size=args.image_size, channels=3,
                               ngf=args.ngf, ndf=args.ndf, batch_size=args.batch_size, limit=args.limit,
                               device="cpu", out=out, seed=args.seed)
        training.load_split = timed_load_split
        try:
            start = time.perf_counter()
            self.trainer = training.Trainer(options, ganlab.dataset_source(options.dataset), progress=False)
            self.construct_s = time.perf_counter() - start
        finally:
            training.load_split = real_load_split
        self.trainer.G.train()
        self.trainer.D.train()
        self._batches = iter(())

    def _next_indices(self) -> torch.Tensor:
        t = self.trainer
        try:
            return next(self._batches)
        except StopIteration:  # end of epoch: fit() moves on and reshuffles
            if t.step:
                t.epoch += 1
            self._batches = iter(t._batches(t.epoch))
            return next(self._batches)

    def helper_pids(self) -> list[int]:
        return []

    def step(self) -> int:
        t = self.trainer
        idx = self._next_indices()
        t.train_step(t.real_batch(idx))
        t.step += 1
        return len(idx)

    def close(self) -> None:
        pass


class BaselineSide:
    """The pytorch/examples DCGAN loop: ImageFolder + PIL transforms + DataLoader, Sigmoid + BCELoss."""

    def __init__(self, args: argparse.Namespace, workers: int):
        from torchvision import datasets
        from torchvision import transforms as T

        from ganlab.model.networks import ModelConfig, build

        self.name = f"baseline w{workers}"
        self.workers = workers
        size = args.image_size
        start = time.perf_counter()
        self.dataset = datasets.ImageFolder(root=str(Path(args.data_root) / "train"), transform=T.Compose([
            T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
        self.scan_s = time.perf_counter() - start
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=args.batch_size, shuffle=True,
                                                  num_workers=workers)
        torch.manual_seed(args.seed)
        self.config = ModelConfig(image_size=size, channels=3, ngf=args.ngf, ndf=args.ndf)
        self.netG, D = build(self.config)
        self.netD = nn.Sequential(D, nn.Sigmoid())
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.netG.train()
        self.netD.train()
        self._it = None

    def _next_batch(self):
        if self._it is None:
            self._it = iter(self.loader)  # starts the workers (a new epoch in the examples)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def helper_pids(self) -> list[int]:
        """The DataLoader's worker processes (started by the first step), whose CPU time is this side's too."""
        return [w.pid for w in getattr(self._it, "_workers", [])]

    def step(self) -> int:
        real_label, fake_label = 1.0, 0.0
        data = self._next_batch()
        # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        real_cpu = data[0]
        b = real_cpu.size(0)
        label = torch.full((b,), real_label, dtype=real_cpu.dtype)
        output = self.netD(real_cpu)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(b, self.config.nz, 1, 1)
        fake = self.netG(noise)
        label.fill_(fake_label)
        output = self.netD(fake.detach())
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        # (2) update G: maximize log(D(G(z))); backward reaches D's parameters too, as in the examples
        self.netG.zero_grad()
        label.fill_(real_label)
        output = self.netD(fake)
        errG = self.criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optimizerG.step()
        self.last = (errD.item(), errG.item(), D_x, D_G_z1, D_G_z2)
        return b

    def close(self) -> None:
        self._it = None  # shuts the workers down


# ----------------------------------------------------------------------------- FLOP counting

def step_flops(G: ConvFlops, D: ConvFlops, d_weight_grads_in_g_step: bool) -> float:
    """Conv FLOPs per image of one DCGAN training step (see print_counting_rule)."""
    forward = 3 * D.total + G.total  # D(real), G(z), D(fake.detach()), D(fake)
    d_backward = 2 * (2 * D.total - D.first)  # D(real) and D(fake.detach()): dW all, dX all but the first layer
    g_step_d = (2 if d_weight_grads_in_g_step else 1) * D.total  # D(fake): dX all (+ dW in the examples)
    g_backward = 2 * G.total - G.first  # dW all, dX all but the first layer (z needs no gradient)
    return forward + d_backward + g_step_d + g_backward


COUNTING_RULE = """\
FLOP counting (same rule for both sides): conv/conv-transpose FLOPs only (2 x multiply-adds, from the
shapes of one forward pass); BatchNorm, activations, loss and Adam are elementwise and not counted.
Per step: 4 forward passes, D(real) + G(z) + D(fake.detach()) + D(fake) = 3 F_D + F_G; each conv's
backward costs 1x its forward for the input gradient and 1x for the weight gradient, the input
gradient skipped where the input needs none (D's first layer on data, G's first layer on z).
  D(real), D(fake.detach()) backward: 2 x (2 F_D - F_D1);  G backward: 2 F_G - F_G1
  D(fake) backward in the G step: ganlab F_D (backward(inputs=G params): input grads only),
                                  baseline 2 F_D (the examples also compute D's weight grads).
  ganlab = 8 F_D - 2 F_D1 + 3 F_G - F_G1;  baseline = 9 F_D - 2 F_D1 + 3 F_G - F_G1  (per image)
Each side's GFLOP/s = its own counted FLOPs per image x its images/s."""


# ----------------------------------------------------------------------------- running

def run_steps(side, n: int) -> tuple[int, float, float]:
    """Run ``n`` steps of a side: (images, wall seconds, CPU seconds of this process and its workers)."""
    pids = side.helper_pids()
    cpu0, start = cpu_seconds(pids), time.perf_counter()
    images = sum(side.step() for _ in range(n))
    wall = time.perf_counter() - start
    return images, wall, cpu_seconds(pids) - cpu0


def profile_side(side, steps: int, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        side.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        images, seconds, _ = run_steps(side, steps)
    print(f"\n--- torch.profiler, {side.name}: {steps} steps, {images / seconds:.1f} img/s under the profiler "
          f"(self CPU time, top {rows}) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    size, bs = args.image_size, args.batch_size
    print(f"train_throughput  {time.strftime('%Y-%m-%d %H:%M:%S')}  {platform.node()}")
    print(f"machine: {cpu_model()}, {cpu_count()} cores usable, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), python {platform.python_version()}; load average {load_average()}")
    print(f"config: {size}x{size} RGB, batch {bs}, ngf {args.ngf}, ndf {args.ndf}, nz 100, kernel 4; {args.warmup} "
          f"warm-up steps per side, then rounds of {args.round_warmup} untimed + N timed steps per side")
    matmul_before = matmul_gflops()
    print(f"fp32 matmul 2048^3: {matmul_before:.1f} GFLOP/s (best of 5)")
    if threads > 1:  # a shared machine can make extra threads a slowdown: show it next to the results
        print(f"conv probe (64->128 ch, 16->8 px, batch 128): {conv_gflops(1):.1f} GFLOP/s at 1 thread, "
              f"{conv_gflops(threads):.1f} GFLOP/s at {threads} threads")

    with tempfile.TemporaryDirectory(prefix="ganlab-bench-") as tmp:
        ganlab_side = GanlabSide(args, tmp)
        n_images = len(ganlab_side.trainer.images)
        shape = tuple(ganlab_side.trainer.images.shape)
        print(f"ganlab one-time decode (load_split, {n_images} JPEGs -> uint8 {shape}): "
              f"{ganlab_side.decode_s:.2f} s ({n_images / ganlab_side.decode_s:.0f} img/s); Trainer() total "
              f"{ganlab_side.construct_s:.2f} s. NOT included in the steady-state rates below.")
        baselines = [BaselineSide(args, w) for w in args.baseline_workers]
        print(f"baseline: ImageFolder over {len(baselines[0].dataset)} JPEGs (scan {baselines[0].scan_s:.2f} s), "
              f"per-image Resize/CenterCrop/ToTensor/Normalize in DataLoader workers "
              f"{', '.join(str(b.workers) for b in baselines)}; decode happens inside the timed steps")

        cfg = ganlab_side.trainer.config
        example_z = torch.zeros(2, cfg.nz, 1, 1)
        fG = conv_flops(ganlab_side.trainer.G, example_z)
        fD = conv_flops(ganlab_side.trainer.D, torch.zeros(2, 3, size, size))
        flops = {"ganlab": step_flops(fG, fD, d_weight_grads_in_g_step=False)}
        for b in baselines:
            flops[b.name] = step_flops(fG, fD, d_weight_grads_in_g_step=True)
        print(f"conv FLOPs per image: F_G {fG.total / 1e6:.1f} M (first layer {fG.first / 1e6:.2f} M), "
              f"F_D {fD.total / 1e6:.1f} M (first layer {fD.first / 1e6:.2f} M); per training step per image: "
              f"ganlab {flops['ganlab'] / 1e6:.0f} M, baseline {flops[baselines[0].name] / 1e6:.0f} M")

        # ganlab next to every baseline in the A B C / C B A order, so each round gives adjacent-in-time
        # pairs; a DataLoader with worker processes last (workers ascending), see the module docstring
        in_process = [b for b in baselines if b.workers == 0]
        sides = [*in_process, ganlab_side, *[b for b in baselines if b.workers > 0]]
        step_s = {}
        for side in sides:  # first-time set-up (oneDNN primitives, allocator, DataLoader workers), untimed
            _, seconds, _ = run_steps(side, 1)
            step_s[side.name] = seconds  # an over-estimate; replaced by the later warm-up steps if any
            if args.warmup > 1:
                _, seconds, _ = run_steps(side, args.warmup - 1)
                step_s[side.name] = seconds / (args.warmup - 1)
        print(f"warm-up step times: {', '.join(f'{n} {t:.2f} s' for n, t in step_s.items())}")
        slowest_step = max(step_s.values())
        if args.rounds is None:
            print(f"rounds: auto, until {args.budget:.0f} s of timed rounds (at least {MIN_AUTO_ROUNDS}, "
                  f"at most {MAX_AUTO_ROUNDS})", end="")
        else:
            print(f"rounds: {args.rounds}", end="")
        print(f"; timed steps per side per round: {args.steps or f'auto, ~{ROUND_S:.0f} s for the slowest side'}")

        rates: dict[str, list[float]] = {s.name: [] for s in sides}
        cpu_rates: dict[str, list[float]] = {s.name: [] for s in sides}  # images per CPU-second
        steps_per_round: list[int] = []
        print(f"\n{'round':>5} {'steps':>5}  " + "  ".join(f"{s.name:>14}" for s in sides) + "   (img/s)")
        timed_s, r = 0.0, 0
        while True:
            # auto: the slowest side's step time in the previous round sets this round's length, so a
            # machine that slows down (or speeds up) mid-run keeps rounds near ROUND_S seconds
            steps = args.steps or max(MIN_AUTO_STEPS, min(MAX_AUTO_STEPS, math.ceil(ROUND_S / slowest_step)))
            order = sides if r % 2 == 0 else sides[::-1]
            slowest_step = 0.0
            for side in order:
                if r:
                    run_steps(side, args.round_warmup)
                images, seconds, cpu = run_steps(side, steps)
                rates[side.name].append(images / seconds)
                cpu_rates[side.name].append(images / cpu)
                timed_s += seconds
                slowest_step = max(slowest_step, seconds / steps)
            steps_per_round.append(steps)
            r += 1
            print(f"{r:>5} {steps:>5}  " + "  ".join(f"{rates[s.name][-1]:>14.1f}" for s in sides)
                  + f"   order: {' > '.join(s.name for s in order)}", flush=True)
            if args.rounds is not None:
                if r == args.rounds:
                    break
            elif r >= MAX_AUTO_ROUNDS or (r >= MIN_AUTO_ROUNDS and timed_s >= args.budget):
                break

        if args.profile:
            profile_side(ganlab_side, args.profile)
        med = {name: median(v) for name, v in rates.items()}
        # paired ratios: ganlab's rate over a baseline's in the same round (adjacent in time)
        paired = {b.name: [g / x for g, x in zip(rates["ganlab"], rates[b.name])] for b in baselines}
        # the faster baseline is the one ganlab gains least against, so the verdict is the conservative one
        best_baseline = min(baselines, key=lambda b: median(paired[b.name]))
        if args.profile:
            profile_side(best_baseline, args.profile)
        for b in baselines:
            b.close()
    matmul_after = matmul_gflops()
    matmul_best = max(matmul_before, matmul_after)

    print(f"\nfp32 matmul 2048^3 after the rounds: {matmul_after:.1f} GFLOP/s; best {matmul_best:.1f} GFLOP/s; "
          f"load average {load_average()}")
    print(COUNTING_RULE)
    print(f"\nsteady state (median of {r} rounds, {sum(steps_per_round)} timed steps per side in all, batch {bs}; "
          f"decode excluded for ganlab):")
    for side in sides:
        gflops = med[side.name] * flops[side.name] / 1e9
        spread = f"{min(rates[side.name]):.1f}..{max(rates[side.name]):.1f}"
        print(f"  {side.name:<12} {med[side.name]:7.1f} img/s (rounds {spread}) "
              f"{flops[side.name] / 1e6:6.0f} MFLOP/img "
              f"{gflops:5.1f} GFLOP/s = {100 * gflops / matmul_best:4.1f}% of matmul; "
              f"{median(cpu_rates[side.name]):6.1f} img per CPU-second")
    print("ratio ganlab / baseline, per round (same round, adjacent in time):")
    for b in baselines:
        rounds = paired[b.name]
        print(f"  vs {b.name:<12} median {median(rounds):.3f}  ({', '.join(f'{x:.2f}' for x in rounds)}); "
              f"median img/s over median img/s {med['ganlab'] / med[b.name]:.3f}")
    print("the same by CPU time (this process + its DataLoader workers; less sensitive to other work on the "
          "machine, but counts spinning threads):")
    for b in baselines:
        rounds = [g / x for g, x in zip(cpu_rates["ganlab"], cpu_rates[b.name])]
        print(f"  vs {b.name:<12} median {median(rounds):.3f}  ({', '.join(f'{x:.2f}' for x in rounds)})")
    if len(baselines) > 1:
        print(f"faster baseline (the one ganlab gains least against): num_workers={best_baseline.workers}")
    ratio = median(paired[best_baseline.name])
    of_medians = med["ganlab"] / med[best_baseline.name]
    print(f"RATIO ganlab / {best_baseline.name}: {ratio:.3f} (median per-round ratio)")
    target = TARGETS.get(size)
    if target is None:
        print("target: none for this image size")
    else:
        verdict = "PASS" if ratio >= target else "FAIL"
        agree = (of_medians >= target) == (ratio >= target)
        print(f"target ratio >= {target:.2f} at {size}x{size}: {verdict}"
              + ("" if agree else f" (the ratio of the medians, {of_medians:.3f}, disagrees: a noisy run; rerun "
                                  f"with a larger --budget)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
