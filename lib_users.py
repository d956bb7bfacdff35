#!/usr/bin/env python3
"""lib_users: find processes that still use deleted files, such as the old copies of
shared libraries that a package upgrade replaced, so that they can be restarted.

Run it as a command (`lib_users --help`) or import it: the functions below are a small
lsof-style API over /proc.
"""

# Imports are kept to what a plain scan needs: every module costs interpreter start-up
# time, and lib_users runs after every upgrade on every machine. Modules that only some
# options need are imported where they are used.
import os
import sys

__version__ = "1.0.0"

PROC = "/proc"

# ---- procfs access ---------------------------------------------------------------------

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_CLOEXEC
_CHUNK = 65536
_DELETED = b" (deleted)"
_DELETED_PREFIX = b"(deleted)/"  # how old OpenVZ kernels marked a deleted name


class NoSuchProcess(LookupError):
    """The process does not exist (any more)."""


class AccessDenied(PermissionError):
    """The process exists but its files may not be read by this user."""


class _Record:
    """A small immutable-by-convention record: fields in __slots__, equality by value."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        for name, value in zip(self.__slots__, args):
            object.__setattr__(self, name, value)
        for name, value in kwargs.items():
            object.__setattr__(self, name, value)

    def asdict(self):
        return {name: getattr(self, name, None) for name in self.__slots__}

    def __eq__(self, other):
        return type(self) is type(other) and self.asdict() == other.asdict()

    def __hash__(self):
        return hash(tuple(repr(v) for v in self.asdict().values()))

    def __repr__(self):
        fields = ", ".join("%s=%r" % item for item in self.asdict().items())
        return "%s(%s)" % (type(self).__name__, fields)


class Mapping(_Record):
    """One line of /proc/PID/maps. `path` is decoded and has the deleted marker removed."""

    __slots__ = ("start", "end", "perms", "offset", "dev", "inode", "path", "deleted")


def _read_at(dir_fd, name):
    """Read a whole file relative to an open directory, as bytes.

    Reading /proc/PID files through a descriptor of the /proc/PID directory ties every
    read to one process: once it exits, the directory goes stale (ENOENT/ESRCH) even if
    its PID is reused by a new process, so two processes' data are never mixed.
    """
    fd = os.open(name, _O_FILE, dir_fd=dir_fd)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        parts = [data]
        while data:
            data = os.read(fd, _CHUNK)
            parts.append(data)
        return b"".join(parts)
    finally:
        os.close(fd)


def _readlink_at(dir_fd, name):
    return os.readlink(name, dir_fd=dir_fd)


def _open_pid_dir(pid, proc):
    """Open /proc/PID; NoSuchProcess if it is gone, AccessDenied if not allowed."""
    try:
        return os.open("%s/%s" % (proc, pid), _O_DIR)
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        raise NoSuchProcess(pid) from None
    except PermissionError:
        raise AccessDenied(pid) from None


def list_pids(proc=PROC):
    """The PIDs listed in the procfs at `proc`, ascending. OSError if it cannot be read."""
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def own_pid(proc=PROC):
    """Our own PID as seen by the procfs at `proc` (None for a tree that is not live)."""
    try:
        return int(os.readlink("%s/self" % proc))
    except (OSError, ValueError):
        return None


def split_maps_line(line):
    """Split one maps line (bytes) into a Mapping, or None if it is malformed.

    The path is everything after the fifth field, so it keeps its spaces and tabs; the
    kernel escapes only newline in it, as the four bytes \\012.
    """
    fields = line.split(None, 5)
    if len(fields) < 5:
        return None
    try:
        start, end = (int(x, 16) for x in fields[0].split(b"-"))
        major, minor = (int(x, 16) for x in fields[3].split(b":"))
        inode = int(fields[4])
        offset = int(fields[2], 16)
    except ValueError:
        return None
    raw = fields[5] if len(fields) == 6 else b""
    deleted = False
    if raw.endswith(_DELETED):
        raw, deleted = raw[: -len(_DELETED)], True
    elif raw.startswith(_DELETED_PREFIX):
        raw, deleted = raw[len(_DELETED_PREFIX) - 1 :], True
    path = os.fsdecode(raw.replace(b"\\012", b"\n"))
    return Mapping(start, end, fields[1].decode("ascii", "replace"), offset,
                   (major, minor), inode, path, deleted)


def parse_maps(data):
    """Parse the bytes of a /proc/PID/maps file into a list of Mapping."""
    mappings = []
    for line in data.split(b"\n"):
        mapping = split_maps_line(line)
        if mapping is not None:
            mappings.append(mapping)
    return mappings


def parse_cmdline(data):
    """The argument list from the bytes of /proc/PID/cmdline.

    Arguments end in NUL. A process that rewrote its title may pad it with NULs (dropped
    here) or leave one string with no NUL at all (one argument).
    """
    data = data.rstrip(b"\0")
    if not data:
        return []
    return [os.fsdecode(arg) for arg in data.split(b"\0")]


def parse_stat(data):
    """Split /proc/PID/stat into (comm, fields after comm). comm may hold ')' and
    newlines, so it ends at the last ')'."""
    open_, close = data.find(b"("), data.rfind(b")")
    if open_ < 0 or close < open_:
        raise ValueError("malformed stat")
    return os.fsdecode(data[open_ + 1 : close]), data[close + 2 :].split()


def _proc_error(err, pid):
    """Turn an OSError from reading /proc/PID into the API's exceptions."""
    if isinstance(err, (FileNotFoundError, ProcessLookupError, NotADirectoryError)):
        return NoSuchProcess(pid)
    if isinstance(err, PermissionError):
        return AccessDenied(pid)
    return err


