"""The one peak-memory measurement every suite uses (``dinat_timm.bench.memory``): bytes of tensors
alive at a step's peak beyond those alive before it, read from the allocator's events on CPU and the
allocator's counters of the step's own device on CUDA."""
import pytest
import torch

from dinat_timm.bench.memory import CPU_METHOD, CUDA_METHOD, peak_memory, step_peak_memory
from dinat_timm.bench.scaling import build_backbone, step_fn
from dinat_timm.bench.steps import StepConfig, build_model, inference_step

MB = 2**20


def _bytes(n: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.uint8)


def test_a_step_allocating_known_bytes_reads_them_exactly():
    def step():
        a, b = _bytes(3 * MB), _bytes(1 * MB)  # 4 MB alive
        del a
        c = _bytes(2 * MB)  # 3 MB alive: below the peak
        del b, c

    step()
    peak = step_peak_memory(step, "cpu")
    assert (peak.bytes, peak.method) == (4 * MB, CPU_METHOD)


def test_memory_freed_from_the_step_before_counts_against_the_peak():
    """A training step frees the previous step's gradients before it makes new ones: the peak is what
    is alive beyond what was alive before, as CUDA's counters read it (the profiler alone reports no
    free of a block allocated before it started: this read 5 MB before the step ran twice under it)."""
    held = {"grads": _bytes(4 * MB)}

    def step():
        held["grads"] = None  # frees the previous step's 4 MB
        held["grads"] = _bytes(4 * MB)
        scratch = _bytes(1 * MB)
        del scratch

    step()
    assert step_peak_memory(step, "cpu").bytes == 1 * MB


def _scaling_step(model: str, mode: str, backend: str, img_size: int = 224):
    torch.manual_seed(0)
    backbone, _ = build_backbone(model, img_size, "cpu", backend)
    step = step_fn(backbone, torch.randn(1, 3, img_size, img_size), mode, "fp32")
    step()
    return step, backbone


@pytest.mark.parametrize("mode, backend", [("forward", "auto"), ("train", "gather")])
def test_models_with_identical_tensor_shapes_read_the_same_and_again(mode, backend):
    """DiNAT only changes which neighbours attend, so DiNAT-T and NAT-T allocate tensors of the same
    shapes (the resident set read 18.0 MB and 42.3 MB for their forward, and 22.7 MB in a second run).
    (``tiled``'s training step keeps strips whose halos differ with the dilation, so its two readings
    differ by what those strips hold; ``gather`` keeps the same tensors for both.)"""
    dinat, _ = _scaling_step("dinat_tiny", mode, backend)
    nat, _ = _scaling_step("nat_tiny", mode, backend)
    first = step_peak_memory(dinat, "cpu").bytes
    assert first > 1 * MB
    assert step_peak_memory(dinat, "cpu").bytes == first
    assert step_peak_memory(nat, "cpu").bytes == first


def test_the_peak_grows_with_the_image_as_the_activations_do():
    small, _ = _scaling_step("dinat_mini", "forward", "auto", 224)
    large, _ = _scaling_step("dinat_mini", "forward", "auto", 448)
    ratio = step_peak_memory(large, "cpu").bytes / step_peak_memory(small, "cpu").bytes
    assert 3.9 < ratio <= 4.0  # 4× the pixels; the rpb tables and other fixed-size tensors do not grow


def test_the_breakdown_names_blocks_and_adds_up_to_the_peak():
    step, backbone = _scaling_step("dinat_mini", "train", "auto")
    plain = step_peak_memory(step, "cpu")
    peak = step_peak_memory(step, "cpu", model=backbone)
    assert peak.bytes == plain.bytes  # labelling the blocks allocates nothing
    assert sum(peak.by_block.values()) == peak.bytes
    names = set(peak.by_block)
    assert any(n.startswith("model.stages.0.blocks.") and not n.endswith("(backward)") for n in names), names
    assert any(n.endswith("(backward)") and "stages." in n for n in names), names  # gradients, put on their block
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in backbone.modules())  # the labels are gone


def test_the_memory_suite_and_the_scaling_suite_read_the_same_step_alike():
    """The memory suite measures in a fresh worker process (it also reads the resident set there); the
    scaling suite in its own process. The same step reads the same bytes in both."""
    cfg = StepConfig(model="dinat_mini", batch_size=1, img_size=64)
    worker = peak_memory(cfg, "infer")
    step = inference_step(cfg, build_model(cfg))
    step()
    here = step_peak_memory(step, "cpu")
    assert worker["method"] == here.method == CPU_METHOD
    assert worker["peak_mem_mb"] == pytest.approx(here.mb, abs=1e-9)
    assert worker["rss_peak_mb"] is None or worker["rss_peak_mb"] >= 0


def test_cuda_counters_are_read_on_the_step_s_own_device(monkeypatch):
    """``--device cuda:1`` must read cuda:1's counters, not the current device's. Without a GPU the
    counters are stood in for, recording the device each is asked about; with one, see the test below."""
    asked = []

    def counter(name, value=0):
        def read(device=None):
            asked.append((name, device))
            return value
        return read

    monkeypatch.setattr(torch.cuda, "synchronize", counter("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", counter("reset_peak_memory_stats"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", counter("memory_allocated", 100))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", counter("max_memory_allocated", 600))
    peak = step_peak_memory(lambda: None, "cuda:1")
    assert (peak.bytes, peak.method) == (500, CUDA_METHOD)
    assert {name for name, _ in asked} == {"synchronize", "reset_peak_memory_stats", "memory_allocated",
                                           "max_memory_allocated"}
    assert all(device == torch.device("cuda", 1) for _, device in asked), asked


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_of_known_bytes_on_every_device():
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)

        def step():
            x = torch.empty(8 * MB, dtype=torch.uint8, device=device)
            del x

        step()
        assert step_peak_memory(step, device).bytes == 8 * MB


def test_an_unknown_device_is_refused_by_name():
    with pytest.raises(ValueError, match="'meta'"):
        step_peak_memory(lambda: None, "meta")
