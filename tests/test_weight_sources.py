"""Pretrained weights where users are: a mirror (``HF_ENDPOINT``), a proxy, timm's ``cache_dir``, and
their own checkpoints written by timm's train.py; safely, with every refusal naming the file.

The Hub here is a local HTTP server started by the test that serves a repo's files the way the Hub's
``resolve`` URLs do (the headers huggingface_hub reads: ``X-Repo-Commit``, ``ETag``, and ``X-Error-Code``
for a file or repo it does not have); the client is the real huggingface_hub. Nothing leaves the machine.
"""
import argparse
import hashlib
import http.server
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import timm
import torch

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.models._weights import CorruptCheckpoint, PretrainedWeightsUnavailable, UnsafeCheckpoint

from _helpers import fixture, put_in_hf_cache, serialized

HF = fixture("hf_dinat_small.pt")
REPO = "shi-labs/dinat-mini-in1k-224"  # dinat_mini.in1k's Hub repo (transformers layout)
ROOT = Path(__file__).resolve().parents[1]


def small_kwargs(config):
    return dict(embed_dim=config["embed_dim"], depths=config["depths"], num_heads=config["num_heads"],
                mlp_ratio=config["mlp_ratio"], kernel_size=config["kernel_size"], dilations=config["dilations"],
                layer_scale=config.get("layer_scale", config.get("layer_scale_init_value")), num_classes=10)


class HubLikeServer(http.server.ThreadingHTTPServer):
    """Serves ``files[(repo, filename)]`` at ``/{repo}/resolve/{revision}/{filename}`` and any other path in
    ``files[(None, path)]``; as a proxy too (a request line with a whole URL is served by its path)."""

    def __init__(self, files):
        self.files, self.requests = files, []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _serve(self, body: bool):
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((self.command, self.path))
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            known = any(r == repo for r, _ in self.server.files)
            payload = self.server.files.get((repo, filename))
            commit = hashlib.sha1(repo.encode()).hexdigest()
            headers = {"X-Repo-Commit": commit}
            if payload is None:
                headers["X-Error-Code"] = "EntryNotFound" if known else "RepoNotFound"
                return self._reply(404, headers, b"", body)
            headers["ETag"] = f'"{hashlib.sha256(payload).hexdigest()}"'
            return self._reply(200, headers, payload, body)
        payload = self.server.files.get((None, path))
        if isinstance(payload, tuple):  # (bytes, headers): a page served as one, or a body cut without a length
            payload, headers = payload
            return self._reply(200, headers, payload, body)
        return self._reply(404, {}, b"", body) if payload is None else self._reply(200, {}, payload, body)

    def _reply(self, status, headers, payload, body):
        self.send_response(status)
        headers = dict(headers)
        if headers.pop("No-Length", None) is None:
            headers["Content-Length"] = str(len(payload))
        else:
            self.close_connection = True
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)


@pytest.fixture
def hub_server():
    servers = []

    def start(files):
        server = HubLikeServer(files)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


_USER_SCRIPT = textwrap.dedent("""
    import sys, timm, torch, dinat_timm
    sys.path.insert(0, {tests!r})
    from _helpers import fixture
    from test_weight_sources import small_kwargs
    HF = fixture("hf_dinat_small.pt")
    model = timm.create_model("dinat_mini", pretrained=True, cache_dir={cache_dir!r},
                              pretrained_cfg_overlay=dict(num_classes=10), **small_kwargs(HF["config"])).eval()
    with torch.no_grad():
        print("max|logits - transformers'|", float((model(HF["input"]) - HF["logits"]).abs().max()))
""")


