"""Sample quality in any feature space: ``metrics`` (FD, KID), ``manifold`` (precision/recall, density/coverage),
``spaces`` (the built-in feature spaces) and ``plugin`` (the ``sample-quality`` evaluator and its hooks)."""
