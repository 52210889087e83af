"""Weight registry: sha256 verification, safe loading, cache and download on first use (file:// URLs)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from PancreasAILib.models.registry import (
    WeightsError,
    add_ensemble_member,
    download_weights,
    get_entry,
    load_ensemble_weights,
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


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_weights_are_refused(registry):
    root, _, _ = registry
    path = root / "net.safetensors"
    _flip_last_byte(path)
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


def _member_weights(tmp_path, state, offset: float, name: str = "member.safetensors"):
    return save_weights({k: v + offset for k, v in state.items()}, tmp_path / "trained" / name)


def test_an_ensemble_member_loads_beside_the_registered_weights(registry, tmp_path):
    root, entry, state = registry
    member = _member_weights(tmp_path, state, 1.0)
    grown = add_ensemble_member("net", member, version="1+s2", card={"command": "train again"}, root=root)
    assert grown.version == "1+s2" and grown.sha256 == entry.sha256  # the first member is untouched
    states, loaded = load_ensemble_weights("net", root)
    assert [m.file for m in loaded.member_entries()] == ["net.safetensors", "net.member1.safetensors"]
    assert torch.equal(states[0]["layer.weight"], state["layer.weight"])
    assert torch.equal(states[1]["layer.weight"], state["layer.weight"] + 1.0)
    assert loaded.members[0]["card"] == {"command": "train again"}


def test_a_tampered_ensemble_member_is_refused(registry, tmp_path):
    root, _, state = registry
    add_ensemble_member("net", _member_weights(tmp_path, state, 1.0), version="2", card={}, root=root)
    path = root / "net.member1.safetensors"
    _flip_last_byte(path)
    with pytest.raises(WeightsError, match="fail their checksum"):
        load_ensemble_weights("net", root)


def test_a_member_of_another_network_is_refused_and_nothing_changes(registry, tmp_path):
    root, _, _ = registry
    before = (root / "manifest.json").read_text()
    other = save_weights({"layer.weight": torch.zeros(5, 4)}, tmp_path / "trained" / "other.safetensors")
    with pytest.raises(WeightsError, match="does not fit"):
        add_ensemble_member("net", other, version="2", card={}, root=root)
    assert (root / "manifest.json").read_text() == before
    assert not list(root.glob("net.member*"))


def test_registering_new_weights_replaces_the_whole_ensemble(registry, tmp_path):
    root, _, state = registry
    add_ensemble_member("net", _member_weights(tmp_path, state, 1.0), version="2", card={}, root=root)
    fresh = _member_weights(tmp_path, state, 5.0, "fresh.safetensors")
    register_weights("net", fresh, version="3", config={}, input_spec={}, card={}, root=root)
    states, entry = load_ensemble_weights("net", root)
    assert len(states) == 1 and entry.members == []
    assert torch.equal(states[0]["layer.bias"], state["layer.bias"] + 5.0)
    assert not list(root.glob("net.member*"))


def test_an_ensemble_member_not_shipped_is_downloaded_from_its_url(registry, tmp_path):
    root, _, state = registry
    entry = add_ensemble_member("net", _member_weights(tmp_path, state, 2.0), version="2", card={}, root=root)
    server = tmp_path / "server"
    server.mkdir()
    (root / "net.member1.safetensors").rename(server / "net.member1.safetensors")
    entry.members[0]["url"] = (server / "net.member1.safetensors").as_uri()
    write_manifest({"net": entry}, root)
    states, _ = load_ensemble_weights("net", root)
    assert torch.equal(states[1]["layer.bias"], state["layer.bias"] + 2.0)
    assert (tmp_path / "cache" / "net.member1.safetensors").is_file()


def test_the_same_weights_and_metadata_always_give_the_same_checksum(tmp_path):
    """safetensors writes metadata in hash order; stored as one sorted string, the sha256 is stable."""
    state = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}
    metadata = {f"key{i}": str(i) for i in range(12)}
    sums = set()
    for i in range(6):
        shuffled = dict(sorted(metadata.items(), key=lambda kv: (hash(kv[0]) + i) % 7))
        sums.add(sha256_of(save_weights(state, tmp_path / f"w{i}.safetensors", metadata=shuffled)))
    assert len(sums) == 1
    with safe_open(str(tmp_path / "w0.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["pancreasai"]) == metadata
