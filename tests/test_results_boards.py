"""``merge`` and ``boards`` (``dinat_timm.results.boards``, ``leaderboard_md``, ``scaling``): the latest row
of each configuration, ratios to Swin-T of the same run, flagged rows left out, all files or none."""
from pathlib import Path

import pandas as pd
import pytest
from _helpers import results_cli
from _results_rows import _one_line, _rows, _speed_row, _speed_rows, _speed_rows2

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.boards import build_boards
from dinat_timm.results.scaling import growth_exponent, scaling_board


def test_merge_refuses_several_suites_and_writes_nothing(tmp_path):
    append_rows(tmp_path / "t.csv", [_speed_row(10.0)])
    append_rows(tmp_path / "m.csv", [dict(suite="memory", status="ok", model="m", peak_mem_mb=10.0)])
    result = results_cli("merge", tmp_path / "t.csv", tmp_path / "m.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 2 and "several suites" in _one_line(result.stderr)
    assert not (tmp_path / "out.csv").exists()


def test_boards_on_a_folder_without_rows_writes_nothing(tmp_path):
    result = results_cli("boards", "--results-dir", tmp_path)
    assert result.returncode == 2 and "holds no results rows" in _one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_merge_refuses_a_truncated_file_and_keeps_a_header_only_files_columns(tmp_path, good):
    (tmp_path / "cut.csv").write_text("suite,model,infer_samples_per_sec\nthroughput,dinat_tiny,10\nthroughput,swi")
    result = results_cli("merge", good, tmp_path / "cut.csv", "-o", tmp_path / "merged.csv")
    assert result.returncode == 2 and "cut.csv" in result.stderr and not (tmp_path / "merged.csv").exists()
    (tmp_path / "header.csv").write_text("suite,model,peak_mem_mb,extra_column\n")
    assert results_cli("merge", tmp_path / "header.csv", "-o", tmp_path / "m1.csv").returncode == 0
    assert list(read_csv(tmp_path / "m1.csv").columns) == ["suite", "model", "peak_mem_mb", "extra_column"]
    assert results_cli("merge", good, tmp_path / "header.csv", "-o", tmp_path / "m2.csv").returncode == 0
    merged = read_csv(tmp_path / "m2.csv")
    assert len(merged) == 2 and "extra_column" in merged.columns


def test_boards_are_rebuilt_together_or_not_at_all(tmp_path):
    append_rows(tmp_path / "throughput.csv", [dict(r, param_count=28.0) for r in _speed_rows()])
    written = build_boards(tmp_path)
    outputs = {p: p.read_bytes() for p in written.values()}
    header = (tmp_path / "throughput.csv").read_text().splitlines()[0].split(",")
    edited = {"suite": "throughput", "model": "dinat_tiny", "infer_samples_per_sec": "fast"}
    with open(tmp_path / "throughput.csv", "a") as f:
        f.write(",".join(edited.get(c, "") for c in header) + "\n")  # a hand-edited row: a word for a speed
    result = results_cli("boards", "--results-dir", tmp_path)
    assert result.returncode == 2 and "needs finite numbers" in result.stderr
    assert {p: p.read_bytes() for p in written.values()} == outputs  # neither the boards nor the plot moved
    assert not list(tmp_path.glob("*.tmp"))


def test_boards_delta_vs_paper_and_plot(tmp_path):
    append_rows(tmp_path / "accuracy_imagenet.csv", [
        dict(suite="accuracy", model="dinat_tiny", dataset="/data/imagenet", pretrained=1, top1=82.5, top5=96.0),
        dict(suite="accuracy", model="nat_tiny", dataset="/data/imagenet", pretrained=0, top1=0.1, top5=0.5)])
    append_rows(tmp_path / "accuracy_generated.csv", [dict(suite="accuracy", model="dinat_tiny", dataset="generated-tiny", top1=5.0, top5=50.0)])
    append_rows(tmp_path / "throughput.csv", [dict(suite="throughput", model="dinat_tiny", infer_batch_size=8, infer_samples_per_sec=11.0,
                                                   param_count=28.0, device="cpu", backend="auto:tiled")])
    written = build_boards(tmp_path)
    board = read_csv(written["accuracy"])
    imagenet = board[board["dataset"] == "/data/imagenet"].iloc[0]
    assert imagenet["paper_top1"] == 82.7 and imagenet["top1_delta_vs_paper"] == pytest.approx(-0.2)
    # a pipeline check (generated images) and random weights are never read against the paper
    others = board[board["model"].eq("nat_tiny") | board["dataset"].eq("generated-tiny")]
    assert len(others) == 2 and others[["paper_top1", "top1_delta_vs_paper"]].isna().all().all()
    assert set(others["what"]) == {"pipeline check: random weights on generated images, not accuracy",
                                   "random weights on a real data set: not comparable to the paper"}
    assert written["plot"].stat().st_size > 10_000 and (tmp_path / "paper.csv").exists()


SWIN = "swin_tiny_patch4_window7_224"


def _speed(model, device, dtype, compiled, infer, train, run, backend="auto:tiled"):
    common = dict(suite="throughput", status="ok", model=model, device=device, dtype=dtype, compile=compiled,
                  channels_last=0, backend=backend if model != SWIN else "timm", param_count=28.0, gmacs=4.5, run_id=run)
    return [dict(common, infer_batch_size=8, infer_img_size=224, infer_samples_per_sec=infer),
            dict(common, train_batch_size=8, train_img_size=224, train_samples_per_sec=train)]


def test_leaderboard_md_has_a_table_per_device_dtype_and_mode_with_ratios_to_swin_of_the_same_run(tmp_path):
    rows = (_speed("dinat_tiny", "NVIDIA H200", "bf16", 0, 4000, 1000, "gpu-1") + _speed(SWIN, "NVIDIA H200", "bf16", 0, 5000, 2000, "gpu-1")
            + _speed("dinat_tiny", "NVIDIA H200", "bf16", 1, 6000, 1500, "gpu-1") + _speed(SWIN, "NVIDIA H200", "bf16", 1, 3000, 1000, "gpu-1")
            + _speed("dinat_tiny", "cpu (x)", "fp32", 0, 12, 4, "cpu-1") + _speed(SWIN, "cpu (x)", "fp32", 0, 16, 5, "cpu-1")
            # a later CPU run that measured DiNAT-T only: its ratio needs a Swin-T of its own run
            + _speed("nat_tiny", "cpu (x)", "fp32", 0, 11, 3, "cpu-2"))
    append_rows(tmp_path / "throughput.csv", rows)
    append_rows(tmp_path / "memory.csv", [dict(suite="memory", model="dinat_tiny", device="NVIDIA H200", dtype="bf16",
                                               mode="train", batch=128, img_size=224, peak_mem_mb=9551.0,
                                               method="cuda.max_memory_allocated")])
    build_boards(tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    for title in ("### NVIDIA H200 · bf16 · eager", "### NVIDIA H200 · bf16 · compiled", "### cpu (x) · fp32 · eager"):
        assert title in md
    eager = md.split("### NVIDIA H200 · bf16 · eager")[1].split("###")[0]
    line = next(line for line in eager.splitlines() if line.startswith("| dinat_tiny"))
    assert "| 4000 | ×0.80 | 1000 | ×0.50 |" in line and "train 9551 (b128)" in line
    compiled = md.split("### NVIDIA H200 · bf16 · compiled")[1].split("###")[0]
    assert "| 6000 | ×2.00 | 1500 | ×1.50 |" in compiled
    cpu = md.split("### cpu (x) · fp32 · eager")[1].split("##")[0]
    nat = next(line for line in cpu.splitlines() if line.startswith("| nat_tiny"))
    assert "| 11 | – | 3 | – |" in nat  # no Swin-T in its run: no ratio, rather than one against another run's
    board = read_csv(tmp_path / "leaderboard_speed.csv")
    assert board.loc[(board["model"] == "dinat_tiny") & (board["device"] == "cpu (x)"), "infer_vs_reference"].iloc[0] == 0.75


def test_generated_data_is_a_pipeline_check_never_beside_the_paper(tmp_path):
    append_rows(tmp_path / "accuracy_generated.csv", [dict(suite="accuracy", model="dinat_tiny", dataset="generated-tiny",
                                                           pretrained=0, top1=0.0, top5=20.0)])
    build_boards(tmp_path)
    board = read_csv(tmp_path / "leaderboard_accuracy.csv")
    assert board["paper_top1"].isna().all() and board["what"].iloc[0].startswith("pipeline check")
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "82.7" not in md and "No measurement of the published weights on ImageNet yet" in md
    assert "1 row(s): pipeline check: random weights on generated images, not accuracy" in md


def test_growth_exponents_are_the_slopes_of_the_log_log_fit():
    tokens = [3136, 6400, 12544]
    assert growth_exponent(tokens, [2.0 * t for t in tokens]) == pytest.approx(1.0)
    assert growth_exponent(tokens, [1e-3 * t * t for t in tokens]) == pytest.approx(2.0)
    assert growth_exponent([3136], [1.0]) is None and growth_exponent(tokens, [1.0, 0.0, 2.0]) == pytest.approx(
        growth_exponent([3136, 12544], [1.0, 2.0]))
    rows = pd.DataFrame([dict(suite="scaling", status="ok", model=m, mode="forward", device="cpu", dtype="fp32",
                              backend="auto", batch_size=2, img_size=s, tokens=(s // 4) ** 2, dilations="-",
                              step_time=2 * ((s // 4) ** 2) ** p / 1000, peak_mem_mb=((s // 4) ** 2) ** p / 100,
                              method="allocator events (torch.profiler)")
                         for m, p in (("linear", 1.0), ("quadratic", 2.0)) for s in (224, 320, 448)])
    board = scaling_board(rows)
    fits = board.drop_duplicates("model").set_index("model")
    assert fits.loc["linear", "time_exponent"] == pytest.approx(1.0) and fits.loc["quadratic", "memory_exponent"] == pytest.approx(2.0)
    assert fits.loc["linear", "sizes"] == "224, 320, 448"
    # rows that read the resident set (no method, or another one) give time but no memory exponent
    for method in (None, "VmHWM-VmRSS in a fresh process"):
        fits = scaling_board(rows.assign(method=method)).drop_duplicates("model").set_index("model")
        assert fits.loc["quadratic", "time_exponent"] == pytest.approx(2.0)
        assert pd.isna(fits.loc["quadratic", "memory_exponent"]) and fits["peak_mem_mb"].isna().all()


ROOT = Path(__file__).resolve().parents[1]


def test_speed_board_ranks_within_each_device_and_leaves_flagged_rows_out(tmp_path):
    rows = _speed_rows2("cpu (x)", 10, 12) + _speed_rows2("NVIDIA H200", 4000, 5000)
    rows.append(dict(rows[2], model="nat_tiny", infer_samples_per_sec=9000, flag="noisy: load 3.0"))
    append_rows(tmp_path / "throughput.csv", rows)
    build_boards(tmp_path)
    board = read_csv(tmp_path / "leaderboard_speed.csv")
    assert "nat_tiny" not in set(board["model"])  # flagged: kept in the raw CSV only
    ranks = {(r.device, r.model): r.infer_rank_in_device for r in board.itertuples()}
    assert ranks[("cpu (x)", "swin_tiny_patch4_window7_224")] == 1 and ranks[("cpu (x)", "dinat_tiny")] == 2
    assert ranks[("NVIDIA H200", "swin_tiny_patch4_window7_224")] == 1 and ranks[("NVIDIA H200", "dinat_tiny")] == 2
    build_boards(tmp_path, include_flagged=True)
    assert "nat_tiny" in set(read_csv(tmp_path / "leaderboard_speed.csv")["model"])


def test_committed_results_hold_cpu_and_h200_rows_with_their_settings():
    board = read_csv(ROOT / "results" / "leaderboard_speed.csv")
    devices = set(board["device"])
    assert "NVIDIA H200" in devices and any(d.startswith("cpu") for d in devices)
    raw = read_csv(ROOT / "results" / "throughput.csv")
    ours = raw[(raw["device"] == "NVIDIA H200") & raw["git_commit"].isin(["2f49a98", "1b99095"])]
    assert len(ours) and ours["tf32_cudnn"].notna().all() and ours["dinat_timm_version"].notna().all()


def test_plot_is_named_by_what_it_shows_and_lists_every_point(tmp_path):
    append_rows(tmp_path / "throughput.csv", [dict(r, param_count=28.0, git_commit="abc1234",
                                                   timestamp="2026-11-27T01:00:00") for r in _rows()])
    written = build_boards(tmp_path)
    assert written["plot"].name == "throughput_vs_params.png" and written["plot"].stat().st_size > 10_000
    append_rows(tmp_path / "accuracy_imagenet.csv", [dict(suite="accuracy", model="dinat_tiny", top1=82.7,
                                                          dataset="imagenet", pretrained=1)])
    written = build_boards(tmp_path)
    assert written["plot"].name == "throughput_vs_top1.png" and not (tmp_path / "throughput_vs_params.png").exists()
