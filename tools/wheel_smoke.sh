#!/usr/bin/env bash
# The package a user installs: build the sdist and the wheel, check them (twine), install the wheel into a
# fresh virtual environment (no checkout on the path, not editable; torch, timm and the other dependencies
# come from this environment's site-packages, as they would from an index), and use it there: every
# registered model is created, a pretrained load reads weights from a cache, the command lines answer --help,
# the CSV rows carry the installed version, and outside any checkout a benchmark suite writes its rows under the
# working directory and an export writes its card. Exit non-zero, saying what failed, on any problem.
#   bash tools/wheel_smoke.sh            (CI: .ci/run)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python -m pip install -q build twine
python -m build --no-isolation --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log"; echo "wheel smoke: the build failed"; exit 1; }
rm -rf "$root/build"  # setuptools' staging folder (ignored by git; not left behind)
python -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
python -m zipfile -l "$wheel" > "$work/wheel.txt"
if grep -E "(^| )(tests|benchmarks|results|tools|docs)/" "$work/wheel.txt"; then
    echo "wheel smoke: the wheel ships files that are not the package (above)"; exit 1
fi
tar tzf "$sdist" > "$work/sdist.txt"
grep -q "/LICENSE$" "$work/sdist.txt" || { echo "wheel smoke: the sdist has no LICENSE"; exit 1; }

python -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
cd "$work"  # no checkout on the path
export HF_HUB_OFFLINE=1 TORCH_HOME="$work/torch-home" HF_HOME="$work/hf-home"
"$work/venv/bin/python" -m dinat_timm.results --help > /dev/null
"$work/venv/bin/python" -m dinat_timm.hub --help > /dev/null
"$work/venv/bin/python" -m dinat_timm.gate --help > /dev/null
"$work/venv/bin/python" - "$root" <<'EOF'
import sys
from importlib.metadata import version
from pathlib import Path

import timm
import torch

import dinat_timm
from dinat_timm.bench.steps import is_dinat_model
from dinat_timm.bench.environment import environment

root = Path(sys.argv[1]).resolve()
where = Path(dinat_timm.__file__).resolve()
assert root not in where.parents, f"dinat_timm imported from the checkout ({where}), not from the wheel"
assert "site-packages" in where.parts, where
assert dinat_timm.__version__ == version("dinat-timm") != "0+unknown", dinat_timm.__version__
assert environment("cpu")["dinat_timm_version"] == dinat_timm.__version__

names = sorted(n for n in timm.list_models() if is_dinat_model(n))
assert len(names) >= 20, names
with torch.device("meta"):
    for name in names:
        timm.create_model(name)

# a pretrained load from a cache: dinat_mini's original-URL checkpoint where timm's torch hub cache keeps it
model = timm.create_model("dinat_mini")
cache = Path(torch.hub.get_dir()) / "checkpoints"
cache.mkdir(parents=True)
torch.save(model.state_dict(), cache / "dinat_mini_in1k_224.pth")
loaded = timm.create_model("dinat_mini", pretrained=True)
assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
with torch.no_grad():
    assert loaded.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
print(f"wheel smoke: {where.parent.name} {dinat_timm.__version__} from {where.parent.parent}: {len(names)} models "
      "created, pretrained load from the cache, both command lines answer")
EOF

# A suite and a card from the installed wheel, in a folder that is no checkout: the rows go to results/runs/
# of the working directory, the card is written from the weights in the cache; the checkout gains nothing.
before=$(ls "$root/results/runs")
mkdir "$work/suite"
cp "$root/benchmarks/conftest.py" "$root/benchmarks/test_op_speed.py" "$work/suite/"
(cd "$work/suite" && "$work/venv/bin/python" -m pytest test_op_speed.py --benchmark-only -p no:cacheprovider -q \
    --op-backends tiled -k "stage3 and fwd and not fwd_bwd" --rounds 1 --warmup 0 > "$work/suite.log" 2>&1) \
    || { tail -n 30 "$work/suite.log"; echo "wheel smoke: the op suite failed outside the checkout"; exit 1; }
rows=$(ls "$work"/suite/results/runs/*/op_speed.csv) \
    || { tail -n 30 "$work/suite.log"; echo "wheel smoke: the suite wrote no rows under the working directory"; exit 1; }
[ "$(ls "$root/results/runs")" = "$before" ] || { echo "wheel smoke: the suite wrote into the checkout"; exit 1; }
(cd "$work/suite" && "$work/venv/bin/python" -m dinat_timm.hub export dinat_mini.in1k "$work/export" > /dev/null)
grep -q "dinat_mini" "$work/export/README.md" || { echo "wheel smoke: the exported card is missing"; exit 1; }
echo "wheel smoke: outside any checkout, the op suite wrote ${rows#$work/} and the export wrote its card"
