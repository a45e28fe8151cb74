"""Safe archive handling: no member may land outside the destination or be a link.

``tarfile``'s ``filter="data"`` does the same for tar on Python >= 3.11.4; the checks are
spelled out so zip and tar obey one rule and older 3.11 patch releases stay safe.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from edgeopt.errors import EdgeoptError


def check_member_name(name: str, archive: Path) -> PurePosixPath:
    """Reject absolute paths, drive letters and '..' components; return the normalised path."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise EdgeoptError(f"unsafe path '{name}' in archive {archive}", "the archive is malformed or malicious")
    return p


def safe_extract_tar(archive: Path, dest: Path) -> Path:
    """Extract regular files and directories of a tar(.gz) archive into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                rel = check_member_name(m.name, archive)
                if m.issym() or m.islnk() or m.isdev():
                    raise EdgeoptError(f"archive {archive} contains a link or device '{m.name}'", "refusing to extract")
                target = dest / rel
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    assert src is not None
                    target.write_bytes(src.read())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise EdgeoptError(f"cannot read archive {archive} ({e})", "re-download it") from e
    return dest


def zip_members(zf: zipfile.ZipFile, archive: Path) -> list[tuple[PurePosixPath, zipfile.ZipInfo]]:
    """Validated (path, info) for every regular file in a zip, read in place, never extracted."""
    out = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        if mode and (mode & 0o170000) == 0o120000:
            raise EdgeoptError(f"archive {archive} contains a symlink '{info.filename}'", "refusing to read it")
        out.append((check_member_name(info.filename, archive), info))
    return out
