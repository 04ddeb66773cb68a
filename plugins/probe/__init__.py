"""The DCGAN paper's linear probe (Radford, Metz & Chintala 2015): a linear L2-SVM on a discriminator's features.

``plugin`` is the ``svm-probe`` evaluator, ``epochs`` the ``probe-epochs`` one. The numerics take feature arrays
(N x D, possibly memmaps) and labels, nothing about models: ``protocol`` (draws, splits, choosing C) and ``solver``
(liblinear the reference; ``kernel`` and ``torch_solver`` the fast paths).
"""
