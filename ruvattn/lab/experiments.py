"""Experiments: a parameter grid over a papermill notebook, run in parallel, cached, tabulated.

An experiment is a small YAML file next to its notebook, ``experiments/<name>.experiment.yaml``::

    notebook: spec_targets.ipynb      # relative to this file; must have a cell tagged `parameters`
    description: one line for `ruvattn experiment list`
    parameters: {repeats: 300}        # the same for every point
    grid:                             # the cartesian product of these lists ...
      mechanism: [scaled_dot_product, flash]
      neighbours: [100, 1000]
    points:                           # ... plus these parameter sets
      - {mechanism: moe, neighbours: 1000}
    repeats: 2                        # runs of every point; run r gets seed = seed + r
    seed: 0
    seed_parameter: seed              # the notebook parameter that receives it (null: none)
    ci:                               # `--ci`: a tiny version (keys replace the ones above)
      grid: {mechanism: [flash], neighbours: [100]}
      parameters: {repeats: 20}

Each run of a point executes the notebook once with papermill. Its results are the values the
notebook recorded with :func:`ruvattn.lab.record` (read back from the executed copy). Everything
lands under ``experiments/runs/<name>/``:

- ``points/<key>.ipynb`` (the executed notebook), ``<key>.log`` (its output) and ``<key>.json``
  (parameters, status, duration, records, or the error);
- ``results.csv``: the tidy table, one row per point and repeat: the parameters, ``repeat``,
  ``seed``, ``status``, ``seconds``, ``key``, then one column per recorded scalar (nested dicts
  flattened as ``name.field``);
- ``provenance.json``: what produced the table: the library version and :func:`code_version`,
  whether it is the ``ci`` version, and when and where it was written. Each point's ``.json`` also
  says when it finished and on which machine (:func:`machine_info`), so ``ruvattn report``
  (:mod:`ruvattn.lab.report`) can stamp the numbers with where and with what they were measured.

``key`` hashes the notebook's bytes, the library's source (:func:`code_version`), the parameters,
the repeat and the seed, so a point is run again only if one of them changed; ``force=True``
reruns everything. A failed run is recorded as failed (with its error and log) and never stops
or loses the others; failed runs are retried on the next run, and so are runs whose worker died.

The cache never needs editing by hand. Every file is written whole or not at all (a temporary file,
then a rename), and the record last, after its notebook. A cached point whose record or executed
notebook is empty, truncated, not UTF-8, not JSON, not a record of that point, or a directory where
the file should be, is reported in one line (the point, the file, why) and run again; the other
cached points are kept. A corrupt ``results.csv`` is rewritten from the point records: by
:func:`run_experiment`, and by :func:`read_results` (``ruvattn experiment medians``, ``ruvattn
report``), which finds the table's points in ``provenance.json``. A wrongly typed experiment file
raises :class:`~ruvattn.errors.InvalidConfig` naming the file and the key.

Runs go to local worker processes (``workers``), or with ``scheduler="tcp://host:port"`` to a Dask
distributed cluster, one task per run. Every run sets ``NUMBA_NUM_THREADS`` so that the runs on
one machine share its cores instead of oversubscribing them.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruvattn.errors import InvalidConfig

__all__ = [
    "Experiment",
    "RunReport",
    "code_version",
    "find_experiment",
    "list_experiments",
    "load_experiment",
    "machine_info",
    "mean_table",
    "median_table",
    "read_results",
    "run_experiment",
]

SUFFIX = ".experiment.yaml"
FIXED_COLUMNS = ("repeat", "seed", "status", "seconds", "key")
_KNOWN = {"notebook", "description", "parameters", "grid", "points", "repeats", "seed", "seed_parameter", "ci"}


#: lab modules that only parse, print or write reports: a change to them cannot change a measurement
_PRESENTATION = frozenset({"lab/cli.py", "lab/cli_experiment.py", "lab/report.py", "lab/tables.py", "lab/analyze.py"})


def code_version() -> str:
    """A hash of the installed library's source files (``ruvattn`` and ``ruvattn.widgets``) that can change a
    measurement: everything but the lab's presentation modules (:data:`_PRESENTATION`)."""
    import ruvattn

    roots = [Path(ruvattn.__file__).parent]
    try:
        import ruvattn.widgets as w

        roots.append(Path(w.__file__).parent)
    except ImportError:
        pass
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.relative_to(root).as_posix() in _PRESENTATION:
                continue
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def machine_info() -> dict[str, Any]:
    """This machine: CPU model (``model name`` in ``/proc/cpuinfo``, else :func:`platform.processor`),
    logical cores, OS and Python."""
    import platform

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                    cpu = " ".join(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine() or "unknown",
        "cores": os.cpu_count() or 1,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module docstring for the format)."""

    name: str
    path: Path
    notebook: Path
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    repeats: int = 1
    seed: int = 0
    seed_parameter: str | None = "seed"
    ci: bool = False  # the file's ``ci`` overrides were applied

    @property
    def runs_dir(self) -> Path:
        return self.path.parent / "runs" / self.name

    def parameter_sets(self) -> list[dict[str, Any]]:
        """The grid's cartesian product, then the explicit points, each over the fixed parameters."""
        names = list(self.grid)
        sets = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.grid.values())]
        if not names:
            sets = []
        sets += [dict(p) for p in self.points]
        if not sets:
            sets = [{}]
        return [{**self.parameters, **s} for s in sets]

    def runs(self) -> list[dict[str, Any]]:
        """Every (parameter set, repeat) with its seed."""
        out = []
        for params in self.parameter_sets():
            for r in range(self.repeats):
                seed = self.seed + r
                full = dict(params)
                if self.seed_parameter:
                    full[self.seed_parameter] = seed
                out.append({"params": full, "repeat": r, "seed": seed, "grid": params})
        return out


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_parameters(path: Path, where: str, params: Any) -> None:
    """A mapping from notebook parameter names (Python identifiers) to values."""
    if not isinstance(params, dict):
        raise InvalidConfig(f"{path}: {where!r} must be a mapping of parameter names to values; got {params!r}.")
    for name in params:
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidConfig(f"{path}: {where!r}: a parameter name must be a Python identifier; got {name!r}.")


