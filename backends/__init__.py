"""Backend plugins: one folder per framework, the same module names in each.

A backend registers an entry point in the group ``aebench.backends`` that points at a
``Plugin`` (see ``aebench.plugins.plugin``); the plugin's ``load()`` imports the framework,
so a missing framework makes the backend unavailable with a reason, not a crash.
"""
