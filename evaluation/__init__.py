"""Evaluation stage of clipscale.

``evaluation.evaluate.evaluate(cfg, run_dir, checkpoint, step)`` scores one checkpoint with
clip_benchmark and writes its records; ``evaluation.store`` owns the record format and reads
a whole sweep's records back (``read_records``, ``records_frame``). Importing this package
stays cheap (no torch), so analysis code can use the store alone.
"""
