"""Outputs that appear whole or not at all, and never destroy what headcast did not write.

A folder output (:func:`staged_dir`) is built in a hidden staging folder and moved into place at the
end; it carries a manifest, ``.headcast.json`` (kind, headcast version, the entries it holds). An existing
``out`` is used only when it is empty, or, with ``force``, when it is a headcast output of the same kind:
then only the entries its manifest lists are replaced and every other file in it survives. The ``out``
folder itself is never renamed or deleted (``--out .`` is safe). A file output (:func:`staged_file`,
:func:`staged_files`) is written under a hidden name beside the target, flushed to disk and renamed into
place. On any exception, and on SIGINT, SIGTERM or SIGHUP once :func:`install_signal_handlers` ran, the
staging is removed and the target is left as it was; an ``OSError`` while writing becomes one line,
``cannot write OUT: <reason>``. See docs/guarantees.md.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from headcast import __version__
from headcast.core.errors import HeadcastError
from headcast.core.files import read_json, reason

MANIFEST = ".headcast.json"
MANIFEST_FORMAT = "headcast-output"
STAGING_MARK = ".staging-"      # in every staging name: ``.<name>.staging-<pid>-<random>``
HELD_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.EMLINK, errno.EIO}


# --- signals -----------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; raised where the program is, so that it unwinds like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (SIGINT already raises
    KeyboardInterrupt), so that every staged output is removed on the way out. The CLI's main calls it."""
    for s in HELD_SIGNALS:
        if s != signal.SIGINT:
            signal.signal(s, _raise_terminated)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the output is moved into place (a few renames): a signal
    then arrives after the move, never in the middle of it."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to hold
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- errors ------------------------------------------------------------------------------------
def _is_write_error(e: OSError, roots: Iterable[Path]) -> bool:
    """Whether ``e`` comes from writing below one of ``roots`` (a full disk, a read-only folder, ...)."""
    if e.errno not in WRITE_ERRNOS:
        return False
    if e.filename is None:
        return True
    name = os.path.abspath(os.fsdecode(e.filename))
    return any(name == str(r) or name.startswith(str(r) + os.sep) or name.startswith(str(r.parent / f".{r.name}"))
               for r in roots)


def _cannot_write(out: Path, e: OSError) -> HeadcastError:
    return HeadcastError(f"cannot write {out}: {reason(e)}")


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _check_parents(out: Path) -> None:
    """One line when a file stands where one of ``out``'s parent folders should be."""
    for p in reversed([out.parent, *out.parent.parents]):
        if p.exists() and not p.is_dir():
            raise HeadcastError(f"cannot write {out}: {p} is a file, not a folder")


def check_writable(out: Path) -> None:
    """``out`` resolved: one line, before the work, when the folder the output's staging goes in (``out`` itself when it is a
    folder, else its nearest existing parent) cannot be written: a read-only file system, no permission."""
    folder = out if out.is_dir() else next((p for p in out.parents if p.is_dir()), None)
    if folder is None or os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    raise HeadcastError(f"cannot write {out}: {'read-only file system' if read_only else 'permission denied'}")


def _make_parent(out: Path) -> None:
    """Create ``out``'s parent folders."""
    _check_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(out, e) from None


