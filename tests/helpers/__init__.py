"""Helpers the tests share (no test file imports another): ``data`` writes small datasets,
``procs`` spawns child Pythons, ``training`` and ``evaluation`` build configs and fixtures of
their stage (composed through Hydra, as the app does)."""
