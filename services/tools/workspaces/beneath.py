"""Opening a path below a workspace folder without following any link, on the way or at the end: with Linux's
openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) where the kernel has it, else one
openat(O_NOFOLLOW) per name. The kernel refuses a symlink at the moment of the open, so a link is refused whether
it was there before or swapped in during the call: there is no gap between a check and the use. Used by the file_io
plugin and by services.tools.workspaces.quota."""

import ctypes
import errno
import functools
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

#: Opening a folder on the way: no symlink, and nothing that could block.
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Opening a file: no symlink, no blocking on a FIFO, never becoming a controlling terminal.
FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    """Linux's struct open_how (include/uapi/linux/openat2.h)."""

    _fields_: ClassVar = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


#: openat2's number: the same on every Linux architecture (it came after the syscall tables were unified).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08

#: Whether openat2 is used: None until probed on first use, False off Linux. Tests set it to exercise both paths.
use_openat2: bool | None = None if sys.platform == "linux" else False


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _openat2(dir_fd: int, path: bytes, flags: int, mode: int) -> int:
    """openat2(dir_fd, path) beneath dir_fd with no symlinks at all; OSError as os.open raises it, without a path."""
    how = _OpenHow(flags, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    for _ in range(10):
        fd = _libc().syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        # EAGAIN: the kernel saw a concurrent rename it could not rule out; trying again is what the man page says.
        if code not in (errno.EINTR, errno.EAGAIN):
            raise OSError(code, os.strerror(code))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def _openat2_usable(dir_fd: int) -> bool:
    global use_openat2
    if use_openat2 is None:
        try:
            os.close(_openat2(dir_fd, b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0))
        except (OSError, AttributeError) as exc:
            # ENOSYS: a kernel before 5.6; EPERM: a seccomp filter (older container runtimes) that refuses it.
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            use_openat2 = False
        else:
            use_openat2 = True
    return use_openat2


def open_beneath(dir_fd: int, names: Sequence[str], flags: int, mode: int = 0o666) -> int:
    """Open the path made of `names` below the folder `dir_fd`, following no symlink on the way or at the end.

    `names` holds plain names (no "/", "." or ".."), so nothing can climb out; a symlink anywhere is OSError(ELOOP),
    a missing name FileNotFoundError, a file used as a folder NotADirectoryError.
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if _openat2_usable(dir_fd):
        path = "/".join(names).encode("utf-8") or b"."
        try:
            return _openat2(dir_fd, path, flags, mode if flags & os.O_CREAT else 0)
        except NotADirectoryError:
            # With O_DIRECTORY, openat2 answers ENOTDIR for a final symlink too; the walk below tells the two apart
            # (and is as safe, should the name have changed meanwhile).
            pass
    if not names:
        return os.open(".", flags, dir_fd=dir_fd)
    current = dir_fd
    try:
        for name in names[:-1]:
            following = _open_name(current, name, DIRECTORY_FLAGS, 0)
            if current != dir_fd:
                os.close(current)
            current = following
        return _open_name(current, names[-1], flags, mode)
    finally:
        if current != dir_fd:
            os.close(current)


def _open_name(dir_fd: int, name: str, flags: int, mode: int) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except NotADirectoryError:
        # O_DIRECTORY | O_NOFOLLOW answers ENOTDIR for a symlink; say ELOOP, as openat2 does, so the message is right.
        # A folder there now was something else an instant ago: a link swapped back, most likely.
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(found) or stat.S_ISDIR(found):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


@contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)
