"""Atomic outputs: nothing half-written, an existing output kept until the new one is complete."""

import stat

import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output


def test_file_appears_only_when_complete_with_the_usual_mode(tmp_path):
    out = tmp_path / "a.bin"
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # readable by group/others under a normal umask
    assert list(tmp_path.iterdir()) == [out]


def test_error_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert out.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [out]


def test_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "MARK").write_text("old")
    with atomic_output(out, directory=True, marker="MARK") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_foreign_directory_is_never_replaced(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "important.txt").write_text("keep")
    with pytest.raises(HapiError, match="no manifest.json in it"):
        with atomic_output(out, directory=True, marker="manifest.json"):
            raise AssertionError("must not be reached")
    assert [p.name for p in out.iterdir()] == ["important.txt"]


def test_kind_mismatch_and_unwritable_paths_are_user_errors(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(HapiError, match="is not a file"):
        with atomic_output(tmp_path / "dir"):
            pass
    with pytest.raises(HapiError, match="is not a folder"):
        with atomic_output(tmp_path / "file", directory=True):
            pass
    with pytest.raises(HapiError, match="cannot write file"):
        with atomic_output(tmp_path / "file" / "below.json"):
            pass