def _link_or_none(dir_fd, name):
    try:
        return os.fsdecode(os.readlink(name, dir_fd=dir_fd))
    except OSError:
        return None


def boot_time(proc=PROC):
    """Seconds since the epoch at which the machine booted (`btime` in /proc/stat)."""
    with open("%s/stat" % proc, "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return int(line.split()[1])
    raise ValueError("no btime in %s/stat" % proc)


_PF_KTHREAD = 0x00200000


class ProcessInfo(_Record):
    """Basic facts about one process; exe, cwd and root are None where unreadable."""

    __slots__ = ("pid", "ppid", "pgrp", "uid", "user", "state", "comm", "argv", "exe",
                 "cwd", "root", "start_time", "kernel_thread", "zombie")


class _Clock:
    """What turns stat's starttime (clock ticks since boot) into epoch seconds."""

    def __init__(self, proc):
        try:
            self.btime = boot_time(proc)
        except (OSError, ValueError):
            self.btime = None
        self.ticks = os.sysconf("SC_CLK_TCK")

    def epoch(self, starttime):
        return None if self.btime is None else self.btime + starttime / self.ticks


def _user_name(uid, cache):
    if uid not in cache:
        import pwd  # only the API needs names

        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = None
    return cache[uid]


def process_info(dir_fd, pid, clock, users, argv=None):
    """ProcessInfo for the process whose /proc/PID directory is open as `dir_fd`.
    OSError if it is gone or its stat cannot be read."""
    comm, fields = parse_stat(_read_at(dir_fd, "stat"))
    uid = None
    for line in _read_at(dir_fd, "status").split(b"\n"):
        if line.startswith(b"Uid:"):
            uid = int(line.split()[1])
            break
    if argv is None:
        argv = parse_cmdline(_read_at(dir_fd, "cmdline"))
    exe = _link_or_none(dir_fd, "exe")
    return ProcessInfo(
        pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]), uid=uid,
        user=None if uid is None else _user_name(uid, users),
        state=fields[0].decode("ascii", "replace"), comm=comm, argv=argv,
        exe=exe, cwd=_link_or_none(dir_fd, "cwd"), root=_link_or_none(dir_fd, "root"),
        start_time=clock.epoch(int(fields[19])),
        kernel_thread=bool(int(fields[6]) & _PF_KTHREAD), zombie=fields[0] == b"Z")


def get_processes(pids=None, proc=PROC):
    """ProcessInfo for every process, or for those in `pids`. Processes that are gone
    or cannot be read are left out."""
    clock, users, result = _Clock(proc), {}, []
    for pid in list_pids(proc) if pids is None else pids:
        try:
            dir_fd = _open_pid_dir(pid, proc)
        except OSError:
            continue
        try:
            result.append(process_info(dir_fd, pid, clock, users))
        except (OSError, ValueError, IndexError):
            continue
        finally:
            os.close(dir_fd)
    return result


class FileRef(_Record):
    """A file a process uses: `fd` is the descriptor number, or "cwd", "root", "exe";
    `target` the link text (a path, `socket:[N]`, `pipe:[N]`, `anon_inode:[...]`)."""

    __slots__ = ("pid", "fd", "target")


class ProcessFiles(_Record):
    """The files of one process: exe, cwd and root as FileRef (None where unreadable),
    its mappings and its open descriptors."""

    __slots__ = ("pid", "exe", "cwd", "root", "mappings", "fds")


def _ref_or_none(dir_fd, pid, name):
    target = _link_or_none(dir_fd, name)
    return None if target is None else FileRef(pid, name, target)


def get_process_files(pid, proc=PROC):
    """The ProcessFiles of one process. NoSuchProcess if it is gone, AccessDenied if
    its maps or descriptors may not be read."""
    dir_fd = _open_pid_dir(pid, proc)
    try:
        mappings = parse_maps(_read_at(dir_fd, "maps"))
        fds = []
        fd_dir = os.open("fd", _O_DIR, dir_fd=dir_fd)
        try:
            names = os.listdir(fd_dir)
            for name in sorted(names, key=lambda n: int(n) if n.isdigit() else -1):
                try:
                    target = os.fsdecode(os.readlink(name, dir_fd=fd_dir))
                except FileNotFoundError:
                    continue  # closed since the listing
                fds.append(FileRef(pid, int(name), target))
        finally:
            os.close(fd_dir)
        return ProcessFiles(pid, _ref_or_none(dir_fd, pid, "exe"),
                            _ref_or_none(dir_fd, pid, "cwd"),
                            _ref_or_none(dir_fd, pid, "root"), mappings, fds)
    except OSError as err:
        raise _proc_error(err, pid) from None
    finally:
        os.close(dir_fd)


