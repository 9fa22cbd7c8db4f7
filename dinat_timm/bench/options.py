"""The benchmark suites' options: one table, each with an environment variable twin and a preset default.

``--preset quick`` (the default) measures what matters most in a few minutes on 2 CPU cores;
``--preset full`` is the whole matrix. An explicit option (or its ``DINAT_BENCH_*`` variable) beats
the preset. ``benchmarks/conftest.py`` registers them with pytest; the suites read them through
``BenchOptions``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

OPTIONS = {
    # name: (default under --preset quick, help)
    "preset": ("quick", "quick: the models and shapes that matter most (~4 min on 2 idle CPU cores); full: every "
                        "model and backend (an explicit option beats the preset)"),
    "models": ("dinat_mini,nat_mini,dinat_tiny", "comma-separated timm model names ('all' = every registered one)"),
    "reference-models": ("swin_tiny_patch4_window7_224", "timm models measured in the same run as yardsticks"),
    "device": ("cpu", "cpu, cuda, cuda:1 …"),
    "data-dir": ("", "ImageNet validation set (ImageFolder or anything timm.data.create_dataset reads); empty = generated tiny set"),
    "split": ("validation", "split name for create_dataset"),
    "eval-sets": ("", "comma list of SET=DIR: timm's evaluation sets to score besides --data-dir (imagenet, "
                      "imagenet-real, imagenetv2-matched-frequency, sketch, imagenet-a, imagenet-r, imagenet-a-clean, "
                      "imagenet-r-clean); each row names its set, and `results timm-results` writes timm's files"),
    "batch-size": ("8", "batch size for throughput and memory"),
    "eval-batch-size": ("32", "batch size for accuracy"),
    "img-size": ("", "input size override (default: the model's pretrained cfg)"),
    "dtypes": ("fp32", "comma list of fp32, bf16, fp16 (bf16/fp16 run under autocast; fp16 on GPU only)"),
    "channels-last": ("0", "comma list of yes/no (1/0, true/false, yes/no, on/off): channels-last memory format"),
    "compile": ("0", "comma list of yes/no (1/0, true/false, yes/no, on/off): torch.compile the model"),
    "backends": ("auto", "comma list of attention backends for the models (auto, triton, tiled, natten, natten_legacy, "
                         "flex; window:NAME runs DiNAT's k×k-sub-grid layers as window attention, the rest on NAME; "
                         "neighborhood:NAME every layer on NAME; auto: windows on CPU)"),
    "op-backends": ("triton,tiled,natten_legacy", "backends timed by the operator suite, where they can run on the device "
                                                  "(full: also window, gather, natten, flex)"),
    "op-dtypes": ("fp32", "comma list of fp32, bf16, fp16: q/k/v dtype of the operator suite (the rpb stays fp32, as under autocast)"),
    "op-batch-size": ("8", "batch size of the operator suite"),
    "scaling-models": ("dinat_tiny,nat_tiny,swin_tiny_patch4_window7_224,convnext_tiny,vit_small_patch16_224",
                       "backbones of the scaling suite (features_only), DiNAT/NAT against window, conv and global attention"),
    "scaling-sizes": ("", "comma list of square input sizes of the scaling suite; empty = 224,320,448 on CPU, "
                          "224,384,512,768,1024 on a GPU"),
    "scaling-batch-size": ("", "batch size of the scaling suite; empty = 1 on CPU, 8 on a GPU"),
    "scaling-rounds": ("2", "timed rounds per size in the scaling suite (after one warm-up)"),
    "rounds": ("5", "timed rounds per benchmark"),
    "warmup": ("2", "untimed warm-up rounds per benchmark"),
    "memory-breakdown": ("0", "yes (1, true, on): the memory suite also writes which blocks hold the bytes alive at "
                              "each row's peak (memory_breakdown.csv)"),
    "max-samples": ("0", "stop accuracy after this many images (0 = all)"),
    "skip-unreadable": ("0", "yes: skip images that cannot be decoded (counted and named in the row, which is "
                             "flagged); no: an unreadable image fails the accuracy row"),
    "results-dir": ("", "where this run's CSVs and boards go; empty = results/runs/<host>-<date>"),
    "tf32": ("", "yes/no: TF32 for matmuls and cuDNN convolutions (moves fp32 results ~1e-3 on GPUs); "
                 "empty = no for accuracy (reproducible), PyTorch's own default for speed and memory"),
    "pretrained": ("auto", "yes = load published weights (needs them cached), no = random init, auto = yes only with "
                           "--data-dir"),
}

PRESETS = {
    "quick": {},
    "full": {
        "models": "all",
        "reference-models": "swin_tiny_patch4_window7_224,vit_small_patch16_224,convnext_tiny",
        "op-backends": "triton,window,tiled,gather,natten,natten_legacy,flex",
        "scaling-rounds": "5",
    },
}


class OptionError(ValueError):
    """An option value the suites cannot use; the message names the option."""


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
BOOLEANS = ("memory-breakdown", "skip-unreadable")  # also: tf32 (empty = PyTorch's default), pretrained (auto)
BOOLEAN_LISTS = ("channels-last", "compile")  # comma lists of booleans: each value is measured


def parse_bool(name: str, word: str) -> bool:
    """What pytest users type for a yes/no: 1/0, true/false, yes/no, on/off (any case)."""
    low = word.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise OptionError(f"--{name}: {word!r} is not a yes/no (1/0, true/false, yes/no, on/off)")


def env_name(name: str) -> str:
    return "DINAT_BENCH_" + name.upper().replace("-", "_")


class BenchOptions:
    """The options of one pytest session: command line, else environment variable, else preset, else default."""

    def __init__(self, config):
        self.config = config
        self.run_results_dir = ""  # set by the session: where rows go when --results-dir is empty

    def get(self, name: str) -> str:
        value = self.config.getoption(name.replace("-", "_"))
        if value is None:
            value = os.environ.get(env_name(name))
        if value is None and name != "preset":
            preset = self.get("preset")
            if preset not in PRESETS:
                raise OptionError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
            value = PRESETS[preset].get(name)
        if value is None:
            value = OPTIONS[name][0]
        if name == "models" and value == "all":
            value = ",".join(all_dinat_models())
        if name == "results-dir" and not value:
            value = self.run_results_dir
        return str(value)

    def list(self, name: str) -> List[str]:
        return [x.strip() for x in self.get(name).split(",") if x.strip()]

    def flag(self, name: str) -> bool:
        """A yes/no option (``BOOLEANS``): 1/0, true/false, yes/no, on/off."""
        return parse_bool(name, self.get(name))

    def flags(self, name: str) -> List[bool]:
        """A comma list of yes/no values (``BOOLEAN_LISTS``), each once, in order."""
        return list(dict.fromkeys(parse_bool(name, w) for w in self.list(name)))

    def pretrained(self, has_data: bool) -> bool:
        """``--pretrained``: yes/no, or auto (the published weights only where a real data set is given)."""
        word = self.get("pretrained")
        return has_data if word.strip().lower() == "auto" else parse_bool("pretrained", word)

    def tf32(self) -> Optional[bool]:
        """``--tf32``: yes/no, or empty for PyTorch's own default."""
        word = self.get("tf32")
        return None if not word.strip() else parse_bool("tf32", word)

    def ints(self, name: str, minimum: int = 0, maximum: Optional[int] = None) -> List[int]:
        values = []
        for word in self.list(name):
            try:
                value = int(word)
            except ValueError:
                raise OptionError(f"--{name}: {word!r} is not a whole number") from None
            if value < minimum:
                raise OptionError(f"--{name}: {value} is below {minimum}")
            if maximum is not None and value > maximum:
                raise OptionError(f"--{name}: {value} is above {maximum}")
            values.append(value)
        return values

    def eval_sets(self) -> List[tuple]:
        """``--eval-sets`` as (set, folder) pairs, each set one the accuracy tool knows and each folder there."""
        from .accuracy import EVAL_SETS

        pairs = []
        for item in self.list("eval-sets"):
            name, sep, folder = item.partition("=")
            if not sep or name not in EVAL_SETS:
                raise OptionError(f"--eval-sets: {item!r} is not SET=DIR with SET one of {', '.join(EVAL_SETS)}")
            if not Path(folder).exists():
                raise OptionError(f"--eval-sets: {folder}: no such file or directory")
            pairs.append((name, folder))
        return pairs

    def dtypes(self) -> List[str]:
        """``--dtypes``, each one the suites know."""
        from .steps import DTYPES

        values = self.list("dtypes")
        unknown = [d for d in values if d not in DTYPES]
        if unknown or not values:
            raise OptionError(f"--dtypes: {', '.join(map(repr, unknown)) or 'nothing'} is not a dtype the suites know; "
                              f"valid: {', '.join(DTYPES)}")
        return values

    def int(self, name: str, minimum: int = 0) -> int:
        values = self.ints(name, minimum)
        if len(values) != 1:
            raise OptionError(f"--{name} takes one whole number, got {self.get(name)!r}")
        return values[0]

    def check(self) -> None:
        """Parse every option, so that a bad one stops the run before anything runs (``OptionError``, one line
        naming it) instead of being read as something else, deselecting every test, or failing one test at a
        time: numbers and their ranges, yes/no words, dtypes, model and backend names, the device, the folders."""
        from .scaling import scaling_sizes

        self.ints("batch-size", minimum=1)
        self.dtypes()
        for name in ("rounds", "warmup", "op-batch-size", "scaling-rounds", "eval-batch-size", "max-samples"):
            self.int(name, minimum=1 if name not in ("warmup", "max-samples") else 0)
        if self.get("img-size"):
            self.int("img-size", minimum=32)
        if self.get("scaling-batch-size"):
            self.int("scaling-batch-size", minimum=1)
        scaling_sizes(self)
        self.eval_sets()
        for name in BOOLEANS:
            self.flag(name)
        for name in BOOLEAN_LISTS:
            if not self.flags(name):
                raise OptionError(f"--{name} names no value: give 0, 1 or both (0,1)")
        self.pretrained(has_data=bool(self.get("data-dir")))
        self.tf32()
        self._check_names()
        self._check_device()
        data_dir = self.get("data-dir")
        if data_dir and not Path(data_dir).exists():
            raise OptionError(f"--data-dir {data_dir}: no such file or directory")
        results = Path(self.get("results-dir")) if self.get("results-dir") else None
        if results is not None:
            if results.exists() and not results.is_dir():
                raise OptionError(f"--results-dir {results} is a file, not a directory")
            existing = next(p for p in [results, *results.parents] if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise OptionError(f"--results-dir {results}: {existing} cannot be written")

    def _check_names(self) -> None:
        """Every model name registered with timm, every backend and dtype one the suites know: a typo would
        otherwise fail each of its tests, or deselect them all without a word."""
        import timm

        import dinat_timm  # noqa: F401  (registers the models)
        from ..ops.backends import BACKENDS
        from .steps import DTYPES

        for name in ("models", "reference-models", "scaling-models"):
            unknown = [m for m in self.list(name) if not timm.models.is_model(m.split(".")[0])]
            if unknown:
                close = timm.list_models(f"*{unknown[0].split('.')[0].split('_')[0]}*")[:5]
                raise OptionError(f"--{name}: {unknown[0]!r} is not a registered model"
                                  + (f" (close: {', '.join(close)})" if close else ""))
        if not self.list("models"):
            raise OptionError("--models names no model")
        known = set(BACKENDS) | {"auto"}
        for word in self.list("backends"):
            spec = word.split(":", 1)[1] if word.startswith(("window:", "neighborhood:")) else word
            if spec not in known:
                raise OptionError(f"--backends: {word!r} is not a backend; valid: {', '.join(sorted(known))} "
                                  "(window:NAME or neighborhood:NAME for a layout)")
        for word in self.list("op-backends"):
            if word not in BACKENDS:
                raise OptionError(f"--op-backends: {word!r} is not a backend; valid: {', '.join(sorted(BACKENDS))}")
        unknown = [d for d in self.list("op-dtypes") if d not in DTYPES]
        if unknown or not self.list("op-dtypes"):
            raise OptionError(f"--op-dtypes: {', '.join(map(repr, unknown)) or 'nothing'} is not a dtype the suites "
                              f"know; valid: {', '.join(DTYPES)}")

    def _check_device(self) -> None:
        import torch

        word = self.get("device")
        try:
            device = torch.device(word)
        except (RuntimeError, ValueError) as e:
            raise OptionError(f"--device {word!r} is not a device ({str(e).splitlines()[0]}): cpu, cuda, cuda:1 …") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise OptionError(f"--device {word}: CUDA is not available here")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise OptionError(f"--device {word}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        elif device.type != "cpu":
            raise OptionError(f"--device {word}: the suites run on cpu or cuda")

    @property
    def on_gpu(self) -> bool:
        return self.get("device").startswith("cuda")


def all_dinat_models() -> List[str]:
    import timm

    import dinat_timm  # noqa: F401  (registers the models)
    from .steps import is_dinat_model

    return sorted(n for n in timm.list_models() if is_dinat_model(n))
