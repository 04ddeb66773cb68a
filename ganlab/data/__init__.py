"""Images in: dataset sources and splits, the built-in datasets and their official files, a user's own folders,
pixels made 8-bit and the value ranges G and reports use. Imports only ``store``, ``errors`` and ``defaults``."""
