"""Training stage: ``training.train.train(cfg, run_dir)`` trains one grid point with open_clip's
recipe; ``synthetic`` generates the embedded default's data; ``core.atomic`` holds the
atomic writes every stage uses. The package itself imports nothing heavy, so light modules stay
cheap to import on a login node.
"""
