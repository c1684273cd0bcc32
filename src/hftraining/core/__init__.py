"""Core: errors, the name registry, the typed config tree, JSON and formatting helpers. Imports nothing else of the package."""
