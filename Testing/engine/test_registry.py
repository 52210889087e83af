"""Weight registry: sha256 verification, safe loading, cache and download on first use (file:// URLs)."""

from __future__ import annotations

import json

import pytest
import torch

from PancreasAILib.models.registry import (
    WeightsError,
    download_weights,
    get_entry,
    load_model_weights,
    register_weights,
    save_weights,
    sha256_of,
    write_manifest,
)


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("PANCREASAI_CACHE", str(tmp_path / "cache"))
    state = {"layer.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "layer.bias": torch.ones(3)}
    source = save_weights(state, tmp_path / "trained" / "net.safetensors")
    root = tmp_path / "models"
    entry = register_weights(
        "net",
        source,
        version="1",
        config={"width": 4},
        input_spec={"spacing": [1, 1, 1]},
        card={"intended_use": "tests"},
        root=root,
    )
    return root, entry, state


def test_registered_weights_load_bit_exact(registry):
    root, entry, state = registry
    loaded, loaded_entry = load_model_weights("net", root)
    assert loaded_entry.sha256 == entry.sha256 == sha256_of(root / "net.safetensors")
    assert loaded_entry.config == {"width": 4}
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor)


def test_tampered_weights_are_refused(registry):
    root, _, _ = registry
    path = root / "net.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="fail their checksum"):
        load_model_weights("net", root)


def test_unknown_model_names_the_known_ones(registry):
    root, _, _ = registry
    with pytest.raises(WeightsError, match="known: net"):
        get_entry("stage9", root)


def test_weights_not_shipped_are_downloaded_once_from_a_file_url(registry, tmp_path):
    root, entry, state = registry
    server = tmp_path / "server"
    server.mkdir()
    (root / "net.safetensors").rename(server / "net.safetensors")
    entry.url = (server / "net.safetensors").as_uri()
    write_manifest({"net": entry}, root)
    loaded, _ = load_model_weights("net", root)
    assert torch.equal(loaded["layer.bias"], state["layer.bias"])
    assert (tmp_path / "cache" / "net.safetensors").is_file()
    (server / "net.safetensors").unlink()  # now served from the cache, no second download
    loaded, _ = load_model_weights("net", root)
    assert torch.equal(loaded["layer.weight"], state["layer.weight"])


def test_a_download_with_the_wrong_checksum_leaves_nothing_behind(registry, tmp_path):
    _, entry, _ = registry
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not the weights")
    entry.url = bogus.as_uri()
    with pytest.raises(WeightsError, match="fails its checksum"):
        download_weights(entry)
    assert not any((tmp_path / "cache").iterdir())


def test_missing_weights_without_url_say_what_to_do(registry):
    root, _, _ = registry
    (root / "net.safetensors").unlink()
    with pytest.raises(WeightsError, match="neither shipped nor cached"):
        load_model_weights("net", root, allow_download=False)


def test_manifest_is_plain_json_with_the_checksum(registry):
    root, entry, _ = registry
    data = json.loads((root / "manifest.json").read_text())
    assert data["models"]["net"]["sha256"] == entry.sha256