def _staging_name(target: Path, folder: Path, suffix: str = "") -> Path:
    return folder / f".{target.name}{STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def shown(path: str | Path) -> str:
    """``path`` as a message should name it: a staging folder on the way (``.OUT.staging-PID-RANDOM``, e.g. the
    demo's parts while the demo is written) named by the output it becomes."""
    return os.sep.join(re.sub(rf"^\.(.+){re.escape(STAGING_MARK)}\d+-[0-9a-f]+$", r"\1", part)
                       for part in str(path).split(os.sep))


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file below ``root`` to disk, so a rename never publishes empty files after a crash."""
    for folder, _, files in os.walk(root):
        for f in files:
            _fsync(Path(folder) / f)
        _fsync(Path(folder), directory=True)


def _remove(path: Path) -> None:
    """Remove a staging file or folder if it is there (best effort: this runs while another error unwinds)."""
    with _signals_held():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            try:
                path.unlink()
            except OSError:
                pass


# --- manifest ----------------------------------------------------------------------------------
def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of a headcast output folder (``kind``, ``version``, ``files``), or None when the
    folder has none or a damaged one (then it counts as not headcast's)."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = read_json(p, "output manifest", max_bytes=1 << 20)
    except HeadcastError:
        return None
    if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT and isinstance(m.get("kind"), str)
            and isinstance(m.get("files"), list)):
        return None
    if not all(isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..", MANIFEST) for n in m["files"]):
        return None  # a forged entry like "../x" must never make headcast move a file
    return m


def check_kind(folder: str | Path, kinds: Sequence[str], what: str) -> None:
    """Refuse an input ``folder`` whose manifest says it is a headcast output of a kind not in ``kinds``, with
    one line saying so (``what``: what the command wanted). A folder without a manifest passes (older
    outputs, other tools' folders): its files are checked as they are read."""
    m = read_manifest(folder)
    if m is not None and m["kind"] not in kinds:
        raise HeadcastError(f"{folder} is a headcast {m['kind']} folder, not {what}")


def _manifest_bytes(kind: str, names: Sequence[str]) -> bytes:
    return (json.dumps({"format": MANIFEST_FORMAT, "kind": kind, "version": __version__, "files": sorted(names)},
                       indent=2) + "\n").encode()


def extend_manifest(folder: str | Path, kind: str, names: Iterable[str]) -> None:
    """Add ``names`` (entries headcast just wrote into ``folder``, e.g. texture files in a reconstruction)
    to the folder's manifest, so that ``--force`` later replaces them too. The manifest is replaced atomically."""
    folder = Path(folder)
    m = read_manifest(folder)
    if m is None or m["kind"] != kind:
        raise HeadcastError(f"{folder} is not a headcast {kind} folder (no {MANIFEST} of that kind)")
    with staged_file(folder / MANIFEST, force=True) as tmp:
        tmp.write_bytes(_manifest_bytes(kind, set(m["files"]) | set(names)))


# --- batch folders -----------------------------------------------------------------------------
BATCH = "batch"  # the manifest kinds of batch folders: "batch reconstruct", "batch animate", "batch texture"


def batch_kind(command: str) -> str:
    """The manifest kind of a ``headcast batch COMMAND`` folder (OUT/<job>/ and OUT/summary.csv): one per
    command, so that a batch of another command is refused rather than replacing the folder's summary."""
    return f"{BATCH} {command}"


def check_batch_dir(out: str | Path, command: str) -> None:
    """Refuse ``out`` as the folder of ``headcast batch COMMAND``, in one line, unless it is absent, empty or
    an earlier batch folder of the same command (a rerun resumes it), as :func:`check_output_dir` refuses a
    folder of other files, another headcast output (a batch of another command too), a file, or a folder
    that cannot be written."""
    check_output_dir(out, batch_kind(command), force=True)


def claim_batch_dir(out: str | Path, command: str, names: Iterable[str]) -> None:
    """Make ``out`` the folder of ``headcast batch COMMAND`` before any job writes into it: created with its
    manifest listing ``names`` (the job folders and summary files the run writes) when absent or empty; an
    earlier batch folder's manifest gets ``names`` added. Refused as :func:`check_batch_dir` refuses, before
    anything is written."""
    out = _resolve(out)
    check_batch_dir(out, command)
    _make_parent(out)
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise _cannot_write(out, e) from None
    if read_manifest(out) is not None:
        extend_manifest(out, batch_kind(command), names)
        return
    with staged_file(out / MANIFEST) as tmp:
        tmp.write_bytes(_manifest_bytes(batch_kind(command), sorted(set(names))))


# --- folders -----------------------------------------------------------------------------------
def check_output_dir(out: str | Path, kind: str, *, force: bool = False, inputs: Iterable = (),
                     _ignore: str | None = None) -> list[str]:
    """Refuse ``out`` as a folder output of ``kind`` unless it is absent, empty, or (with ``force``) a
    headcast output of the same kind; refuse it when it is, or lies inside, one of ``inputs``, and when
    ``force`` would replace one of them. Returns the existing entries ``force`` replaces.

    Call it before long work, so that a refusal comes first; :func:`staged_dir` calls it again."""
    out = _resolve(out)
    ins = [_resolve(p) for p in inputs if p is not None]
    if out.exists() and not out.is_dir():
        raise HeadcastError(f"output {out} exists and is not a folder")
    _check_parents(out)
    check_writable(out)
    for p in ins:
        if out == p or p in out.parents:
            raise HeadcastError(f"output {out} is {'the' if out == p else 'inside the'} input {p}: choose another "
                                "output folder")
    if not out.is_dir() or not [n for n in os.listdir(out) if n != _ignore]:
        return []
    m = read_manifest(out)
    if m is None:
        raise HeadcastError(f"output folder {out} holds files headcast did not write: choose a new or empty folder")
    if m["kind"] != kind:
        raise HeadcastError(f"output folder {out} holds a headcast output of kind {m['kind']!r}, not {kind!r}: "
                            "choose another folder")
    if not force:
        raise HeadcastError(f"output folder {out} holds an earlier {kind}: pass --force to replace its files")
    old = [n for n in m["files"] if os.path.lexists(out / n)]
    for p in ins:
        if out in p.parents and p.relative_to(out).parts[0] in old:
            raise HeadcastError(f"--force would replace the input {p}: choose another output folder")
    return old


@contextmanager
def staged_dir(out: str | Path, kind: str, *, force: bool = False, inputs: Iterable = ()) -> Iterator[Path]:
    """Yield an empty staging folder; on success its entries become ``out``'s, with a manifest of ``kind``.

    ``kind`` names the output ("reconstruction", "animation", "demo", "decoded"); ``inputs`` are the paths
    read (see :func:`check_output_dir`). On any exception or signal the staging is removed and ``out`` is
    as it was; an OSError while writing becomes the HeadcastError ``cannot write OUT: <reason>``."""
    out = _resolve(out)
    inputs = list(inputs)
    check_output_dir(out, kind, force=force, inputs=inputs)
    _make_parent(out)
    staging = _staging_name(out, out if out.is_dir() else out.parent)
    try:
        staging.mkdir()
        yield staging
        with _signals_held():
            old = check_output_dir(out, kind, force=force, inputs=inputs, _ignore=staging.name)
            _commit_dir(staging, out, kind, old)
    except OSError as e:
        _remove(staging)
        if _is_write_error(e, (out,)):
            raise _cannot_write(out, e) from None
        raise
    except BaseException:
        _remove(staging)
        raise


def _commit_dir(staging: Path, out: Path, kind: str, old: list[str]) -> None:
    """Move the staged entries into ``out``: one rename for a new folder; entry by entry into an existing
    one, the entries it replaces set aside first and put back should a move fail."""
    names = sorted(n for n in os.listdir(staging) if n != MANIFEST)
    (staging / MANIFEST).write_bytes(_manifest_bytes(kind, names))
    _fsync_tree(staging)
    if staging.parent != out:
        os.rename(staging, out)  # also fails, rather than merge, if a non-empty ``out`` appeared meanwhile
        _fsync(out.parent, directory=True)
        return
    clash = [n for n in names if os.path.lexists(out / n) and n not in old]
    if clash:
        raise HeadcastError(f"output folder {out} has {clash[0]}, which headcast did not write: move it away "
                            "or choose another folder")
    aside = _staging_name(out, staging, ".replaced")
    aside.mkdir()
    moved_old, moved_new = [], []
    try:
        for n in old + ([MANIFEST] if os.path.lexists(out / MANIFEST) else []):
            os.rename(out / n, aside / n)
            moved_old.append(n)
        for n in names + [MANIFEST]:
            os.rename(staging / n, out / n)
            moved_new.append(n)
    except BaseException:
        for n in moved_new:
            os.rename(out / n, staging / n)
        for n in moved_old:
            os.rename(aside / n, out / n)
        raise
    _fsync(out, directory=True)
    shutil.rmtree(staging, ignore_errors=True)


# --- files -------------------------------------------------------------------------------------
def _check_file_target(target: Path, force: bool, inputs: list[Path]) -> None:
    if target.is_dir():
        raise HeadcastError(f"output {target} is a folder: give a file name")
    if target in inputs:
        raise HeadcastError(f"output {target} is an input: choose another output file")
    if os.path.lexists(target) and not force:
        raise HeadcastError(f"output {target} exists: pass --force to replace it")


def check_output_file(path: str | Path, *, force: bool = False, inputs: Iterable = ()) -> Path:
    """Refuse ``path`` as a file output as :func:`staged_files` would (a folder, an input, below a file, or
    existing without ``force``); returns it resolved. Call it before long work, so that a refusal comes first."""
    target = _resolve(path)
    _check_file_target(target, force, [_resolve(p) for p in inputs if p is not None])
    _check_parents(target)
    check_writable(target)
    return target


@contextmanager
def staged_files(paths: Sequence[str | Path], *, force: bool = False, modes: Sequence[int | None] | None = None,
                 inputs: Iterable = ()) -> Iterator[list[Path]]:
    """Yield one staging path per target (hidden, beside it, same suffix, already created with its mode);
    on success all are flushed and renamed into place together: all targets appear, or none changes.

    An existing target is refused unless ``force``; a target that is a folder or one of ``inputs`` always.
    ``modes``: permission bits per file (e.g. 0o600 for a private key; None: the usual, umask applies),
    set before anything is written. On any exception or signal the staging files are removed."""
    targets = [_resolve(p) for p in paths]
    modes = list(modes) if modes is not None else [None] * len(targets)
    ins = [_resolve(p) for p in inputs if p is not None]
    for t in targets:
        _check_file_target(t, force, ins)
        _make_parent(t)
    stagings: list[Path] = []
    try:
        for t, mode in zip(targets, modes):
            s = _staging_name(t, t.parent, t.suffix)
            stagings.append(s)  # before it exists: a signal right after the open still finds it
            fd = os.open(s, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
            if mode is not None:
                os.fchmod(fd, mode)  # exactly this mode, whatever the umask
            os.close(fd)
        yield stagings
        with _signals_held():
            for t in targets:
                _check_file_target(t, force, ins)
            for s in stagings:
                _fsync(s)
            _commit_files(stagings, targets)
    except OSError as e:
        for s in stagings:
            _remove(s)
        if _is_write_error(e, targets):
            raise _cannot_write(targets[0] if len(targets) == 1 else targets[0].parent, e) from None
        raise
    except BaseException:
        for s in stagings:
            _remove(s)
        raise


def _place(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (a hard link refuses an existing name atomically)."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if os.path.lexists(dst):  # a file system without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _commit_files(stagings: list[Path], targets: list[Path]) -> None:
    """Put every staging file in place; existing targets are set aside first and restored on a failure."""
    aside, placed = [], []
    try:
        for s, t in zip(stagings, targets):
            if os.path.lexists(t):
                b = _staging_name(t, t.parent, ".replaced")
                os.rename(t, b)
                aside.append((b, t))
            _place(s, t)
            placed.append(t)
    except BaseException:
        for t in placed:
            t.unlink(missing_ok=True)
        for b, t in aside:
            os.rename(b, t)
        raise
    for b, _ in aside:
        b.unlink(missing_ok=True)
    for folder in {t.parent for t in targets}:
        _fsync(folder, directory=True)


@contextmanager
def staged_file(path: str | Path, *, force: bool = False, mode: int | None = None, inputs: Iterable = ()
                ) -> Iterator[Path]:
    """:func:`staged_files` for one file: yields its staging path (``.NAME.staging-PID-RANDOM.SUFFIX``)."""
    with staged_files([path], force=force, modes=[mode], inputs=inputs) as (tmp,):
        yield tmp
