"""Extract untrusted zip files (UK Biobank DICOM zips, uploads) without surprises.

A zip can name members outside the folder it is extracted into (``../x``, ``/etc/x``),
carry symlinks, or expand a few kilobytes into terabytes (a "zip bomb", possibly with
lying size headers or overlapping members). :func:`extract_zip` refuses all of these with
an :class:`InvalidDataError` (exit 65), and enforces its size limits on the bytes it
actually writes, not only on what the headers declare.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from medflow.errors import InvalidDataError

#: Defaults sized for imaging: a UK Biobank field zip is 10-500 MB unpacked.
MAX_TOTAL_BYTES = 8 * 2**30
#: Deflate cannot exceed ~1032:1; DICOM with large zero backgrounds reaches ~100:1.
MAX_RATIO = 200.0
MAX_MEMBERS = 100_000
#: Members smaller than this are not ratio-checked (a 4 kB run of zeros is harmless).
RATIO_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20


def extract_zip(path: str | os.PathLike, dest: str | os.PathLike, *,
                max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                max_members: int = MAX_MEMBERS) -> list[Path]:
    """Extract a zip into ``dest``, refusing unsafe members and bomb-like expansion.

    Args:
        path: the zip file.
        dest: an existing (preferably empty, temporary) folder to extract into.
        max_total_bytes: most bytes all members may expand to, declared or streamed.
        max_ratio: most uncompressed/compressed size ratio, per member (members over
            1 MiB) and for the whole archive against the zip file's size.
        max_members: most entries in the archive.

    Returns:
        The extracted regular files, in archive order.

    Note:
        Absolute names, ``..`` components, drive letters, symlinks and other special
        files, encrypted members, too many members, too many bytes (declared or actually
        produced), absurd compression ratios and corrupt or truncated archives all raise
        :class:`InvalidDataError` naming the zip. On error the files written so far are
        removed; nothing is ever written outside ``dest``.

    Example:
        >>> with tempfile.TemporaryDirectory() as tmp:           # doctest: +SKIP
        ...     files = extract_zip("20209_2_0.zip", tmp)
    """
    zpath = Path(path)
    root = Path(dest).resolve()
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zpath) as zf:
            infos = zf.infolist()
            targets = _check_members(infos, root, zpath, max_total_bytes, max_ratio,
                                     max_members)
            budget = max_total_bytes
            for info, target in zip(infos, targets):
                if target is None:  # a folder entry
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(target)
                budget -= _stream_member(zf, info, target, zpath, budget, max_ratio)
    except InvalidDataError:
        _remove(written)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        _remove(written)
        raise InvalidDataError(f"corrupt or truncated zip ({type(exc).__name__}: {exc})",
                               zpath) from None
    return written


@contextmanager
def extracted(path: str | os.PathLike, **limits) -> Iterator[Path]:
    """Context manager: the zip extracted into a temporary folder, removed on exit.

    Args:
        path: the zip file.
        **limits: ``max_total_bytes``, ``max_ratio``, ``max_members`` for :func:`extract_zip`.

    Returns:
        (yields) the temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="medflow-zip-") as tmp:
        extract_zip(path, tmp, **limits)
        yield Path(tmp)


def _check_members(infos, root: Path, zpath: Path, max_total: int, max_ratio: float,
                   max_members: int) -> list[Path | None]:
    # Everything the central directory declares is checked before a byte is written.
    if len(infos) > max_members:
        raise InvalidDataError(f"zip has {len(infos)} members, more than the limit of "
                               f"{max_members}", zpath)
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise InvalidDataError(f"zip would expand to {declared} bytes, more than the limit "
                               f"of {max_total} (zip bomb?)", zpath)
    zip_size = max(zpath.stat().st_size, 1)
    if declared > RATIO_MIN_BYTES and declared / zip_size > max_ratio:
        raise InvalidDataError(f"zip expands {declared / zip_size:.0f}-fold, more than the "
                               f"limit of {max_ratio:g} (zip bomb?)", zpath)
    targets: list[Path | None] = []
    for info in infos:
        targets.append(_target(info, root, zpath))
        if info.flag_bits & 0x1:
            raise InvalidDataError(f"zip member {info.filename!r} is encrypted", zpath)
        if info.file_size > RATIO_MIN_BYTES and \
                info.file_size / max(info.compress_size, 1) > max_ratio:
            raise InvalidDataError(f"zip member {info.filename!r} expands "
                                   f"{info.file_size / max(info.compress_size, 1):.0f}-fold, "
                                   f"more than the limit of {max_ratio:g} (zip bomb?)", zpath)
    return targets


def _target(info: zipfile.ZipInfo, root: Path, zpath: Path) -> Path | None:
    name = info.filename
    # Unix zips keep st_mode in the high 16 bits; a file type of 0 means "not recorded".
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a symlink" if stat.S_ISLNK(mode) else "a special file"
        raise InvalidDataError(f"zip member {name!r} is {kind}; refusing to extract", zpath)
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (not parts or name.startswith(("/", "\\")) or ".." in parts
            or (len(name) > 1 and name[1] == ":")):
        raise InvalidDataError(f"zip member {name!r} would be written outside the "
                               "extraction folder", zpath)
    target = root.joinpath(*parts).resolve()
    # resolve() also catches anything the checks above missed (odd separators, links).
    if target != root and root not in target.parents:
        raise InvalidDataError(f"zip member {name!r} would be written outside the "
                               "extraction folder", zpath)
    return None if info.is_dir() else target


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, zpath: Path,
                   budget: int, max_ratio: float) -> int:
    # Count real output bytes: headers can lie, and overlapping members share compressed
    # bytes, so neither the declared size nor the ratio check above is enough.
    cap = min(budget, info.file_size)
    if info.file_size > RATIO_MIN_BYTES:
        cap = min(cap, int(max_ratio * max(info.compress_size, 1)))
    n = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > cap:
                raise InvalidDataError(f"zip member {info.filename!r} expands past its "
                                       "declared size or the size limits (zip bomb?)", zpath)
            dst.write(chunk)
    return n


def _remove(files: list[Path]) -> None:
    for f in files:
        try:
            f.unlink()
        except OSError:
            pass
