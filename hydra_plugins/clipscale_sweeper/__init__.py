"""Hydra plugin registration (Hydra only loads plugins from the ``hydra_plugins`` namespace)."""
