"""Package discovery that cannot forget a subpackage; everything else is in pyproject.toml.

The built-in plugins live in ``plugins/`` and install as ``ganlab_plugins``. pyproject.toml's
``packages.find`` cannot add that prefix, so every package under ``plugins/`` is found here.
"""
from setuptools import find_packages, setup

core = find_packages(include=["ganlab", "ganlab.*"])
builtin_plugins = ["ganlab_plugins"] + [f"ganlab_plugins.{name}" for name in find_packages("plugins")]

setup(packages=core + builtin_plugins, package_dir={"ganlab_plugins": "plugins"})
