"""Memorisation checks: ``neighbours`` (analysis ``nearest-neighbours``), ``data_copying`` (evaluator
``data-copying``) and ``dedup`` (command ``ganlab dedup``, evaluator ``hash-collisions``), with ``autoencoder``.
Every ``ganlab`` command imports the hook modules, so they keep torch out and read their settings from here."""
MIN_STEPS = 150  # the dedup autoencoder trains at least this many steps, so that small sets are fitted too
MAX_RMS = 0.04  # a hash group's images are duplicates when within about 10 grey levels RMS of each other