def _check(path: Path, raw: Any, prefix: str = "") -> dict[str, Any]:
    """``raw`` if it is a well-formed experiment mapping, else :class:`InvalidConfig` naming the file and the key
    (``prefix`` is ``"ci."`` for the ``ci`` overrides)."""
    if raw is None and not prefix:
        raise InvalidConfig(f"{path}: the experiment file is empty; it needs at least 'notebook: NAME.ipynb'.")
    if not isinstance(raw, dict):
        what = f"{prefix.rstrip('.')!r}" if prefix else "an experiment file"
        raise InvalidConfig(f"{path}: {what} must be a mapping of keys to values; got a {type(raw).__name__}.")
    unknown = sorted(str(k) for k in raw if k not in _KNOWN or (prefix and k == "ci"))
    if unknown:
        allowed = sorted(_KNOWN - ({"ci"} if prefix else set()))
        raise InvalidConfig(f"{path}: unknown key(s) {[prefix + k for k in unknown]}; allowed: {allowed}.")

    def key(name: str) -> str:
        return prefix + name

    if not prefix and "notebook" not in raw:
        raise InvalidConfig(f"{path}: 'notebook' is required (the notebook to run, relative to this file).")
    if "notebook" in raw:
        nb = raw["notebook"]
        if not isinstance(nb, str) or not nb.strip():
            raise InvalidConfig(f"{path}: {key('notebook')!r} must be a file name (a string); got {nb!r}.")
    if not isinstance(raw.get("description") or "", str):
        raise InvalidConfig(f"{path}: {key('description')!r} must be a string; got {raw['description']!r}.")
    grid = {} if raw.get("grid") is None else raw["grid"]
    if not isinstance(grid, dict):
        raise InvalidConfig(f"{path}: {key('grid')!r} must map each parameter to a non-empty list of values; "
                            f"got {grid!r}.")  # fmt: skip
    _check_parameters(path, key("grid"), grid)
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InvalidConfig(f"{path}: {key('grid')}.{name} must be a non-empty list of values; got {values!r}.")
    points = [] if raw.get("points") is None else raw["points"]
    if not isinstance(points, list):
        raise InvalidConfig(f"{path}: {key('points')!r} must be a list of parameter mappings; got {points!r}.")
    for i, point in enumerate(points):
        _check_parameters(path, f"{key('points')}[{i}]", point)
    _check_parameters(path, key("parameters"), {} if raw.get("parameters") is None else raw["parameters"])
    repeats = raw.get("repeats", 1)
    if not _is_whole(repeats) or repeats < 1:
        raise InvalidConfig(f"{path}: {key('repeats')!r} must be a whole number >= 1; got {repeats!r}.")
    seed = raw.get("seed", 0)
    if not _is_whole(seed) or seed < 0:
        raise InvalidConfig(f"{path}: {key('seed')!r} must be a whole number >= 0; got {seed!r}.")
    seed_parameter = raw.get("seed_parameter", "seed")
    if seed_parameter is not None and (not isinstance(seed_parameter, str) or not seed_parameter.isidentifier()):
        raise InvalidConfig(f"{path}: {key('seed_parameter')!r} must be a parameter name (a Python identifier) or "
                            f"null; got {seed_parameter!r}.")  # fmt: skip
    if "ci" in raw and raw["ci"] is not None:
        _check(path, raw["ci"], "ci.")
    return raw


