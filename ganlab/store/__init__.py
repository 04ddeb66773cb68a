"""The store: every file ganlab writes, caches and locks goes through ``atomic`` (a file or folder is the old one
or the complete new one), ``claims`` (which folders ganlab may write into; one writer per folder), ``staged``
(output folders swapped in whole), ``run_folder``, ``cache`` (digest-verified entries) and ``digest``.
"""
