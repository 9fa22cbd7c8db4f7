"""Top-1 / top-5 with each model's own pretrained-cfg preprocessing.

With ``--data-dir`` (an ImageNet validation set in any layout ``timm.data.create_dataset``
reads) rows go to ``accuracy_imagenet.csv``; without, a generated tiny labelled image folder runs
the same pipeline and its rows go to ``accuracy_generated.csv``, marked ``generated-tiny``.
"""
import pytest

from conftest import opt
from dinat_timm.bench.accuracy import GENERATED_TAG, evaluate, make_tiny_dataset


@pytest.fixture(scope="session")
def dataset(request, tmp_path_factory):
    data_dir = opt(request.config, "data-dir")
    if data_dir:
        return data_dir, data_dir
    return str(make_tiny_dataset(tmp_path_factory.mktemp("tiny-imagefolder"))), GENERATED_TAG


def test_accuracy(benchmark, leaderboard, request, dataset, model_name):
    config = request.config
    data_dir, tag = dataset
    pretrained = opt(config, "pretrained")
    pretrained = (pretrained == "1") or (pretrained == "auto" and tag != GENERATED_TAG)
    csv = "accuracy_generated.csv" if tag == GENERATED_TAG else "accuracy_imagenet.csv"
    leaderboard.context(csv, suite="accuracy", model=model_name, dataset=tag, pretrained=int(pretrained))
    split = opt(config, "split") if tag != GENERATED_TAG else ""
    result = {}

    def run():
        result.update(evaluate(
            model_name, data_dir, split=split, batch_size=int(opt(config, "eval-batch-size")),
            max_samples=int(opt(config, "max-samples")), device=opt(config, "device"), pretrained=pretrained,
        ))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    leaderboard.record(csv, suite="accuracy", dataset=tag, pretrained=int(pretrained), **result)

