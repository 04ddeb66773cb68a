"""The paper's dedup autoencoder (Radford et al. 2015, section 4.1.1) and the semantic hash it gives.

Model: ``Linear(3072 -> 128), ReLU, Dropout, Linear(128 -> 3072)`` on 32x32 RGB images in [-1, 1], flattened,
trained to denoise (inputs shifted by a pixel, dropped out and noised; clean targets). Hash: the code's
pre-activation (float64, eval mode) > 0, as 32 hex digits; images with equal hashes are duplicates.

Two steps go beyond the paper so that slightly changed copies keep all 128 bits. A bit flips when a change moves
its unit's pre-activation across 0, and +-2 grey levels of noise move it by about 0.011 of the unit's weight
length, so a hinge (weight ``MARGIN_WEIGHT``) pushes every clean training image's pre-activations ``MARGIN``
weight lengths from 0, and ``calibrate_thresholds`` then moves each threshold into the emptiest gap nearby, where
a straddling pair of copies is not split. A stronger hinge (weight 5) keeps more planted copies together on
CIFAR-10 but also groups many different pictures with a similar layout of colour, hence 2.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganlab import GanlabError, atomic_file

from . import MIN_STEPS

SIZE, CODE = 32, 128  # 32 x 32 RGB images in, 128 code units
INPUT = 3 * SIZE * SIZE
SHIFT_PROBABILITY, INPUT_DROPOUT, INPUT_NOISE, CODE_DROPOUT = 0.5, 0.2, 0.1, 0.1  # the denoising corruption
MARGIN, MARGIN_WEIGHT = 0.1, 2.0  # the hinge: in weight lengths, and its weight against the reconstruction
LEARNING_RATE, BATCH_SIZE = 1e-3, 128
THRESHOLD_SHIFT = 8  # calibration moves a unit's threshold past at most this many images
KEYS = {"0.weight": (CODE, INPUT), "0.bias": (CODE,), "3.weight": (INPUT, CODE), "3.bias": (INPUT,)}


def build_autoencoder():
    """Index 0 is the encoder, 3 the decoder."""
    return nn.Sequential(nn.Linear(INPUT, CODE), nn.ReLU(), nn.Dropout(CODE_DROPOUT), nn.Linear(CODE, INPUT))


def hash_input(images):
    """uint8 images N x 1|3 x H x W -> uint8 N x 3 x 32 x 32 as ``load_split`` reads them with PIL: resized
    (bilinear, antialiased, shorter side to 32), centre-cropped, grey repeated to RGB."""
    h, w = images.shape[2:]
    if (h, w) != (SIZE, SIZE):
        scale = SIZE / min(h, w)
        size = (max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
        resized = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
        images = resized[:, :, top:top + SIZE, left:left + SIZE].round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def _corrupt(x, generator):
    """The denoising input, flattened: each image moved one pixel in a random direction with SHIFT_PROBABILITY
    (edges repeated), then dropout and Gaussian noise."""
    n, device = len(x), x.device
    moves = torch.randint(-1, 2, (2, n, 1), generator=generator, device=device)
    moves = moves * (torch.rand(1, n, 1, generator=generator, device=device) < SHIFT_PROBABILITY)
    rows, cols = (torch.arange(SIZE, device=device) + moves).clamp(0, SIZE - 1)  # N x 32 each
    picked = x[torch.arange(n, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    noisy = picked.permute(0, 3, 1, 2).flatten(1)  # advanced indices first: N x 32 x 32 x 3 -> N x 3 x 32 x 32
    noisy = noisy * (torch.rand(noisy.shape, generator=generator, device=device) >= INPUT_DROPOUT)
    return noisy + INPUT_NOISE * torch.randn(noisy.shape, generator=generator, device=device)


def train_autoencoder(images, *, epochs: int = 5, seed: int = 0, device="cpu", progress=None):
    """Fit the dedup autoencoder, then ``calibrate_thresholds``: (model on the CPU in eval mode, {"steps", "loss":
    the last epoch's mean squared error}); ``progress``: tqdm-like or None."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_autoencoder().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order_gen, noise_gen = torch.Generator().manual_seed(seed), torch.Generator(device=device).manual_seed(seed)
    data, n = images.to(device), len(images)
    per_epoch = -(-n // BATCH_SIZE)
    steps = total = max(epochs * per_epoch, MIN_STEPS)
    ticks = range(-(-steps // per_epoch))
    losses: list = []
    for _ in progress(ticks, desc="training the dedup autoencoder", total=len(ticks)) if progress else ticks:
        losses = []
        for batch in torch.randperm(n, generator=order_gen).split(BATCH_SIZE)[:steps]:
            steps -= 1
            clean = data[batch.to(device)].float() / 127.5 - 1
            loss = F.mse_loss(model(_corrupt(clean, noise_gen)), clean.flatten(1))
            with torch.no_grad():
                margin = MARGIN * model[0].weight.norm(dim=1)
            hinge = F.relu(margin - model[0](clean.flatten(1)).abs()).mean()
            optimizer.zero_grad(set_to_none=True)
            (loss + MARGIN_WEIGHT * hinge).backward()
            optimizer.step()
            losses.append(loss.detach())  # read once per epoch: no wait for the GPU at every step
    model = model.eval().cpu()
    calibrate_thresholds(model, images, device=device)
    return model, {"steps": total, "loss": float(torch.stack(losses).mean()) if losses else float("nan")}


def pre_activations(model, images, *, device="cpu"):
    """The code layer before its ReLU, float64 N x 128 (eval: no noise); images N x ... (flattened here)."""
    weight, bias = (p.detach().to(device, torch.float64) for p in (model[0].weight, model[0].bias))
    with torch.no_grad():
        return torch.cat([(chunk.reshape(len(chunk), -1).to(device, torch.float64) / 127.5 - 1) @ weight.T + bias
                          for chunk in images.split(4096)]).cpu() if len(images) else torch.zeros(0, CODE)


def calibrate_thresholds(model, images, *, device="cpu") -> None:
    """Move each unit's threshold (its bias), in place, past at most THRESHOLD_SHIFT of the distinct images to the
    midpoint between two neighbouring pre-activations with the fewest images within MARGIN / 2 weight lengths of it
    (those a small change could flip), the widest gap among equals; never past all or none, and not for units on
    for all or none of the images."""
    flat = torch.unique(images.reshape(len(images), -1), dim=0)
    if len(flat) < 3:
        return
    ordered = pre_activations(model, flat, device=device).T.contiguous().sort().values
    reach = MARGIN / 2 * model[0].weight.detach().to(torch.float64).norm(dim=1)
    shifts = torch.zeros(CODE, dtype=torch.float64)
    for j, unit in enumerate(ordered):
        n, below_now = len(unit), int((unit <= 0).sum())
        if below_now in (0, n):
            continue
        lowest, highest = max(1, below_now - THRESHOLD_SHIFT), min(n - 1, below_now + THRESHOLD_SHIFT)
        left, right = unit[lowest - 1:highest], unit[lowest:highest + 1]  # candidate i leaves lowest + i below
        middle = (left + right) / 2
        crowd = torch.searchsorted(unit, middle + reach[j]) - torch.searchsorted(unit, middle - reach[j])
        best = torch.nonzero(crowd == crowd.min()).flatten()
        shifts[j] = middle[best[(right - left)[best].argmax()]]
    with torch.no_grad():
        model[0].bias -= shifts.to(model[0].bias.dtype)


def code_bits(model, images, *, device="cpu"):
    """The binarised code, bool N x 128; each distinct image is computed once, so identical images get identical
    bits whatever the batching."""
    if not len(images):
        return torch.zeros(0, CODE, dtype=torch.bool)
    distinct, inverse = torch.unique(images.reshape(len(images), -1), dim=0, return_inverse=True)
    return (pre_activations(model, distinct, device=device) > 0)[inverse]


def relative_margins(model, images, *, device="cpu"):
    """Per image, the smallest |pre-activation| / |weight vector| over the 128 units (float64 N): a change to the
    image ([-1, 1] units) whose projection on every unit's weight direction is smaller cannot flip a bit."""
    norms = model[0].weight.detach().to(torch.float64).norm(dim=1)
    return (pre_activations(model, images, device=device).abs() / norms).min(1).values


def hex_hashes(bits) -> list[str]:
    """bool N x 128 -> N hex strings of 32 digits (bit 0 is the highest bit of the first digit)."""
    return [row.tobytes().hex() for row in np.packbits(bits.cpu().numpy().astype(np.uint8), axis=1)]


def members(hashes: list) -> dict:
    """hash -> its positions in ``hashes``, in order of first appearance."""
    found: dict[str, list[int]] = {}
    for i, key in enumerate(hashes):
        found.setdefault(key, []).append(i)
    return found


def duplicate_groups(hashes: list) -> list[list[int]]:
    """The positions of each hash shared by two or more."""
    return [group for group in members(hashes).values() if len(group) > 1]


def save_autoencoder(model, path) -> None:
    with atomic_file(path, "wb") as handle:
        torch.save({key: value.detach().cpu().clone() for key, value in model.state_dict().items()}, handle)


def load_autoencoder(path):
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
