"""The lab: tooling around the library, not part of it.

- :func:`record` / :func:`read_records` (:mod:`ruvattn.lab.record`): keep a result in an executed
  notebook and read it back;
- :mod:`ruvattn.lab.experiments`: experiment files, the cached parallel / Dask runner,
  ``results.csv`` and :func:`median_table`;
- :mod:`ruvattn.lab.tables`: the ``ruvattn benchmark`` (specification targets) and
  ``ruvattn compare`` (peers) tables;
- :mod:`ruvattn.lab.timing`: timing helpers for the benchmark notebooks;
- :mod:`ruvattn.lab.cli` (with :mod:`ruvattn.lab.cli_experiment`): the ``ruvattn`` command.

``import ruvattn`` never imports this package; a notebook that records results does
``from ruvattn.lab import record``.
"""

from ruvattn.lab.experiments import (
    Experiment,
    RunReport,
    load_experiment,
    median_table,
    read_results,
    run_experiment,
)
from ruvattn.lab.record import MIME, read_records, record

__all__ = [
    "MIME",
    "Experiment",
    "RunReport",
    "load_experiment",
    "median_table",
    "read_records",
    "read_results",
    "record",
    "run_experiment",
]
