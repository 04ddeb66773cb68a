"""Linear-probe numerics for ganlab (the DCGAN paper's L2-SVM evaluation).

Radford, Metz & Chintala (2015) report the quality of a discriminator's
features by training a linear L2-SVM (squared hinge, one-vs-rest) on them:
82.8% on CIFAR-10, 22.48% error on SVHN with 1000 labels. This package holds
the model-independent numeric core of that probe:

* :mod:`ganlab_plugins.probe.solver` -- ``fit_linear_svm`` / ``LinearProbe``:
  the public entry, dispatching to liblinear (sklearn ``LinearSVC``), a
  batched kernel-Newton solver for few rows, or an out-of-core torch L-BFGS
  solver of exactly the same primal objective, for feature matrices too big
  for liblinear (e.g. a 50,000 x 28,672 float32 ``np.memmap``); ``auto``
  picks the fastest by shape (the measured crossover is in its docstring).
  Its parts, one module each:

  * :mod:`ganlab_plugins.probe.objective` -- ``svm_objective`` and the fitted
    ``LinearProbe`` both solvers return;
  * :mod:`ganlab_plugins.probe.liblinear` -- the ``LinearSVC`` path;
  * :mod:`ganlab_plugins.probe.torch_solver` -- the chunked torch L-BFGS solver;
  * :mod:`ganlab_plugins.probe.preconditioner` -- its preconditioners (low-rank
    per fit; or exact per class in a subspace shared by every fit on X);
  * :mod:`ganlab_plugins.probe.dual` -- the kernel path: finite Newton on the
    Gram matrix, every draw x class x C as one batched problem;
  * :mod:`ganlab_plugins.probe.kernel_protocol` -- the protocol's batched
    kernel fits (all draws and the whole C grid at once, validation errors).
* :mod:`ganlab_plugins.probe.views` -- row-chunk access to feature matrices
  (arrays, memmaps, tensors) and the lazy ``FeatureView`` / ``Standardizer``
  (chunk-wise standardisation) the solvers and the protocol read through.
* :mod:`ganlab_plugins.probe.protocol` -- class-balanced label draws, a
  validation split, C selection on it and the full-label / label-scarce
  evaluation (``evaluate`` -> ``ProbeResult``).
* :mod:`ganlab_plugins.probe.kmeans_features` -- the single-layer K-means
  feature baseline of Coates, Ng & Lee (2011) the paper compares against.
* :mod:`ganlab_plugins.probe.embedding` -- the UMAP figure, with numba's
  compiled code cached under the cache folder.

Callers supply feature arrays (N x D float32, possibly ``np.memmap``) and
integer labels; nothing here knows about models.
"""
