"""ganlab's built-in plugins (installed as the ``ganlab_plugins`` package).

Each module registers through the ``ganlab`` entry-point group in pyproject.toml, exactly as a
third-party plugin would; ``ganlab/`` never imports this package.
"""


def generate(G, z, device, batch_size: int = 256, check: str = ""):
    """G(z) in eval mode, ``batch_size`` at a time: float32 images on the CPU. With ``check`` (where the images
    are for), an output with NaN or infinite pixels is refused."""
    import torch

    from ganlab import GanlabError

    G.eval()
    with torch.no_grad():
        images = torch.cat([G(chunk.to(device)).float().cpu() for chunk in z.split(batch_size)])
    if check and (bad := int((~torch.isfinite(images)).sum())):
        raise GanlabError(f"G's output is NaN or infinite in {bad} of {images.numel()} pixel values {check}: the "
                          "generator is broken")
    return images
