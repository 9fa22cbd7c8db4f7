"""One benchmark run's state and its recorder: what was measured, how it is written, what is said.

``BenchSession`` is the one state object of a ``pytest benchmarks`` run (``benchmarks/conftest.py``
creates it and only wires pytest's hooks to it). Every row goes through ``record``: the machine's
columns are added, the noise guard's reading and any flag attached, the row appended to its CSV once,
the moment it is measured (``dinat_timm.results.writer``), kept in memory, and a progress line queued.
The CSV is the run's output, never read back: the progress lines and the end-of-run summary (where the
rows are, which were flagged and why, what did not run) come from the rows held here, with the flags
that depend on other rows (a training step faster than its inference) derived as boards derive them.
"""
from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import guard
from ..results.tables import join_flags
from .options import BenchOptions

# The committed rows of earlier runs (for the reference-model check) and, under ``runs/``, each run's own
# directory: relative to the working directory (the checkout's root, where the README runs the suite).
RESULTS = Path("results")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


@dataclass
class Measurement:
    """A timed benchmark: its median round (seconds) and the noise guard's reading of it."""

    seconds: float
    outside_load: Optional[float]
    steal: Optional[float]
    spread: Optional[float]
    flag: str
    samples: Tuple[float, ...] = ()  # every timed round, seconds

    def columns(self) -> dict:
        """The guard's reading, and the rounds themselves: ``compare`` judges two rows by their samples."""
        return dict(outside_load=self.outside_load, steal=self.steal, spread=self.spread, rounds=len(self.samples),
                    samples_ms=" ".join(f"{s * 1e3:.6g}" for s in self.samples) or None)


def measure(benchmark, fn: Callable[[], None], device: str, rounds: int, warmup: int,
            between: Optional[Callable[[], None]] = None) -> Measurement:
    """pytest-benchmark's pedantic mode with a device sync inside the timed call, under the noise guard.

    ``between`` (untimed by pytest-benchmark) runs before every round, warm-up included: a
    yardstick timed there alternates with ``fn`` round by round, so a ratio of the two is
    immune to the machine's drift during the test.
    """

    def timed():
        fn()
        sync(device)

    def setup():
        if between is not None:
            sync(device)
            between()
            sync(device)

    with guard.LoadMeter() as meter:
        benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    reading, spread = meter.reading, guard.spread(benchmark.stats.stats.data)

    def rounded(x):
        return None if x is None else round(x, 3)

    return Measurement(benchmark.stats.stats.median, rounded(reading.outside_load), rounded(reading.steal),
                       rounded(spread), guard.noise_flag(reading, spread), tuple(benchmark.stats.stats.data))


