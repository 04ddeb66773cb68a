"""The DCGAN paper's linear probe (Radford, Metz & Chintala 2015): a linear L2-SVM on a discriminator's features.

``plugin`` is the ``svm-probe`` evaluator (its page: ``presentation``, ``intervals``, ``paper``; its kept baseline
rows: ``result_cache``; its UMAP figure: ``embedding``), ``epochs`` the ``probe-epochs`` evaluator, ``settings``
their shared option values. The numerics take feature arrays (N x D, possibly memmaps) and labels, nothing about
models: ``protocol`` (draws, splits, choosing C), ``solver`` (which solver: liblinear the reference, ``kernel`` and
``torch_solver`` with its ``preconditioner`` the fast paths, ``objective`` what they minimise), ``views`` (lazy
rows), and the baselines' features ``kmeans_features`` and ``supervised``.
"""
