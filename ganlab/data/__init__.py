"""Images in: dataset sources and splits (``datasets``), the built-in datasets (``builtin_datasets``) and the
official files they parse (``official_formats``), a user's own folders (``folder_dataset``, ``image_files``),
decoded pixels made 8-bit (``pixel_formats``) and the value ranges G and reports use (``pixel_ranges``).
Imports only ``ganlab.store``, ``ganlab.errors`` and ``ganlab.defaults``."""