def _run_as_a_user(tmp_path, cache_dir, **env):
    """``create_model(..., pretrained=True, cache_dir=...)`` in a fresh process with the user's
    environment (HF_ENDPOINT and the proxy variables are read when huggingface_hub is imported)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and not k.startswith("HF_")}
    clean.update(HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "default-hf-home"), TORCH_HOME=str(tmp_path / "torch-home"),
                 PYTHONPATH=str(ROOT), **env)
    script = _USER_SCRIPT.format(tests=str(ROOT / "tests"), cache_dir=str(cache_dir))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean, timeout=300)


def _transformers_repo():
    return {(REPO, "pytorch_model.bin"): serialized(HF["state_dict"])}


def test_a_mirror_serves_into_cache_dir_and_the_copy_there_is_found_offline(tmp_path, hub_server, hf_cache, torch_hub_dir):
    """HF_ENDPOINT at a mirror, an empty default cache, ``cache_dir=D``: the weights come from the mirror
    (safetensors asked for first, then the .bin), land in D only, and load with transformers' logits.
    Offline afterwards, the copy in D is what loads."""
    mirror = hub_server(_transformers_repo())
    cache = tmp_path / "my-cache"
    proc = _run_as_a_user(tmp_path, cache, HF_ENDPOINT=mirror.url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < 1e-4
    fetched = [path.split("/")[-1] for _, path in mirror.requests if "/resolve/" in path]
    assert fetched[0] == "model.safetensors" and "pytorch_model.bin" in fetched
    blobs = list((cache / ("models--" + REPO.replace("/", "--")) / "blobs").iterdir())
    assert [b.name for b in blobs] == [hashlib.sha256(_transformers_repo()[(REPO, "pytorch_model.bin")]).hexdigest()]
    assert not (tmp_path / "default-hf-home").exists() or not any((tmp_path / "default-hf-home").rglob("*.bin"))

    # offline, this process (HF_HUB_OFFLINE, the hf_cache fixture's empty default cache): found in D
    model = timm.create_model("dinat_mini", pretrained=True, cache_dir=cache, pretrained_cfg_overlay=dict(num_classes=10),
                              **small_kwargs(HF["config"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(HF["input"]), HF["logits"], atol=1e-4, rtol=0)
    with pytest.raises(PretrainedWeightsUnavailable, match="offline"):
        timm.create_model("dinat_mini", pretrained=True, **small_kwargs(HF["config"]))  # not in the default cache


def test_a_proxy_is_honoured(tmp_path, hub_server):
    """The Hub's host cannot be resolved here; only through HTTPS_PROXY/HTTP_PROXY (the local server acting
    as the proxy, serving the whole URLs it is asked for) can the files come."""
    proxy = hub_server(_transformers_repo())
    proc = _run_as_a_user(tmp_path, tmp_path / "cache", HF_ENDPOINT="http://hub.invalid",
                          HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < 1e-4
    assert any(path.startswith("http://hub.invalid/") for _, path in proxy.requests), proxy.requests


@pytest.fixture
def online_at(monkeypatch, hf_cache, torch_hub_dir):
    """This process online, with huggingface_hub talking to ``url`` as HF_ENDPOINT would make it."""
    import huggingface_hub.constants as constants

    def point_at(url):
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    return point_at


def test_when_nothing_is_reachable_it_fails_at_once_naming_the_mirror_not_huggingface_co(tmp_path, online_at):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    online_at(closed)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        timm.create_model("dinat_mini", pretrained=True, cache_dir=tmp_path / "D",
                          pretrained_cfg_overlay=dict(url=closed + "/dinat_mini.pth"))
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert f"{closed} ({REPO}) could not serve it" in message and f"{closed}/dinat_mini.pth could not be fetched" in message
    assert f"{closed}/{REPO}/resolve/main/pytorch_model.bin" in message and "huggingface.co" not in message
    assert str(tmp_path / "D" / ("models--" + REPO.replace("/", "--"))) in message and "--cache-dir" in message


def test_the_original_url_serves_when_the_mirror_does_not_have_the_repo(tmp_path, hub_server, online_at):
    upstream = fixture("upstream_dinat_small.pt")
    server = hub_server({(None, "/checkpoints/dinat_mini_in1k_224.pth"): serialized(upstream["state_dict"])})
    online_at(server.url)
    model = timm.create_model("dinat_mini", pretrained=True, cache_dir=tmp_path / "D",
                              pretrained_cfg_overlay=dict(url=server.url + "/checkpoints/dinat_mini_in1k_224.pth",
                                                          num_classes=10),
                              **small_kwargs(upstream["config"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(upstream["input"]), upstream["logits"], atol=1e-4, rtol=0)
    assert (tmp_path / "D" / "dinat_mini_in1k_224.pth").is_file()  # where timm's own URL download puts it
    assert [p.name for p in (tmp_path / "D").iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_cache_dir_holds_either_layout_offline(tmp_path, hf_cache, torch_hub_dir):
    upstream = fixture("upstream_dinat_small.pt")
    hub_layout, url_layout = tmp_path / "hub-layout", tmp_path / "url-layout"
    put_in_hf_cache(hub_layout, REPO, "pytorch_model.bin", serialized(HF["state_dict"]))
    url_layout.mkdir()
    (url_layout / "dinat_mini_in1k_224.pth").write_bytes(serialized(upstream["state_dict"]))
    for cache, ref in ((hub_layout, HF), (url_layout, upstream)):
        model = timm.create_model("dinat_mini", pretrained=True, cache_dir=cache,
                                  pretrained_cfg_overlay=dict(num_classes=10), **small_kwargs(ref["config"])).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(ref["input"]), ref["logits"], atol=1e-4, rtol=0)
        assert model.pretrained_cfg["file"].startswith(str(cache))


# -- checkpoints users write ----------------------------------------------------------------------------------


def _train_py_checkpoint(tmp_path, ema_offset=0.5):
    """A checkpoint as timm's train.py writes it: its CheckpointSaver, with args, EMA, AMP scaler, metric."""
    from timm.utils import CheckpointSaver, ModelEmaV3, NativeScaler

    upstream = fixture("upstream_dinat_small.pt")
    model = timm.create_model("dinat_tiny", **small_kwargs(upstream["config"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = ModelEmaV3(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(ema_offset)  # EMA weights that differ from the plain ones, to see which are taken
    args = argparse.Namespace(model="dinat_tiny", lr=1e-3, epochs=1, amp=True, model_ema=True, mean=None, std=None,
                              input_size=None, aa="rand-m9-mstd0.5-inc1", layer_decay=None, betas=(0.9, 0.999))
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, amp_scaler=NativeScaler(device="cpu"),
                            checkpoint_dir=str(tmp_path), max_history=2)
    saver.save_checkpoint(epoch=0, metric=71.5)
    return tmp_path / "model_best.pth.tar", model, ema.module, upstream


def test_a_train_py_checkpoint_loads_its_ema_weights_by_file_and_says_so(tmp_path, caplog):
    path, model, ema, upstream = _train_py_checkpoint(tmp_path)
    with pytest.raises(Exception, match="weights_only|Unsupported global|argparse"):  # what plain torch.load does
        torch.load(path, weights_only=True)
    with caplog.at_level(logging.INFO, logger="dinat_timm"):
        loaded = timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                                   **small_kwargs(upstream["config"]))
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, ema.state_dict()[name], atol=0, rtol=0)
    assert any(r.levelno == logging.WARNING and "'state_dict_ema' and 'state_dict'" in r.getMessage()
               and str(path) in r.getMessage() for r in caplog.records), caplog.text
    assert f"Loaded state_dict_ema from checkpoint '{path}'" in caplog.text


def test_a_train_py_checkpoint_without_ema_loads_its_weights(tmp_path):
    from timm.utils import CheckpointSaver

    upstream = fixture("upstream_dinat_small.pt")
    model = timm.create_model("dinat_tiny", **small_kwargs(upstream["config"]))
    saver = CheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            args=argparse.Namespace(model="dinat_tiny"), checkpoint_dir=str(tmp_path))
    saver.save_checkpoint(epoch=3)
    path = tmp_path / "checkpoint-3.pth.tar"
    loaded = timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                               **small_kwargs(upstream["config"]))
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name], atol=0, rtol=0)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # what unpickling would call


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint-9.pth.tar"
    torch.save({"state_dict": fixture("upstream_dinat_small.pt")["state_dict"], "args": _RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpoint) as info:
        timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    assert str(path) in str(info.value) and "posix.mkdir" in str(info.value) and "nothing of it was run" in str(info.value)
    assert not marker.exists()


def test_a_truncated_or_malformed_safetensors_file_is_named_by_safetensors_own_reader(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in HF["state_dict"].items()}, str(good))
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    bad_json = tmp_path / "bad.safetensors"
    bad_json.write_bytes(data[:8] + b"{" + b"x" * (int.from_bytes(data[:8], "little") - 1) + data[8 + int.from_bytes(data[:8], "little"):])
    for path, words in ((cut, "file not fully covered"), (bad_json, "invalid JSON")):
        with pytest.raises(CorruptCheckpoint, match="not a valid safetensors file") as info:
            timm.create_model("dinat_mini", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                              **small_kwargs(HF["config"]))
        assert str(path) in str(info.value) and words in str(info.value)


