"""The paper's dedup autoencoder (Radford et al. 2015, section 4.1.1) and the semantic hash it gives.

Model: ``Linear(3072 -> 128), ReLU, Dropout, Linear(128 -> 3072)`` on 32x32 RGB images scaled to [-1, 1] and
flattened (the paper's "3072-128-3072 de-noising dropout regularized RELU autoencoder"). Its state dict has the
keys ``0.weight`` (128 x 3072), ``0.bias``, ``3.weight`` (3072 x 128) and ``3.bias``.

Training (Adam, lr 1e-3, batches of 128): each batch is corrupted before it goes in and the clean batch is the
target (mean squared error): half the images are shifted by one pixel in a random direction (border pixels
repeated), ``INPUT_DROPOUT`` of the input values are zeroed, and Gaussian noise of standard deviation
``INPUT_NOISE`` (in [-1, 1] units: about 13 grey levels) is added; the code layer has dropout ``CODE_DROPOUT``.
A set smaller than ``MIN_STEPS`` batches in ``epochs`` passes is trained for ``MIN_STEPS`` steps.

Hash: the code's pre-activation computed in float64 in eval mode (no noise, no dropout), bits = ReLU output > 0,
written as 32 hex digits (bit 0 is the highest bit of the first digit). Images with equal hashes form a duplicate
group. Identical images always get identical hashes (each distinct image is hashed once).

Two steps go beyond the paper, both so that slightly changed copies keep every one of their 128 bits. A bit
flips when a change to the image moves the unit's pre-activation across 0; +-2 grey levels of noise move it by
about 0.011 times the unit's weight length (in [-1, 1] units), so a copy hashes apart when any of its 128
pre-activations lies closer than that to 0.

1. A hinge, weighted ``MARGIN_WEIGHT``, asks every pre-activation of each clean training image to lie at least
   ``MARGIN`` times the unit's weight length away from 0. It is a soft penalty: not every image meets it.
2. After training, each unit's threshold (its bias) is moved past at most ``THRESHOLD_SHIFT`` images to where the
   fewest training images lie within ``MARGIN / 2`` weight lengths of it (``calibrate_thresholds``). A pair of
   copies that straddles a threshold is pushed apart by the hinge, not together; on a small set the calibration
   moves the threshold into an empty gap beside them. On a large set (where thousands of images lie between two
   such copies) it changes little.

Measured (5 epochs): on the 66-image set of tests/test_dedup.py (60 pictures of shapes, 3 exact and 3 +-2-grey-level
copies), the hinge alone (weight 5) left a noisy pair split in 3 of 20 training seeds; with the calibration, none
of 30 seeds did (weight 2 or 5). On CIFAR-10's 50,000 training images with 50 copies carrying +-2 grey levels of
noise and 50 JPEG (quality 90) re-encodings planted, two runs each (seeds 0 and 1; the paper's training: seed 0
twice, with two equivalent implementations of the shift), the share of copies hashed with their original:

| training | noisy copies | JPEG copies | groups among the 50,000 originals |
|---|---|---|---|
| the paper's alone | 86%, 80% | 66%, 64% | 0, 0 |
| hinge weight 2 + calibration (default) | 86%, 78% | 74%, 70% | 1, 1 |
| hinge weight 5 + calibration | 92%, 90% | 84%, 84% | 55, 12 |

At weight 5 most groups are different pictures with a similar layout of colour (dark or green scenes, planes and
birds on blue sky): of the 44 groups it found in CIFAR-10 alone, about 8 were the same photograph by eye. Hence
the default of 2. One-pixel shifts of CIFAR-10 images hashed together in under 6% of cases (a shift of a
textured 32x32 picture changes many pixels by far more than 2 grey levels); of the sharp-edged shapes, in about
75%.
"""
from __future__ import annotations

SIZE = 32  # images are hashed at 32 x 32 RGB
INPUT = 3 * SIZE * SIZE
CODE = 128
INPUT_DROPOUT = 0.2
INPUT_NOISE = 0.1
SHIFT_PROBABILITY = 0.5
CODE_DROPOUT = 0.1
MARGIN = 0.1
MARGIN_WEIGHT = 2.0
LEARNING_RATE = 1e-3
BATCH_SIZE = 128
MIN_STEPS = 150
THRESHOLD_SHIFT = 8  # calibration moves a unit's threshold past at most this many images
KEYS = {"0.weight": (CODE, INPUT), "0.bias": (CODE,), "3.weight": (INPUT, CODE), "3.bias": (INPUT,)}


