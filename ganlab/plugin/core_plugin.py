"""ganlab's own hook implementations, registered like any plugin. Torch is imported inside the hooks, so that
building the plugin manager, which ``ganlab --help`` does to list plugin commands, stays fast."""
from ganlab.plugin.hookspecs import hookimpl


@hookimpl
def ganlab_register_datasets(register) -> None:
    from ganlab.data.builtin_datasets import builtin_sources

    for source in builtin_sources():
        register(source)


@hookimpl(trylast=True)
def ganlab_load_checkpoint(path: str, state):
    """PyTorch's examples/dcgan netG_epoch_N.pth / netD_epoch_N.pth state dicts (netD found beside netG)."""
    # trylast: a user's reader for a look-alike format gets the first word.
    from ganlab.model.pytorch_examples import read_if_pytorch_examples

    return read_if_pytorch_examples(path, state)
