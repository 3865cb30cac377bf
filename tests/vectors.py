"""The captured OpenSIPS packets kept in tests/vectors, with their manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"
OPENSIPS_21 = VECTORS / "opensips-2.1"
OPENSIPS_40 = VECTORS / "opensips-4.0"


@dataclass(frozen=True)
class Vector:
    """One .bin file and what its manifest says of it."""

    name: str
    data: bytes
    entry: dict[str, Any]

    @property
    def fields(self) -> list[dict[str, Any]]:
        return list(self.entry.get("fields") or self.entry.get("fields_complete") or [])

    @property
    def layout(self) -> str:
        return "".join(field["type"][0] for field in self.fields)

    @property
    def values(self) -> tuple[bytes | int, ...]:
        return tuple(field_value(field) for field in self.fields)


def field_value(field: dict[str, Any]) -> bytes | int:
    """A manifest field as binif decodes it: bytes for str fields, int for ints."""
    value = field["value"]
    if field["type"] == "int":
        return int(value)
    return bytes.fromhex(value) if field.get("hex") else str(value).encode()


def load(folder: Path = OPENSIPS_21, key: str = "files") -> list[Vector]:
    """Every vector the manifest lists under ``key``; fails when the folder is missing or empty."""
    manifest = json.loads((folder / "manifest.json").read_text())
    vectors = [
        Vector(entry["file"], (folder / entry["file"]).read_bytes(), entry)
        for entry in manifest[key]
    ]
    on_disk = {path.name for path in folder.glob("*.bin")}
    listed = {vector.name for vector in vectors}
    if not vectors or on_disk != listed:
        raise AssertionError(
            f"{folder}: manifest lists {sorted(listed)}, disk has {sorted(on_disk)}"
        )
    return vectors