def load_experiment(path: str | Path, *, ci: bool = False) -> Experiment:
    """Read an experiment file; ``ci=True`` applies its ``ci`` overrides.

    Any problem with the file (unreadable, not UTF-8, not YAML, a wrongly typed or unknown key, a missing
    notebook) raises :class:`~ruvattn.errors.InvalidConfig` with a one-line message naming the file and the key.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read the experiment file ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise InvalidConfig(
            f"{path}: the experiment file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidConfig(f"{path}: not valid YAML{where}: {' '.join(str(problem).split())}.") from None
    raw = _check(path, raw)
    if ci and raw.get("ci"):
        raw = {**raw, **raw["ci"]}
    notebook = (path.parent / raw["notebook"]).resolve()
    if not notebook.is_file():
        raise InvalidConfig(f"{path}: 'notebook': {raw['notebook']!r} not found next to the experiment file.")
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    return Experiment(
        name=name, path=path.resolve(), notebook=notebook, description=raw.get("description") or "",
        parameters=dict(raw.get("parameters") or {}), grid={k: list(v) for k, v in (raw.get("grid") or {}).items()},
        points=[dict(p) for p in raw.get("points") or []], repeats=raw.get("repeats", 1),
        seed=raw.get("seed", 0), seed_parameter=raw.get("seed_parameter", "seed"),
        ci=bool(ci and raw.get("ci")),
    )  # fmt: skip


def list_experiments(directory: str | Path = "experiments") -> list[Path]:
    """The experiment files in ``directory`` (:class:`~ruvattn.errors.InvalidConfig` if it is not a folder)."""
    if not Path(directory).is_dir():
        raise InvalidConfig(f"{str(directory)!r} is not a folder of experiment files (*{SUFFIX}).")
    return sorted(Path(directory).glob(f"*{SUFFIX}"))


def find_experiment(name: str, directory: str | Path = "experiments") -> Path:
    """``name`` as a path, or ``<directory>/<name>.experiment.yaml``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = Path(directory) / f"{name}{SUFFIX}"
    if candidate.is_file():
        return candidate
    known = [p.name[: -len(SUFFIX)] for p in list_experiments(directory)] if Path(directory).is_dir() else []
    raise InvalidConfig(f"experiment {name!r} not found in {str(directory)!r}; known: {known}.")


