"""The store: every file ganlab writes, caches and locks (the modules are listed in docs/architecture.md)."""
