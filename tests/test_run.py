"""``python -m dinat_timm.run SCRIPT.py ARGS…``: a script run as ``python SCRIPT.py ARGS…`` would run it (its
arguments, output, exit status and folder on the path), with the DiNAT/NAT models registered. A stand-in script
here; timm's own scripts are what users run (docs/timm-scripts.md)."""
import subprocess
import sys

STAND_IN = '''
import argparse, sys
import timm
import helper  # a module beside the script, as timm's scripts import theirs

parser = argparse.ArgumentParser()
parser.add_argument("--model")
parser.add_argument("--exit", type=int, default=0)
args = parser.parse_args()
model = timm.create_model(args.model, num_classes=3)
print(f"{__name__} {args.model} {model.num_classes} {helper.WORD} {sys.argv[0]}")
sys.exit(args.exit)
'''


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dinat_timm.run", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_a_script_runs_as_main_with_the_models_registered_and_its_exit_status(tmp_path):
    script = tmp_path / "scripts" / "train.py"
    script.parent.mkdir()
    script.write_text(STAND_IN)
    (script.parent / "helper.py").write_text("WORD = 'beside'\n")
    plain = subprocess.run([sys.executable, str(script), "--model", "dinat_mini"], capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode != 0 and "Unknown model (dinat_mini)" in plain.stderr  # timm alone does not know it
    run = _run(script, "--model", "dinat_mini", "--exit", "3", cwd=tmp_path)
    assert run.returncode == 3, run.stderr[-2000:]
    assert run.stdout.strip() == f"__main__ dinat_mini 3 beside {script}"


def test_what_cannot_be_run_is_one_line_and_exit_2(tmp_path):
    for args, words in [((), "usage: python -m dinat_timm.run SCRIPT.py"), ((tmp_path / "nope.py",), "no such file"),
                        ((tmp_path,), "a directory without __main__.py")]:
        run = _run(*args)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and len(lines) == 1 and words in lines[0], run.stderr
