"""The shared base every stage builds on: the typed config schema and run identity, run states
and status-log events, atomic file writes, step arithmetic, the paper's reference tables and
labels, model registration, and the fixed-width tables the commands print.

Imports run one way (``tests/test_layers.py`` checks it): ``core`` imports no other project
package; ``synthetic``, ``training``, ``store``, ``evaluation`` and ``analysis`` import ``core``
(and only the earlier stages); ``launcher`` and ``hydra_plugins`` sit on top.
"""

import os

# Every entry point imports core before torch starts OpenMP: idle OpenMP threads that spin
# stall small CPU models many times over as soon as anything else (a data-loader worker, another
# job) shares the cores. One place sets it; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
