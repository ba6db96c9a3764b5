"""Refuse a ``.pt2`` archive that holds anything but raw tensor bytes, before torch opens it.

``torch.export.load`` unpickles some payloads, several with plain ``pickle`` or ``weights_only=False``:
weights and constants marked ``use_pickle``, legacy ``.pt`` weight files, ``opaque_obj_*`` and
``custom_obj_*`` constants (whatever their config says), and sample inputs when the safe load fails.
So a model file could run code; the sha256 in its manifest only proves it is the file the manifest
names. dfwatch's own exports hold raw tensor bytes, JSON and empty sample inputs only. This check
allow-lists exactly those members, and the payload configs that point at them, and refuses the rest:
a denylist of pickle members would miss the next kind torch adds.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from engines.errors import ModelLoadError, rebuild_hint

# Members below the archive's one root folder that a weights-only torch.export.save writes.
_FIXED = frozenset({"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"})
_NAME = r"[A-Za-z0-9_]+"
_ALLOWED = re.compile(
    rf"models/{_NAME}\.json"  # the serialised graph (JSON, read without pickle)
    rf"|data/weights/{_NAME}_weights_config\.json|data/constants/{_NAME}_constants_config\.json"
    r"|data/weights/weight_[0-9]+|data/constants/tensor_[0-9]+"  # raw tensor bytes
    rf"|data/sample_inputs/{_NAME}\.pt"  # must be empty: a non-empty one is a pickle
)
# Which payload file a weights / constants config entry may point at (torch dispatches on the prefix).
_PAYLOADS = {
    "_weights_config.json": re.compile(r"weight_[0-9]+"),
    "_constants_config.json": re.compile(r"tensor_[0-9]+"),
}


def check_pt2_archive(artifact: Path) -> None:
    """ModelLoadError naming the member when ``artifact`` holds anything but a weights-only export's members."""
    hint = rebuild_hint(artifact, "torch")
    try:
        archive = zipfile.ZipFile(artifact)
    except (OSError, zipfile.BadZipFile) as exc:  # torch's own reader is not asked to guess either
        raise ModelLoadError(
            f"torch cannot load {artifact} as a torch.export program (not a zip archive: {exc}); {hint}"
        ) from exc
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or any("/" not in name for name in names):
            raise ModelLoadError(
                f"{artifact}: a torch.export archive has one root folder; this one has {sorted(roots)[:5]}; {hint}"
            )
        if len(set(names)) != len(names):  # two readers could pick different copies of one name
            duplicated = sorted({name for name in names if names.count(name) > 1})
            raise ModelLoadError(f"{artifact}: members {duplicated[:3]} appear twice; refused; {hint}")
        for info in infos:
            _check_member(artifact, archive, info, info.filename.split("/", 1)[1], hint)


def _check_member(artifact: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, hint: str) -> None:
    """Refuse ``name`` (the member without its root folder) unless a weights-only export writes it."""
    if name not in _FIXED and not _ALLOWED.fullmatch(name):
        raise ModelLoadError(
            f"{artifact}: member {info.filename!r} is not one a weights-only torch.export archive holds "
            f"(raw weight_N / tensor_N bytes, JSON configs, the graph JSON); refused before torch opens it "
            f"(opaque objects, custom objects and pickles can run code); {hint}"
        )
    if name.startswith("data/sample_inputs/") and info.file_size:
        raise ModelLoadError(
            f"{artifact}: {info.filename} holds {info.file_size} bytes of sample inputs, a pickle; dfwatch's "
            f"exports write none (a pickle can run code); refused; {hint}"
        )
    suffix = next((s for s in _PAYLOADS if name.endswith(s)), None)
    if suffix is None:
        return
    try:
        config = json.loads(archive.read(info))["config"]
        entries = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{artifact}: {info.filename} is not a payload config ({exc!r}); {hint}") from exc
    for fqn, meta in entries:
        ok = (
            isinstance(meta, dict)
            and meta.get("use_pickle") is False
            and isinstance(meta.get("path_name"), str)
            and _PAYLOADS[suffix].fullmatch(meta["path_name"])
            and isinstance(meta.get("tensor_meta"), dict)
        )
        if not ok:
            shown = {k: meta.get(k) for k in ("path_name", "use_pickle")} if isinstance(meta, dict) else meta
            raise ModelLoadError(
                f"{artifact}: {info.filename} entry {fqn!r} ({shown}) is not a raw tensor payload "
                f"({_PAYLOADS[suffix].pattern} with use_pickle false); dfwatch loads only raw tensor bytes "
                f"(a pickle or opaque object can run code); {hint}"
            )
