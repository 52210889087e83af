"""The weight registry: a manifest of models, sha256-checked safetensors, a user cache, download on first use.

Weights are data: they are read with `safetensors` (no pickle, no code execution) and only after
their sha256 matches the manifest. Small weights ship in `Resources/models/`; larger ones name a
`url` and are fetched once into the user cache (`PANCREASAI_CACHE`, default
`~/.cache/pancreasai/models`), written to a temporary name and renamed only when the checksum
matches, so an interrupted or tampered download never lands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from PancreasAILib.atomic import write_text_atomically
from PancreasAILib.errors import ExitCode, PancreasAIError

MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class WeightsError(PancreasAIError):
    """Weights that are missing, fail their checksum or cannot be fetched."""

    exit_code = ExitCode.BAD_INPUT


@dataclass
class ModelEntry:
    """One model in the manifest. `file` is relative to the manifest's folder (or the cache when fetched)."""

    name: str
    version: str
    file: str
    sha256: str
    url: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # constructor arguments of the network
    input_spec: dict[str, Any] = field(default_factory=dict)  # spacing, channels, HU window, patch
    card: dict[str, Any] = field(default_factory=dict)  # training data, licence, intended use, metrics
    calibration: dict[str, Any] = field(default_factory=dict)  # output calibration (numbers), if any
    # Further weights of the same network whose probabilities are averaged with this one's (an
    # ensemble): each {"file", "sha256", "url", "card"}, verified exactly like `file`.
    members: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def member_entries(self) -> list[ModelEntry]:
        """This entry and one entry per further member, each naming one weight file to verify and load."""
        return [self] + [
            replace(self, file=m["file"], sha256=m["sha256"], url=m.get("url"), members=[])
            for m in self.members
        ]


