"""The DCGAN training loop: Adam(2e-4, 0.5), BCE on logits, one D step then one G step.

The dataset is decoded once into a uint8 tensor and batches are sliced from it, so no
per-image transform runs during training. Under ``torchrun`` the same loop runs
DistributedDataParallel with a DistributedSampler; only rank 0 writes files.
"""
from __future__ import annotations

import json
import math
import os
import signal
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from torchvision.utils import save_image
from tqdm.auto import tqdm

from ganlab.checkpoint import (
    LAST,
    build_payload,
    is_ganlab_checkpoint,
    read_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from ganlab.datasets import DatasetSource, load_split, read_exclusion_list
from ganlab.defaults import RECORDED, TrainOptions
from ganlab.devices import select_device
from ganlab.errors import GanlabError, Terminated
from ganlab.images import to_unit_range
from ganlab.models import PRESETS, ModelConfig, build, sample_latent
from ganlab.store import run_folder
from ganlab.store.atomic import link_atomically, os_error

HISTORY_KEYS = ("loss_D", "loss_G", "D_x", "D_G_z")


class Trainer:
    """Trains one GAN as described by ``TrainOptions`` on ``source``; ``fit()`` returns the last checkpoint path."""

    def __init__(self, options: TrainOptions, source: DatasetSource, progress: bool = True, *,
                 folder: run_folder.RunFolder | None = None, resume_payload: dict[str, Any] | None = None,
                 changed: dict[str, tuple[Any, Any]] | None = None):
        self.options, self.source = options, source
        self.device, self.rank, self.world = _process_device(options.device)
        self.distributed, self.is_main = self.world > 1, self.rank == 0
        self.progress = progress and self.is_main
        self.local_batch = options.batch_size // self.world
        if self.local_batch < 1:
            raise GanlabError(f"batch size {options.batch_size} is smaller than the {self.world} processes")
        self.folder, self.options_changed = folder, dict(changed or {})
        self.out = folder.out if folder else Path(run_out(options)).resolve()
        if resume_payload:
            self.config = ModelConfig.from_dict(resume_payload["config"])
            _check_resume_flags(options, self.config)
        else:
            self.config = options.model_config(source.channels)
        self.images = self._images()
        self._build()
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.history: dict[str, list[float]] = {k: [] for k in (*HISTORY_KEYS, "epoch_end_steps")}
        if resume_payload:
            self._restore(resume_payload)
        wrap = DistributedDataParallel if self.distributed else (lambda model: model)
        self.G_ddp, self.D_ddp = wrap(self.G), wrap(self.D)

    def _images(self) -> torch.Tensor:
        o, cfg = self.options, self.config
        images, _ = load_split(self.source, o.split, variant=o.dataset.partition(":")[2] or None, root=o.data_root,
                               image_size=cfg.image_size, channels=cfg.channels, download=o.download, limit=o.limit,
                               progress=self.progress, skip_bad=o.skip_bad_images,
                               exclude=read_exclusion_list(o.exclude) if o.exclude else None)
        if len(images) < 2:
            raise GanlabError(f"{o.dataset}/{o.split} has {len(images)} images; training needs at least 2")
        return images

    def _build(self) -> None:
        """G, D, their optimisers, the noise generators and mixed precision, from the options and config."""
        o = self.options
        torch.manual_seed(o.seed)
        # channels_last: ~1.13x faster convolutions and BatchNorm on CPU (benchmarks/train_throughput.py)
        self.G, self.D = (m.to(self.device, memory_format=torch.channels_last) for m in build(self.config))
        # The fused Adam kernel is one op per step instead of several per parameter.
        fused = self.device.type in ("cpu", "cuda")
        self.opt_G, self.opt_D = (torch.optim.Adam(m.parameters(), lr=o.lr, betas=(o.beta1, 0.999), fused=fused)
                                  for m in (self.G, self.D))
        self.loss = nn.BCEWithLogitsLoss()
        self.noise = torch.Generator(device=self.device).manual_seed(o.seed * 1000 + self.rank)
        self.fixed_noise = sample_latent(self.config, 64, torch.Generator().manual_seed(o.seed), self.device)
        self.amp_dtype = None
        if o.amp:
            bf16 = self.device.type != "cuda" or torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _restore(self, payload: dict[str, Any]) -> None:
        counters, self.history = restore_training_state(
            payload, generator=self.G, discriminator=self.D, optimizer_g=self.opt_G, optimizer_d=self.opt_D,
            scaler=self.scaler, noise=self.noise, path=self.options.resume)
        self.epoch, self.batch_in_epoch, self.step = counters["epoch"], counters["batch_in_epoch"], counters["step"]
        if self.epoch >= self.options.epochs:
            raise GanlabError(f"{self.options.resume} has already trained {self.epoch} epochs; "
                              f"give --epochs larger than {self.epoch} to continue")

    def payload(self) -> dict[str, Any]:
        """Everything needed to rebuild the models and to resume bit-for-bit (see ``ganlab.checkpoint``)."""
        return build_payload(
            config=self.config, generator=self.G, discriminator=self.D, optimizer_g=self.opt_G,
            optimizer_d=self.opt_D, scaler=self.scaler,
            counters={"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step},
            rng={"noise": self.noise.get_state().cpu(), "torch": torch.get_rng_state()},
            dataset={"name": self.options.dataset, "split": self.options.split, "size": len(self.images),
                     "root": str(Path(self.options.data_root).expanduser().resolve()) if self.options.data_root
                     else None},
            options={**self.options.to_dict(), **{k: _absolute(getattr(self.options, k)) for k in PATHS}},
            history=self.history)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        n = real.shape[0]
        ones = torch.ones(n, device=self.device)
        zeros = torch.zeros(n, device=self.device)
        # D step: real and fake batches go through D separately (as in the paper and
        # pytorch/examples), so BatchNorm never mixes real and generated statistics.
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            out_real = self.D_ddp(real)
            loss_real = self.loss(out_real.float(), ones)
        self.scaler.scale(loss_real).backward()
        z = self._latent(n)
        with self._autocast():
            fake = self.G_ddp(z)
            out_fake = self.D_ddp(fake.detach())
            loss_fake = self.loss(out_fake.float(), zeros)
        self.scaler.scale(loss_fake).backward()
        self.scaler.step(self.opt_D)
        # G step through the bare D (no DDP gradient sync for D), and only into G's
        # parameters: autograd then skips D's weight gradients, which nothing would use.
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            loss_G = self.loss(self.D(fake).float(), ones)
        self.scaler.scale(loss_G).backward(inputs=list(self.G.parameters()))
        self.scaler.step(self.opt_G)
        self.scaler.update()
        stats = torch.stack([loss_real.detach() + loss_fake.detach(), loss_G.detach(),
                             torch.sigmoid(out_real.detach().float()).mean(),
                             torch.sigmoid(out_fake.detach().float()).mean()]).tolist()
        return dict(zip(HISTORY_KEYS, stats))

    def real_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Images ``idx`` of the in-memory dataset, in [-1, 1], on the device, channels-last like the models."""
        return to_unit_range(self.images[idx]).to(self.device, non_blocking=True, memory_format=torch.channels_last)

    def _latent(self, n: int) -> torch.Tensor:
        """Training noise from the trainer's own generator, so a resumed run draws the same z."""
        shape = (n, self.config.nz, 1, 1)
        if self.config.latent == "uniform":
            return torch.rand(shape, generator=self.noise, device=self.device) * 2 - 1
        return torch.randn(shape, generator=self.noise, device=self.device)

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        # DistributedSampler with explicit replicas/rank works without a process group too,
        # so single-process and torchrun runs share one code path.
        sampler = DistributedSampler(range(len(self.images)), num_replicas=self.world, rank=self.rank,
                                     shuffle=True, seed=self.options.seed)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        return list(order.split(self.local_batch))

    def fit(self) -> Path:
        """Train to ``options.epochs``; returns the path of ``last.pt``.

        Ctrl-C finishes the current step, saves ``last.pt`` and raises ``KeyboardInterrupt``; ``--resume``
        from it then continues exactly as if never stopped.
        """
        log = None
        if self.is_main:
            self.folder.begin()
            if self.options.resume:
                run_folder.trim_log(self.out / run_folder.LOG, self.step)
            for setting, (was, now) in self.options_changed.items():
                run_folder.log_event(self.out, {"event": "setting changed on resume", "step": self.step,
                                                "setting": setting, "from": was, "to": now})
            log = open(self.out / run_folder.LOG, "a")
        self.G.train()
        self.D.train()
        try:
            with run_folder.stop_at_step_boundary() as stop:
                while self.epoch < self.options.epochs:
                    self._epoch(log, stop)
                    if stop[0]:
                        break
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self.history["epoch_end_steps"].append(self.step)
                    self._end_of_epoch()
            if stop[0]:
                if self.is_main:
                    self._save(self.out / LAST)
                    tqdm.write(f"interrupted after step {self.step}: saved {self.out / LAST} "
                               f"(continue with --resume {self.out / LAST})")
                raise Terminated() if stop[0] == signal.SIGTERM else KeyboardInterrupt
        finally:
            if log:
                try:
                    log.close()
                except OSError:
                    pass  # already reported by the write that failed
        return self.out / LAST

    def _epoch(self, log, stop: list[bool]) -> None:
        """The rest of the current epoch's steps; returns early, between two steps, when ``stop[0]`` is set."""
        batches = self._batches(self.epoch)
        with tqdm(total=len(batches), initial=self.batch_in_epoch, disable=not self.progress,
                  desc=f"epoch {self.epoch + 1}/{self.options.epochs}", leave=False, dynamic_ncols=True) as bar:
            for idx in batches[self.batch_in_epoch:]:
                if stop[0]:
                    return
                stats = self.train_step(self.real_batch(idx))
                if not all(math.isfinite(v) for v in stats.values()):
                    last = self.out / LAST
                    kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written yet"
                    raise GanlabError(f"training diverged at epoch {self.epoch + 1}, step {self.step + 1} "
                                      f"(loss_D={stats['loss_D']:.4g}, loss_G={stats['loss_G']:.4g}); stopped, "
                                      f"{kept} (try a lower --lr)")
                self.step += 1
                self.batch_in_epoch += 1
                for key, value in stats.items():
                    self.history[key].append(value)
                if log:
                    try:
                        log.write(json.dumps({"epoch": self.epoch + 1, "step": self.step, **stats}) + "\n")
                        log.flush()
                    except OSError as exc:
                        raise os_error("write the training log", self.out / run_folder.LOG, exc) from None
                bar.set_postfix(loss_D=f"{stats['loss_D']:.3f}", loss_G=f"{stats['loss_G']:.3f}",
                                D_x=f"{stats['D_x']:.2f}", refresh=False)
                bar.update()

    def _save(self, path: Path) -> Path:
        try:
            return save_checkpoint(self.payload(), path)
        except OSError as exc:
            raise os_error("write the checkpoint", path, exc) from None

    def _end_of_epoch(self) -> None:
        if not self.is_main:
            return
        if self.epoch % self.options.sample_every == 0 or self.epoch == self.options.epochs:
            self.G.eval()
            with torch.no_grad():
                grid = self.G(self.fixed_noise).float().cpu()
            self.G.train()
            path = self.out / run_folder.SAMPLES / f"epoch_{self.epoch:04d}.png"
            try:
                save_image(grid, path, nrow=8, normalize=True, value_range=(-1, 1))
            except OSError as exc:
                raise os_error("write the sample grid", path, exc) from None
        epoch_path = self._save(self.out / f"epoch_{self.epoch:04d}.pt")
        link_atomically(epoch_path, self.out / LAST)


PATHS = ("data_root", "exclude")  # recorded as absolute paths, so a resume from another folder compares them


def _process_device(name: str) -> tuple[torch.device, int, int]:
    """(device, rank, world size): under torchrun a process group is joined, each CUDA rank on its own GPU."""
    device = select_device(name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device, dist.get_rank(), dist.get_world_size()


def _absolute(path: Any) -> str | None:
    return str(Path(path).expanduser().resolve()) if isinstance(path, str) and path else None


def run_out(options: TrainOptions) -> str:
    """The run folder: ``--out``, else the resumed checkpoint's folder, else runs/DATASET."""
    if options.out:
        return options.out
    if options.resume:
        return str(Path(options.resume).parent)
    return f"runs/{options.dataset.replace(':', '-')}"


def resume_state(options: TrainOptions) -> tuple[TrainOptions, dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """With ``resume``: (the options, recorded settings filling those left at their defaults; the checkpoint's
    content; the settings changed on purpose: name -> (recorded, new)). A setting given that contradicts the
    recorded one is an error unless named in ``allow_change``. Without ``resume``: (options, None, {})."""
    unknown = sorted(set(options.allow_change) - set(RECORDED))
    if unknown:
        raise GanlabError(f"--allow-change {unknown[0]}: not a recorded setting; choose from {', '.join(RECORDED)}")
    if not options.resume:
        return options, None, {}
    payload = read_checkpoint(options.resume)
    if not is_ganlab_checkpoint(payload):
        raise GanlabError(f"--resume {options.resume}: only ganlab checkpoints can be resumed (this file has no "
                          "optimiser state)")
    recorded = payload.get("options") if isinstance(payload.get("options"), dict) else {}
    dataset = payload.get("dataset") if isinstance(payload.get("dataset"), dict) else {}
    recorded = {**recorded, "data_root": dataset.get("root", recorded.get("data_root"))}
    defaults, filled, changed = TrainOptions(), {}, {}
    for name in RECORDED:
        if name not in recorded:
            continue
        was, given = recorded[name], getattr(options, name)
        if name in PATHS:
            was, given = _absolute(was), _absolute(given)
        if given == getattr(defaults, name) or given == was:
            filled[name] = was
        elif name in options.allow_change:
            changed[name] = (was, given)
        else:
            flag = "--" + name.replace("_", "-")
            raise GanlabError(f"{flag} {given} contradicts {options.resume}, which was trained with {name} {was!r}; "
                              f"drop {flag} to continue as recorded, or give --allow-change {name} to continue "
                              "with the new value (the run's log records the change)")
    return options.updated(**filled), payload, changed


def _check_resume_flags(options: TrainOptions, config: ModelConfig) -> None:
    """Model flags given with --resume must agree with the checkpoint: it decides the architecture."""
    recorded = config.to_dict()
    for name, value in recorded.items():
        given = getattr(options, name, None)
        if given is not None and given != value:
            flag = "--" + name.replace("_", "-")
            raise GanlabError(f"{flag} {given} contradicts {options.resume}, whose model has {name} {value}; "
                              f"drop {flag} when resuming (or train a new run with --out)")
    if options.preset is not None:
        preset = PRESETS[options.preset].to_dict()
        differs = sorted(k for k, v in preset.items() if k != "channels" and recorded[k] != v)
        if differs:
            raise GanlabError(f"--preset {options.preset} contradicts {options.resume} ({', '.join(differs)} differ); "
                              "drop --preset when resuming")


def train(options: TrainOptions, source: DatasetSource, progress: bool = True, *,
          resume_payload: dict[str, Any] | None = None, changed: dict[str, tuple[Any, Any]] | None = None) -> Path:
    """Train a GAN on ``source``; returns the path of the last checkpoint (``OUT/last.pt``).

    ``resume_payload`` and ``changed`` come from ``resume_state(options)``. The run folder is claimed (checked
    and locked) before the data is read, and written only once training starts."""
    folder = None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        sources = [Path(options.data_root)] if options.data_root else []
        folder = run_folder.RunFolder(run_out(options), resuming=bool(options.resume), overwrite=options.overwrite,
                                      sources=sources)
    trainer = None
    try:
        trainer = Trainer(options, source, progress=progress, folder=folder, resume_payload=resume_payload,
                          changed=changed)
        return trainer.fit()
    finally:
        if folder is not None:
            folder.release()
        if trainer is not None and trainer.distributed and dist.is_initialized():
            dist.destroy_process_group()
