"""Generated samples written to disk: one grid image, or one PNG per sample (``ganlab sample``)."""
from ganlab.errors import GanlabError


def write_samples(gan, count, seed, out, out_dir, nrow):
    """The grid at ``out``, or one PNG per sample in ``out_dir`` (generated in chunks, never all in memory)."""
    import torch
    from PIL import Image
    from torchvision.utils import save_image

    from ganlab.images import to_uint8
    from ganlab.store.atomic import os_error

    target = out_dir or out
    try:
        (out_dir or out.parent).mkdir(parents=True, exist_ok=True)
        chunk = count if out_dir is None else 1024
        for start in range(0, count, chunk):
            # seed + start: chunk k holds the same images whatever the chunk size of an earlier call
            images = gan.sample(min(chunk, count - start), seed=seed if start == 0 else seed + start)
            bad = int((~torch.isfinite(images)).sum())
            if bad:
                raise GanlabError(f"the generator is broken: {bad} of {images.numel()} output values are NaN or "
                                  f"infinite; {'nothing was written' if start == 0 else f'wrote {start} images'}")
            if out_dir is None:
                save_image(images, out, nrow=nrow, normalize=True, value_range=(-1, 1))
                continue
            pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
            for i, array in enumerate(pixels, start):
                Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(out_dir / f"sample_{i:06d}.png")
    except OSError as exc:
        raise os_error("write", target, exc) from None
    return target
