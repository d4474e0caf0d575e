"""Evaluation stage of clipscale.

``evaluation.evaluate.evaluate(cfg, run_dir, checkpoint, step)`` scores one checkpoint on the
configured suite (clip_benchmark zero-shot and retrieval, ``evaluation.probe`` linear probes,
aggregates) and writes its records; ``evaluation.checkpoint`` loads checkpoints weights-only
with clear errors; ``store`` owns the record format and reads a whole sweep's
records back (``read_records``, ``records_frame``); ``store.export`` writes the store in
the paper's CSV shape and imports the paper's results. ``python -m evaluation --help`` lists
the commands. Importing this package stays cheap (no torch).
"""
