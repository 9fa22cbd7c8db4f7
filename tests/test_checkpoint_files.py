"""Checkpoint files checked before they are read (``dinat_timm.models._weights``): missing, empty, not a
checkpoint, corrupted bytes, a Hub blob whose bytes differ from its checksum; each names the file."""
import zipfile

import pytest
import timm
from _helpers import fixture, put_in_hf_cache, serialized

import dinat_timm  # noqa: F401

UPSTREAM = fixture("upstream_dinat_small.pt")


TINY = dict(embed_dim=32, depths=(2, 2, 3, 2), num_heads=(1, 2, 4, 8), mlp_ratio=2.0,
            dilations=[[1, 8], [1, 4], [1, 2, 1], [1, 1]], layer_scale=1e-5, num_classes=10)


def _load(path):
    return timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                             **TINY)


def test_a_named_checkpoint_that_is_missing_empty_or_not_one_is_named(tmp_path):
    with pytest.raises(RuntimeError, match=rf"checkpoint {tmp_path / 'nowhere.pth'}: no such file"):
        _load(tmp_path / "nowhere.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(RuntimeError, match=rf"checkpoint {tmp_path / 'empty.pth'} is empty"):
        _load(tmp_path / "empty.pth")
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(RuntimeError, match=rf"{tmp_path / 'notes.pth'} is not a checkpoint"):
        _load(tmp_path / "notes.pth")


def test_a_checkpoint_holding_a_list_names_the_file_and_what_it_holds(tmp_path):
    path = tmp_path / "list.pth"
    path.write_bytes(serialized([t for t in UPSTREAM["state_dict"].values()]))
    with pytest.raises(ValueError, match=rf"{path}: the checkpoint holds a list, not a state dict"):
        _load(path)


def test_corrupted_bytes_in_a_pth_fail_its_checksum(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(serialized(UPSTREAM["state_dict"]))
    _load(path)  # intact: loads
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor's storage
    data = bytearray(path.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + len(member.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"{path}: member .* fails its CRC-32 checksum"):
        _load(path)


def test_a_hub_file_whose_bytes_differ_from_its_checksum_is_refused(hf_cache, torch_hub_dir):
    payload = serialized(UPSTREAM["state_dict"])
    snapshot = put_in_hf_cache(hf_cache, "shi-labs/dinat-tiny-in1k-224", "pytorch_model.bin", payload)
    blob = snapshot.resolve()
    blob.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # one flipped bit, same size
    with pytest.raises(RuntimeError, match=r"its sha256 is [0-9a-f]{64}, the Hub's is [0-9a-f]{64}: the file is corrupted"):
        timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **TINY)
