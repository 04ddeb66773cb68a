"""The store: every file ganlab writes, caches and locks goes through these modules.

- ``atomic``: a file or a folder is the old one or the complete new one, never half-written;
- ``claims``: which folders ganlab may write into (its own, marked ones, and empty or new ones the user named),
  and the lock that keeps one writer per folder;
- ``staged``: an output folder built beside its target and swapped in whole (reports, dedup, faces);
- ``run_folder``: a training run's folder;
- ``cache``: digest-verified cache entries under ``$GANLAB_CACHE``;
- ``digest``: content hashes of arrays and files.
"""
