"""The DCGAN training loop: Adam(2e-4, 0.5), BCE on logits, one D step then one G step.

The dataset is decoded once into a uint8 tensor and batches are sliced from it, so no per-image transform runs
during training. Under ``torchrun`` the same loop runs DistributedDataParallel with a DistributedSampler; only
rank 0 writes files.
"""
import math
import os
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchvision.utils import save_image
from tqdm.auto import tqdm

from ganlab.data.datasets import DatasetSource, load_split, read_exclusion_list
from ganlab.data.pixel_ranges import to_unit_range
from ganlab.defaults import RECORDED, TrainOptions
from ganlab.errors import GanlabError, Terminated
from ganlab.model import checkpoint
from ganlab.model.devices import select_device
from ganlab.model.networks import PRESETS, ModelConfig, build, sample_latent
from ganlab.store import run_folder
from ganlab.store.atomic import atomic_path, link_atomically, os_error
from ganlab.store.claims import epoch_name

HISTORY_KEYS = ("loss_D", "loss_G", "D_x", "D_G_z")
PATHS = ("data_root", "exclude")  # recorded as absolute paths, so a resume from another folder compares them


class Trainer:
    """Trains one GAN as described by ``TrainOptions`` on ``source``; ``fit()`` returns the last checkpoint path."""

    def __init__(self, options: TrainOptions, source: DatasetSource, progress: bool = True, *,
                 folder: run_folder.RunFolder | None = None, resume_payload: dict[str, Any] | None = None,
                 changed: dict[str, tuple[Any, Any]] | None = None):
        self.options, self.folder, self.options_changed = options, folder, dict(changed or {})
        self.device, self.rank, self.world = _process_device(options.device)
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.local_batch = options.batch_size // self.world
        if self.local_batch < 1:
            raise GanlabError(f"batch size {options.batch_size} is smaller than the {self.world} processes")
        self.out = folder.out if folder else Path(run_out(options)).resolve()
        self.last = self.out / run_folder.LAST
        if resume_payload:
            self.config = ModelConfig.from_dict(resume_payload["config"])
            _check_resume_flags(options, self.config)
        else:
            # a folder's channels come from reading some of its images: not needed when --channels is given
            channels = options.channels or source.channels_at(options.data_root, options.split)
            self.config = options.model_config(channels)
        self.images, _ = load_split(
            source, options.split, variant=options.dataset.partition(":")[2] or None, root=options.data_root,
            image_size=self.config.image_size, channels=self.config.channels, download=options.download,
            limit=options.limit, progress=self.progress, skip_bad=options.skip_bad_images,
            exclude=read_exclusion_list(options.exclude) if options.exclude else None)
        if len(self.images) < 2:
            raise GanlabError(f"{options.dataset}/{options.split} has {len(self.images)} images; training needs "
                              "at least 2")
        self._build()
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.history: dict[str, list[float]] = {k: [] for k in (*HISTORY_KEYS, "epoch_end_steps")}
        if resume_payload:
            (self.epoch, self.batch_in_epoch, self.step), self.history = checkpoint.restore_training_state(
                resume_payload, self.parts, self.noise, options.resume)
            if self.epoch >= options.epochs:
                raise GanlabError(f"{options.resume} has already trained {self.epoch} epochs; "
                                  f"give --epochs larger than {self.epoch} to continue")
        wrap = torch.nn.parallel.DistributedDataParallel if self.world > 1 else (lambda model: model)
        self.G_ddp, self.D_ddp = wrap(self.G), wrap(self.D)

    def _build(self) -> None:
        o = self.options
        torch.manual_seed(o.seed)
        # channels_last: ~1.13x faster convolutions and BatchNorm on CPU (benchmarks/train_throughput.py)
        self.G, self.D = (m.to(self.device, memory_format=torch.channels_last) for m in build(self.config))
        # The fused Adam kernel is one op per step instead of several per parameter.
        fused = self.device.type in ("cpu", "cuda")
        self.opt_G, self.opt_D = (torch.optim.Adam(m.parameters(), lr=o.lr, betas=(o.beta1, 0.999), fused=fused)
                                  for m in (self.G, self.D))
        self.loss = torch.nn.BCEWithLogitsLoss()
        self.noise = torch.Generator(device=self.device).manual_seed((o.seed * 1000 + self.rank) % 2**63)
        self.fixed_noise = sample_latent(self.config, 64, torch.Generator().manual_seed(o.seed), self.device)
        bf16 = self.device.type != "cuda" or torch.cuda.is_bf16_supported()
        self.amp_dtype = (torch.bfloat16 if bf16 else torch.float16) if o.amp else None
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.parts = dict(zip(checkpoint.WEIGHT_KEYS, (self.G, self.D, self.opt_G, self.opt_D, self.scaler)))

    def _save(self, path: Path) -> Path:
        """Write everything needed to rebuild the models and to resume bit-for-bit to ``path``."""
        o = self.options
        payload = checkpoint.build_payload(
            self.config, self.parts, {key: getattr(self, key) for key in checkpoint.COUNTER_KEYS},
            rng={"noise": self.noise.get_state().cpu(), "torch": torch.get_rng_state()},
            dataset={"name": o.dataset, "split": o.split, "size": len(self.images), "root": _absolute(o.data_root)},
            options={**o.to_dict(), **{k: _absolute(getattr(o, k)) for k in PATHS}}, history=self.history)
        try:
            return checkpoint.save_checkpoint(payload, path)
        except OSError as exc:
            raise os_error("write the checkpoint", path, exc) from None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        n = real.shape[0]
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        # D step: real and fake batches go through D separately (as in the paper and
        # pytorch/examples), so BatchNorm never mixes real and generated statistics.
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            out_real = self.D_ddp(real)
            loss_real = self.loss(out_real.float(), ones)
        self.scaler.scale(loss_real).backward()
        # the trainer's own noise generator, so that a resumed run draws the same z
        z = sample_latent(self.config, n, self.noise, self.device)
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

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        # DistributedSampler with explicit replicas/rank works without a process group too,
        # so single-process and torchrun runs share one code path.
        sampler = torch.utils.data.DistributedSampler(range(len(self.images)), num_replicas=self.world,
                                                      rank=self.rank, shuffle=True, seed=self.options.seed)
        sampler.set_epoch(epoch)
        return list(torch.tensor(list(sampler)).split(self.local_batch))

    def fit(self) -> Path:
        """Train to ``options.epochs``; returns the path of ``last.pt``. Ctrl-C or SIGTERM finishes the current step,
        saves ``last.pt`` and raises ``KeyboardInterrupt`` (for SIGTERM ``Terminated``); ``--resume`` from it then
        continues exactly as if never stopped."""
        if self.is_main:
            self.folder.begin()
            run_folder.trim_log(self.out / run_folder.LOG, self.step)  # resuming drops the lines after the checkpoint
            for setting, (was, now) in self.options_changed.items():
                self._log({"event": "setting changed on resume", "step": self.step, "setting": setting,
                           "from": was, "to": now})
        self.G.train()
        self.D.train()
        with run_folder.stop_at_step_boundary() as stop:
            while self.epoch < self.options.epochs and not stop[0]:
                self._epoch(stop)
                if not stop[0]:
                    self._end_of_epoch()
        if stop[0]:
            if self.is_main:
                self._save(self.last)
                tqdm.write(f"interrupted after step {self.step}: saved {self.last} (continue with --resume "
                           f"{self.last})")
            raise Terminated() if stop[0] == signal.SIGTERM else KeyboardInterrupt
        return self.last

    def _log(self, record: dict[str, Any]) -> None:
        try:
            run_folder.log_event(self.out, record)
        except OSError as exc:
            raise os_error("write the training log", self.out / run_folder.LOG, exc) from None

    def _epoch(self, stop: list) -> None:
        """The rest of the current epoch's steps; returns early, between two steps, when ``stop[0]`` is set."""
        batches = self._batches(self.epoch)
        with tqdm(total=len(batches), initial=self.batch_in_epoch, disable=not self.progress,
                  desc=f"epoch {self.epoch + 1}/{self.options.epochs}", leave=False, dynamic_ncols=True) as bar:
            for idx in batches[self.batch_in_epoch:]:
                if stop[0]:
                    return
                stats = self.train_step(self.real_batch(idx))
                if not all(math.isfinite(v) for v in stats.values()):
                    kept = (f"last good checkpoint: {self.last}" if self.last.is_file()
                            else "no checkpoint was written yet")
                    raise GanlabError(f"training diverged at epoch {self.epoch + 1}, step {self.step + 1} "
                                      f"(loss_D={stats['loss_D']:.4g}, loss_G={stats['loss_G']:.4g}); stopped, "
                                      f"{kept} (try a lower --lr)")
                self.step += 1
                self.batch_in_epoch += 1
                for key, value in stats.items():
                    self.history[key].append(value)
                if self.is_main:
                    self._log({"epoch": self.epoch + 1, "step": self.step, **stats})
                bar.set_postfix(loss_D=f"{stats['loss_D']:.3f}", loss_G=f"{stats['loss_G']:.3f}",
                                D_x=f"{stats['D_x']:.2f}", refresh=False)
                bar.update()

    def _end_of_epoch(self) -> None:
        """Count the epoch; on rank 0 write its sample grid and its checkpoint, which ``last.pt`` then names."""
        self.epoch += 1
        self.batch_in_epoch = 0
        self.history["epoch_end_steps"].append(self.step)
        if not self.is_main:
            return
        if self.epoch % self.options.sample_every == 0 or self.epoch == self.options.epochs:
            self.G.eval()
            with torch.no_grad():
                grid = self.G(self.fixed_noise).float().cpu()
            self.G.train()
            path = self.out / run_folder.SAMPLES / epoch_name(self.epoch, "png")
            try:
                with atomic_path(path, suffix=".png") as tmp:
                    save_image(grid, tmp, nrow=8, normalize=True, value_range=(-1, 1))
            except OSError as exc:
                raise os_error("write the sample grid", path, exc) from None
        link_atomically(self._save(self.out / epoch_name(self.epoch)), self.last)


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
    return str(Path(path).expanduser().resolve()) if isinstance(path, (str, Path)) and path else None


