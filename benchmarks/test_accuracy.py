"""Top-1 / top-5 with each model's own pretrained-cfg preprocessing.

With ``--data-dir`` (an ImageNet validation set in any layout ``timm.data.create_dataset``
reads) rows go to ``accuracy_imagenet.csv``; without, a generated tiny labelled image folder runs
the same pipeline and its rows go to ``accuracy_generated.csv``, marked ``generated-tiny`` and
described as what they are: a pipeline check with random weights, not accuracy.
"""
from pathlib import Path

import pytest

from dinat_timm.bench.accuracy import GENERATED_TAG, describe, evaluate, make_tiny_dataset, skipped_flag


@pytest.fixture(scope="session")
def dataset(request, tmp_path_factory):
    from dinat_timm.bench.options import BenchOptions

    data_dir = BenchOptions(request.config).get("data-dir")
    if data_dir:
        if not Path(data_dir).exists():
            raise pytest.UsageError(f"--data-dir {data_dir}: no such file or directory")
        return data_dir, data_dir
    return str(make_tiny_dataset(tmp_path_factory.mktemp("tiny-imagefolder"))), GENERATED_TAG


def test_accuracy(benchmark, leaderboard, bench_options, dataset, model_name):
    data_dir, tag = dataset
    pretrained = bench_options.get("pretrained")
    pretrained = (pretrained == "1") or (pretrained == "auto" and tag != GENERATED_TAG)
    csv = "accuracy_generated.csv" if tag == GENERATED_TAG else "accuracy_imagenet.csv"
    leaderboard.context(csv, suite="accuracy", model=model_name, dataset=tag, pretrained=int(pretrained))
    split = bench_options.get("split") if tag != GENERATED_TAG else ""
    result = {}

    def run():
        result.update(evaluate(
            model_name, data_dir, split=split, batch_size=bench_options.int("eval-batch-size", 1),
            max_samples=bench_options.int("max-samples"), device=bench_options.get("device"), pretrained=pretrained,
            skip_unreadable=bench_options.get("skip-unreadable") == "1",
        ))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    if tag != GENERATED_TAG:
        result["eval_set"] = "imagenet"
    row = dict(suite="accuracy", dataset=tag, pretrained=int(pretrained), **result)
    row["what"] = describe(row)
    leaderboard.record(csv, flag=skipped_flag(row), **row)


def test_accuracy_on_an_eval_set(benchmark, leaderboard, bench_options, eval_set, model_name):
    """timm's evaluation sets the user points the suite at (``--eval-sets imagenet-a=/data/imagenet-a,…``): each
    scored by the same pipeline, with its defaults (timm's index and synset lists, ReaL's labels), into
    ``accuracy_imagenet.csv`` with the set named in ``eval_set``."""
    name, data_dir = eval_set
    pretrained = bench_options.get("pretrained") != "0"
    csv = "accuracy_imagenet.csv"
    leaderboard.context(csv, suite="accuracy", model=model_name, dataset=data_dir, eval_set=name, pretrained=int(pretrained))
    split = "" if name in ("imagenet-a", "imagenet-r", "sketch", "imagenetv2-matched-frequency") else bench_options.get("split")
    result = {}

    def run():
        result.update(evaluate(
            model_name, data_dir, split=split, batch_size=bench_options.int("eval-batch-size", 1),
            max_samples=bench_options.int("max-samples"), device=bench_options.get("device"), pretrained=pretrained,
            skip_unreadable=bench_options.get("skip-unreadable") == "1", dataset=name,
        ))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    row = dict(suite="accuracy", dataset=data_dir, pretrained=int(pretrained), **result)
    row["what"] = describe(row)
    leaderboard.record(csv, flag=skipped_flag(row), **row)