def _key(notebook_hash: str, code: str, run: dict[str, Any]) -> str:
    blob = json.dumps(
        {"notebook": notebook_hash, "code": code, "params": run["params"], "repeat": run["repeat"]},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader (or a run killed halfway)
    sees the old file or the new one, never a truncated one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one run (in a worker process or a Dask task) and write its ``.json`` record."""
    import papermill

    from ruvattn.lab.record import read_records

    out_nb, log_path, json_path = (Path(task[k]) for k in ("out_nb", "log", "json"))
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_NUM_THREADS"] = str(task["numba_threads"])  # inherited by the kernel
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    start = time.perf_counter()
    result = {k: task[k] for k in ("key", "params", "grid", "repeat", "seed")}
    try:
        with log_path.open("w", encoding="utf-8") as log:
            saved = os.dup(2)  # the kernel process inherits fd 2: its own messages go to the log too
            os.dup2(log.fileno(), 2)
            try:
                for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                    try:
                        papermill.execute_notebook(
                            task["notebook"], str(out_nb), parameters=task["params"], kernel_name="python3",
                            cwd=str(Path(task["notebook"]).parent), progress_bar=False, log_output=True,
                            stdout_file=log, stderr_file=log,
                        )  # fmt: skip
                        break
                    except RuntimeError as exc:
                        if not _kernel_start_failed(exc) or attempt == KERNEL_START_ATTEMPTS:
                            raise
                        # no cell ran: the kernel never came up (e.g. two workers raced for a port)
                        log.write(f"\n[ruvattn] kernel start failed ({exc}); attempt {attempt + 1}\n")
                        log.flush()
                        time.sleep(0.5 * attempt + random.random())
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        result.update(status="ok", records=read_records(out_nb))
    except Exception as exc:  # a failed point is data, not a crash of the whole experiment
        result.update(status="failed", error=_error_text(exc), records={})
    result["seconds"] = round(time.perf_counter() - start, 3)
    result.update(finished=_now(), machine=machine_info(), code=task.get("code"))
    # written last, and whole or not at all: a record on disk means the notebook next to it is complete
    _write_atomic(json_path, json.dumps(result, default=str, indent=1))
    return result


#: how often a point's kernel is started when it dies before running a cell
KERNEL_START_ATTEMPTS = 3
_KERNEL_START_ERRORS = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def _kernel_start_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is jupyter_client's report that the kernel never answered (no cell of the notebook ran:
    starting again is safe); a cell's own error is papermill's ``PapermillExecutionError`` and is not this."""
    return isinstance(exc, RuntimeError) and str(exc).startswith(_KERNEL_START_ERRORS)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[-2000:]}".rstrip(": ") or type(exc).__name__


@dataclass
class RunReport:
    """What :func:`run_experiment` did: runs executed, taken from the cache, and failed; ``repaired``: one line
    per corrupt cache entry found (and recomputed or rewritten)."""

    experiment: Experiment
    executed: int
    cached: int
    failed: list[dict[str, Any]]
    table: Path
    rows: list[dict[str, Any]]
    repaired: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.experiment.name}: {self.executed} run(s) executed, {self.cached} from the cache, "
            f"{len(self.failed)} failed; table: {self.table}"
            + (f"; {len(self.repaired)} corrupt cache entr(ies) replaced" if self.repaired else "")
        ]
        for f in self.failed:
            log = self.experiment.runs_dir / "points" / f"{f['key']}.log"
            last = (str(f.get("error") or "").strip().splitlines() or ["unknown error"])[-1]
            lines.append(f"  FAILED {f['params']} (repeat {f['repeat']}): {last}  log: {log}")
        return "\n".join(lines)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out[prefix] = value
    else:
        out[prefix] = json.dumps(value)


def _row(result: dict[str, Any], grid_names: list[str]) -> dict[str, Any]:
    row = {name: result["grid"].get(name) for name in grid_names}
    row.update(
        repeat=result["repeat"], seed=result["seed"], status=result["status"], seconds=result["seconds"],
        key=result["key"],
    )  # fmt: skip
    for name, value in result.get("records", {}).items():
        _flatten(name, value, row)
    return row


