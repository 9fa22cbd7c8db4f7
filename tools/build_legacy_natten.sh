#!/usr/bin/env bash
# Build a legacy NATTEN (0.14–0.17, the releases with relative-position-bias ops) from its sdist
# against the torch installed in the current environment.
#
# Those releases hard-code the pre-C++11 std::string ABI and C++17; current torch wheels use the
# C++11 ABI and need C++20, so the unpatched build either fails to compile or fails to load
# ("undefined symbol ... torchCheckFail"). This script sets both to what the installed torch uses,
# then pip-installs the result. NATTEN_N_WORKERS / CMAKE_BUILD_TYPE=Release keep it to minutes.
#
# A second argument builds the CUDA kernels for those GPU architectures (NATTEN's NATTEN_CUDA_ARCH:
# major.minor, ';'-separated, below 10.0 for these releases), also on a machine without a GPU
# (FORCE_CUDA=1); without it NATTEN builds for the GPU it sees, or for the CPU only.
#
#   tools/build_legacy_natten.sh 0.15.1                 # CPU (or the GPU present)
#   tools/build_legacy_natten.sh 0.15.1 "8.0;9.0"       # A100 and H100/H200 kernels
#   DRY_RUN=1 tools/build_legacy_natten.sh 0.17.5 9.0   # print the build settings only
#   FORCE=1 tools/build_legacy_natten.sh 0.15.1         # build again, though that version is installed
set -euo pipefail
version="${1:?usage: $0 NATTEN_VERSION [CUDA_ARCH_LIST] (e.g. 0.15.1 \"8.0;9.0\")}"
arch_list="${2:-${NATTEN_CUDA_ARCH:-}}"
if [ -n "$arch_list" ]; then
    IFS=';' read -ra archs <<< "$arch_list"
    for arch in "${archs[@]}"; do
        if ! [[ "$arch" =~ ^[3-9]\.[0-9]$ ]]; then
            echo "error: CUDA arch '$arch' in '$arch_list': NATTEN $version takes major.minor from 3.0 to 9.x," \
                 "';'-separated (e.g. \"8.0;9.0\"; Blackwell's 10.0/12.0 need NATTEN >= 0.20)" >&2
            exit 2
        fi
    done
    export NATTEN_CUDA_ARCH="$arch_list" FORCE_CUDA=1
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "natten==$version NATTEN_CUDA_ARCH=${NATTEN_CUDA_ARCH:-} FORCE_CUDA=${FORCE_CUDA:-0}"
    exit 0
fi
python=${PYTHON:-python}
installed=$("$python" -c "import importlib.metadata as m; print(m.version('natten'))" 2>/dev/null || true)
if [ "${installed%%+*}" = "$version" ] && [ "${FORCE:-0}" != 1 ]; then  # tox runs this before every test run
    echo "natten $installed is already installed here (FORCE=1 builds it again)"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "natten==$version" -d "$work"
tar -xzf "$work"/natten-"$version".tar.gz -C "$work"
src="$work/natten-$version"
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
cxx=$("$python" -c "import torch; v=tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); print(20 if v >= (2, 9) else 17)")
cmakelists="$src/csrc/CMakeLists.txt"
if [ -f "$cmakelists" ]; then  # 0.15-0.17 build with CMake, flags hard-coded
    sed -i -e "s/-D_GLIBCXX_USE_CXX11_ABI=[01]/-D_GLIBCXX_USE_CXX11_ABI=$abi/" \
           -e "s/set(CXX_STD \"1[47]\"/set(CXX_STD \"$cxx\"/" \
           -e "s/-std=c++1[47]/-std=c++$cxx/" "$cmakelists"
fi  # 0.14 builds with torch.utils.cpp_extension, which takes both from the installed torch
if [ -d /usr/local/cuda ] && [ -z "${CUDA_HOME:-}" ]; then export CUDA_HOME=/usr/local/cuda CUDA_PATH=/usr/local/cuda; fi
export NATTEN_N_WORKERS="${NATTEN_N_WORKERS:-2}" CMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}"
# NATTEN's own release builds set this: its setup.py then removes CMake's files (CMakeCache.txt,
# CMakeFiles/, Makefile, cmake_install.cmake) from the build directory, which would otherwise be
# installed into site-packages beside the package (the version gains a local tag: 0.15.1+torch2141cpu)
export NATTEN_IS_BUILDING_DIST=1
"$python" -m pip install --no-build-isolation "$src"
"$python" -c "import dinat_timm.ops as o; print('natten_legacy:', o.available_backends()['natten_legacy'] or 'usable')"
