"""``python -m ganlab`` (and so ``torchrun -m ganlab train ...``) runs the command line."""
from ganlab.cli import main

main()
