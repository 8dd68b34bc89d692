"""Safe zip extraction: nothing escapes the folder, bombs and corrupt archives are refused."""

from __future__ import annotations

import stat
import struct
import zipfile

import pytest

from medflow.errors import EXIT_DATA, InvalidDataError
from medflow.io import read_image
from medflow.io.safezip import extract_zip, extracted

MiB = 1 << 20


def _zip(path, members: dict[str, bytes], mode: int | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, data)
    return path


def _zeros_zip(path, n_mib: int):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as out:
            for _ in range(n_mib):
                out.write(bytes(MiB))
    return path


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    # 64 MiB of zeros deflate to ~64 kB (ratio ~1000); the limits in the tests are lowered.
    return _zeros_zip(tmp_path_factory.mktemp("bomb") / "bomb.zip", 64)


def test_extracts_nested_members(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"a/b/c.dcm": b"x" * 100, "top.txt": b"hi", "a/d/": b""})
    dest = tmp_path / "out"
    dest.mkdir()
    files = extract_zip(z, dest)
    assert _files(dest) == ["a/b/c.dcm", "top.txt"]
    assert [f.name for f in files] == ["c.dcm", "top.txt"]
    with extracted(z) as folder:
        assert (folder / "a/b/c.dcm").read_bytes() == b"x" * 100
    assert not folder.exists()  # the temporary folder is removed


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil_abs.txt",
                                  "..\\evil.txt", "C:/evil.txt"])
def test_member_escaping_the_folder_refused(tmp_path, name):
    z = _zip(tmp_path / "evil.zip", {"fine.txt": b"ok", name: b"pwned"})
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(InvalidDataError, match="outside the extraction folder") as err:
        extract_zip(z, dest)
    assert err.value.exit_code == EXIT_DATA and str(z) in str(err.value)
    assert _files(dest) == []  # checked before anything is written
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_symlink_member_refused(tmp_path):
    z = _zip(tmp_path / "link.zip", {"link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    with pytest.raises(InvalidDataError, match="symlink"):
        extract_zip(z, tmp_path)


def test_declared_size_over_limit_refused(tmp_path, bomb):
    with pytest.raises(InvalidDataError, match="expand to .* bytes, more than the limit"):
        extract_zip(bomb, tmp_path, max_total_bytes=8 * MiB)
    assert _files(tmp_path) == []


def test_compression_ratio_over_limit_refused(tmp_path, bomb):
    with pytest.raises(InvalidDataError, match="fold, more than the limit"):
        extract_zip(bomb, tmp_path, max_ratio=100)
    assert _files(tmp_path) == []


def test_lying_size_headers_caught_while_streaming(tmp_path):
    raw = bytearray(_zeros_zip(tmp_path / "liar.zip", 8).read_bytes())
    # Claim 1000 bytes in both the local header and the central directory.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature) + offset
        raw[at:at + 4] = struct.pack("<I", 1000)
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidDataError):
        extract_zip(liar, dest)
    assert _files(dest) == []  # the partial member is removed


def test_limits_hold_while_streaming_even_if_headers_pass(tmp_path, bomb, monkeypatch):
    # Disable the header checks: the byte count while writing must still stop the bomb.
    from medflow.io import safezip

    monkeypatch.setattr(safezip, "_check_members", lambda infos, root, *a: [
        safezip._target(i, root, bomb) for i in infos])
    with pytest.raises(InvalidDataError, match="expands past"):
        extract_zip(bomb, tmp_path, max_total_bytes=8 * MiB)
    assert _files(tmp_path) == []
    with pytest.raises(InvalidDataError, match="expands past"):
        extract_zip(bomb, tmp_path, max_ratio=50)
    assert _files(tmp_path) == []


def test_stream_budget_is_enforced_over_all_members(tmp_path):
    # Each member is small enough, together they are not: the running total must stop it.
    z = _zip(tmp_path / "many.zip", {f"m{i}": bytes(300_000) for i in range(4)})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidDataError, match="limit"):
        extract_zip(z, dest, max_total_bytes=1_000_000)
    with pytest.raises(InvalidDataError, match="members, more than the limit"):
        extract_zip(z, dest, max_members=3)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_zip_refused(tmp_path, damage):
    good = _zip(tmp_path / "good.zip", {"a.bin": bytes(range(256)) * 400}).read_bytes()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"PK\x03\x04" + b"\x00" * 99)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidDataError, match="corrupt or truncated zip") as err:
        extract_zip(bad, dest)
    assert str(bad) in str(err.value)
    assert _files(dest) == []


def test_corrupt_member_data_refused(tmp_path):
    raw = bytearray(_zip(tmp_path / "z.zip", {"a.bin": bytes(range(256)) * 400}).read_bytes())
    start = raw.find(b"PK\x03\x04") + 30 + len("a.bin")
    raw[start + 10:start + 40] = b"\xff" * 30  # damage the deflate stream, keep the headers
    (tmp_path / "z.zip").write_bytes(bytes(raw))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidDataError, match="corrupt or truncated zip"):
        extract_zip(tmp_path / "z.zip", dest)
    assert _files(dest) == []


def test_read_image_refuses_evil_zip(tmp_path):
    z = _zip(tmp_path / "scan.zip", {"../escape.dcm": b"DICM"})
    with pytest.raises(InvalidDataError, match="outside the extraction folder") as err:
        read_image(z)
    assert err.value.exit_code == EXIT_DATA
    assert not (tmp_path / "escape.dcm").exists()
