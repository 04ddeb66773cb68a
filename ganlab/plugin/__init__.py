"""The plugin contract: hooks, what plugins register, component options, the registry and the ``new-plugin``
template. Imports ``ganlab.model`` and below; only ``registry`` builds the plugin manager."""