def resources_dir() -> Path:
    """`Resources/models` beside the package (a source checkout or the Slicer module), or $PANCREASAI_MODELS."""
    override = os.environ.get("PANCREASAI_MODELS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "Resources" / "models"


def cache_dir() -> Path:
    return Path(os.environ.get("PANCREASAI_CACHE", Path.home() / ".cache" / "pancreasai" / "models"))


def manifest_path(root: Path | None = None) -> Path:
    return (root or resources_dir()) / "manifest.json"


def read_manifest(root: Path | None = None) -> dict[str, ModelEntry]:
    path = manifest_path(root)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("manifest_version") != MANIFEST_VERSION:
        raise WeightsError(
            f"{path} has manifest_version {data.get('manifest_version')!r}, expected {MANIFEST_VERSION}.",
            "Update PancreasAI, or restore the manifest that came with it.",
        )
    return {
        name: ModelEntry(name=name, **{k: v for k, v in entry.items() if k != "name"})
        for name, entry in data.get("models", {}).items()
    }


def write_manifest(entries: dict[str, ModelEntry], root: Path | None = None) -> Path:
    body = {
        "manifest_version": MANIFEST_VERSION,
        "models": {
            name: {k: v for k, v in e.to_dict().items() if k != "name"} for name, e in sorted(entries.items())
        },
    }
    return write_text_atomically(manifest_path(root), json.dumps(body, indent=2) + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def get_entry(name: str, root: Path | None = None) -> ModelEntry:
    entries = read_manifest(root)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise WeightsError(
            f"No model named {name!r} in {manifest_path(root)} (known: {known}).",
            "Train it with `pancreasai train`, or restore Resources/models from the release.",
        )
    return entries[name]


def locate_weights(entry: ModelEntry, root: Path | None = None, *, allow_download: bool = True) -> Path:
    """The verified local file of `entry`: shipped beside the manifest, in the cache, or downloaded now."""
    for candidate in ((root or resources_dir()) / entry.file, cache_dir() / entry.file):
        if candidate.is_file():
            actual = sha256_of(candidate)
            if actual != entry.sha256:
                raise WeightsError(
                    f"The weights {candidate} of model {entry.name!r} fail their checksum "
                    f"(sha256 {actual[:12]}…, manifest says {entry.sha256[:12]}…).",
                    "Delete the file so it is fetched again, or reinstall PancreasAI; never load unverified weights.",
                )
            return candidate
    if entry.url and allow_download:
        return download_weights(entry)
    raise WeightsError(
        f"The weights of model {entry.name!r} ({entry.file}) are neither shipped nor cached"
        + ("" if entry.url else " and have no download URL")
        + ".",
        "Run once with network access, or copy the file into " + str(cache_dir()) + ".",
    )


def download_weights(entry: ModelEntry) -> Path:
    """Fetch `entry.url` into the cache (temporary name, checksum, rename). Supports https:// and file://."""
    assert entry.url is not None
    target = cache_dir() / entry.file
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        actual = sha256_of(tmp)
        if actual != entry.sha256:
            raise WeightsError(
                f"The download of model {entry.name!r} from {entry.url} fails its checksum "
                f"(sha256 {actual[:12]}…, manifest says {entry.sha256[:12]}…); it was discarded.",
                "Check the URL in Resources/models/manifest.json, or retry later.",
            )
        os.replace(tmp, target)
        return target
    except OSError as err:  # URLError is an OSError: no network, 404, unreadable file:// path
        raise WeightsError(
            f"Could not download model {entry.name!r} from {entry.url}: {err}.",
            "Check the network or the URL, or place the file in " + str(cache_dir()) + ".",
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def load_model_weights(
    name: str, root: Path | None = None, *, allow_download: bool = True
) -> tuple[dict[str, torch.Tensor], ModelEntry]:
    """The verified state dict of model `name` and its manifest entry (safetensors: no code runs)."""
    entry = get_entry(name, root)
    path = locate_weights(entry, root, allow_download=allow_download)
    return load_file(str(path)), entry


def load_ensemble_weights(
    name: str, root: Path | None = None, *, allow_download: bool = True
) -> tuple[list[dict[str, torch.Tensor]], ModelEntry]:
    """The verified state dicts of every member of model `name` (one for a single network)."""
    entry = get_entry(name, root)
    states = [
        load_file(str(locate_weights(member, root, allow_download=allow_download)))
        for member in entry.member_entries()
    ]
    return states, entry


def save_weights(
    state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors atomically (contiguous CPU tensors, no shared storage).

    `metadata` is stored as one sorted JSON string under "pancreasai": safetensors writes its
    metadata map in hash order, which varies between processes, so the same weights saved twice
    would otherwise get different sha256 sums.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    header = {"pancreasai": json.dumps(metadata, sort_keys=True)} if metadata else None
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def register_weights(
    name: str,
    weights_file: Path,
    *,
    version: str,
    config: dict[str, Any],
    input_spec: dict[str, Any],
    card: dict[str, Any],
    url: str | None = None,
    root: Path | None = None,
) -> ModelEntry:
    """Copy `weights_file` into the model folder as `<name>.safetensors` and record it in the manifest.

    This replaces the model, ensemble members included (their files are removed)."""
    folder = root or resources_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    _copy_atomically(weights_file, target)
    stale_members = list(folder.glob(f"{name}.member*.safetensors"))
    entry = ModelEntry(
        name=name,
        version=version,
        file=target.name,
        sha256=sha256_of(target),
        url=url,
        config=config,
        input_spec=input_spec,
        card=card,
    )
    entries = read_manifest(folder)
    entries[name] = entry
    write_manifest(entries, folder)
    for stale in stale_members:  # only once the manifest no longer names them
        stale.unlink()
    return entry


def add_ensemble_member(
    name: str,
    weights_file: Path,
    *,
    version: str,
    card: dict[str, Any],
    url: str | None = None,
    root: Path | None = None,
) -> ModelEntry:
    """Add `weights_file` to model `name` as a further member, averaged with the registered weights.

    The new weights must fit the registered network (same tensor names and shapes); the model's
    output calibration is cleared because its outputs change."""
    folder = root or resources_dir()
    entry = get_entry(name, folder)
    reference = load_file(str(locate_weights(entry, folder, allow_download=False)))
    candidate = load_file(str(weights_file))
    shapes = {k: tuple(v.shape) for k, v in reference.items()}
    if {k: tuple(v.shape) for k, v in candidate.items()} != shapes:
        raise WeightsError(
            f"{weights_file} does not fit the registered {name!r} network (different tensors or shapes).",
            "Train the member with the registered network's widths (the default ones, or `--init-from-shipped`).",
        )
    target = folder / f"{name}.member{len(entry.members) + 1}.safetensors"
    _copy_atomically(weights_file, target)
    member = {"file": target.name, "sha256": sha256_of(target), "url": url, "card": card}
    entries = read_manifest(folder)
    entries[name] = replace(entry, version=version, members=[*entry.members, member], calibration={})
    write_manifest(entries, folder)
    return entries[name]


def _copy_atomically(source: Path, target: Path) -> None:
    if Path(source).resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def set_calibration(
    name: str, calibration: dict[str, Any], root: Path | None = None, input_spec: dict[str, Any] | None = None
) -> ModelEntry:
    """Record an output calibration for the registered weights of `name` (cleared when they are
    replaced), with `input_spec` entries the calibration was fitted under (e.g. the lesion weighting)."""
    folder = root or resources_dir()
    entries = read_manifest(folder)
    if name not in entries:
        raise WeightsError(
            f"No model named {name!r} in {manifest_path(folder)}.", "Register its weights first."
        )
    spec = {**entries[name].input_spec, **(input_spec or {})}
    entries[name] = replace(entries[name], calibration=dict(calibration), input_spec=spec)
    write_manifest(entries, folder)
    return entries[name]
