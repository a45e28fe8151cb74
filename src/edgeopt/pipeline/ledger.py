"""The run directory's append-only ledger: one JSON line per finished stage.

A stage is only recorded after its checkpoint is in place, so the ledger never points at
a half-written model; a torn last line (power loss mid-append) is ignored on read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn final append: everything before it is intact
    return records


def append_ledger(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