def _part(payload: dict[str, Any], key: str) -> dict[str, Any]:
    """A dict-valued part of a checkpoint, {} when it is missing or not a dict."""
    return payload[key] if isinstance(payload.get(key), dict) else {}


def _recorded_pairs(options: TrainOptions, recorded: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, recorded, asked) for each setting the checkpoint recorded; paths compared as absolute paths."""
    pairs = [(name, recorded[name], getattr(options, name)) for name in RECORDED if name in recorded]
    return [(n, _absolute(was), _absolute(asked)) if n in PATHS else (n, was, asked) for n, was, asked in pairs]


def run_out(options: TrainOptions) -> str:
    """The run folder: ``--out``, else the resumed checkpoint's folder, else runs/DATASET."""
    if options.resume and not options.out:
        return str(Path(options.resume).parent)
    return options.out or f"runs/{options.dataset.replace(':', '-')}"


def resume_state(options: TrainOptions) -> tuple[TrainOptions, dict[str, Any] | None, dict[str, tuple[Any, Any]]]:
    """With ``resume``: (the options, recorded settings filling those left at their defaults; the checkpoint's
    content; the settings changed on purpose: name -> (recorded, new)). A setting given that contradicts the
    recorded one (or one named in ``given`` that differs from it) is an error unless named in ``allow_change``.
    Without ``resume``: (options, None, {})."""
    unknown = sorted(set(options.allow_change) - set(RECORDED))
    if unknown:
        raise GanlabError(f"--allow-change {unknown[0]}: not a recorded setting; choose from {', '.join(RECORDED)}")
    if not options.resume:
        return options, None, {}
    payload = checkpoint.read_checkpoint(options.resume)
    if not checkpoint.is_ganlab_checkpoint(payload):
        raise GanlabError(f"--resume {options.resume}: only ganlab checkpoints can be resumed (this file has no "
                          "optimiser state)")
    recorded = _part(payload, "options")
    recorded = {**recorded, "data_root": _part(payload, "dataset").get("root", recorded.get("data_root"))}
    defaults, filled, changed = TrainOptions(), {}, {}
    for name, was, given in _recorded_pairs(options, recorded):
        if given == was or (given == getattr(defaults, name) and name not in options.given):
            filled[name] = was
        elif name in options.allow_change:
            changed[name] = (was, given)
        else:
            flag = "--" + name.replace("_", "-")
            raise GanlabError(f"{flag} {given} contradicts {options.resume}, which was trained with {name} {was!r}; "
                              f"drop {flag} to continue as recorded, or give --allow-change {name} to continue "
                              "with the new value (the run's log records the change)")
    return options.updated(**filled), payload, changed


