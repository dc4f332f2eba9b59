"""Atomic file writes and JSONL helpers: the stages talk through these files.

Every file or directory a stage writes is built under a temporary name next to it and renamed into place when it
is complete, so a path that exists is finished: its existence marks the stage done, and a killed run leaves only
a temporary that the next attempt replaces.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


class OutputDirError(OSError):
    """An output path cannot be written (read-only, not a directory, or a full disk); the message says the fix."""


def _output_error(path: Path, error: BaseException) -> OutputDirError | None:
    """``error`` explained as an ``OutputDirError`` when it means a full disk or an unwritable dir, else None."""
    code, filename = getattr(error, "errno", None), getattr(error, "filename", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or os.strerror(errno.ENOSPC) in str(error):
        reason = "no space left on the device"
    elif (code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST) and filename is not None
          and Path(os.fsdecode(filename)).is_relative_to(path.parent)):  # not a file read elsewhere
        reason = "not a writable directory"
    else:
        return None
    return OutputDirError(
        f"cannot write {path}: {reason} ({error}). Free space or fix the permissions there, or write elsewhere: "
        "hydra.run.dir=<dir> for a run, IETA_CACHE_DIR=<dir> for the model cache. Finished stages are kept; rerun "
        "the same command to continue.")


def check_writable(directory: str | os.PathLike) -> None:
    """Fail now, naming ``directory`` and the fix, if it cannot be created or a file in it written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if (explained := _output_error(directory, e)) is not None:
            raise explained from e
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write a file or a directory at; it replaces ``path`` only when
    the block completes. One writer per path: a temporary left by a killed run is discarded."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
        yield tmp
        if path.is_dir() and not path.is_symlink():  # os.replace cannot replace a non-empty directory
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            _remove(tmp)
        if isinstance(e, Exception) and (explained := _output_error(path, e)) is not None:
            raise explained from e
        raise


#: a lone surrogate (which UTF-8 cannot hold: a sample's text may carry one) is written as ``\udXXX``, in JSON the
#: escape that reads back as the same character, instead of failing the whole write
ENCODING_ERRORS = "backslashreplace"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see a partial file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", errors=ENCODING_ERRORS) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append ``records`` to ``path``, one JSON line each (a value JSON cannot hold is written as its ``str``)."""
    with open(path, "a", encoding="utf-8", errors=ENCODING_ERRORS) as f:
        f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)


def scan_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict | None, str | None]]:
    """Yield ``("file:line", record, None)`` or ``("file:line", None, error)`` per non-blank line (``.gz`` too)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, None, f"invalid JSON ({e.msg})"
                continue
            if isinstance(record, dict):
                yield where, record, None
            else:
                yield where, None, f"expected a JSON object, got {type(record).__name__}"


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", record)``; a bad line raises ``ValueError`` naming file and line."""
    for where, record, error in scan_jsonl(path):
        if error is not None:
            raise ValueError(f"{where}: {error}")
        yield where, record


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]
