"""Opening a client-named file under an allowed root exactly once, without following links and
without blocking (SubmitPath).

``open_beneath(root_fd, rel)`` resolves ``rel`` beneath the directory ``root_fd`` with Linux
``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`` where the kernel has it
(5.6+), else by a component-by-component walk (``O_NOFOLLOW`` at every step, ``..`` refused).
The last component is opened ``O_PATH`` first: a FIFO, device or socket is never opened for
reading (no blocking, no device side effects) and is refused from its ``fstat``. A regular file is
then reopened for reading through its own descriptor (``/proc/self/fd/N``, the same inode; the
name is not walked again), so that swapping a directory for a symlink after the check (a
rename-exchange race) cannot make the server read another file: the descriptor it hashes is the
one it scans.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from dataclasses import dataclass

_O_PATH = getattr(os, "O_PATH", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
#: openat2's syscall number is the same on every architecture (unified syscall table).
SYS_OPENAT2 = 437


class PathRefused(Exception):
    """A path the server will not open. ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class OpenedFile:
    fd: int
    st: os.stat_result


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _load_openat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn  # type: ignore[no-any-return]


_syscall = _load_openat2()
_openat2_works: bool | None = None  # probed on first use (ENOSYS on kernels before 5.6)


def _openat2(dir_fd: int, rel: str, flags: int) -> int | None:
    """``openat2`` beneath ``dir_fd`` without symlinks; None when the kernel lacks it."""
    global _openat2_works
    if _syscall is None or _openat2_works is False:
        return None
    how = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(rel)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            _openat2_works = True
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:
            _openat2_works = False  # no openat2 (or a seccomp filter denies it): walk instead
            return None
        raise OSError(err, os.strerror(err), rel)


def _walk(dir_fd: int, parts: list[str], last_flags: int) -> int:
    """The fallback: one component at a time, never following a link."""
    step = (_O_PATH or (os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY)) | _O_NOFOLLOW | _O_CLOEXEC
    fd = os.dup(dir_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = os.open(part, last_flags if last else step, dir_fd=fd)
            os.close(fd)
            fd = nxt
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):  # O_PATH|O_NOFOLLOW opens the link itself
                raise OSError(errno.ELOOP, "a symbolic link", part)
            if not last and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a directory", part)
        return fd
    except BaseException:
        os.close(fd)
        raise


def components(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise PathRefused("PERMISSION_DENIED", f"{rel!r} does not name a file beneath the root")
    return parts


def open_beneath(root_fd: int, rel: str, shown: str) -> OpenedFile:
    """Open the regular file ``rel`` beneath ``root_fd`` for reading (see the module doc).
    ``shown`` is the path as the client gave it, for messages. Raises ``PathRefused``."""
    parts = components(rel)
    path_flags = (_O_PATH or (os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY)) | _O_NOFOLLOW | _O_CLOEXEC
    try:
        fd = _openat2(root_fd, "/".join(parts), path_flags)
        if fd is None:
            fd = _walk(root_fd, parts, path_flags)
    except FileNotFoundError:
        raise PathRefused("NOT_FOUND", f"no such file on the server: {shown}") from None
    except PermissionError:
        raise PathRefused("PERMISSION_DENIED", f"the server cannot read {shown}") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV, errno.EMLINK):
            raise PathRefused(
                "PERMISSION_DENIED",
                f"{shown} passes through a symbolic link: SubmitPath follows no links (name the "
                "file by its real path under an allowed root)",
            ) from None
        if e.errno == errno.ENOTDIR:
            raise PathRefused("NOT_FOUND", f"no such file on the server: {shown}") from None
        raise PathRefused("PERMISSION_DENIED", f"cannot open {shown}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):  # O_PATH|O_NOFOLLOW opens a final link itself
            raise PathRefused(
                "PERMISSION_DENIED",
                f"{shown} is a symbolic link: SubmitPath follows no links (name the file by its "
                "real path under an allowed root)",
            )
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "not a regular file"
            )
            raise PathRefused(
                "INVALID_ARGUMENT",
                f"{shown} is {kind}: only regular files are scanned (the server does not read "
                "FIFOs, devices or sockets)",
            )
        if _O_PATH:
            rfd = _reopen(fd, st)
            os.close(fd)
            fd = rfd
            st = os.fstat(fd)
        return OpenedFile(fd, st)
    except BaseException:
        os.close(fd)
        raise


def _reopen(path_fd: int, st: os.stat_result) -> int:
    """A readable descriptor of the inode ``path_fd`` (an ``O_PATH`` descriptor) refers to."""
    try:
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC)
    except PermissionError:
        raise PathRefused("PERMISSION_DENIED", "the server cannot read the file") from None
    except OSError as e:
        raise PathRefused("PERMISSION_DENIED", f"cannot reopen the file: {e.strerror}") from None
    st2 = os.fstat(fd)
    if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(st2.st_mode):
        os.close(fd)
        raise PathRefused("PERMISSION_DENIED", "the file changed while it was opened")
    os.set_blocking(fd, True)
    return fd


def fd_path(fd: int) -> str:
    """A name a child process of this one (or any process allowed to) opens to reach the very
    inode ``fd`` refers to, without walking the original name."""
    return f"/proc/{os.getpid()}/fd/{fd}"


def open_root(root: str) -> int:
    """A descriptor of an allowed root directory (held for the server's life)."""
    return os.open(root, (_O_PATH or os.O_RDONLY) | _O_DIRECTORY | _O_CLOEXEC)
