"""Fail an environment named for a NATTEN version when that version's backend cannot run.

    python tools/check_natten_env.py 0.17     # 0.15, 0.17, 0.21 or none; exit 1 with one line if not

tox's legacy environments and CI run it before their tests, so a build that failed, or a release
that imports but cannot run here, fails the environment instead of skipping every test.
"""
import sys

from dinat_timm.ops.backends._natten import natten_version
from dinat_timm.ops.backends.natten_env import check_expected

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} VERSION  (0.15, 0.17, 0.21 or none)")
    problem = check_expected(sys.argv[1])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    version, _ = natten_version()
    print(f"NATTEN environment {sys.argv[1]}: {'natten ' + '.'.join(map(str, version)) if version else 'no natten'}, ok")
