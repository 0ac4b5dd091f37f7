"""Built-in plugins, grouped by kind: ``models/``, ``methods/``, ``metrics/`` (datasets live in
``xbench.datasets``). A module whose name starts with ``_`` is a shared helper, never a plugin.

They register exactly as a third-party package does: ``xbench.registry.BUILTIN_PLUGINS`` lists every
built-in plugin module, and the registry registers them with pluggy before the ``xbench`` entry points.
"""