def test_a_truncated_pth_is_called_a_damaged_archive(tmp_path):
    data = serialized(HF["state_dict"])
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match=r"is a damaged zip archive .*end is missing"):
        timm.create_model("dinat_mini", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))


@pytest.mark.parametrize("served, words", [
    ((b"<!DOCTYPE html><html>Sign in</html>", {"Content-Type": "text/html; charset=utf-8"}), "a text/html page"),
    ("cut", "damaged zip archive"),
], ids=["an-html-page", "cut-without-a-length"])
def test_a_download_that_is_not_the_whole_checkpoint_never_becomes_the_cached_copy(tmp_path, hub_server, served, words):
    """A page served with 200, or a checkpoint cut short by a server that sent no length: not cached (the next
    call fetches again), the reason said with the URL."""
    from dinat_timm.models._weights import WeightSources

    whole = serialized(fixture("upstream_dinat_small.pt")["state_dict"])
    if served == "cut":
        served = (whole[: len(whole) // 2], {"No-Length": "1", "Content-Type": "application/octet-stream"})
    server = hub_server({(None, "/w/dinat_mini.pth"): served})
    sources = WeightSources(None, f"{server.url}/w/dinat_mini.pth", str(tmp_path / "cache"))
    found, problems = sources.download()
    assert found is None and words in problems[0] and server.url in problems[0], problems
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    server.files[(None, "/w/dinat_mini.pth")] = whole  # the server mended: fetched again, and cached
    found, _ = WeightSources(None, f"{server.url}/w/dinat_mini.pth", str(tmp_path / "cache")).download()
    assert found and Path(found).read_bytes() == whole