def _table_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text: a header of every column in order of first appearance, then one line per row."""
    import io

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# -- the cache: what a point left behind, read back with every way it can be broken named ----------------

#: the fields of a point's ``.json`` record that the runner reads back, with their types
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str, "params": dict, "grid": dict, "repeat": int, "seed": int, "status": str,
    "seconds": (int, float), "records": dict,
}  # fmt: skip


def _notify_stderr(message: str) -> None:
    import sys

    print(f"ruvattn: {message}", file=sys.stderr)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)``: why ``path`` holds no JSON value (``"is missing"``, ``"is empty"``,
    ``"is a directory, not a file"``, ``"is not UTF-8 ..."``, ``"is truncated JSON ..."``, ...)."""
    if path.is_dir():
        return None, "is a directory, not a file"
    if not path.exists():
        return None, "is missing"
    if not path.is_file():
        return None, "is not a regular file"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not data.strip():
        return None, "is empty" if not data else "holds only white space"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "is not valid JSON (nested too deeply)"
    except ValueError as exc:
        cut = isinstance(exc, json.JSONDecodeError) and (
            exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")  # a string runs to the end
        )
        if cut:
            return None, f"is truncated JSON (it ends after {len(data)} bytes, inside a value)"
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return None, f"is not valid JSON ({msg}{where})"