class Lock(_Record):
    """A lock held through a descriptor: kind POSIX, FLOCK or OFDLCK; access READ or
    WRITE; start and end (None for end of file); whole when it covers the whole file."""

    __slots__ = ("kind", "access", "start", "end", "whole")


class FileInfo(_Record):
    """The details of one file a process uses, in lsof's terms. Socket fields are None
    for other files; peers is None except for pipes and FIFOs."""

    __slots__ = ("ref", "type", "mode", "flags", "position", "locks", "nlink", "size",
                 "dev", "inode", "rdev", "path", "deleted", "mount_point", "fs_type",
                 "protocol", "local", "remote", "state", "tx_queue", "rx_queue", "peers")


def parse_fdinfo(data):
    """(pos, flags, mnt_id, locks) from the bytes of /proc/PID/fdinfo/N."""
    pos = flags = mnt_id = None
    locks = []
    for line in data.split(b"\n"):
        key, _, value = line.partition(b":")
        if key == b"pos":
            pos = int(value)
        elif key == b"flags":
            flags = int(value, 8)
        elif key == b"mnt_id":
            mnt_id = int(value)
        elif key == b"lock":
            lock = parse_lock(value)
            if lock is not None:
                locks.append(lock)
    return pos, flags, mnt_id, locks


def parse_lock(text):
    """A Lock from one /proc/locks-style line (`1: POSIX ADVISORY WRITE pid dev:ino 0 EOF`)."""
    fields = text.split()
    if fields and fields[0].endswith(b":"):
        fields = fields[1:]
    if fields[:1] == [b"->"]:  # a waiter, not a holder
        return None
    if len(fields) < 7:
        return None
    start = int(fields[5])
    end = None if fields[6] == b"EOF" else int(fields[6])
    return Lock(fields[0].decode(), fields[2].decode(), start, end,
                start == 0 and end is None)


def parse_mountinfo(data):
    """{mount id: (major, minor, mount point, fs type)} from /proc/PID/mountinfo bytes."""
    mounts = {}
    for line in data.split(b"\n"):
        left, sep, right = line.partition(b" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        major, minor = fields[2].split(b":")
        point = fields[4]
        for code, char in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n"),
                           (b"\\134", b"\\")):
            point = point.replace(code, char)
        mounts[int(fields[0])] = (int(major), int(minor), os.fsdecode(point),
                                  os.fsdecode(right.split()[0]) if right.split() else None)
    return mounts


_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
               5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT",
               9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
_UNIX_STATES = {1: "UNCONNECTED", 2: "CONNECTING", 3: "CONNECTED", 4: "DISCONNECTING"}
_SO_ACCEPTCON = 0x10000


