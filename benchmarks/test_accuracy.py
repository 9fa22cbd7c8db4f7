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


def _score(benchmark, leaderboard, bench_options, model_name, csv, data_dir, dataset, pretrained, split, eval_set=None,
           named_set=None):
    """One model on one set, through the accuracy tool's pipeline (``eval_set``: one of timm's sets, with its
    defaults); the row goes to ``csv`` as it is measured, named ``named_set`` where given."""
    named = {"eval_set": eval_set} if eval_set else {}
    leaderboard.context(csv, suite="accuracy", model=model_name, dataset=dataset, pretrained=int(pretrained), **named)
    result = {}

    def run():
        result.update(evaluate(
            model_name, data_dir, split=split, batch_size=bench_options.int("eval-batch-size", 1),
            max_samples=bench_options.int("max-samples"), device=bench_options.get("device"), pretrained=pretrained,
            skip_unreadable=bench_options.flag("skip-unreadable"), dataset=eval_set,
        ))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    if named_set:
        result["eval_set"] = named_set
    row = dict(suite="accuracy", dataset=dataset, pretrained=int(pretrained), **result)
    row["what"] = describe(row)
    leaderboard.record(csv, flag=skipped_flag(row), **row)


def test_accuracy(benchmark, leaderboard, bench_options, dataset, model_name):
    data_dir, tag = dataset
    pretrained = bench_options.pretrained(has_data=tag != GENERATED_TAG)
    csv = "accuracy_generated.csv" if tag == GENERATED_TAG else "accuracy_imagenet.csv"
    split = bench_options.get("split") if tag != GENERATED_TAG else ""
    _score(benchmark, leaderboard, bench_options, model_name, csv, data_dir, tag, pretrained, split,
           named_set=None if tag == GENERATED_TAG else "imagenet")


def test_accuracy_on_an_eval_set(benchmark, leaderboard, bench_options, eval_set, model_name):
    """timm's evaluation sets the user points the suite at (``--eval-sets imagenet-a=/data/imagenet-a,…``): each
    scored by the same pipeline, with its defaults (timm's index and synset lists, ReaL's labels), into
    ``accuracy_imagenet.csv`` with the set named in ``eval_set`` (a set's folder without split folders is read
    as it is)."""
    name, data_dir = eval_set
    _score(benchmark, leaderboard, bench_options, model_name, "accuracy_imagenet.csv", data_dir, data_dir,
           bench_options.pretrained(has_data=True), bench_options.get("split"), eval_set=name)
