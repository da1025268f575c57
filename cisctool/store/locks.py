"""One writer per run folder, and naming the process that holds a file.

Every command that writes under `runs/<name>/` holds a POSIX record lock on
`runs/<name>/.lock` while it works. The kernel drops the lock when its holder
exits, however it dies, so a rerun right after kill -9 finds the folder free.
POSIX locks rather than flock: a forked child (a DataLoader worker) does not
inherit them, the kernel reports the holder's pid, and NFS carries them across
machines, where the shards of one `rectify` may share a folder.

Shard writers (`rectify --shard I/N`) share the folder lock, so shards of one
run work side by side while any other writer is refused, and each holds its
own shard's lock file alone, so one shard never runs twice at once.

A POSIX lock belongs to the process, and closing any descriptor of the locked
file drops it: nothing but this module opens a lock file, once per holding.
"""

import errno
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cisctool.console import console
from cisctool.errors import InputError

LOCK_NAME = ".lock"
COMMAND_CHARACTERS = 160  # of a holder's command line in a message
_held: set[Path] = set()  # lock files this process holds (a nested holding is a no-op)


@contextmanager
def writing(run_dir: Path, *, shard: str | None = None) -> Iterator[None]:
    """Hold `run_dir` for one writing command; a busy folder is an InputError naming its holder.

    With `shard` (a name such as "round1-shard0of2"), hold the folder lock
    shared with other shards and that shard's own lock alone.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir / LOCK_NAME, exclusive=shard is None, what=str(run_dir)):
        if shard is None:
            yield
            return
        with _locked(run_dir / f".{shard}.lock", exclusive=True, what=f"{run_dir} ({shard})"):
            yield


@contextmanager
def _locked(path: Path, *, exclusive: bool, what: str) -> Iterator[None]:
    if path in _held:
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):  # a file system without locks
                console.print(f"[yellow]warning: {path}: cannot lock ({error.strerror}); "
                              "make sure no other cisctool writes here")  # fmt: skip
                yield
                return
            raise InputError(f"{what}: {_busy_message(descriptor, exclusive=exclusive)}") from None
        if exclusive:  # for a reader on another machine, where the pid says nothing
            os.ftruncate(descriptor, 0)
            note = f"{os.getpid()} {socket.gethostname()} {command_line(os.getpid())}\n"
            os.pwrite(descriptor, note.encode(), 0)
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)
            if exclusive:
                os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)  # releases the lock


def _busy_message(descriptor: int, *, exclusive: bool) -> str:
    """'in use by pid P (command); wait …' from the kernel's holder pid, else from the holder's note."""
    pid = _lock_holder(descriptor, exclusive=exclusive)
    command = command_line(pid) if pid else ""
    note = os.pread(descriptor, 4096, 0).decode(errors="replace").split(maxsplit=2)
    if not command and len(note) == 3 and note[0].isdigit() and pid in (None, int(note[0])):
        pid, command = int(note[0]), f"{note[2].strip()} on {note[1]}"  # a holder on another machine
    return busy_text(pid, command)


def busy_text(pid: int | None, command: str) -> str:
    """The one advice for anything another live process holds: wait for it, or stop it."""
    who = f"pid {pid}" if pid else "another process"
    if len(command) > COMMAND_CHARACTERS:  # keep the program and the subcommand at the end
        command = f"{command[:40]} … {command[-(COMMAND_CHARACTERS - 43):]}"
    shown = f" ({command})" if command else ""
    stop = f"kill {pid}" if pid else "stop it"
    return f"in use by {who}{shown}; wait for it to finish, or stop it ({stop}) and rerun"


def _lock_holder(descriptor: int, *, exclusive: bool) -> int | None:
    """The pid of a process whose lock conflicts with ours (F_GETLK), None when none is known."""
    if not sys.platform.startswith("linux"):  # the struct layout below is Linux's
        return None
    wanted = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    layout = "hhqqi4x"  # Linux struct flock: type, whence, start, len, pid
    try:
        answer = fcntl.fcntl(descriptor, fcntl.F_GETLK, struct.pack(layout, wanted, os.SEEK_SET, 0, 0, 0))
    except OSError:
        return None
    kind, _, _, _, pid = struct.unpack(layout, answer)
    return pid if kind != fcntl.F_UNLCK and pid > 0 else None


def command_line(pid: int) -> str:
    """A process's command line from /proc ("" when it is gone or not visible)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def file_holders(path: Path) -> list[int]:
    """Pids of other live processes with `path` open (from /proc; empty where that is not visible)."""
    try:
        target = path.stat()
    except OSError:
        return []
    holders = []
    for descriptors in Path("/proc").glob("[0-9]*/fd"):
        pid = int(descriptors.parent.name)
        if pid == os.getpid():
            continue
        try:
            for entry in descriptors.iterdir():
                opened = entry.stat()
                if (opened.st_dev, opened.st_ino) == (target.st_dev, target.st_ino):
                    holders.append(pid)
                    break
        except OSError:  # gone, or not ours to look at
            continue
    return holders


def held_file_message(path: Path) -> str:
    """'<path>: in use by pid P (command); wait …' for a file another process keeps locked."""
    holders = file_holders(path)
    pid = holders[0] if holders else None
    return f"{path}: {busy_text(pid, command_line(pid) if pid else '')}"
