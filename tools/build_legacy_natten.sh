#!/usr/bin/env bash
# Build a legacy NATTEN (0.14–0.17, the releases with relative-position-bias ops) from its sdist
# against the torch installed in the current environment.
#
# Those releases hard-code the pre-C++11 std::string ABI and C++17; current torch wheels use the
# C++11 ABI and need C++20, so the unpatched build either fails to compile or fails to load
# ("undefined symbol ... torchCheckFail"). This script sets both to what the installed torch uses,
# then pip-installs the result. NATTEN_N_WORKERS / CMAKE_BUILD_TYPE=Release keep it to minutes.
#
#   tools/build_legacy_natten.sh 0.15.1
set -euo pipefail
version="${1:?usage: $0 NATTEN_VERSION (e.g. 0.15.1 or 0.17.5)}"
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "natten==$version" -d "$work"
tar -xzf "$work"/natten-"$version".tar.gz -C "$work"
src="$work/natten-$version"
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
cxx=$("$python" -c "import torch; v=tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); print(20 if v >= (2, 9) else 17)")
cmakelists="$src/csrc/CMakeLists.txt"
sed -i -e "s/-D_GLIBCXX_USE_CXX11_ABI=[01]/-D_GLIBCXX_USE_CXX11_ABI=$abi/" \
       -e "s/set(CXX_STD \"1[47]\"/set(CXX_STD \"$cxx\"/" \
       -e "s/-std=c++1[47]/-std=c++$cxx/" "$cmakelists"
if [ -d /usr/local/cuda ] && [ -z "${CUDA_HOME:-}" ]; then export CUDA_HOME=/usr/local/cuda CUDA_PATH=/usr/local/cuda; fi
export NATTEN_N_WORKERS="${NATTEN_N_WORKERS:-2}" CMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}"
"$python" -m pip install --no-build-isolation "$src"
"$python" -c "import dinat_timm.ops as o; print('natten_legacy:', o.available_backends()['natten_legacy'] or 'usable')"
