"""The plugin contract: hooks (``hookspecs``), what plugins register (``components``, ``feature_spaces``,
``detectors``, ``experiments``), component options (``options``), the registry that collects them
(``registry``), ganlab's own hooks (``core_plugin``) and the ``new-plugin`` template (``scaffold``).
Imports ``ganlab.model`` and below; only ``registry`` builds the plugin manager."""
