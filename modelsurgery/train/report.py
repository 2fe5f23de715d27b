"""Recipe plumbing, by its old name: each concern now has its own module (kept for old imports).

- `config`: `parse_config`, a command line from a recipe's config dataclass;
- `datasets`: `Dataset`, `load_dataset`, `make_loaders` (and the one data-source rule);
- `runs`: `default_out`, `prepare_out`, `make_trainer`, `fit`, `train_baseline`;
- `results`: `TOLERANCE`, `time_to_accuracy`, `summarize`, `compare`, `format_table`,
  `write_results`, `git_revision`, `machine_info`, `finish`;
- `plots`: `plot_runs`, `plot_panels`.

Example:
    >>> from modelsurgery.train.report import load_dataset, summarize, compare, format_table
"""

from .config import parse_config
from .datasets import Dataset, load_dataset, make_loaders
from .plots import plot_panels, plot_runs
from .results import (TOLERANCE, compare, finish, format_table, git_revision, machine_info, summarize,
                      time_to_accuracy, write_results)
from .runs import default_out, fit, make_trainer, prepare_out, train_baseline

__all__ = ["TOLERANCE", "parse_config", "Dataset", "load_dataset", "make_loaders", "git_revision", "default_out",
           "prepare_out", "make_trainer", "train_baseline", "fit", "time_to_accuracy", "summarize", "compare",
           "format_table", "write_results", "plot_runs", "plot_panels", "machine_info", "finish"]
