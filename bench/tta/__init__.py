"""The time-to-accuracy frontier's parts; `bench.time_to_accuracy` is its command line.

Levels, each importing only from those above it in this list: `plan` (settings, runs, configs and
cache keys), `cost` (the step table, each run's cost, the estimate), `train` (one run), `summary`
(points, verdicts, plot, text), `sweep` (train what is not cached, rewrite the summary).
"""

import os

# OpenMP threads that sleep at barriers instead of spinning: on a machine shared with other jobs a
# spinning thread steals its partner's core. Set here, before any of the parts loads torch; an
# explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
