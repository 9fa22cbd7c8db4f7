"""What the command lines share: argparse's errors as one line and exit 2, option values typed by argparse
that are checked all at once (every bad value named, not only the first), and refusals as one line each.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple


class UsageError(Exception):
    """Printed one line per problem, exit 2."""

    def __init__(self, *problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line and exit 2, like every other refusal of these commands."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Invalid:
    """An option value that did not parse; its ``problem`` is reported with every other one after parsing."""

    problem: str


def typed(parse: Callable[[str], Tuple[object, Optional[str]]]) -> Callable[[str], object]:
    """An argparse ``type`` from ``parse(text) -> (value, problem)``: the typed value, or ``Invalid(problem)``
    (argparse would stop at the first bad value; this way all of them are said at once)."""

    def convert(text):
        value, problem = parse(text)
        return Invalid(problem) if problem else value

    convert.__name__ = parse.__name__
    return convert


def invalid(args: argparse.Namespace) -> List[str]:
    """The problems of every option value that did not parse."""
    return [value.problem for value in vars(args).values() if isinstance(value, Invalid)]


def fraction(option: str) -> Callable[[str], object]:
    """'10%' or 0.1 -> 0.1: a fraction in [0, 1), finite."""

    def parse(text):
        raw = str(text).strip()
        try:
            value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            return None, f"{option} {text!r} is not a number: give a percentage such as 10% (or the fraction 0.1)"
        if not math.isfinite(value) or not 0 <= value < 1:
            hint = ""
            if not raw.endswith("%") and math.isfinite(value) and value >= 1:
                hint = f"; a bare number is a fraction, so {raw} would mean {value:.0%}: write a percentage such as '20%'"
            return None, f"{option} {text!r} must be a percentage in [0%, 100%) (or a fraction in [0, 1)){hint}"
        return value, None

    return typed(parse)


def _top1_points(text):
    """Top-1 points: a finite number >= 0."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None, f"--max-top1-drop {text!r} is not a number: give top-1 points, such as 0.1"
    if not math.isfinite(value) or value < 0:
        return None, f"--max-top1-drop {text!r} must be a finite number of top-1 points >= 0"
    return value, None


top1_points = typed(_top1_points)


def number(option: str, low: float, high: float, unit: str) -> Callable[[str], object]:
    """A finite number in [low, high]."""

    def parse(text):
        try:
            value = float(str(text).strip())
        except ValueError:
            return None, f"{option} {text!r} is not a number of {unit}"
        if not math.isfinite(value) or not low <= value <= high:
            return None, f"{option} {text!r} must be between {low:g} and {high:g} {unit}"
        return value, None

    return typed(parse)


def model_names(option: str) -> Callable[[str], object]:
    """A comma list of model names, at least one."""

    def parse(text):
        items = [x.strip() for x in str(text).split(",") if x.strip()]
        return (items, None) if items else (None, f"{option} names no model")

    return typed(parse)


def refuse(command: str, problems: List[str]) -> int:
    for problem in problems:
        print(f"error: {command}: {problem}", file=sys.stderr)
    return 2