@dataclass
class BenchSession:
    options: BenchOptions
    run_id: str
    started: float = field(default_factory=time.perf_counter)
    written: Dict[Path, List[dict]] = field(default_factory=dict)  # CSV -> the rows this run wrote there
    to_run: List[Tuple] = field(default_factory=list)  # the timing group of each collected test, in order
    done: int = 0
    seconds_by_group: Dict[Tuple, List[float]] = field(default_factory=lambda: defaultdict(list))
    pending: List[str] = field(default_factory=list)  # progress lines, printed when the test ends
    left_out: Dict[Tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (what, why) -> count
    boards: dict = field(default_factory=dict)
    boards_problem: str = ""
    unwritten: List[Tuple[Path, str, dict]] = field(default_factory=list)  # (CSV, why, row): printed at the end

    @property
    def device(self) -> str:
        return self.options.get("device")

    @property
    def results_dir(self) -> Path:
        return Path(self.options.get("results-dir"))

    # -- writing rows ----------------------------------------------------------------------------------

    def _complete(self, columns: dict) -> dict:
        """A row's own columns, then the machine's, the run and the time."""
        from .environment import environment

        row = {**columns, **environment(self.device), "run_id": self.run_id}
        row.setdefault("status", "ok")
        row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        return row

    def _append(self, csv_name: str, *rows: dict) -> None:
        """Append to this run's CSV; a row that cannot be written is kept and printed at the end, never lost."""
        from ..results.writer import CsvWriteError, append_rows

        path = self.results_dir / csv_name
        try:
            append_rows(path, list(rows))
        except (CsvWriteError, OSError) as e:
            self.unwritten += [(path, str(e).splitlines()[0], row) for row in rows]
            return
        self.written.setdefault(path, []).extend(rows)

    @property
    def rows_written(self) -> int:
        return sum(len(rows) for rows in self.written.values())

    def record_detail(self, csv_name: str, rows: List[dict]) -> None:
        """Append the lines that detail a measured row (a memory breakdown) together, without a progress line."""
        if rows:
            self._append(csv_name, *(self._complete(row) for row in rows))

    def record(self, csv_name: str, columns: dict, measured: Optional[Measurement] = None, flag: str = "") -> dict:
        """Append a measured row to ``csv_name`` in this run's directory, with the guard's reading and its
        own flags (noise, a suspect reference model, the caller's), and queue its progress line."""
        from .steps import is_dinat_model

        row = self._complete(columns)
        flags = [measured.flag if measured is not None else "", flag]
        if measured is not None:
            row.update(measured.columns())
        if row.get("suite") == "throughput" and not is_dinat_model(row["model"]):
            mode = "infer" if row.get("infer_samples_per_sec") is not None else "train"
            flags.append(guard.reference_flag(row[f"{mode}_samples_per_sec"], self._committed_speeds(row, mode)))
        row["flag"] = join_flags(*flags)
        self._append(csv_name, row)
        self.progress(row, self._flags_of(self.results_dir / csv_name, row))
        return row

    def record_failure(self, csv_name: str, columns: dict, error: str, out_of_memory: bool) -> None:
        self._append(csv_name, self._complete({**columns, "status": "oom" if out_of_memory else "failed",
                                               "error": error[:500]}))

    def _flags_of(self, path: Path, row: dict) -> str:
        """``row``'s flags as boards and compare read them: its own, and those derived from the other rows
        this run wrote to the same CSV."""
        import pandas as pd

        from ..results.tables import flags

        rows = self.written.get(path, [])
        if not rows or rows[-1] is not row:  # not written: nothing to read it against
            return row.get("flag", "")
        return flags(pd.DataFrame(rows)).iloc[-1]

    def _committed_speeds(self, row: dict, mode: str) -> list:
        """This configuration's images/s in the committed rows (not this run's), same device, unflagged."""
        from ..results.tables import unflagged
        from ..results.writer import read_csv

        table = read_csv(RESULTS / "throughput.csv")
        column = f"{mode}_samples_per_sec"
        if table.empty or column not in table or "device" not in table:
            return []
        table = unflagged(table)
        match = table[column].notna() & (table["device"] == row["device"]) & (table["status"].fillna("ok") == "ok")
        for key in ("model", "dtype", "channels_last", "compile", f"{mode}_batch_size", f"{mode}_img_size"):
            if key in table and row.get(key) is not None:
                match &= table[key] == row[key]
        return table.loc[match, column].tolist()

    # -- progress -----------------------------------------------------------------------------------------

    def test_done(self, group: Tuple, seconds: float, ran: bool) -> None:
        self.done += 1
        if ran:
            self.seconds_by_group[group].append(seconds)

    def estimate_left(self) -> str:
        """Time left, from what tests of the same suite, model and mode took so far; the tests ahead
        whose suite has not run a test yet are counted, not guessed."""
        ahead = self.to_run[self.done + 1:]
        by_suite = defaultdict(list)
        for group, times in self.seconds_by_group.items():
            by_suite[group[0]] += times
        seconds, unknown = 0.0, defaultdict(int)
        for group in ahead:
            times = self.seconds_by_group.get(group) or by_suite.get(group[0])
            if times:
                seconds += statistics.median(times)
            else:
                unknown[group[0]] += 1
        text = f"~{clock(seconds)} left"
        if unknown:
            text += " + " + ", ".join(f"{n} {suite} not yet timed" for suite, n in unknown.items())
        return text

    def progress(self, row: dict, flag: str = "") -> None:
        """Queue one readable line per measured row: what, the figure, its flags, elapsed, an estimate of what
        is left."""
        done = self.done + 1
        elapsed = time.perf_counter() - self.started
        what = " ".join(str(row[k]) for k in ("suite", "model", "backend", "mode", "dtype") if row.get(k) not in (None, ""))
        if "map_size" in row:
            what += f" {row['map_size']}² d{row['dilation']}"
        if row.get("suite") == "scaling":
            what += f" {row['img_size']}px"
        flag = f"  [flagged: {flag}]" if flag else ""
        self.pending.append(f"[{done}/{len(self.to_run)}] {what}: {figure(row)}{flag}  "
                            f"({clock(elapsed)} elapsed, {self.estimate_left()})")

    def take_progress(self) -> List[str]:
        lines, self.pending = self.pending, []
        return lines

    # -- end of run ----------------------------------------------------------------------------------------

    def flagged_rows(self) -> List[str]:
        """Every flagged row this run wrote, with every reason boards and compare see (its own flags, and
        'impossible' where another row of the run contradicts it)."""
        import pandas as pd

        from ..results.compare import label_of
        from ..results.tables import flags

        lines = []
        for path, rows in self.written.items():
            for row, why in zip(rows, flags(pd.DataFrame(rows))):
                if why:
                    lines.append(f"{path.name}: {label_of(row)}: {why}")
        return lines

    def build_boards(self) -> None:
        from ..results.boards import BoardsRefused, build_boards

        if not self.rows_written:
            return
        try:
            self.boards = build_boards(self.results_dir)
        except BoardsRefused as e:
            self.boards_problem = "; ".join(e.problems)

    def summary(self) -> List[Tuple[str, str]]:
        """(line, colour) pairs for the end of the run."""
        lines = []
        for (what, why), count in sorted(self.left_out.items()):
            lines.append((f"{count} × {what} did not run: {why}", ""))
        if self.rows_written:
            lines.append((f"rows of this run: {self.results_dir}/ ({self.rows_written} rows; boards: "
                          f"{', '.join(sorted(p.name for p in self.boards.values())) or 'none'})", ""))
            if self.boards_problem:
                lines.append((f"boards not rebuilt: {self.boards_problem}", "red"))
        for path, why, row in self.unwritten:
            lines.append((f"NOT WRITTEN to {path} ({why}); the measured row: {json.dumps(row, default=str)}", "red"))
        flagged = self.flagged_rows() if self.rows_written else []
        if flagged:
            lines.append((f"WARNING: {len(flagged)} row(s) flagged, left out of the boards:", "yellow"))
            lines += [("  " + line, "yellow") for line in flagged]
            lines.append(("  A busy or noisy machine makes DiNAT rows read several times too slow: re-run on an idle "
                          f"one (thresholds: outside load {guard.OUTSIDE_LOAD_LIMIT}, spread {guard.SPREAD_LIMIT}).",
                          "yellow"))
        return lines


def figure(row: dict) -> str:
    """The measured figure of a row, as the progress line shows it."""
    if row.get("suite") == "accuracy" and row.get("top1") is not None:
        return f"top-1 {row['top1']:.2f}% ({row.get('what', 'accuracy')})"
    for column, fmt in (("infer_samples_per_sec", "{:.4g} img/s"), ("train_samples_per_sec", "{:.4g} img/s (train)"),
                        ("samples_per_sec", "{:.4g} img/s"), ("peak_mem_mb", "{:.1f} MB")):
        if row.get(column) is not None:
            text = fmt.format(row[column])
            if column == "samples_per_sec" and row.get("peak_mem_mb") is not None:
                text += f", {row['peak_mem_mb']:.0f} MB"
            return text
    if row.get("median_ms") is not None:
        return f"{row['median_ms']:.3g} ms ({row.get('ratio_vs_windowed', float('nan')):.2f}x window attention)"
    return "done"


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