def _record_problem(record: Any, key: str) -> str | None:
    """Why ``record`` (a parsed ``.json``) is not the record of point ``key``, or ``None``."""
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not a point record"
    for name, kind in _RECORD_FIELDS.items():
        if name not in record:
            return f"is not a complete point record (no {name!r})"
        value = record[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"is not a valid point record ({name!r} is {value!r})"
    if record["key"] != key:
        return f"holds the record of another point (key {record['key']!r})"
    if record["status"] not in ("ok", "failed"):
        return f"is not a valid point record (status {record['status']!r})"
    return None


def _cached_point(points_dir: Path, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a usable cached point; ``(None, None)`` for none; ``(None, "<file> <why>")`` for a
    corrupt one. A cached ``ok`` point is its ``.json`` record and the executed ``.ipynb`` holding the same records."""
    from ruvattn.lab.record import records_in

    path = points_dir / f"{key}.json"
    if not path.exists() and not path.is_symlink():
        return None, None
    record, why = _read_json(path)
    if why is None:
        why = _record_problem(record, key)
    if why is not None:
        return None, f"{path.name} {why}"
    if record["status"] != "ok":
        return record, None
    nb_path = points_dir / f"{key}.ipynb"
    nb, why = _read_json(nb_path)
    if why is None and not (isinstance(nb, dict) and isinstance(nb.get("cells"), list)):
        why = "is not a notebook (no list of cells)"
    if why is None and records_in(nb) != record["records"]:
        why = f"does not hold the values recorded in {path.name}"
    if why is not None:
        return None, f"{nb_path.name} (the executed notebook) {why}"
    return record, None


def _remove(path: Path) -> None:
    """Remove a file or a directory tree at ``path`` (whatever is there)."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _make_dirs(exp: Experiment, notify: Any) -> Path:
    """``runs/<name>/points/``, replacing a file found where one of these folders should be."""
    points = exp.runs_dir / "points"
    for d in (exp.runs_dir.parent, exp.runs_dir, points):
        if d.exists() and not d.is_dir():
            notify(f"experiment {exp.name}: {d} is a file where the cache's folder should be; replaced by a folder")
            _remove(d)
    points.mkdir(parents=True, exist_ok=True)
    return points


def _failed_result(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The result of a run whose worker crashed (it wrote no record: the run is retried next time)."""
    result = {k: task[k] for k in ("key", "params", "grid", "repeat", "seed")}
    result.update(status="failed", error=f"the worker running it failed: {_error_text(exc)}", records={}, seconds=0.0)
    return result


def _local(tasks: list[dict[str, Any]], workers: int) -> Iterator[dict[str, Any]]:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_point, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:  # a worker died (BrokenProcessPool) or raised: that run failed, not all
                yield _failed_result(futures[fut], exc)


def _dask_client(scheduler: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise InvalidConfig("--scheduler needs Dask: pip install 'ruvattn[experiments]'") from None
    try:
        client = Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise InvalidConfig(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc}).") from None
    workers = client.scheduler_info()["workers"].values()
    if not workers:
        client.close()
        raise InvalidConfig(f"--scheduler {scheduler}: the cluster has no workers.")
    return client


def _dask(tasks: list[dict[str, Any]], client: Any) -> Iterator[dict[str, Any]]:
    from distributed import as_completed as dask_completed

    with client:
        per_host: dict[str, int] = {}
        for w in client.scheduler_info()["workers"].values():
            per_host[w["host"]] = per_host.get(w["host"], 0) + int(w["nthreads"])
        # runs on one host share its cores: NUMBA_NUM_THREADS = cores / concurrent runs there
        concurrent = max(per_host.values(), default=1)
        cores = os.cpu_count() or 1
        for t in tasks:
            t["numba_threads"] = max(1, cores // concurrent)
        futures = client.map(run_point, tasks, pure=False)
        by_key = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for fut in dask_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:
                yield _failed_result(by_key[fut.key], exc)


def run_experiment(
    experiment: str | Path | Experiment,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    ci: bool = False,
    force: bool = False,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
) -> RunReport:
    """Run every point of ``experiment`` not already in the cache; write ``results.csv``.

    ``workers``: local worker processes (default: as many as cores, at most the runs to do);
    ``scheduler``: a Dask scheduler address instead; ``ci``: the file's tiny ``ci`` version;
    ``force``: ignore the cache.

    A corrupt cached point (its ``.json`` record or its executed notebook empty, truncated, not UTF-8, not
    JSON, not a record, or a directory where the file should be) is reported in one line through ``notify``
    (default: stderr), and only that point is run again; the other cached points are kept as they are.
    """
    notify = notify or _notify_stderr
    repaired: list[str] = []

    def tell(message: str) -> None:
        repaired.append(message)
        notify(message)

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment, ci=ci)
    points_dir = _make_dirs(exp, tell)
    try:
        nb_hash = hashlib.sha256(exp.notebook.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise InvalidConfig(f"{exp.path}: cannot read the notebook {str(exp.notebook)!r} ({exc.strerror}).") from None
    code = code_version()
    results: dict[str, dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    for run in exp.runs():
        key = _key(nb_hash, code, run)
        files = {"json": points_dir / f"{key}.json", "out_nb": points_dir / f"{key}.ipynb",
                 "log": points_dir / f"{key}.log"}  # fmt: skip
        where = files["json"].parent.relative_to(exp.path.parent)
        problem = None
        if not force:
            old, problem = _cached_point(points_dir, key)
            if old is not None and old["status"] == "ok":
                results[key] = old
                continue
            if problem is not None:
                tell(f"experiment {exp.name}: cached point {run['params']} (repeat {run['repeat']}): "
                     f"{where}/{problem}; running it again")  # fmt: skip
        for path in files.values():  # the run writes these three files: a directory in the way goes
            if path.is_dir():
                if not (problem or "").startswith(path.name):
                    tell(f"experiment {exp.name}: point {run['params']} (repeat {run['repeat']}): {where}/{path.name} "
                         "is a directory where the run writes a file; removed")  # fmt: skip
                _remove(path)
        todo.append({**run, "key": key, "notebook": str(exp.notebook), "code": code,
                     **{what: str(path) for what, path in files.items()}})  # fmt: skip
    cached_count = len(results)
    if todo:
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        for t in todo:
            t["numba_threads"] = max(1, (os.cpu_count() or 1) // n_workers)
        # a scheduler is reached before the progress bar starts: an unreachable one is one line, no bar
        stream: Iterable[dict[str, Any]] = (
            _dask(todo, _dask_client(scheduler)) if scheduler else _local(todo, n_workers)
        )
        if progress:
            from tqdm import tqdm

            stream = tqdm(stream, total=len(todo), desc=f"experiment {exp.name}", unit="run", file=None)
        for result in stream:
            results[result["key"]] = result
    grid_names = list(dict.fromkeys(k for run in exp.runs() for k in run["grid"]))
    order = {(_key(nb_hash, code, run)): i for i, run in enumerate(exp.runs())}
    ordered = sorted(results.values(), key=lambda r: order[r["key"]])
    rows = [_row(r, grid_names) for r in ordered]
    table = exp.runs_dir / "results.csv"
    from ruvattn import __version__

    provenance = {
        "experiment": exp.name, "ci": exp.ci, "ruvattn": __version__, "code_version": code,
        "notebook_sha256": nb_hash, "written": _now(), "machine": machine_info(),
        "runner": f"dask {scheduler}" if scheduler else "local processes",
        "keys": [r["key"] for r in ordered],  # the points of results.csv, in its order: what rebuilds it
    }  # fmt: skip
    for path in (table, exp.runs_dir / "provenance.json"):
        if path.is_dir():
            tell(f"experiment {exp.name}: {path} is a directory, not a file; replaced")
            _remove(path)
    _write_atomic(table, _table_text(rows))
    _write_atomic(exp.runs_dir / "provenance.json", json.dumps(provenance, indent=1))
    failed = [r for r in results.values() if r["status"] != "ok"]
    return RunReport(exp, executed=len(todo), cached=cached_count, failed=failed, table=table, rows=rows,
                     repaired=repaired)  # fmt: skip


def _table_keys(exp: Experiment) -> list[str]:
    """The points of ``exp``'s ``results.csv``: the keys its ``provenance.json`` lists; for a provenance
    without them, the keys of its code and notebook hashes; without a readable provenance, the current ones."""
    meta, why = _read_json(exp.runs_dir / "provenance.json")
    if why is None and isinstance(meta, dict):
        keys = meta.get("keys")
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            return keys
        if isinstance(meta.get("code_version"), str) and isinstance(meta.get("notebook_sha256"), str):
            runs = (load_experiment(exp.path, ci=True) if meta.get("ci") else exp).runs()
            return [_key(meta["notebook_sha256"], meta["code_version"], run) for run in runs]
    try:
        nb_hash = hashlib.sha256(exp.notebook.read_bytes()).hexdigest()[:16]
    except OSError:
        return []
    code = code_version()
    return [_key(nb_hash, code, run) for run in exp.runs()]


def rebuild_results(experiment: str | Path | Experiment) -> list[dict[str, Any]]:
    """Write ``results.csv`` again from the cached point records (see :func:`_table_keys` for which points)
    and return its rows; :class:`~ruvattn.errors.InvalidConfig` when no record is left to build it from."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    points_dir = exp.runs_dir / "points"
    records = []
    for key in _table_keys(exp):
        record, why = _read_json(points_dir / f"{key}.json")
        if why is None and _record_problem(record, key) is None:
            records.append(record)
    table = exp.runs_dir / "results.csv"
    if not records:
        raise InvalidConfig(
            f"experiment {exp.name!r}: {table} cannot be rebuilt: no readable point record is cached; "
            f"run `ruvattn experiment run {exp.name}` again."
        )
    grid_names = list(dict.fromkeys(k for r in records for k in r["grid"]))
    rows = [_row(r, grid_names) for r in records]
    if table.is_dir():
        _remove(table)
    _write_atomic(table, _table_text(rows))
    return rows


def _table_problem(text_rows: list[list[str]]) -> str | None:
    """Why parsed CSV rows are not a results table written by :func:`run_experiment`, or ``None``."""
    if not text_rows:
        return "is empty"
    header, body = text_rows[0], text_rows[1:]
    if len(set(header)) != len(header) or [c for c in header if c in FIXED_COLUMNS] != list(FIXED_COLUMNS):
        return "has no valid header (the columns repeat, seed, status, seconds, key in this order)"
    if not body:
        return "has a header but no rows"
    at = {name: header.index(name) for name in FIXED_COLUMNS}
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            return f"is cut or malformed at line {n} ({len(row)} fields, the header has {len(header)})"
        key = row[at["key"]]
        if len(key) != 20 or any(c not in "0123456789abcdef" for c in key):
            return f"has no valid key at line {n}"
        if row[at["status"]] not in ("ok", "failed") or not row[at["repeat"]].isdigit():
            return f"has no valid status or repeat at line {n}"
    return None


def read_results(
    experiment: str | Path | Experiment, *, notify: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """The rows of an experiment's ``results.csv`` (numbers parsed).

    A corrupt table (empty, cut, not UTF-8, not CSV, not the runner's columns, a directory) is rebuilt from
    the cached point records (:func:`rebuild_results`), and ``notify`` (default: stderr) gets one line
    saying so.
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    table = exp.runs_dir / "results.csv"
    if not table.exists():
        raise InvalidConfig(f"experiment {exp.name!r} has no results yet ({table}); run it first.")
    problem = None
    if table.is_dir():
        problem = "is a directory, not a file"
    else:
        try:
            text = table.read_bytes().decode("utf-8")
            text_rows = list(csv.reader(text.splitlines()))
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        except UnicodeDecodeError as exc:
            problem = f"is not UTF-8 text (offset {exc.start})"
        except csv.Error as exc:
            problem = f"is not valid CSV ({exc})"
        else:
            problem = _table_problem(text_rows)
    if problem is None:
        header, body = text_rows[0], text_rows[1:]
        return [{k: _parse(v) for k, v in zip(header, row, strict=True)} for row in body]
    rows = rebuild_results(exp)
    (notify or _notify_stderr)(
        f"experiment {exp.name}: {table} {problem}; rebuilt from {len(rows)} cached point record(s)"
    )
    return rows


def _parse(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def median_table(
    experiment: str | Path | Experiment, *, metrics: list[str] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """A table with one row per parameter set: the parameters, ``ok/total`` runs, and the median of each
    metric over the repeats. ``metrics`` defaults to every numeric recorded column."""
    import statistics

    return _stat_table(experiment, metrics, "median_table", lambda xs: statistics.median(xs))


def mean_table(
    experiment: str | Path | Experiment, *, metrics: list[str] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """As :func:`median_table`, with ``"mean ± std (n)"`` of each metric over the repeats (sample standard
    deviation; what a paper reports over seeds)."""
    import statistics

    def mean_std(xs: list[float]) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.fmean(xs):.4g} ± {sd:.2g} ({len(xs)})"

    return _stat_table(experiment, metrics, "mean_table", mean_std)


def _stat_table(
    experiment: str | Path | Experiment, metrics: list[str] | None, op: str, stat: Callable[[list[float]], Any]
) -> tuple[list[str], list[list[Any]]]:
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    rows = read_results(exp)
    if not rows:
        raise InvalidConfig(f"{op}: experiment {exp.name!r} has an empty results table.")
    columns = list(rows[0])
    params = columns[: columns.index("repeat")]
    recorded = columns[columns.index("key") + 1 :]
    if metrics is None:
        metrics = [c for c in recorded if all(r[c] is None or isinstance(r[c], (int, float)) for r in rows)]
    unknown = [m for m in metrics if m not in recorded]
    if unknown:
        raise InvalidConfig(f"{op}: unknown metric(s) {unknown}; recorded: {recorded}.")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[p] for p in params), []).append(r)
    body = []
    for combo, members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        values = []
        for metric in metrics:
            xs = [m[metric] for m in ok if isinstance(m[metric], (int, float)) and not isinstance(m[metric], bool)]
            values.append(stat(xs) if xs else None)
        body.append([*combo, f"{len(ok)}/{len(members)}", *values])
    return [*params, "ok runs", *metrics], body
