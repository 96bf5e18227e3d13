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


def test_artifacts_refuse_damaged_contents(tmp_path):
    import numpy as np

    from hapi_onnx.profile.table import TimingStats
    from hapi_onnx.trace import Trace

    good = dict(exit_names=["exit0", "final"], tensors=["t", "logits"], labels=np.array([0, 1]),
                pred=np.array([[0, 1], [1, 1]]), conf=np.full((2, 2), 0.9, np.float32), num_classes=2,
                model_fingerprint="f")
    trace = Trace(**good)
    trace.save(tmp_path / "t.npz")
    assert Trace.load(tmp_path / "t.npz").fingerprint == trace.fingerprint
    for change, message in [
        ({"pred": np.array([[0, 2], [1, 1]])}, "integer classes in"),
        ({"pred": np.array([["a", "b"], ["c", "d"]])}, "integer classes"),
        ({"conf": np.full((2, 2), 1.5, np.float32)}, "probabilities"),
        ({"num_classes": "two"}, "positive int"),
    ]:
        with pytest.raises(HapiError, match=message):
            Trace(**{**good, **change})
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(HapiError, match="not a hapi-onnx trace"):
        Trace.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(HapiError, match="not an .npz file"):
        Trace.load(tmp_path / "text.npz")
    stats = dict(n=5, warmup=1, mean_ms=1.0, p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, std_ms=0.1, min_ms=0.9)
    TimingStats(**stats)
    for bad in ({"mean_ms": -1.0}, {"p50_ms": "1"}, {"n": 0}, {"std_ms": float("nan")}):
        with pytest.raises(HapiError, match="timing statistic|n >= 1"):
            TimingStats(**{**stats, **bad})


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_the_next_write_removes_what_a_killed_writer_left_and_keeps_a_live_ones(tmp_path):
    import os

    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".out.{dead}.abc.tmp").mkdir()
    (tmp_path / f".out.{dead}.abc.tmp" / "half.npz").write_bytes(b"half")
    (tmp_path / f".out.{dead}.def.tmp").write_bytes(b"half")
    (tmp_path / f".out.{alive}.ghi.tmp").mkdir()  # another process still writing: its business
    (tmp_path / f".other.{dead}.jkl.tmp").write_bytes(b"not ours")
    with atomic_output(tmp_path / "out", directory=True) as tmp:
        (tmp / "new").write_text("new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".other.{dead}.jkl.tmp", f".out.{alive}.ghi.tmp", "out"]


def test_a_directory_swap_cut_short_by_a_kill_is_undone(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".out.{dead}.old.tmp"  # killed between moving the old output away and the new in
    old.mkdir()
    (old / "MARK").write_text("previous")
    (tmp_path / f".out.{dead}.xyz.tmp").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out", directory=True, marker="MARK"):
            raise RuntimeError("this write fails too")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "MARK").read_text() == "previous"


def test_outputs_may_not_overlap_each_other(tmp_path):
    from hapi_onnx.files import check_outputs_apart

    check_outputs_apart({"-o": tmp_path / "a.json", "--plot": tmp_path / "a.png"}, {"--in": tmp_path / "in"})
    with pytest.raises(HapiError, match="output --plot .* is the same path as the output -o"):
        check_outputs_apart({"--plot": tmp_path / "a.json", "-o": tmp_path / "x" / ".." / "a.json"}, {})
    with pytest.raises(HapiError, match="is a folder holding the output"):
        check_outputs_apart({"-o": tmp_path / "d", "--plot": tmp_path / "d" / "p.png"}, {})