def build_autoencoder():
    """A fresh 3072-128-3072 autoencoder (``torch.nn.Sequential``; index 0 is the encoder, 3 the decoder)."""
    from torch import nn

    return nn.Sequential(nn.Linear(INPUT, CODE), nn.ReLU(), nn.Dropout(CODE_DROPOUT), nn.Linear(CODE, INPUT))


def hash_input(images):
    """uint8 images N x C x H x W (C = 1 or 3, any size) -> uint8 N x 3 x 32 x 32, as the datasets are read.

    Other sizes are resized (bilinear, antialiased, shorter side to 32) and centre-cropped, as ``load_split``
    does with PIL; grey is repeated to three channels, as PIL's L -> RGB conversion does.
    """
    import torch
    import torch.nn.functional as F

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images N x 1|3 x H x W, got {images.dtype} {tuple(images.shape)}")
    h, w = images.shape[2:]
    if (h, w) != (SIZE, SIZE):
        scale = SIZE / min(h, w)
        size = (max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
        resized = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
        images = resized[:, :, top:top + SIZE, left:left + SIZE].round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def _vectors(images, device, dtype=None):
    import torch

    x = images.reshape(len(images), -1).to(device)
    return x.to(dtype or torch.float32) / 127.5 - 1


def _shift(x, generator):
    """Each image (N x 3 x 32 x 32) moved one pixel in a random direction with SHIFT_PROBABILITY, edges repeated."""
    import torch

    n = len(x)
    moves = torch.randint(-1, 2, (2, n, 1), generator=generator, device=x.device)
    moves = moves * (torch.rand(1, n, 1, generator=generator, device=x.device) < SHIFT_PROBABILITY)
    grid = torch.arange(SIZE, device=x.device)
    rows, cols = (grid + moves).clamp(0, SIZE - 1)  # N x 32 each
    picked = x[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # advanced indices first: N x 32 x 32 x 3 -> N x 3 x 32 x 32


def train_autoencoder(images, *, epochs: int = 5, seed: int = 0, device="cpu", progress=None,
                      batch_size: int = BATCH_SIZE, min_steps: int = MIN_STEPS):
    """Fit the dedup autoencoder to uint8 images N x 3 x 32 x 32; returns (model on the CPU in eval mode, info).

    Denoising reconstruction plus the margin hinge, then ``calibrate_thresholds`` on the same images (module doc).

    ``info`` = ``{"steps": int, "loss": float}`` (the last epoch's mean reconstruction error, clean targets in
    [-1, 1]). ``progress`` is a tqdm-like factory ``progress(iterable, desc=..., total=...)`` or None.
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_autoencoder().to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    data = images.to(device)
    n = len(data)
    per_epoch = -(-n // batch_size)
    steps = max(epochs * per_epoch, min_steps)
    encoder = model[0]
    ticks = range(-(-steps // per_epoch))
    losses: list = []
    for _ in progress(ticks, desc="training the dedup autoencoder", total=len(ticks)) if progress else ticks:
        losses = []
        for batch in torch.randperm(n, generator=order_gen).split(batch_size):
            if steps == 0:
                break
            steps -= 1
            clean_images = data[batch.to(device)].float() / 127.5 - 1
            clean = clean_images.flatten(1)
            noisy = _shift(clean_images, noise_gen).flatten(1)
            noisy = noisy * (torch.rand(noisy.shape, generator=noise_gen, device=device) >= INPUT_DROPOUT)
            noisy = noisy + INPUT_NOISE * torch.randn(noisy.shape, generator=noise_gen, device=device)
            loss = F.mse_loss(model(noisy), clean)
            with torch.no_grad():
                margin = MARGIN * encoder.weight.norm(dim=1)
            hinge = F.relu(margin - encoder(clean).abs()).mean()
            optimizer.zero_grad(set_to_none=True)
            (loss + MARGIN_WEIGHT * hinge).backward()
            optimizer.step()
            losses.append(loss.detach())  # read once per epoch: no wait for the GPU at every step
    model.eval()
    model = model.cpu()
    if THRESHOLD_SHIFT > 0:
        calibrate_thresholds(model, images, device=device)
    loss = float(torch.stack(losses).mean()) if losses else float("nan")
    return model, {"steps": max(epochs * per_epoch, min_steps), "loss": loss}


def pre_activations(model, images, *, device="cpu", batch_size: int = 4096):
    """The code layer before its ReLU, float64 N x 128, for uint8 images N x 3 x 32 x 32 (eval: no noise)."""
    import torch

    weight = model[0].weight.detach().to(device, torch.float64)
    bias = model[0].bias.detach().to(device, torch.float64)
    with torch.no_grad():
        return torch.cat([(_vectors(chunk, device, torch.float64) @ weight.T + bias).cpu()
                          for chunk in images.split(batch_size)]) if len(images) else torch.zeros(0, CODE)


def calibrate_thresholds(model, images, *, device="cpu", shift: int = THRESHOLD_SHIFT,
                         margin: float = MARGIN / 2) -> None:
    """Move each code unit's threshold (its bias) to where the fewest images' pre-activations lie close to it.

    For unit j, the candidates are the midpoints between neighbouring sorted pre-activations of the (distinct)
    images that leave between ``off - shift`` and ``off + shift`` images below the threshold (``off``: how many
    are below it now; never all or none). The one with the fewest images within ``margin`` times the
    unit's weight length of it wins (the images whose bit a small change could flip), the widest gap among equals.
    Units that are on for all or for none of the images are left as they are. In place.
    """
    import torch

    flat = torch.unique(images.reshape(len(images), -1), dim=0)
    n = len(flat)
    if n < 3:
        return
    h = pre_activations(model, flat.view(-1, *images.shape[1:]), device=device)  # N x 128, float64
    reach = margin * model[0].weight.detach().to(torch.float64).norm(dim=1)
    shifts = torch.zeros(CODE, dtype=torch.float64)
    for j in range(CODE):
        ordered = h[:, j].sort().values
        below_now = int((ordered <= 0).sum())
        if below_now in (0, n):
            continue
        lowest, highest = max(1, below_now - shift), min(n - 1, below_now + shift)
        left, right = ordered[lowest - 1:highest], ordered[lowest:highest + 1]  # candidate i leaves lowest + i below
        middle = (left + right) / 2
        crowd = torch.searchsorted(ordered, middle + reach[j]) - torch.searchsorted(ordered, middle - reach[j])
        gap = right - left
        best = torch.nonzero(crowd == crowd.min()).flatten()
        shifts[j] = middle[best[gap[best].argmax()]]
    with torch.no_grad():
        model[0].bias -= shifts.to(model[0].bias.dtype)


def code_bits(model, images, *, device="cpu"):
    """The binarised code: bool N x 128, ReLU(code) > 0, for uint8 images N x 3 x 32 x 32.

    Each distinct image is computed once, so identical images get identical bits whatever the batching.
    """
    import torch

    if not len(images):
        return torch.zeros(0, CODE, dtype=torch.bool)
    distinct, inverse = torch.unique(images.reshape(len(images), -1), dim=0, return_inverse=True)
    return (pre_activations(model, distinct.view(-1, *images.shape[1:]), device=device) > 0)[inverse]


def relative_margins(model, images, *, device="cpu"):
    """Per image, the smallest |pre-activation| / |weight vector| over the 128 units (float64 N).

    A change to the image ([-1, 1] units) whose projection on every unit's weight direction is smaller than this
    cannot flip a bit.
    """
    import torch

    norms = model[0].weight.detach().to(torch.float64).norm(dim=1)
    return (pre_activations(model, images, device=device).abs() / norms).min(1).values


def hex_hashes(bits) -> list[str]:
    """bool N x 128 -> N hex strings of 32 digits (bit 0 is the highest bit of the first digit)."""
    import numpy as np

    packed = np.packbits(bits.cpu().numpy().astype(np.uint8), axis=1)
    return [row.tobytes().hex() for row in packed]


def duplicate_groups(hashes: list[str]) -> list[list[int]]:
    """Positions (into ``hashes``) of each hash shared by two or more, in order of their first member."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(hashes):
        members.setdefault(key, []).append(i)
    return [group for group in members.values() if len(group) > 1]


def save_autoencoder(model, path) -> None:
    """Write the state dict (a plain dict of CPU tensors) atomically (``ganlab.atomic_file``)."""
    import torch

    from ganlab import atomic_file

    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    with atomic_file(path, "wb") as handle:
        torch.save(state, handle)


def load_autoencoder(path):
    """The autoencoder saved by ``ganlab dedup`` (``autoencoder.pt``), in eval mode on the CPU."""
    import torch

    from ganlab import GanlabError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GanlabError(f"no autoencoder at {path}; run `ganlab dedup ... --out DIR` and give "
                          "DIR/autoencoder.pt") from None
    except Exception as exc:  # pickle errors, truncated files, files that would run code
        raise GanlabError(f"{path} is not an autoencoder.pt from ganlab dedup ({type(exc).__name__}); "
                          "run `ganlab dedup` again") from None
    tensors = isinstance(state, dict) and all(isinstance(v, torch.Tensor) and v.is_floating_point()
                                              for v in state.values())
    if not tensors or {k: tuple(v.shape) for k, v in state.items()} != KEYS:
        raise GanlabError(f"{path} is not a 3072-128-3072 autoencoder from ganlab dedup; run `ganlab dedup` again")
    model = build_autoencoder()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()
