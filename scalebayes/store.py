"""Output files that are never lost: atomic writes, a lock on an output folder and an up-front writability check.

:meth:`Posterior.save <scalebayes.posterior.Posterior.save>` writes through :func:`atomic_path` and the report
writer through :func:`atomic_write_text`: a file is written under a temporary name in the same folder and renamed
into place only once complete, so a crash, ``kill -9`` or Ctrl-C part-way leaves the previous file intact (at worst
``kill -9`` leaves a hidden ``.NAME.*.tmp`` file behind). A command that writes several files holds
:func:`output_folder` while it runs: it makes the folder (removing it again, if it stays empty, when the command
fails), checks it can be written before any expensive work, and locks it so that two runs cannot interleave their
files; it writes the set into :func:`staged_outputs`, which moves the files into place together.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import DependencyError, OutputError

try:  # POSIX; elsewhere the folder lock is skipped (atomic writes still hold)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Name of the lock file held in an output folder while a command writes into it.
LOCK_NAME = ".scalebayes.lock"
#: Prefix of the staging folders of :func:`staged_outputs`; one found under the lock was left by a killed run.
STAGING_PREFIX = ".staging-"


def _temp_sibling(path: Path) -> Path:
    """An unused hidden name beside ``path`` that keeps its suffix (so engines that look at it still work)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


class _HeldInterrupt:
    """While active, a first Ctrl-C (SIGINT) is held instead of raised; :meth:`check` raises it at a safe point.

    Python raises KeyboardInterrupt wherever the interpreter happens to be, which inside a C library's callback
    (h5py writing netCDF) means "Exception ignored" and a lost Ctrl-C. Holding it until the write returns keeps
    it. A second Ctrl-C raises at once. Only in the main thread, and only over Python's default handler.
    """

    def __init__(self):
        self.pending = False
        self._previous = None

    def __enter__(self) -> _HeldInterrupt:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``, on any failure
    (an exception, Ctrl-C) it is removed and ``path`` is left as it was.

    Files are flushed to disk and renamed with :func:`os.replace` (atomic on one file system). A folder (a zarr
    store) cannot be renamed over a non-empty one, so the old folder is first moved aside and deleted only after
    the new one is in place: the old result exists at every moment. A Ctrl-C during the write is held until the
    writer returns and then raised before the rename (see :class:`_HeldInterrupt`).
    """
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        with _HeldInterrupt() as held:
            yield tmp
            held.check()
            _commit(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    held.check()  # a Ctrl-C during the rename: the new file is whole, and the interrupt is not lost


def _commit(tmp: Path, path: Path) -> None:
    if tmp.is_dir():
        _replace_folder(tmp, path)
    else:
        _fsync(tmp)
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``. The report writer's
    ``path.write_text(page)`` becomes ``atomic_write_text(path, page)``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's bytes to disk, so a rename never exposes a file whose content is still in flight."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_folder(new: Path, path: Path) -> None:
    if not path.exists():
        os.replace(new, path)
        return
    old = _temp_sibling(path)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)  # put the old result back
        raise
    _remove(old)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_writable(folder: str | Path) -> None:
    """Raise :class:`~scalebayes.errors.OutputError` unless a file can be created in the existing ``folder``.

    It creates and deletes a probe file rather than asking :func:`os.access`, which answers for permission bits
    only (not read-only mounts, and always "yes" for root).
    """
    folder = Path(folder)
    probe = _temp_sibling(folder / "write-check")
    try:
        probe.touch(exist_ok=False)
    except OSError as e:
        raise OutputError(f"cannot write to the output folder {folder}: {e.strerror or e}") from e
    probe.unlink(missing_ok=True)


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, outermost last."""
    out = []
    p = folder
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and parents); returns the folders this call created, innermost first."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder {folder} exists and is not a folder")
    created = _missing_ancestors(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {folder}: {e.strerror or e}") from e
    return created


def _remove_if_empty(created: list[Path]) -> None:
    for p in created:  # innermost first; stop at the first that holds something
        try:
            p.rmdir()
        except OSError:
            return


class _FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.scalebayes.lock`` (POSIX), removed on release."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover - no flock on this platform
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have removed the file between our open and our lock: then we locked an
            # orphan and another run may hold a fresh file. Only a lock on the file still at the path counts.
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            raise OutputError(
                f"the output folder {self.path.parent} is in use by another scalebayes run{self._holder()}; "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (process {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked, so no other run can be holding it
        os.close(self.fd)  # closing drops the lock
        self.fd = None


@contextlib.contextmanager
def staged_outputs(folder: str | Path, *, drop: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``folder``; write a set of output files there. On success the files
    named in ``drop`` (of the old set, which the new set leaves out) are removed from ``folder`` and every file of
    the stage is moved in (replacing files of the same name); on failure or Ctrl-C the staging folder is removed and
    ``folder``'s files are left as they were: a set of outputs is replaced whole or not at all.
    """
    folder = Path(folder)
    stage = folder / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
        with _HeldInterrupt() as held:  # a Ctrl-C now would leave half the set moved
            held.check()
            for name in drop:  # first: a crash midway then leaves the old files without it, never a mixed set
                _remove(folder / name)
            for item in sorted(stage.iterdir()):
                _commit(item, folder / item.name)
        held.check()  # arrived during the moves: the new set is complete, and the interrupt is not lost
    finally:
        _remove(stage)


@contextlib.contextmanager
def output_folder(folder: str | Path) -> Iterator[Path]:
    """Hold an output folder for a command that writes several files into it.

    Creates ``folder`` if needed, checks that it can be written (before any expensive work) and locks it against
    a second scalebayes run (:class:`~scalebayes.errors.OutputError` naming the folder if another holds it). On
    failure or Ctrl-C, the folders this call created are removed again when nothing was written into them.
    """
    folder = Path(folder)
    created = _make_folder(folder)
    lock = _FolderLock(folder)
    try:
        check_writable(folder)
        lock.acquire()
        for stale in folder.glob(f"{STAGING_PREFIX}*"):  # under the lock no other run is writing: left by kill -9
            _remove(stale)
        yield folder
    except BaseException:
        lock.release()
        _remove_if_empty(created)
        raise
    lock.release()


#: Oldest zarr that reads posterior stores: zarr 2 can unpickle object arrays found in a store, so a crafted
#: ``.zarr`` could run code on load; zarr 3 has no pickle codec.
ZARR_MIN = (3, 0)


def require_zarr() -> None:
    """Raise :class:`~scalebayes.errors.DependencyError` unless zarr >= 3 is installed."""
    try:
        version = importlib.metadata.version("zarr")
    except importlib.metadata.PackageNotFoundError:
        raise DependencyError(
            "posterior.zarr needs the zarr package (>= 3): pip install 'scalebayes[zarr]' (or use .nc)"
        ) from None
    if _version_tuple(version) < ZARR_MIN:
        raise DependencyError(
            f"posterior.zarr needs zarr >= 3 (installed: {version}; zarr 2 can run pickled code from a store): "
            "pip install -U 'zarr>=3' (or use .nc)"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    """``'3.1.2'`` → ``(3, 1, 2)``; stops at the first part that is not a number (``'3.0.0rc1'`` → ``(3, 0)``)."""
    out = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)
