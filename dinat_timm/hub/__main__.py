"""``python -m dinat_timm.hub {export,push,tags,check}``: the zoo in timm's Hub layout.

Exit status: 0 done, 1 some tags of ``export --all`` failed (each named), 2 the command cannot be
carried out as asked (an unknown tag, weights neither given nor cached offline, no token, no
network), with one line saying why.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dinat_timm.hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write a tag (or --all) in timm's Hub layout: model.safetensors, config.json, README.md")
    p.add_argument("tag", nargs="?", help="a pretrained tag, e.g. dinat_tiny.in1k (python -m dinat_timm.hub tags)")
    p.add_argument("out_dir", help="where to write it (with --all: a directory per tag under it)")
    p.add_argument("--all", action="store_true", help="every pretrained tag")
    p.add_argument("--checkpoint", help="the checkpoint to export: a published one (.pth or .bin, original or "
                                        "transformers layout; default: timm's caches) or your own of the tag's "
                                        "architecture (timm train.py's last.pth.tar, any number of classes, its EMA "
                                        "weights where it has them)")
    p.add_argument("--label-names", metavar="FILE", help="class names, one a line in the classifier's order, written to "
                                                         "config.json's label_names")
    p.add_argument("--dry-run", action="store_true", help="say what would be written, from which weights; download and "
                                                          "write nothing")
    p.add_argument("--results-dir", help="where the measured rows for the card are [default: results/ of the working directory]")
    p.add_argument("--overwrite", action="store_true", help="replace model.safetensors, config.json or README.md already "
                                                            "in the output directory (refused by default)")
    p = sub.add_parser("push", help="export a tag and upload it to a Hugging Face Hub repo")
    p.add_argument("tag", help="a pretrained tag, e.g. dinat_tiny.in1k")
    p.add_argument("repo_id", help="the Hub repo to create or update, e.g. me/dinat_tiny.in1k")
    p.add_argument("--checkpoint", help="the published checkpoint to convert (default: timm's caches)")
    p.add_argument("--token", help="a Hugging Face token (default: HF_TOKEN, or `hf auth login`'s)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--dry-run", action="store_true", help="say what would be uploaded; upload nothing")
    p = sub.add_parser("tags", help="every pretrained tag, where its weights come from and in which format (CSV)")
    p.add_argument("-o", "--out", help="write the CSV here instead of printing it")
    p = sub.add_parser("check", help="check an exported directory: its config.json against this version, and that its "
                                     "weights load into that architecture")
    p.add_argument("path", help="an exported model directory")
    return parser


def _describe(result, dry_run: bool) -> str:
    files = ", ".join(f"{n} ({b / 2**20:.1f} MB)" if b else n for n, b in result.files.items())
    where = result.out_dir or "a temporary directory"
    return f"{result.tag}: {'would write' if dry_run else 'wrote'} {files} to {where}; weights: {result.weights_from}"


def _one_line(error: Exception) -> str:
    """A refusal in one line: a checkpoint that does not fit names its key problems one after the other."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines[:1] + ["; ".join(lines[1:])] if len(lines) > 1 else lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from . import HubError, check_export, export, pretrained_tags, push, tag_table
    from ..models._checkpoint import CheckpointMismatchError
    from ..models._weights import CorruptCheckpoint, PretrainedWeightsUnavailable

    refusals = (HubError, CheckpointMismatchError, CorruptCheckpoint, PretrainedWeightsUnavailable)
    try:
        if args.command == "tags":
            table = tag_table()
            if args.out:
                table.to_csv(args.out, index=False)
                print(f"{len(table)} tags -> {args.out}")
            else:
                print(table.to_csv(index=False), end="")
        elif args.command == "check":
            arch = check_export(args.path)
            print(f"{args.path}: architecture {arch!r} is registered and its weights load into it")
        elif args.command == "push":
            result = push(args.tag, args.repo_id, args.token, args.checkpoint, args.private, args.dry_run)
            verb = "would upload" if args.dry_run else "uploaded"
            from huggingface_hub import constants

            print(f"{verb} to {constants.ENDPOINT}/{args.repo_id}: {_describe(result, args.dry_run)}")
        elif args.all:
            if args.tag:
                raise HubError("give a tag or --all, not both")
            failed = []
            for tag in pretrained_tags():
                try:
                    print(_describe(export(tag, Path(args.out_dir) / tag, dry_run=args.dry_run,
                                           results_dir=args.results_dir, overwrite=args.overwrite), args.dry_run))
                except refusals as e:
                    failed.append(tag)
                    print(f"{tag}: not exported: {str(e).splitlines()[0]}")
            if failed:
                print(f"{len(failed)} of {len(pretrained_tags())} tags not exported: {', '.join(failed)}", file=sys.stderr)
                return 1
        else:
            if not args.tag:
                if args.out_dir in pretrained_tags():
                    raise HubError(f"{args.out_dir} is a tag: give the output directory too (export TAG OUT_DIR)")
                raise HubError("give a tag (python -m dinat_timm.hub tags lists them) or --all")
            from .export import read_label_names

            labels = read_label_names(args.label_names) if args.label_names else None
            print(_describe(export(args.tag, args.out_dir, args.checkpoint, args.dry_run, results_dir=args.results_dir,
                                   overwrite=args.overwrite, label_names=labels), args.dry_run))
    except refusals as e:
        print(f"error: {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a file-system problem: one line, not a traceback
        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        print(f"error: {args.command}: {type(e).__name__}: {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
