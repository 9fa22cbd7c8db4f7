"""The CI speed gate: the base commit and the working tree timed side by side on one machine, judged by a
rule that stops as soon as the verdict is clear (``python -m dinat_timm.gate``; docs/ci-speed-gate.md).

``rule`` (the verdict from quads of rounds), ``sides`` (the base's worktree and the two worker processes),
``worker`` (one side, started by path), ``simulation`` (the rule's error rates on synthetic streams),
``report`` (what it prints), ``__main__`` (the command line).
"""
