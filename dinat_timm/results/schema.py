"""Every column a results CSV can hold, declared once: its type, unit, which suites write it, and what it
is to the rest of the package (part of what identifies a configuration, the machine it ran on, a measured
figure, a note on the row, or a figure the boards derive).

The writer orders columns and refuses undeclared ones from here; validation reads the types and bounds;
``tables`` the identifying columns; ``compare`` the metrics and which way is better; the boards and
timm's results files their columns. Adding a column means adding one line below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

SUITES = ("throughput", "memory", "memory_breakdown", "accuracy", "op", "scaling")
ALL = SUITES
SPEED = ("throughput", "op", "scaling")  # suites whose rows keep their timed rounds

# What a column is to the package.
CONFIG = "config"  # describes the configuration measured
MACHINE = "machine"  # where and with what it was measured
MEASURE = "measure"  # a measured figure
NOTE = "note"  # about the row: its status, flags, run, time
BOARD = "board"  # derived by the boards (leaderboard_*.csv), never written by a suite
TIMM = "timm"  # only in timm's results files (results-*.csv)
BENCHMARK_JSON = "benchmark_json"  # the ``write`` command's rows from pytest-benchmark's JSON


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "text", "int", "float", "bool01" (0 or 1)
    unit: str  # "" when the figure has none
    suites: Tuple[str, ...]
    role: str
    key: bool = False  # part of what tells one measurement from another (with ``model``)
    lead: bool = False  # placed first in a CSV, in this order, as a timm user reads them
    better: str = ""  # "higher" / "lower": a metric ``compare`` judges
    bound: str = ""  # "positive" (> 0) or "non-negative" (>= 0), at most CEILING
    headline: bool = False  # an ok row of its suites needs this figure (or another headline one)
    timm_file: bool = False  # a column of timm's results files (results-imagenet.csv …), in this order
    rounds_of: bool = False  # the figure a row's rounds (samples_ms) are the times of: their median, in ms
    doc: str = ""

    @property
    def numeric(self) -> bool:
        return self.type in ("int", "float", "bool01")


def _c(name, type_, unit, suites, role, doc="", **kw) -> Column:
    return Column(name, type_, unit, tuple(suites), role, doc=doc, **kw)


COLUMNS: Tuple[Column, ...] = (
    # -- first in every CSV, in timm's order where timm has them ---------------------------------------------------
    _c("suite", "text", "", ALL, CONFIG, "which suite wrote the row", key=True, lead=True),
    _c("status", "text", "", ALL, NOTE, "ok, failed or oom", lead=True),
    _c("model", "text", "", ("throughput", "memory", "memory_breakdown", "accuracy", "scaling"), CONFIG,
       "timm model name", key=True, lead=True, timm_file=True),
    _c("img_size", "int", "px", ("memory", "memory_breakdown", "accuracy", "scaling"), CONFIG, "input side",
       key=True, lead=True, timm_file=True),
    _c("top1", "float", "%", ("accuracy",), MEASURE, "compared in points (--max-top1-drop)", lead=True, headline=True,
       timm_file=True),
    _c("top1_err", "float", "%", ("accuracy",), MEASURE, lead=True, timm_file=True),
    _c("top5", "float", "%", ("accuracy",), MEASURE, lead=True, timm_file=True),
    _c("top5_err", "float", "%", ("accuracy",), MEASURE, lead=True, timm_file=True),
    _c("infer_img_size", "int", "px", ("throughput",), CONFIG, key=True, lead=True),
    _c("infer_batch_size", "int", "images", ("throughput",), CONFIG, key=True, lead=True),
    _c("infer_samples_per_sec", "float", "img/s", ("throughput",), MEASURE, better="higher", bound="positive",
       lead=True, headline=True),
    _c("infer_step_time", "float", "ms", ("throughput",), MEASURE, better="lower", bound="positive", lead=True,
       rounds_of=True),
    _c("train_img_size", "int", "px", ("throughput",), CONFIG, key=True, lead=True),
    _c("train_batch_size", "int", "images", ("throughput",), CONFIG, key=True, lead=True),
    _c("train_samples_per_sec", "float", "img/s", ("throughput",), MEASURE, better="higher", bound="positive",
       lead=True, headline=True),
    _c("train_step_time", "float", "ms", ("throughput",), MEASURE, better="lower", bound="positive", lead=True,
       rounds_of=True),
    _c("peak_mem_mb", "float", "MB", ("memory", "memory_breakdown", "scaling"), MEASURE, bound="non-negative",
       lead=True, headline=True, doc="bytes alive at a step's peak beyond those alive before it"),
    _c("param_count", "float", "M", ("throughput", "accuracy"), MEASURE, lead=True, timm_file=True),
    _c("gmacs", "float", "GMACs", ("throughput",), MEASURE, lead=True),
    _c("crop_pct", "float", "", ("accuracy",), CONFIG, lead=True, timm_file=True),
    _c("interpolation", "text", "", ("accuracy",), CONFIG, lead=True, timm_file=True),
    _c("dtype", "text", "", ("throughput", "memory", "memory_breakdown", "op", "scaling"), CONFIG, key=True, lead=True),
    _c("channels_last", "bool01", "", ("throughput", "memory", "memory_breakdown"), CONFIG, key=True, lead=True),
    _c("compile", "bool01", "", ("throughput", "memory", "memory_breakdown"), CONFIG, key=True, lead=True),
    _c("backend", "text", "", ("throughput", "memory", "memory_breakdown", "op", "scaling"), CONFIG,
       "the attention backend ('auto:NAME' as resolved; 'timm' for a reference model)", key=True, lead=True),
    _c("device", "text", "", ALL, MACHINE, key=True, lead=True),
    _c("natten", "text", "", ALL, MACHINE, "NATTEN's version, or none", key=True, lead=True),
    _c("torch", "text", "", ALL, MACHINE, key=True, lead=True),
    _c("environment", "text", "", ALL, MACHINE, "the matrix environment (bench.matrix) the row was measured in",
       key=True),
    # -- what was measured, by suite ------------------------------------------------------------------------------
    _c("pretrained", "bool01", "", ("throughput", "memory", "memory_breakdown", "accuracy"), CONFIG, key=True),
    _c("mode", "text", "", ("memory", "memory_breakdown", "op", "scaling"), CONFIG,
       "infer/train (memory), fwd/fwd_bwd (op), forward/train (scaling)", key=True),
    _c("batch", "int", "images", ("memory", "memory_breakdown", "op"), CONFIG, key=True),
    _c("batch_size", "int", "images", ("scaling",), CONFIG, key=True),
    _c("block", "text", "", ("memory_breakdown",), CONFIG, "the module holding the bytes"),
    _c("held_mb", "float", "MB", ("memory_breakdown",), MEASURE, headline=True),
    _c("method", "text", "", ("memory", "memory_breakdown", "scaling"), NOTE, "how peak_mem_mb was measured"),
    _c("rss_peak_mb", "float", "MB", ("memory",), MEASURE, bound="non-negative",
       doc="the worker's resident-set peak (includes allocator slack)"),
    _c("stage", "int", "", ("op",), CONFIG, key=True),
    _c("map_size", "int", "tokens", ("op",), CONFIG, key=True),
    _c("heads", "int", "", ("op",), CONFIG, key=True),
    _c("head_dim", "int", "", ("op",), CONFIG),
    _c("kernel_size", "int", "", ("op",), CONFIG),
    _c("dilation", "int", "", ("op",), CONFIG, key=True),
    _c("rpb", "bool01", "", ("op",), CONFIG, "whether the op ran with a relative position bias", key=True),
    _c("median_ms", "float", "ms", ("op",), MEASURE, better="lower", bound="positive", headline=True, rounds_of=True),
    _c("windowed_ms", "float", "ms", ("op",), MEASURE, bound="positive", doc="window attention, the yardstick"),
    _c("ratio_vs_windowed", "float", "", ("op",), MEASURE, better="lower"),
    _c("dilations", "text", "", ("scaling",), CONFIG, "the backbone's dilations at that size"),
    _c("tokens", "int", "", ("scaling",), CONFIG),
    _c("samples_per_sec", "float", "img/s", ("scaling",), MEASURE, bound="positive", headline=True),
    _c("step_time", "float", "ms", ("scaling",), MEASURE, bound="positive", rounds_of=True),
    _c("dataset", "text", "", ("accuracy",), CONFIG, "the data folder, or generated-tiny", key=True),
    _c("eval_set", "text", "", ("accuracy",), CONFIG, "one of timm's evaluation sets", key=True),
    _c("samples", "int", "images", ("accuracy",), MEASURE),
    _c("skipped", "int", "images", ("accuracy",), MEASURE),
    _c("skipped_files", "text", "", ("accuracy",), NOTE),
    _c("world_size", "int", "processes", ("accuracy",), NOTE),
    _c("what", "text", "", ("accuracy",), NOTE, "what the top-1 is (accuracy, or a pipeline check)"),
    _c("checkpoint", "text", "", ("accuracy",), CONFIG, "a checkpoint file scored (its name and sha256)", key=True),
    _c("error", "text", "", ALL, NOTE, "why a failed or oom row failed"),
    # -- the machine and the software -----------------------------------------------------------------------------
    _c("timm", "text", "", ALL, MACHINE),
    _c("dinat_timm_version", "text", "", ALL, MACHINE),
    _c("cpu", "text", "", ALL, MACHINE),
    _c("threads", "int", "", ALL, MACHINE),
    _c("git_commit", "text", "", ALL, MACHINE),
    _c("cuda", "text", "", ALL, MACHINE),
    _c("cudnn_version", "text", "", ALL, MACHINE),
    _c("driver", "text", "", ALL, MACHINE),
    _c("gpu_memory_gb", "float", "GB", ALL, MACHINE),
    _c("tf32_matmul", "bool01", "", ALL, MACHINE),
    _c("tf32_cudnn", "bool01", "", ALL, MACHINE),
    _c("float32_matmul_precision", "text", "", ALL, MACHINE),
    # -- about the row --------------------------------------------------------------------------------------------
    _c("run_id", "text", "", ALL, NOTE, "host and start time of the run that wrote it"),
    _c("timestamp", "text", "", ALL, NOTE),
    _c("outside_load", "float", "", SPEED, NOTE, "other processes' CPU time over wall time × cores"),
    _c("steal", "float", "", SPEED, NOTE, "hypervisor steal, same units"),
    _c("spread", "float", "", SPEED, NOTE, "interquartile range of the rounds over their median"),
    _c("rounds", "int", "", SPEED, NOTE),
    _c("samples_ms", "text", "ms", SPEED, NOTE, "every timed round, space-separated"),
    _c("flag", "text", "", ALL, NOTE, "why not to trust the row (noisy, suspect, incomplete)"),
    # -- derived by the boards ------------------------------------------------------------------------------------
    _c("infer_vs_reference", "float", "", ("throughput",), BOARD),
    _c("train_vs_reference", "float", "", ("throughput",), BOARD),
    _c("infer_peak_mem_batch", "int", "images", ("throughput",), BOARD),
    _c("train_peak_mem_batch", "int", "images", ("throughput",), BOARD),
    _c("infer_peak_mem_mb", "float", "MB", ("throughput",), BOARD),
    _c("train_peak_mem_mb", "float", "MB", ("throughput",), BOARD),
    _c("infer_rank_in_device", "int", "", ("throughput",), BOARD),
    _c("train_rank_in_device", "int", "", ("throughput",), BOARD),
    _c("time_exponent", "float", "", ("scaling",), BOARD),
    _c("memory_exponent", "float", "", ("scaling",), BOARD),
    _c("sizes", "text", "px", ("scaling",), BOARD),
    _c("paper_top1", "float", "%", ("accuracy",), BOARD),
    _c("paper_params_m", "float", "M", ("accuracy",), BOARD),
    _c("paper_gflops", "float", "GFLOPs", ("accuracy",), BOARD),
    _c("top1_delta_vs_paper", "float", "%", ("accuracy",), BOARD),
    # -- timm's results files -------------------------------------------------------------------------------------
    _c("top1_diff", "text", "%", (), TIMM, timm_file=True),
    _c("top5_diff", "text", "%", (), TIMM, timm_file=True),
    _c("rank_diff", "text", "", (), TIMM, timm_file=True),
    # -- the write command's rows (pytest-benchmark's own statistics) --------------------------------------------
    _c("benchmark", "text", "", (), BENCHMARK_JSON),
    _c("time_min", "float", "s", (), BENCHMARK_JSON),
    _c("time_median", "float", "s", (), BENCHMARK_JSON),
    _c("time_mean", "float", "s", (), BENCHMARK_JSON),
    _c("time_stddev", "float", "s", (), BENCHMARK_JSON),
    _c("time_rounds", "int", "", (), BENCHMARK_JSON),
)

BY_NAME: Dict[str, Column] = {c.name: c for c in COLUMNS}
CEILING = 1e7  # no speed in images/s, time in ms or memory in MB of these models comes near it


def names(**where) -> List[str]:
    """Column names in declaration order whose attributes equal ``where`` (e.g. ``key=True``)."""
    return [c.name for c in COLUMNS if all(getattr(c, k) == v for k, v in where.items())]


def of_suite(suite: str) -> List[Column]:
    return [c for c in COLUMNS if suite in c.suites]


LEADING = names(lead=True)
NUMERIC = {c.name for c in COLUMNS if c.numeric}
POSITIVE = set(names(bound="positive"))
NON_NEGATIVE = set(names(bound="non-negative"))
CONFIG_KEYS = [c.name for c in COLUMNS if c.key and c.role == CONFIG]  # with "model": what a measurement is
MACHINE_KEYS = [c.name for c in COLUMNS if c.key and c.role == MACHINE]  # rows of different machines stay apart
HEADLINE = {s: [c.name for c in of_suite(s) if c.headline] for s in SUITES}  # an ok row needs one of them
HIGHER_IS_BETTER = names(better="higher", type="float")
LOWER_IS_BETTER = names(better="lower")
SPEED_METRICS = [c.name for c in COLUMNS if c.better and "throughput" in c.suites]  # divided by --relative-to
TIMED_METRICS = set(SPEED_METRICS) | set(names(better="lower", bound="positive"))  # what samples_ms are rounds of
ROUND_FIGURES = names(rounds_of=True)
TIMM_BASE = [c.name for c in COLUMNS if c.timm_file and c.role != TIMM]
TIMM_DIFFS = [c.name for c in COLUMNS if c.timm_file and c.role == TIMM]


# How a row is labelled where a person reads it (compare's table, the end-of-run warnings): the columns that
# tell rows apart, in this order, each formatted so ("compiled" and "channels-last" only where 1).
LABELS = [("model", "{}"), ("mode", "{}"), ("dtype", "{}"), ("infer_batch_size", "b{:g}"), ("train_batch_size", "b{:g}"),
          ("batch", "b{:g}"), ("img_size", "{:g}px"), ("map_size", "{:g}²"), ("dilation", "d{:g}"), ("backend", "{}"),
          ("compile", "compiled"), ("channels_last", "channels-last"), ("device", "@{}")]


def keys_of(suite: str) -> List[str]:
    """What tells ``suite``'s measurements apart: its identifying columns, the machine's included."""
    return [c.name for c in of_suite(suite) if c.key]


def undeclared(columns) -> List[str]:
    """The columns of a row that this schema does not declare (a new column must be added here first)."""
    return [c for c in columns if c not in BY_NAME]


def pair_keys(suite: str) -> List[str]:
    """The identifying columns of ``suite`` that both modes of one configuration share (a throughput row's
    inference and training rows: everything but the mode's own batch and image size)."""
    return [c.name for c in of_suite(suite) if c.key and c.role == CONFIG and not c.name.startswith(("infer_", "train_"))]


# One series of the scaling suite: every image size of one backbone, mode and machine (the sizes a growth
# exponent is fitted over).
SCALING_SERIES = [c for c in keys_of("scaling") if c not in ("suite", "img_size")]
