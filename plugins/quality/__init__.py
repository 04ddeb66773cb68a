"""Sample quality of a GAN in any feature space: Frechet distance, KID, precision/recall, density/coverage.

* :mod:`ganlab_plugins.quality.metrics` -- the Frechet distance (float64, from eigenvalues) and KID (unbiased
  MMD^2, cubic polynomial kernel) on feature arrays N x D, read in row chunks so results do not depend on the
  batch size;
* :mod:`ganlab_plugins.quality.manifold` -- improved precision/recall (Kynkaanniemi et al. 2019) and
  density/coverage (Naeem et al. 2020) from exact k-NN radii, every distance block computed once;
* :mod:`ganlab_plugins.quality.spaces` -- the built-in feature spaces: ``discriminator``,
  ``random-discriminator``, ``pixels`` and ``inception`` (only from a local weights file, never downloaded);
* :mod:`ganlab_plugins.quality.plugin` -- the ``sample-quality`` evaluator and the hook implementations.

Nothing in ``metrics`` or ``manifold`` knows about models: callers hand them float arrays or tensors.
"""