def _inet_address(text):
    """(address, port) from /proc/net/tcp's hex form: the address is stored as 32-bit
    words in host (little-endian) order."""
    import socket

    address, port = text.split(b":")
    raw = bytes.fromhex(address.decode())
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def _find_socket(dir_fd, inode):
    """Socket details from the tables of the process's own network namespace:
    (type, protocol, local, remote, state, tx_queue, rx_queue), or None."""
    for table, kind, protocol in (("tcp", "IPv4", "TCP"), ("tcp6", "IPv6", "TCP"),
                                  ("udp", "IPv4", "UDP"), ("udp6", "IPv6", "UDP")):
        try:
            data = _read_at(dir_fd, "net/" + table)
        except OSError:
            continue
        for line in data.split(b"\n")[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[9] != b"%d" % inode:
                continue
            tx_queue, rx_queue = (int(x, 16) for x in fields[4].split(b":"))
            state = _TCP_STATES.get(int(fields[3], 16))
            return (kind, protocol, _inet_address(fields[1]), _inet_address(fields[2]),
                    state, tx_queue, rx_queue)
    try:
        data = _read_at(dir_fd, "net/unix")
    except OSError:
        return None
    for line in data.split(b"\n")[1:]:
        fields = line.split(None, 7)
        if len(fields) < 7 or fields[6] != b"%d" % inode:
            continue
        local = os.fsdecode(fields[7]) if len(fields) > 7 else None
        if int(fields[3], 16) & _SO_ACCEPTCON:
            state = "LISTEN"
        else:
            state = _UNIX_STATES.get(int(fields[5], 16))
        return ("unix", "UNIX", local, None, state, None, None)
    return None


def _pipe_peers(ref, st, proc):
    """The other (pid, fd) pairs that hold the same pipe or FIFO as `ref`."""
    peers = []
    for pid in list_pids(proc):
        fd_path = "%s/%d/fd" % (proc, pid)
        try:
            names = os.listdir(fd_path)
        except OSError:
            continue
        for name in names:
            if not name.isdigit() or (pid, int(name)) == (ref.pid, ref.fd):
                continue
            try:
                if os.readlink("%s/%s" % (fd_path, name)) != ref.target:
                    continue
                other = os.stat("%s/%s" % (fd_path, name))
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                peers.append((pid, int(name)))
    return sorted(peers)


def _file_type(mode, target):
    import stat as st

    if target.startswith("anon_inode:"):
        return "a_inode"
    for test, name in ((st.S_ISREG, "REG"), (st.S_ISDIR, "DIR"), (st.S_ISCHR, "CHR"),
                       (st.S_ISBLK, "BLK"), (st.S_ISFIFO, "FIFO"), (st.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "unknown"


def get_file_info(ref, proc=PROC):
    """FileInfo for a FileRef from get_process_files. NoSuchProcess if the process (or
    the descriptor) is gone, AccessDenied if it may not be read."""
    dir_fd = _open_pid_dir(ref.pid, proc)
    try:
        link = ref.fd if isinstance(ref.fd, str) else "fd/%d" % ref.fd
        st = os.stat(link, dir_fd=dir_fd)
        target = _link_or_none(dir_fd, link) or ref.target
        pos = flags = mnt_id = mode = None
        locks = []
        if not isinstance(ref.fd, str):
            pos, flags, mnt_id, locks = parse_fdinfo(_read_at(dir_fd, "fdinfo/%d" % ref.fd))
            mode = ("r", "w", "rw", None)[flags & 3]
        kind = _file_type(st.st_mode, target)
        info = FileInfo(
            ref=ref, type=kind, mode=mode, flags=flags, position=pos, locks=locks,
            nlink=st.st_nlink, size=st.st_size, dev=(os.major(st.st_dev), os.minor(st.st_dev)),
            inode=st.st_ino, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)),
            path=None, deleted=False, mount_point=None, fs_type=None, protocol=None,
            local=None, remote=None, state=None, tx_queue=None, rx_queue=None, peers=None)
        if target.startswith("/"):
            info.deleted = target.endswith(" (deleted)")
            info.path = _strip_deleted(target)
        if kind == "sock":
            found = _find_socket(dir_fd, st.st_ino)
            if found is not None:
                (info.type, info.protocol, info.local, info.remote, info.state,
                 info.tx_queue, info.rx_queue) = found
        elif kind != "a_inode" and kind != "unknown":
            try:
                mounts = parse_mountinfo(_read_at(dir_fd, "mountinfo"))
            except OSError:
                mounts = {}
            mount = mounts.get(mnt_id)
            if mount is None:  # no fdinfo (cwd, root, exe): the deepest mount of its device
                candidates = [m for m in mounts.values() if (m[0], m[1]) == info.dev
                              and (info.path or "").startswith(m[2].rstrip("/") + "/")]
                mount = max(candidates, key=lambda m: len(m[2]), default=None)
            if mount is not None:
                info.mount_point, info.fs_type = mount[2], mount[3]
        if kind == "FIFO":
            info.peers = _pipe_peers(ref, st, proc)
        return info
    except OSError as err:
        raise _proc_error(err, ref.pid) from None
    finally:
        os.close(dir_fd)


# ---- detection -------------------------------------------------------------------------

# Deleted-looking mappings that are never an upgraded file: kernel objects, shared memory
# and temp files that programs map and unlink on purpose. (kind, pattern, reason); kind
# "glob" matches with * and ?, "literal" the whole name. Matched against the name without
# its " (deleted)" marker. Whole directories such as /tmp are deliberately not here: a
# deleted library loaded from /tmp is worth seeing.
FALSE_POSITIVES = (
    ("glob", "/SYSV*", "System V shared memory segment (the key in hex), not a file"),
    ("literal", "/dev/zero", "shared anonymous memory, which the kernel backs by /dev/zero"),
    ("glob", "/memfd:*", "memfd_create() memory, anonymous by design; JITs map it executable"),
    ("literal", "/[aio]", "the ring buffer of an asynchronous I/O context"),
    ("literal", "/drm mm object", "a GPU buffer object shared through DRM"),
    ("literal", "/i915", "an Intel GPU buffer object"),
    ("literal", "/anon_hugepage", "shared anonymous memory in huge pages"),
    ("glob", "/dev/shm/*", "POSIX shared memory (shm_open), unlinked by its users on purpose"),
    ("glob", "/tmp/orcexec.*", "code that liborc compiles at run time and unlinks"),
    ("glob", "/run/user/*/orcexec*", "code that liborc compiles at run time and unlinks"),
    ("glob", "/tmp/ffi*", "libffi closure trampolines, unlinked once mapped"),
    ("glob", "*/jna*.tmp", "the native stub that JNA unpacks and unlinks"),
    ("glob", "/var/run/nscd/db*", "an nscd cache database, replaced while mapped"),
    ("glob", "/run/nscd/db*", "an nscd cache database, replaced while mapped"),
)


def glob_match(pattern, name):
    """fnmatch-style matching where * and ? also match '/'."""
    if "?" in pattern or "[" in pattern:
        import fnmatch  # rare: only user patterns with ? or [...] need it

        return fnmatch.fnmatchcase(name, pattern)
    parts = pattern.split("*")
    if len(parts) == 1:
        return name == pattern
    first, last = parts[0], parts[-1]
    if not name.startswith(first) or len(name) < len(first) + len(last):
        return False
    pos = len(first)
    stop = len(name) - len(last)
    for part in parts[1:-1]:
        pos = name.find(part, pos, stop)
        if pos < 0:
            return False
        pos += len(part)
    return name.endswith(last)


def is_ignored(name, table=FALSE_POSITIVES):
    """The reason `name` is a known false positive, or None."""
    for kind, pattern, reason in table:
        if (name == pattern) if kind == "literal" else glob_match(pattern, name):
            return reason
    return None


def ignore_table(patterns=(), literals=()):
    """The built-in false-positive table plus one run's -i patterns and -I paths."""
    extra = tuple(("glob", p, "ignored by -i on the command line") for p in patterns)
    extra += tuple(("literal", p, "ignored by -I on the command line") for p in literals)
    return FALSE_POSITIVES + extra


def _deleted_lines(data):
    """The lines of maps bytes that carry the deleted marker (found without splitting
    every line: most processes have none, and few lines have it)."""
    pos = data.find(b"(deleted)")
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        yield data[start:end]
        pos = data.find(b"(deleted)", end)


def deleted_mappings(data, table=FALSE_POSITIVES):
    """The file-backed mappings in maps bytes that the kernel marks deleted, less false
    positives: {path: Mapping}, one entry per path."""
    found = {}
    for line in _deleted_lines(data):
        mapping = split_maps_line(line)
        if (mapping is None or not mapping.deleted or mapping.path in found
                or not mapping.path.startswith("/") or is_ignored(mapping.path, table)):
            continue
        found[mapping.path] = mapping
    return found


def _still_linked(dir_fd, mapping):
    """True if a file really named "PATH (deleted)" is the mapped file: the kernel's
    marker and such a name look the same in maps. Looked up in the process's own root."""
    name = os.fsencode(mapping.path).replace(b"\n", b"\\012") + _DELETED
    if not name.startswith(b"/"):
        return False
    try:
        st = os.stat(b"root" + name, dir_fd=dir_fd)
    except (OSError, ValueError):
        return False
    return (st.st_ino == mapping.inode
            and (os.major(st.st_dev), os.minor(st.st_dev)) == mapping.dev)


def file_kind(path, exe):
    """How a process uses a deleted file: executable, library or mapping."""
    if path == exe:
        return "executable"
    base = path.rsplit("/", 1)[-1]
    if base.endswith(".so") or ".so." in base:
        return "library"
    return "mapping"


def _strip_deleted(link):
    return link[: -len(" (deleted)")] if link.endswith(" (deleted)") else link


class FileUse(_Record):
    """A deleted file as a process uses it: kind (executable, library, mapping or fd),
    size in bytes where known, and key, the file's (device, inode)."""

    __slots__ = ("path", "kind", "size", "key")


def deleted_mapped_files(dir_fd, table=FALSE_POSITIVES, sizes=False):
    """{path: FileUse} for the deleted files the process maps; sizes (which need
    CAP_SYS_ADMIN for map_files/) only when asked."""
    data = _read_at(dir_fd, "maps")
    if b"(deleted)" not in data:  # the common case: nothing more to read
        return {}
    found = {}
    for path, mapping in deleted_mappings(data, table).items():
        if _still_linked(dir_fd, mapping):
            continue
        size = None
        if sizes:
            try:
                size = os.stat("map_files/%x-%x" % (mapping.start, mapping.end),
                               dir_fd=dir_fd).st_size
            except OSError:
                pass
        found[path] = FileUse(path, "mapping", size, mapping.dev + (mapping.inode,))
    return found


def deleted_open_files(dir_fd, table=FALSE_POSITIVES, sizes=True):
    """{path: FileUse} for the deleted regular files the process holds open through
    descriptors (memfd, sockets and anon inodes never count)."""
    import stat

    found = {}
    fd_dir = os.open("fd", _O_DIR, dir_fd=dir_fd)
    try:
        for name in os.listdir(fd_dir):
            try:
                target = os.readlink(name, dir_fd=fd_dir)
                if not (target.startswith("/") and target.endswith(" (deleted)")):
                    continue
                path = _strip_deleted(target)
                if path in found or is_ignored(path, table):
                    continue
                st = os.stat(name, dir_fd=fd_dir)
            except FileNotFoundError:
                continue  # closed since the listing
            # A name that ends in " (deleted)" but still has links is not deleted.
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
                found[path] = FileUse(path, "fd", st.st_size,
                                      (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    finally:
        os.close(fd_dir)
    return found


class Finding(_Record):
    """A process that uses deleted files: `files` maps each path to its FileUse;
    `process` is its ProcessInfo when details were asked for."""

    __slots__ = ("pid", "argv", "files", "process")


class Scan(_Record):
    """The result of a scan: findings, and how many processes could not be read."""

    __slots__ = ("findings", "scanned", "unreadable")

    @property
    def complete(self):
        return self.unreadable == 0


class ScanOptions(_Record):
    """What a scan looks at: fds (open descriptors instead of mappings), details
    (ProcessInfo and sizes for each finding), and the false-positive table."""

    __slots__ = ("fds", "details", "table")

    def __init__(self, fds=False, details=False, table=FALSE_POSITIVES):
        super().__init__(fds, details, table)


def scan_process(dir_fd, pid, how, clock=None, users=None):
    """The Finding for the process whose /proc/PID directory is open as `dir_fd`, or
    None if it uses no deleted file. OSError if it cannot be read or is gone."""
    if how.fds:
        found = deleted_open_files(dir_fd, how.table)
    else:
        found = deleted_mapped_files(dir_fd, how.table, how.details)
    if not found:
        return None
    info = None
    if how.details:
        info = process_info(dir_fd, pid, clock or _Clock(PROC), {} if users is None else users)
        argv, exe, comm = info.argv, info.exe, info.comm
    else:
        argv = parse_cmdline(_read_at(dir_fd, "cmdline"))
        exe = _link_or_none(dir_fd, "exe")
        comm = None
    if not argv:  # an empty argument list: show the command name, as ps does
        if comm is None:
            comm = os.fsdecode(_read_at(dir_fd, "comm").rstrip(b"\n"))
        argv = ["[%s]" % comm]
    if not how.fds:
        exe = exe and _strip_deleted(exe)
        for use in found.values():
            use.kind = file_kind(use.path, exe)
    return Finding(pid, argv, found, info)


def scan(proc=PROC, how=None, pids=None):
    """Scan every process (or those in `pids`) for deleted files in use.

    Processes that exit during the scan are skipped; those that cannot be read are
    counted. Kernel threads and zombies map nothing; lib_users itself is left out.
    """
    how = how or ScanOptions()
    clock = _Clock(proc) if how.details else None
    users = {}
    me = own_pid(proc)
    findings, scanned, unreadable = [], 0, 0
    for pid in list_pids(proc) if pids is None else pids:
        if pid == me:
            continue
        try:
            dir_fd = _open_pid_dir(pid, proc)
        except NoSuchProcess:
            continue
        except AccessDenied:
            unreadable += 1
            continue
        try:
            finding = scan_process(dir_fd, pid, how, clock, users)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited during the scan
        except (OSError, ValueError, IndexError):
            # EACCES/EPERM, or something odd in its files: not seen, so counted.
            unreadable += 1
            continue
        finally:
            os.close(dir_fd)
        scanned += 1
        if finding is not None:
            findings.append(finding)
    return Scan(findings, scanned, unreadable)


def freed_bytes(uses):
    """Bytes that closing these deleted files would free: each file counted once."""
    sizes = {}
    for use in uses:
        if use.kind == "fd" and use.size is not None:
            sizes[use.key] = use.size
    return sum(sizes.values())


# ---- report ----------------------------------------------------------------------------


class Group(_Record):
    """Processes with the same argument list: their PIDs, the paths of the deleted
    files they use (sorted), each path's FileUse, and the bytes those files pin."""

    __slots__ = ("argv", "pids", "files", "uses", "freed")


def group_by_argv(findings):
    """Group findings by their exact argument list, in a stable order."""
    groups = {}
    for finding in findings:
        key = tuple(finding.argv)
        if key not in groups:
            groups[key] = Group(list(finding.argv), [], [], {}, 0)
        groups[key].pids.append(finding.pid)
        groups[key].uses.update(finding.files)
    for group in groups.values():
        group.pids.sort()
        group.files = sorted(group.uses)
        group.freed = freed_bytes(group.uses.values())
    return sorted(groups.values(), key=lambda g: (g.argv, g.pids))


class Report(_Record):
    """What a scan found, ready to render: groups, the Scan itself, whether it looked
    at descriptors (fds) instead of mappings, and the bytes restarting would free."""

    __slots__ = ("groups", "scan", "fds", "freed")


def build_report(scan_result, fds=False):
    findings = scan_result.findings
    return Report(group_by_argv(findings), scan_result, fds,
                  freed_bytes(u for f in findings for u in f.files.values()))


# ---- rendering -------------------------------------------------------------------------

_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def escape(text):
    """Make text safe for a terminal and one line: control and invisible format
    characters, and bytes that were not UTF-8, become backslash escapes."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append("\\x%02x" % (code - 0xDC00))
        elif code < 0x80:
            out.append("\\x%02x" % code)
        elif code <= 0xFFFF:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    return "".join(out)


_SHELL_SPECIAL = frozenset(" \t\n\r\v\f'\"")


def quote_arg(arg):
    """Shell-quote an argument that is empty or holds whitespace or quotes."""
    if arg and not _SHELL_SPECIAL.intersection(arg):
        return escape(arg)
    return "'%s'" % escape(arg).replace("'", "'\"'\"'")


def format_argv(argv):
    return " ".join(quote_arg(arg) for arg in argv)


def human_size(count):
    """A byte count for people: 512 B, 4.0 KiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return "%d B" % count if unit == "B" else "%.1f %s" % (count, unit)
        count /= 1024.0
    return ""  # not reached


def _freed_line(report):
    return "total: %s (%d bytes) would be freed by restarting these processes\n" % (
        human_size(report.freed), report.freed)


def render_text(report, verbose=False, showlibs=False):
    """One line per group: `PIDS "ARGV"`, or `N processes "ARGV"` past five PIDs; with
    --fds a last line with the bytes restarting would free."""
    lines = []
    for group in report.groups:
        if len(group.pids) > 5 and not verbose:
            head = plural(len(group.pids), "process")
        else:
            head = ",".join(map(str, group.pids))
        line = '%s "%s"' % (head, format_argv(group.argv))
        if showlibs:
            line += " uses " + ",".join(_file_label(group.uses[path], report.fds)
                                        for path in group.files)
        lines.append(line + "\n")
    if report.fds:
        lines.append(_freed_line(report))
    return "".join(lines)


def _file_label(use, with_size):
    if with_size and use.size is not None:
        return "%s (%s)" % (escape(use.path), human_size(use.size))
    return escape(use.path)


def _escape_field(text):
    """escape(), and also the separators of the machine-readable format."""
    return escape(text).replace(",", "\\x2c").replace(";", "\\x3b")


def render_machine(report):
    """`PIDS;FILES;ARGV` per group, every PID listed (the format of lib_users 0.x); with
    --fds a last line `total;BYTES;`."""
    lines = ["%s;%s;%s\n" % (",".join(map(str, g.pids)),
                              ",".join(_escape_field(p) for p in g.files),
                              format_argv(g.argv))
             for g in report.groups]
    if report.fds:
        lines.append("total;%d;\n" % report.freed)
    return "".join(lines)


def json_text(text):
    """A str for JSON: bytes that were not UTF-8 become the text \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_string(text):
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"%s"' % text
    out = []
    for char in json_text(text):
        code = ord(char)
        if char == '"' or char == "\\":
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append("\\u%04x" % code)
        else:  # a surrogate pair, as JSON spells characters past the BMP
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | code >> 10, 0xDC00 | code & 0x3FF))
    return '"%s"' % "".join(out)


def dumps_json(value, indent=0):
    """Serialise dicts, lists, str, int, float, bool and None as ASCII-only JSON.

    Written out rather than imported: the json module costs more start-up time than a
    whole scan of a small machine. Every character outside printable ASCII is escaped,
    so the document is also safe on a terminal.
    """
    pad, inner = "\n" + "  " * indent, "\n" + "  " * (indent + 1)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):  # JSON has no NaN or infinity
        return repr(value) if value - value == 0 else "null"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ("%s%s: %s" % (inner, _json_string(str(k)), dumps_json(v, indent + 1))
                 for k, v in value.items())
        return "{%s%s}" % (",".join(items), pad)
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if all(isinstance(v, (int, str)) for v in value):
            return "[%s]" % ", ".join(dumps_json(v) for v in value)
        return "[%s%s]" % (",".join(inner + dumps_json(v, indent + 1) for v in value), pad)
    raise TypeError("cannot serialise %s as JSON" % type(value).__name__)


def _process_doc(finding):
    doc = finding.process.asdict() if finding.process is not None else {
        "pid": finding.pid, "argv": finding.argv}
    doc["files"] = [{"path": use.path, "kind": use.kind, "size": use.size}
                    for _path, use in sorted(finding.files.items())]
    return doc


def render_json(report):
    """One JSON document: the groups, each reported process with its details, and
    whether the scan saw every process."""
    doc = {
        "version": __version__,
        "mode": "fds" if report.fds else "maps",
        "complete": report.scan.complete,
        "unreadable": report.scan.unreadable,
        "groups": [],
    }
    for group in report.groups:
        entry = {"argv": group.argv, "pids": group.pids, "files": group.files}
        if report.fds:
            entry["freed_bytes"] = group.freed
        doc["groups"].append(entry)
    if report.fds:
        doc["freed_bytes"] = report.freed
    doc["processes"] = [_process_doc(f) for f in
                        sorted(report.scan.findings, key=lambda f: f.pid)]
    return dumps_json(doc) + "\n"


# ---- command line ----------------------------------------------------------------------

USAGE = "usage: lib_users [options]"

# (short, long, destination, metavar or None for a flag, help). A metavar ending in "..."
# marks a repeatable option whose values are collected in a list.
OPTIONS = (
    ("-v", "--verbose", "verbose", None, "list every PID, also for groups of more than five"),
    ("-s", "--showlibs", "showlibs", None, "also list the deleted files each group uses"),
    ("-m", "--machine-readable", "machine", None, "print PIDS;FILES;ARGV lines"),
    (None, "--json", "json", None, "print one JSON document"),
    (None, "--fds", "fds", None,
     "report deleted files held open through descriptors, and the space they pin"),
    ("-p", "--pid", "pids", "PID[,PID...]...", "look only at these processes"),
    ("-i", "--ignore-pattern", "patterns", "GLOB...", "also ignore deleted files matching GLOB"),
    ("-I", "--ignore-literal", "literals", "PATH...", "also ignore the deleted file PATH"),
    (None, "--proc", "proc", "DIR", "read this procfs tree instead of /proc"),
    (None, "--version", "version", None, "print the version and exit"),
    ("-h", "--help", "help", None, "show this help and exit"),
)

# Output formats: at most one of these may be given.
_FORMATS = ("machine", "json")


class UsageError(Exception):
    """A command line that cannot be run."""


class Options:
    """Parsed command-line options, one attribute per entry of OPTIONS."""

    def __init__(self, **values):
        for _short, _long, dest, metavar, _help in OPTIONS:
            repeat = metavar is not None and metavar.endswith("...")
            setattr(self, dest, [] if repeat else (None if metavar else False))
        self.proc = PROC
        self.__dict__.update(values)


def help_text():
    lines = [USAGE, "", __doc__.split("\n\n")[0].replace("\n", " "), "", "options:"]
    for short, long_, _dest, metavar, help_ in OPTIONS:
        names = ", ".join(n for n in (short, long_) if n)
        if metavar:
            names += " " + metavar.rstrip(".")
        lines.append("  %-28s %s" % (names, help_))
    lines += ["", "Exit status: 0 after a scan (whether or not anything was found), "
              "1 on a fatal error, 2 on a usage error."]
    return "\n".join(lines) + "\n"


def parse_args(args):
    """Parse the command line into Options; UsageError for anything it cannot run."""
    by_name = {}
    for entry in OPTIONS:
        for name in entry[:2]:
            if name:
                by_name[name] = entry
    options = Options()
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg == "--":
            if args:
                raise UsageError("unexpected argument: %s" % escape(args[0]))
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            matches = [n for n in by_name if n.startswith(name) and n.startswith("--")]
            if name not in by_name and len(matches) == 1:
                name = matches[0]  # unambiguous abbreviation, as argparse allows
            if name not in by_name:
                raise UsageError("unknown option: %s" % escape(name))
            value = value if eq else None
        elif arg.startswith("-") and len(arg) > 1:
            name, value = arg[:2], arg[2:] or None
            if name not in by_name:
                raise UsageError("unknown option: %s" % escape(name))
            if by_name[name][3] is None and value is not None:
                args.insert(0, "-" + value)  # bundled flags: -sv
                value = None
        else:
            raise UsageError("unexpected argument: %s" % escape(arg))
        _short, _long, dest, metavar, _help = by_name[name]
        if metavar is None:
            if value is not None:
                raise UsageError("%s takes no value" % name)
            setattr(options, dest, True)
            continue
        if value is None:
            if not args:
                raise UsageError("%s needs a value (%s)" % (name, metavar.rstrip(".")))
            value = args.pop(0)
        if metavar.endswith("..."):
            getattr(options, dest).append(value)
        else:
            setattr(options, dest, value)
    chosen = [f for f in _FORMATS if getattr(options, f)]
    if len(chosen) > 1:
        raise UsageError("choose one output format, not %s" % " and ".join(
            "--" + by_dest(f) for f in chosen))
    return options


def by_dest(dest):
    """The long option name (without dashes) for a destination."""
    for _short, long_, d, _metavar, _help in OPTIONS:
        if d == dest:
            return long_[2:]
    return dest


def plural(count, noun):
    return "%d %s%s" % (count, noun, "" if count == 1 else "es" if noun.endswith("s") else "s")


def warn(message):
    """One line on stderr, prefixed, never raising (stderr may be closed too)."""
    try:
        sys.stderr.write("lib_users: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def write_output(text):
    """Write results to stdout. A closed pipe ends quietly; any other failure is an
    error the caller reports."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as err:
        # Point stdout at /dev/null so that the interpreter's final flush of what is
        # still buffered does not fail a second time, with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not isinstance(err, BrokenPipeError):  # the reader is gone: a quiet end
            raise


def parse_pids(values):
    """The PIDs of -p options (each a comma-separated list); UsageError if one is not
    a number."""
    pids = set()
    for value in values:
        for item in value.split(","):
            if not item.strip().isdigit():
                raise UsageError("not a PID: %s" % escape(item))
            pids.add(int(item))
    return sorted(pids)


def run(options):
    """Scan and print as `options` say; returns the exit status."""
    how = ScanOptions(fds=options.fds, details=options.json,
                      table=ignore_table(options.patterns, options.literals))
    pids = parse_pids(options.pids) if options.pids else None
    try:
        result = scan(options.proc, how, pids)
    except OSError as err:
        warn("cannot read %s: %s" % (escape(options.proc), err.strerror or err))
        return 1
    if result.scanned == 0 and result.unreadable == 0 and pids is None:
        warn("no processes found in %s; is procfs mounted there?" % escape(options.proc))
        return 1
    report = build_report(result, options.fds)
    if options.json:
        text = render_json(report)
    elif options.machine:
        text = render_machine(report)
    else:
        text = render_text(report, options.verbose, options.showlibs)
    if result.unreadable:
        advice = "; run as root to see them all" if os.geteuid() != 0 else ""
        warn("%s could not be read%s" % (plural(result.unreadable, "process"), advice))
    write_output(text)
    return 0


def main(argv=None):
    """The lib_users command. Returns the exit status."""
    if hasattr(sys.stdout, "reconfigure"):
        # Whatever the locale, an unencodable character is escaped, never an error.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        if options.help:
            write_output(help_text())
            return 0
        if options.version:
            write_output("lib_users %s\n" % __version__)
            return 0
        return run(options)
    except UsageError as err:
        warn("%s (see lib_users --help)" % err)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # output that cannot be written, such as a full disk
        warn("cannot write output: %s" % (err.strerror or err))
        return 1


def fd_main(argv=None):
    """The fd_users command: lib_users --fds."""
    return main(["--fds"] + (sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
