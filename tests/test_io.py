"""Atomic writes: a path exists only complete; a full disk or an unwritable dir fails naming the path and the fix,
and what was written before is kept."""

import subprocess

import pytest
import torch
from safetensors.torch import save_file

from ieta.io import OutputDirError, append_jsonl, atomic_path, atomic_write_text, check_writable, read_jsonl


@pytest.fixture
def full_dir(tmp_path):
    """A directory on a real, full 64 KiB tmpfs (needs root); holds ``kept.txt``, written before it filled up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mount / "kept.txt").write_text("finished stage\n")
        with pytest.raises(OSError), open(mount / "filler", "wb") as f:
            f.write(b"\0" * (1 << 20))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_failed_block_leaves_nothing_and_a_killed_runs_temporary_is_replaced(tmp_path):
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not target.exists() and not tmp.exists()
    (tmp_path / ".adapter.tmp").mkdir()  # what a SIGKILL mid-write leaves
    (tmp_path / ".adapter.tmp" / "stale.bin").write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_bytes(b"w")
    assert [p.name for p in target.iterdir()] == ["weights.bin"] and not tmp.exists()


def _overwrite_file(path):
    atomic_write_text(path / "kept.txt", "x" * (1 << 20))


def _write_directory(path):  # built in place, as save_pretrained builds an adapter
    with atomic_path(path / "adapter") as tmp:
        tmp.mkdir()
        save_file({"w": torch.zeros(1 << 18)}, tmp / "adapter_model.safetensors")


@pytest.mark.parametrize("write", [_overwrite_file, _write_directory])
def test_full_disk_names_the_path_and_keeps_what_was_written(full_dir, write):
    with pytest.raises(OutputDirError, match="no space left on the device.*hydra.run.dir=<dir>"):
        write(full_dir)
    assert (full_dir / "kept.txt").read_text() == "finished stage\n"
    assert sorted(p.name for p in full_dir.iterdir()) == ["filler", "kept.txt"]
    with pytest.raises(OutputDirError, match=f"cannot write {full_dir}: no space left"):
        check_writable(full_dir)


def test_unwritable_output_dir_is_named_with_the_fix(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputDirError, match=f"cannot write {tmp_path}/file/run: not a writable directory.*hydra.run.dir"):
        check_writable(tmp_path / "file" / "run")
    with pytest.raises(OutputDirError, match="not a writable directory"):
        atomic_write_text(tmp_path / "file" / "metrics.json", "{}")


def test_appended_lines_keep_what_came_before_and_survive_a_lone_surrogate(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}])
    append_jsonl(path, [{"code": "x = '\ud800'", "when": tmp_path}, {"b": "é"}])
    assert read_jsonl(path) == [{"a": 1}, {"code": "x = '\ud800'", "when": str(tmp_path)}, {"b": "é"}]