def settings_differ(options: TrainOptions, payload: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The recorded settings and model flags of a checkpoint's run that ``options`` asks otherwise:
    (name, recorded, asked). Decides whether an existing run can stand for the one asked for."""
    differ = [pair for pair in _recorded_pairs(options, _part(payload, "options")) if pair[1] != pair[2]]
    config = _part(payload, "config")
    differ += [(name, config[name], getattr(options, name)) for name in config
               if getattr(options, name, None) not in (None, config[name])]
    return differ


def _check_resume_flags(options: TrainOptions, config: ModelConfig) -> None:
    """Model flags given with --resume must agree with the checkpoint: it decides the architecture."""
    recorded = config.to_dict()
    for name, value in recorded.items():
        if getattr(options, name, None) not in (None, value):
            flag = "--" + name.replace("_", "-")
            raise GanlabError(f"{flag} {getattr(options, name)} contradicts {options.resume}, whose model has {name} "
                              f"{value}; drop {flag} when resuming (or train a new run with --out)")
    preset = PRESETS[options.preset].to_dict() if options.preset is not None else {}
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
        epoch = (resume_payload or {}).get("epoch", 0)  # a malformed one is named when the state is restored
        folder = run_folder.RunFolder(run_out(options), resume=options.resume, overwrite=options.overwrite,
                                      resumed_epoch=epoch if isinstance(epoch, int) else 0,
                                      sources=[Path(options.data_root)] if options.data_root else [])
    try:
        return Trainer(options, source, progress=progress, folder=folder, resume_payload=resume_payload,
                       changed=changed).fit()
    finally:
        if folder is not None:
            folder.release()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_initialized():  # the group _process_device joined
            dist.destroy_process_group()
