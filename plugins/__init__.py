"""ganlab's built-in plugins (installed as the ``ganlab_plugins`` package).

Each module registers through the ``ganlab`` entry-point group in pyproject.toml, exactly as a
third-party plugin would; ``ganlab/`` never imports this package.
"""
