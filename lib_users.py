#!/usr/bin/env python3
"""lib_users: find processes that still use deleted files, such as the old copies of
shared libraries that a package upgrade replaced, so that they can be restarted.

Run it as a command (`lib_users --help`) or import it: the functions below are a small
lsof-style API over /proc.
"""

# Imports are kept to what a plain scan needs: every module costs interpreter start-up
# time, and lib_users runs after every upgrade on every machine. Modules that only some
# options need are imported where they are used.
import _thread  # threading costs some 2 ms of start-up; the watchdog needs only this
import errno
import os
import stat
import sys
import time

__version__ = "1.0.0"

PROC = "/proc"

# ---- bounded time ----------------------------------------------------------------------
# A process can hold up every reader of its files: when one of its threads faults on a
# mapping of a FUSE (or hung NFS) file that never answers, the kernel holds its mmap
# lock, and reading its maps or cmdline, or a stat through its root, waits (killable
# only, so neither a signal nor Ctrl-C ends the wait). So /proc is read in worker
# threads that take the items one at a time from a shared queue and say which one they
# are on; the calling thread watches them. When one item takes longer than the budget,
# its worker is abandoned where it waits, and a new one goes on with the queue.
# Watching costs the scan nothing per process. (A thread left on a FUSE request that its
# server read and never answers cannot even be killed, which is why the command scans
# in a child process: see _in_a_child.)

DEFAULT_TIMEOUT = 2.0  # seconds a process may take to answer
SCAN_BUDGETS = 15  # the whole scan ends within this many timeouts (30 s by default)


def _scan_workers():
    """How many workers a scan reads /proc with: two where this process may run on two
    CPUs, else one.

    Speed: most of a scan is the kernel writing out maps files, which it does outside
    the interpreter's lock, so two threads read two processes' maps at once. In one
    process, on two cores: with the population of bench.py (5000 processes, 7.5% of
    them mapping a deleted library) a scan takes 0.7 of the time one worker takes; with
    400 Python processes (142 mappings each) all mapping one, 0.74 (0.96 with the
    details of --json). Where every process is small and has findings (2000 `cat` with
    38 mappings), their many small reads make the threads take turns on the lock: 1.09
    (1.21 for --json). More than two workers were not measured (two cores here)."""
    try:
        return min(2, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return 1


class NoAnswer(TimeoutError):
    """The process, or a file system it uses, did not answer within the time allowed."""


_END = object()  # a worker's item before its first and after the last


class _Queue:
    """The items the workers of one _watched() call take, one at a time and in order,
    and the answers they hand back. Both go through one lock, so a worker once abandoned
    neither takes another item nor hands back a late answer. Items are read from their
    iterable as they are taken: a scan never holds the list of every PID."""

    def __init__(self, items):
        self.items = iter(items)
        self.lock = _thread.allocate_lock()
        self.count = 0  # items handed out
        self.answered = 0  # items whose work returned or raised
        self.answers = {}  # index: (item, exception or None, value), for values not None
        self.error = None  # what reading `items` raised

    def next(self, worker, answer):
        """Keep the worker's answer for its last item (None: nothing to keep) and hand
        it the next item; _END when none is left or the worker has been abandoned."""
        with self.lock:
            if worker.abandoned:
                return _END
            if worker.item is not _END:
                self.answered += 1
                if answer is not None:
                    self.answers[worker.index] = answer
            try:
                worker.item = next(self.items, _END)
            except Exception as err:  # noqa: BLE001 - raised again by _watched
                self.error, worker.item = err, _END
            worker.index, self.count = self.count, self.count + 1
            return worker.item

    def abandon(self, worker):
        """Stop the worker where it is: (index, item) of the item it is on, or None if
        it has none."""
        with self.lock:
            worker.abandoned = True
            return None if worker.item is _END else (worker.index, worker.item)

    def rest(self):
        """(index, item) of the items no worker has taken; the queue is empty then."""
        with self.lock:
            return list(enumerate(self.items, self.count))


class _Worker:
    """A thread that takes items from a _Queue and calls work(item) on each until none
    is left. `index` (the item's place in the queue) changes with each item, so that a
    watcher sees it go on."""

    def __init__(self, work, queue, thread=True):
        self.work, self.queue = work, queue
        self.item, self.index, self.abandoned = _END, None, False
        self.seen = self.since = None  # the watcher's: `index` when it last changed
        self.finished = _thread.allocate_lock()
        self.finished.acquire()
        if thread:
            _thread.start_new_thread(self._run, ())
        else:  # no time limit: the work is done here, now
            self._run()

    def _run(self):
        try:
            answer = None
            while True:
                item = self.queue.next(self, answer)
                if item is _END:
                    return
                try:
                    value = self.work(item)
                except Exception as err:  # noqa: BLE001 - the caller sorts them out
                    answer = (item, err, None)
                else:  # most processes answer None (nothing found): nothing is kept
                    answer = None if value is None else (item, None, value)
        finally:
            self.finished.release()


def _watched(work, items, timeout, total=None, workers=1):
    """Call work(item) for every item, in `workers` threads, and return (answers,
    unanswered, not reached, answered): the answers other than None as (item, exception
    or None, value); the items that took longer than `timeout` seconds; those not done
    within `total` seconds; how many items answered. Each list is in the order of
    `items`, which is read as the work goes. A timeout of None calls work here, in
    order, and waits for every answer."""
    queue = _Queue(items)
    unanswered, not_reached = [], []
    if timeout is None:
        _Worker(work, queue, thread=False)
    else:
        deadline = None if total is None else time.monotonic() + total
        tick = min(timeout / 4, 0.25)
        running = [_Worker(work, queue) for _ in range(workers)]
        while running:
            if running[0].finished.acquire(True, tick):
                del running[0]
                continue
            now = time.monotonic()
            for worker in list(running):
                if worker.index != worker.seen:
                    worker.seen, worker.since = worker.index, now
                elif now - worker.since >= timeout:
                    stuck = queue.abandon(worker)
                    if stuck is not None:
                        unanswered.append(stuck)
                    running.remove(worker)
                    running.append(_Worker(work, queue))
            if deadline is not None and now >= deadline:
                on = [queue.abandon(worker) for worker in running]
                not_reached = [at for at in on if at is not None] + queue.rest()
                break
    if queue.error is not None:
        raise queue.error
    # (index, item) pairs: the indexes differ, so the items are never compared.
    return ([queue.answers[index] for index in sorted(queue.answers)],
            [item for _, item in sorted(unanswered)],
            [item for _, item in sorted(not_reached)],
            queue.answered)


def _answer_within(timeout, call, *args):
    """call(*args) in a watched worker: its value or exception, or NoAnswer when it
    takes longer than `timeout` seconds (None: as long as it takes)."""
    answers, unanswered, _, _ = _watched(lambda _: call(*args), [None], timeout)
    if unanswered:
        raise NoAnswer("no answer within %g s" % timeout)
    if not answers:
        return None
    error, value = answers[0][1], answers[0][2]
    if error is not None:
        raise error
    return value


# ---- procfs access ---------------------------------------------------------------------

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: opening a named pipe in a --proc tree must not wait for a writer.
_O_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
_CHUNK = 65536
_DELETED = b" (deleted)"
_DELETED_PREFIX = b"(deleted)/"  # how old OpenVZ kernels marked a deleted name
_O_PATH = getattr(os, "O_PATH", 0o10000000)  # among the fdinfo flags of an O_PATH descriptor


class NoSuchProcess(LookupError):
    """The process does not exist (any more)."""


class AccessDenied(PermissionError):
    """The process exists but its files may not be read by this user."""


class _Record:
    """A record whose fields never change once it is made, set by position or keyword
    and equal by value. `_fields` names them (they are its __slots__); `_defaults` holds
    the defaults of the last ones.

    Speed: collections.namedtuple does the same, but importing collections and making
    thirteen classes costs 2.5 ms of start-up, 7% of a scan of 1000 small processes.
    """

    __slots__ = _fields = ()
    _defaults = ()

    def __init__(self, *args, **kwargs):
        fields = self._fields
        if kwargs or len(args) != len(fields):
            given = dict(zip(fields, args), **kwargs)
            first_default = len(fields) - len(self._defaults)
            args = [given.pop(name) if name in given
                    else self._defaults[i - first_default] if i >= first_default
                    else _missing(self, name) for i, name in enumerate(fields)]
            if given or len(args) > len(fields):
                raise TypeError("%s has no field %s" % (type(self).__name__,
                                                         ", ".join(given) or "more"))
        for name, value in zip(fields, args):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("%s cannot be changed: use _replace()" % type(self).__name__)

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in self._fields)

    def __hash__(self):
        return hash(tuple(getattr(self, name) for name in self._fields))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name in self._fields))

    def _asdict(self):
        return {name: getattr(self, name) for name in self._fields}

    def _replace(self, **changes):
        return type(self)(**dict(self._asdict(), **changes))


def _missing(record, name):
    raise TypeError("%s needs %s" % (type(record).__name__, name))


class Mapping(_Record):
    """One line of /proc/PID/maps. `path` is decoded and has the deleted marker removed."""

    __slots__ = _fields = ("start", "end", "perms", "offset", "dev", "inode", "path",
                           "deleted")


# Every read is bounded, so that no process can make lib_users hold more than this, what
# its own files say notwithstanding. A process may point its argument area at gigabytes
# of never-written memory (prctl PR_SET_MM), so cmdline has a cap of its own; the scan
# reads maps a chunk at a time (_marked_maps_lines) and keeps only the lines it needs.
CMDLINE_MAX = 256 * 1024
_READ_MAX = 16 << 20  # status with 65536 groups is 0.7 MiB; a net/ table of a busy host
_LIMITS = {"cmdline": CMDLINE_MAX + 1}  # one byte more tells a cut one


def _read_fd(fd, limit=_READ_MAX):
    """Read a file to its end, or its first `limit` bytes."""
    parts, size = [], 0
    while size < limit:
        data = os.read(fd, min(_CHUNK, limit - size))
        if not data:
            break
        parts.append(data)
        size += len(data)
        if len(parts) == _CHECK_AFTER and not stat.S_ISREG(os.fstat(fd).st_mode):
            # A long file: make sure it ends. procfs files are regular files; a --proc
            # tree might offer /dev/zero or a pipe instead.
            raise OSError(errno.EINVAL, "not a regular file")
    return b"".join(parts)


# Speed: the kernel lists the vsyscall page (x86-64) after every mapping, at an address
# no file can have, so maps that end with it are complete: one read() less for every
# process, some 1 us of the 30 us a small process costs (3%).
_LAST_MAPS_LINE = b"ffffffffff600000-ffffffffff601000 "
_CHECK_AFTER = 8
# The kernel's maps lines are shorter than a path (PATH_MAX) and its fields; a --proc
# tree's may be longer, up to the bound of any read.
_MAPS_LINE_MAX = _READ_MAX


def _ends_maps(chunk):
    """Whether a chunk read from maps ends with the vsyscall line, which comes last.
    Names in maps have their newlines escaped, so a line starts where the kernel's do."""
    if not chunk.endswith(b" [vsyscall]\n"):
        return False
    start = chunk.rfind(b"\n", 0, -1) + 1
    return chunk.startswith(_LAST_MAPS_LINE, start)


def _marked_maps_lines(fd):
    """(first chunk, lines with the deleted marker) of an open maps file, read a chunk
    at a time: memory stays flat however many mappings a process has. The first chunk
    (which begins with the first line) is empty when maps is (a kernel thread, a
    zombie, a process gone)."""
    first = os.read(fd, _CHUNK)
    if _ends_maps(first):  # all of it in one read, as for most processes
        return first, _deleted_lines(first) if _find_marker(first) >= 0 else []
    marked, pending, size, chunks, chunk = [], [], 0, 1, first
    while True:
        end = chunk.rfind(b"\n") + 1  # the kernel's reads end at a line; a tree's may not
        if chunk and not end:  # no line ends here: keep it for the next
            pending.append(chunk)
            size += len(chunk)
            if size > _MAPS_LINE_MAX:
                raise OSError(errno.EINVAL, "a maps line longer than any can be")
        else:
            if pending:  # (at the end of the file, what is pending is the last line)
                pending.append(chunk)
                chunk = b"".join(pending)
                end += size
                pending, size = [], 0
            if not chunk:
                break
            marked.extend(_deleted_lines(chunk, end))
            if end < len(chunk):
                pending, size = [chunk[end:]], len(chunk) - end
            elif _ends_maps(chunk):
                break
        chunk = os.read(fd, _CHUNK)
        chunks += 1
        if chunks == _CHECK_AFTER and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")  # /dev/zero in a --proc tree
    return first, marked


def read_file(path, limit=_READ_MAX):
    """The bytes of a whole file (at most `limit`), such as /proc/stat."""
    fd = os.open(path, _O_FILE)
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


class ProcDir:
    """The /proc/PID directory of one process, open: every read of that process's files
    goes through it.

    Reading through a descriptor of the directory ties the reads to one process: once
    it exits, the directory goes stale (ENOENT/ESRCH) even if its PID is reused by a
    new process, so two processes' data are never mixed. Each file is read once (what
    it said is kept) and bounded (_LIMITS). A path the process's files show is looked
    up where the kernel built it from (shown_stat), one it names itself in its own
    root (named_stat). Use it as a context manager; the time budget is the scan's
    (see _watched)."""

    __slots__ = ("proc", "pid", "reader", "fd", "_files", "_shown_in")

    def __init__(self, proc, pid, task=None, reader=None):
        """Open PROC/PID (or PROC/PID/task/TASK, one thread of it); NoSuchProcess if it
        is gone, AccessDenied if not allowed. `reader`: reader_root(proc), where known."""
        self.proc, self.pid, self.reader = proc, pid, reader
        path = "%s/%d" % (proc, pid) if task is None else "%s/%d/task/%s" % (proc, pid, task)
        try:
            self.fd = os.open(path, _O_DIR)
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            raise NoSuchProcess(pid) from None
        except PermissionError:
            raise AccessDenied(pid) from None
        self._files = {}
        self._shown_in = None  # where shown paths are looked up, see shown_stat

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def read(self, name):
        """The bytes of the file `name` (stat, cmdline, fdinfo/3, ...)."""
        if name not in self._files:
            fd = os.open(name, _O_FILE, dir_fd=self.fd)
            try:
                self._files[name] = _read_fd(fd, _LIMITS.get(name, _READ_MAX))
            finally:
                os.close(fd)
        return self._files[name]

    def marked_maps(self):
        """(first chunk, lines with the deleted marker) of maps (_marked_maps_lines)."""
        fd = os.open("maps", _O_FILE, dir_fd=self.fd)
        try:
            return _marked_maps_lines(fd)
        finally:
            os.close(fd)

    def readlink(self, name):
        """The text of the link `name` (exe, cwd, root, ns/mnt, fd/3), or None where it
        cannot be read."""
        try:
            return os.readlink(name, dir_fd=self.fd)  # str, as the name is
        except OSError:
            return None

    def stat(self, name):
        """os.stat of `name`, following a link (fd/3, map_files/...) to its file."""
        return os.stat(name, dir_fd=self.fd)

    def names(self, name):
        """The entries of the subdirectory `name` (fd, task), one at a time: it may
        hold a million, and the list is never held."""
        fd = os.open(name, _O_DIR, dir_fd=self.fd)
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    yield entry.name
        finally:
            os.close(fd)

    def named_stat(self, path):
        """os.stat of a path as the process itself names it (on its command line):
        through its root, or for a relative path its working directory."""
        return self.stat(("root" if path.startswith("/") else "cwd/") + path)

    def shown_stat(self, path):
        """os.stat of an absolute path as the process's maps and its fd, cwd and exe
        links show it. The kernel builds those paths relative to the reader's root
        where the file is reachable from it: a process in the reader's mount
        namespace, chrooted or not, shows them as the reader sees them; one in another
        mount namespace (a container) as it sees them itself, to be looked up through
        its /proc/PID/root. Through that root too where its namespace cannot be read.
        Decided on the first lookup, for one readlink."""
        prefix, dir_fd = self._where_shown()
        return os.stat(prefix + path, dir_fd=dir_fd)

    def _where_shown(self):
        """(prefix, dir_fd) for os.stat of a shown path (see shown_stat): the reader's
        root, or "root" in this directory."""
        if self._shown_in is None:
            reader = self.reader or reader_root(self.proc)
            mnt = self.readlink("ns/mnt")
            self._shown_in = ((reader[1], None) if mnt is not None and mnt == reader[0]
                              else ("root", self.fd))
        return self._shown_in

    def shown_in_own_root(self):
        """Whether shown paths are looked up through the process's own root."""
        return self._where_shown()[1] is not None

    def shown_id(self, path):
        """(major, minor, inode) of the file at a shown path, or None."""
        try:
            return _file_id(self.shown_stat(path))
        except (OSError, ValueError):  # ValueError: a NUL, in a --proc tree only
            return None

    def shown_root_readable(self):
        """Whether shown paths can be looked up at all (not in a fixture tree, say)."""
        return self.shown_id("/") is not None


def list_pids(proc=PROC):
    """The PIDs listed in the procfs at `proc`, ascending. OSError if it cannot be read."""
    return sorted(_listed_pids(proc))


def _listed_pids(proc):
    """The PIDs listed in the procfs at `proc`, one at a time, in the directory's order
    (ascending in /proc). A scan takes them as it goes: 5000 PIDs held at once cost
    0.5 MiB, a third of what the scan holds."""
    with os.scandir(proc) as entries:
        for entry in entries:
            # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
            if entry.name.isascii() and entry.name.isdigit():
                yield int(entry.name)


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


ARGV_CUT = "[argument list cut at 256 KiB]"


def parse_cmdline(data):
    """The argument list from the bytes of /proc/PID/cmdline.

    Arguments end in NUL, and every one is kept, empty ones too (`prog x ''`). A
    process that rewrote its title (setproctitle) leaves one string, either with no NUL
    at all or padded with NULs to the length of its old arguments: that is one argument
    (so `prog '' ''`, which looks the same, shows as `prog`). Past CMDLINE_MAX bytes the list is cut, and ARGV_CUT is its last item.
    """
    cut = len(data) > CMDLINE_MAX
    if cut:
        data = data[:CMDLINE_MAX]
    if data.endswith(b"\0"):
        data = data[:-1]
    argv = os.fsdecode(data).split("\0") if data else []  # NUL decodes to NUL alone
    if len(argv) > 1 and argv[0] and not any(argv[1:]):
        argv = argv[:1]  # a title and its padding
    elif not any(argv):
        argv = []  # nothing but NULs: no argument list to show
    return argv + [ARGV_CUT] if cut else argv


def parse_stat(data):
    """Split /proc/PID/stat into (comm, fields after comm). comm may hold ')' and
    newlines, so it ends at the last ')'."""
    open_, close = data.find(b"("), data.rfind(b")")
    if open_ < 0 or close < open_:
        raise ValueError("malformed stat")
    return os.fsdecode(data[open_ + 1 : close]), data[close + 2 :].split()


def _parent_and_session(data):
    """(ppid, session ID) from /proc/PID/stat bytes; ValueError or IndexError if they
    are malformed."""
    fields = parse_stat(data)[1]
    return int(fields[1]), int(fields[3])


def _start_ticks(data):
    """The start time (clock ticks after boot) in stat bytes, splitting no further."""
    close = data.rfind(b")")
    if close < 0:
        raise ValueError("malformed stat")
    return int(data[close + 2 :].split(None, 20)[19])


def _proc_error(err, pid):
    """Turn an OSError from reading /proc/PID into the API's exceptions."""
    if isinstance(err, (FileNotFoundError, ProcessLookupError, NotADirectoryError)):
        return NoSuchProcess(pid)
    if isinstance(err, PermissionError):
        return AccessDenied(pid)
    return err


def boot_time(proc=PROC):
    """Seconds since the epoch at which the machine booted (`btime` in /proc/stat)."""
    for line in read_file("%s/stat" % proc).split(b"\n"):
        if line.startswith(b"btime "):
            return int(line[len(b"btime "):])  # ValueError if no number follows
    raise ValueError("no btime in %s/stat" % proc)


_PF_KTHREAD = 0x00200000


class ProcessInfo(_Record):
    """Basic facts about one process; exe, cwd and root are None where unreadable."""

    __slots__ = _fields = ("pid", "ppid", "pgrp", "uid", "user", "state", "comm", "argv",
                           "exe", "cwd", "root", "start_time", "kernel_thread", "zombie")


class _Clock:
    """What turns stat's starttime (clock ticks since boot) into epoch seconds. The
    boot time is /proc/stat's btime, whole seconds, so a process's start time is
    stable between calls and (pid, start_time) identifies it."""

    def __init__(self, proc):
        self.ticks = os.sysconf("SC_CLK_TCK")
        try:
            self.btime = boot_time(proc)
        except (OSError, ValueError):
            self.btime = None

    def epoch(self, starttime):
        try:
            return None if self.btime is None else self.btime + starttime / self.ticks
        except OverflowError:  # numbers no float holds, in a damaged --proc tree
            return None


def _user_name(uid, cache):
    if uid not in cache:
        import pwd  # only the API needs names

        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = None
    return cache[uid]


def process_info(pdir, clock, users, argv=None):
    """ProcessInfo for the process of a ProcDir (`argv` where already read). OSError if
    it is gone or its stat cannot be read."""
    comm, fields = parse_stat(pdir.read("stat"))
    uid = _real_uid(pdir.read("status"))
    if argv is None:
        argv = parse_cmdline(pdir.read("cmdline"))
    return ProcessInfo(
        pid=pdir.pid, ppid=int(fields[1]), pgrp=int(fields[2]), uid=uid,
        user=None if uid is None else _user_name(uid, users),
        state=fields[0].decode("ascii", "replace"), comm=comm, argv=argv,
        exe=pdir.readlink("exe"), cwd=pdir.readlink("cwd"), root=pdir.readlink("root"),
        start_time=clock.epoch(int(fields[19])),
        kernel_thread=bool(int(fields[6]) & _PF_KTHREAD), zombie=fields[0] == b"Z")


def _real_uid(status):
    """The real uid in /proc/PID/status bytes (the first number on its Uid: line), or
    None if there is no such line. Found without splitting the whole file into lines."""
    at = (b"\n" + status).find(b"\nUid:")
    if at < 0:
        return None
    end = status.find(b"\n", at)
    return int(status[at + 4 : end if end >= 0 else len(status)].split(None, 1)[0])


def get_processes(pids=None, proc=PROC, timeout=DEFAULT_TIMEOUT):
    """ProcessInfo for every process, or for those in `pids`. Processes that are gone,
    cannot be read or do not answer within `timeout` seconds are left out."""
    clock, users = _Clock(proc), {}

    def one(pid):
        with ProcDir(proc, pid) as pdir:
            return process_info(pdir, clock, users)

    result = []
    listed = list_pids(proc) if pids is None else pids
    for _pid, error, info in _watched(one, listed, timeout, None, _scan_workers())[0]:
        if error is None:
            result.append(info)
        elif not isinstance(error, (NoSuchProcess, OSError, ValueError, IndexError)):
            raise error
    return result


class FileRef(_Record):
    """A file a process uses: `fd` is the descriptor number, or "cwd", "root", "exe";
    `target` the link text (a path, `socket:[N]`, `pipe:[N]`, `anon_inode:[...]`)."""

    __slots__ = _fields = ("pid", "fd", "target")


class ProcessFiles(_Record):
    """The files of one process: exe, cwd and root as FileRef (None where unreadable),
    its mappings and its open descriptors."""

    __slots__ = _fields = ("pid", "exe", "cwd", "root", "mappings", "fds")


def _ref_or_none(pdir, name):
    target = pdir.readlink(name)
    return None if target is None else FileRef(pdir.pid, name, target)


def get_process_files(pid, proc=PROC, timeout=DEFAULT_TIMEOUT):
    """The ProcessFiles of one process. NoSuchProcess if it is gone, AccessDenied if
    its maps or descriptors may not be read, NoAnswer if it does not answer within
    `timeout` seconds."""
    return _answer_within(timeout, _process_files, pid, proc)


def _process_files(pid, proc):
    try:
        with ProcDir(proc, pid) as pdir:
            fds = []
            for name in sorted(pdir.names("fd"), key=lambda n: int(n) if n.isdigit() else -1):
                target = pdir.readlink("fd/" + name)
                if target is not None:  # else closed since the listing
                    fds.append(FileRef(pid, int(name), target))
            return ProcessFiles(pid, _ref_or_none(pdir, "exe"), _ref_or_none(pdir, "cwd"),
                                _ref_or_none(pdir, "root"), parse_maps(pdir.read("maps")),
                                fds)
    except OSError as err:
        raise _proc_error(err, pid) from None


class Lock(_Record):
    """A lock held through a descriptor: kind POSIX, FLOCK or OFDLCK; access READ or
    WRITE; start and end (None for end of file); whole when it covers the whole file."""

    __slots__ = _fields = ("kind", "access", "start", "end", "whole")


class FileInfo(_Record):
    """The details of one file a process uses, in lsof's terms. Socket fields are None
    for other files; peers is None except for pipes and FIFOs."""

    __slots__ = _fields = ("ref", "type", "mode", "flags", "position", "locks", "nlink",
                           "size", "dev", "inode", "rdev", "path", "deleted",
                           "mount_point", "fs_type", "protocol", "local", "remote",
                           "state", "tx_queue", "rx_queue", "peers")


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


def _find_socket(pdir, inode):
    """Socket details from the tables of the process's own network namespace:
    (type, protocol, local, remote, state, tx_queue, rx_queue), or None."""
    for table, kind, protocol in (("tcp", "IPv4", "TCP"), ("tcp6", "IPv6", "TCP"),
                                  ("udp", "IPv4", "UDP"), ("udp6", "IPv6", "UDP")):
        try:
            data = pdir.read("net/" + table)
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
        data = pdir.read("net/unix")
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
    if target.startswith("anon_inode:"):
        return "a_inode"
    for test, name in ((stat.S_ISREG, "REG"), (stat.S_ISDIR, "DIR"), (stat.S_ISCHR, "CHR"),
                       (stat.S_ISBLK, "BLK"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "unknown"


def reader_root(proc=PROC):
    """(mount namespace, root) of the reader of the procfs at `proc`, for
    ProcDir.shown_stat: ours, whose root is "" (the root directory); for a tree that is
    not live, its PID 1's (the host it was saved from), whose root is its root link."""
    mnt = own_namespaces(proc)[0]
    return mnt, "" if own_pid(proc) is not None else "%s/1/root" % proc


def _file_id(st):
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def get_file_info(ref, proc=PROC, timeout=DEFAULT_TIMEOUT):
    """FileInfo for a FileRef from get_process_files. NoSuchProcess if the process (or
    the descriptor) is gone, AccessDenied if it may not be read, NoAnswer if it (or
    the file's file system) does not answer within `timeout` seconds."""
    return _answer_within(timeout, _file_info, ref, proc)


def _file_info(ref, proc):
    try:
        with ProcDir(proc, ref.pid) as pdir:
            return _details(pdir, ref)
    except OSError as err:
        raise _proc_error(err, ref.pid) from None


def _details(pdir, ref):
    """get_file_info() with the process's ProcDir open."""
    link = ref.fd if isinstance(ref.fd, str) else "fd/%d" % ref.fd
    st = pdir.stat(link)
    target = pdir.readlink(link) or ref.target
    pos = flags = mnt_id = mode = None
    locks = []
    if not isinstance(ref.fd, str):
        pos, flags, mnt_id, locks = parse_fdinfo(pdir.read("fdinfo/%d" % ref.fd))
        # An O_PATH descriptor can neither read nor write, whatever its access bits.
        mode = None if flags & _O_PATH else ("r", "w", "rw", None)[flags & 3]
    kind = _file_type(st.st_mode, target)
    path, deleted = None, False
    if target.startswith("/"):
        # A kernel object (a memfd) never was a file, so it cannot be deleted; a file
        # really named "x (deleted)" is told apart by looking the name up where the
        # process's paths are.
        path = _strip_deleted(target)
        anonymous = path != target and is_ignored(path, KERNEL_OBJECTS) is not None
        deleted = (path != target and not anonymous
                   and pdir.shown_id(target) != _file_id(st))
        path = path if deleted or anonymous else target
    dev = (os.major(st.st_dev), os.minor(st.st_dev))
    socket = (kind, None, None, None, None, None, None)
    mount = (None, None, None, None)
    if kind == "sock":
        socket = _find_socket(pdir, st.st_ino) or socket
    elif kind != "a_inode" and kind != "unknown":
        mount = _mount_of(pdir, mnt_id, dev, path) or mount
    return FileInfo(
        ref=ref, type=socket[0], mode=mode, flags=flags, position=pos, locks=locks,
        nlink=st.st_nlink, size=st.st_size, dev=dev, inode=st.st_ino,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)), path=path, deleted=deleted,
        mount_point=mount[2], fs_type=mount[3], protocol=socket[1], local=socket[2],
        remote=socket[3], state=socket[4], tx_queue=socket[5], rx_queue=socket[6],
        peers=_pipe_peers(ref, st, pdir.proc) if kind == "FIFO" else None)


def _mount_of(pdir, mnt_id, dev, path):
    """The mount (major, minor, mount point, fs type) a file is on, from the process's
    mountinfo: the one fdinfo names, else (cwd, root, exe) the deepest mount of its
    device that holds its path. None if unknown."""
    try:
        mounts = parse_mountinfo(pdir.read("mountinfo"))
    except OSError:
        return None
    if mnt_id in mounts:
        return mounts[mnt_id]
    path = path or ""
    candidates = [m for m in mounts.values() if (m[0], m[1]) == dev
                  and (path == m[2] or path.startswith(m[2].rstrip("/") + "/"))]
    return max(candidates, key=lambda m: len(m[2]), default=None)


def parse_cgroup(data):
    """The cgroup path systemd placed the process in, from /proc/PID/cgroup bytes: the
    v1 `name=systemd` line where there is one (v1 and hybrid set-ups), else the v2 `0::`
    line. None if there is neither."""
    unified = named = None
    for line in data.split(b"\n"):
        fields = line.split(b":", 2)
        if len(fields) != 3:
            continue
        if fields[0] == b"0" and fields[1] == b"":
            unified = fields[2]
        elif fields[1] == b"name=systemd":
            named = fields[2]
    path = named if named not in (None, b"/") else unified if unified is not None else named
    return None if path is None else os.fsdecode(path)


class Placement(_Record):
    """Where a process runs: its systemd unit (the system manager's), the unit of a
    user's manager below user@UID.service, the user of that slice or session, its
    login session, its container (see container_of, or "unknown" for another PID
    namespace with no recognised name), the UID of its Kubernetes pod, why its
    cgroup file could not be read (None when it could), and for a process outside
    systemd's units the InitScript that manages it (see InitScripts.script_of)."""

    __slots__ = _fields = ("unit", "user_unit", "uid", "user", "session", "container",
                           "pod", "error", "init_script")
    _defaults = (None, None, None)


def _unescape_unit(name):
    """systemd escapes characters in unit names as \\xNN (a '-' in a machine name)."""
    parts = name.split("\\x")
    out = [parts[0]]
    for part in parts[1:]:
        try:
            out.append(chr(int(part[:2], 16)) + part[2:])
        except ValueError:
            out.append("\\x" + part)
    return "".join(out)


def _is_id(text):
    """A container ID as runtimes write it: 64 lower-case hex digits."""
    return len(text) == 64 and text.isascii() and all(c in "0123456789abcdef" for c in text)


def _kube_pod(parts, i):
    """The pod UID if parts[i] is a pod's cgroup below kubelet's kubepods: `pod<UID>`
    (cgroupfs driver) or `kubepods[-QOS]-pod<UID>.slice` (systemd driver, where the
    '-' of the UID are written '_'). None otherwise."""
    if not any(p in ("kubepods", "kubepods.slice") for p in parts[:i]):
        return None
    part = parts[i]
    if part.startswith("kubepods-") and part.endswith(".slice") and "-pod" in part:
        return part[part.index("-pod") + 4 : -6].replace("_", "-") or None
    if part.startswith("pod") and len(part) > 3:
        return part[3:]
    return None


def container_of(cgroup):
    """The container a cgroup path belongs to, recognised from the names container
    managers give their cgroups: "docker:ID", "podman:ID", "containerd:ID", "cri-o:ID",
    "cri:ID" (a Kubernetes container whose runtime the path does not name; IDs cut to
    12 characters), "lxc:NAME", "nspawn:NAME"; None if there is none. The runtimes'
    monitors (conmon) run beside their containers, not in them."""
    parts = [p for p in (cgroup or "").split("/") if p]
    for i, part in enumerate(parts):
        if part.startswith("docker-") and part.endswith(".scope"):
            return "docker:" + part[7:-6][:12]
        if part == "docker" and i + 1 < len(parts) and len(parts[i + 1]) == 64:
            return "docker:" + parts[i + 1][:12]  # the cgroupfs driver: /docker/ID
        if part.startswith("libpod-") and not part.startswith("libpod-conmon-"):
            if part.endswith(".scope"):
                return "podman:" + part[7:-6][:12]
            if _is_id(part[7:]):  # the cgroupfs manager: /libpod_parent/libpod-ID
                return "podman:" + part[7:19]
        if part.startswith("cri-containerd-") and part.endswith(".scope"):
            return "containerd:" + part[15:-6][:12]
        if part.startswith("crio-") and not part.startswith("crio-conmon-"):
            if part.endswith(".scope"):
                return "cri-o:" + part[5:-6][:12]
            if _is_id(part[5:]):  # CRI-O with cgroupfs: /kubepods/QOS/podUID/crio-ID
                return "cri-o:" + part[5:17]
        if (i + 1 < len(parts) and _is_id(parts[i + 1])
                and _kube_pod(parts, i) is not None):
            return "cri:" + parts[i + 1][:12]  # kubelet's cgroupfs driver: podUID/ID
        if part.startswith("lxc.payload."):
            return "lxc:" + part[len("lxc.payload."):]
        if part.startswith("machine-") and part.endswith(".scope"):
            return "nspawn:" + _unescape_unit(part[8:-6])
        if part.startswith("systemd-nspawn@") and part.endswith(".service"):
            return "nspawn:" + _unescape_unit(part[15:-8])
    return None


def pod_of(cgroup):
    """The UID of the Kubernetes pod a cgroup path belongs to, with its dashes; None if
    it is not below kubelet's kubepods."""
    parts = [p for p in (cgroup or "").split("/") if p]
    for i in range(len(parts)):
        pod = _kube_pod(parts, i)
        if pod is not None:
            return pod
    return None


def placement_of(cgroup, users=None):
    """Placement from a cgroup path alone (the container from names only)."""
    unit = user_unit = uid = session = None
    for part in (p for p in (cgroup or "").split("/") if p):
        if (part.startswith("user-") and part.endswith(".slice") and part[5:-6].isascii()
                and part[5:-6].isdigit()):
            uid = int(part[5:-6])
        if not part.endswith((".service", ".scope")):
            continue
        if unit is None:
            unit = part
            if part.startswith("session-"):
                session = part[8:-6]
        elif user_unit is None and unit.startswith("user@") and part != "init.scope":
            user_unit = part
    user = None if uid is None else _user_name(uid, {} if users is None else users)
    container = container_of(cgroup)
    return Placement(unit, user_unit, uid, user, session, container,
                     None if container is None else pod_of(cgroup))


def own_namespaces(proc=PROC):
    """Our namespaces as the procfs at `proc` sees them; for a tree that is not live,
    those of its PID 1 (the host it was saved from)."""
    for link in ("%s/self/ns/" % proc, "%s/1/ns/" % proc):
        found = []
        for kind in ("mnt", "pid"):
            try:
                found.append(os.readlink(link + kind))
            except OSError:
                found.append(None)
        if found != [None, None]:
            return tuple(found)
    return (None, None)


def read_placement(pdir, own_ns, users, known=None):
    """The Placement of the process of a ProcDir. A process in another PID
    namespace is in a container even where its cgroup has no recognisable name; a
    mount namespace of its own alone is not one (systemd sandboxes services that way).

    `known` keeps the answers by cgroup file and namespace, to be shared: the many
    processes of one unit have the same cgroup file, which need not be parsed again.
    """
    known = {} if known is None else known
    try:
        cgroup = pdir.read("cgroup")
    except FileNotFoundError:
        cgroup = None
    except ProcessLookupError:
        raise  # gone
    except OSError as err:
        # EACCES, EPERM, EIO...: the process is still reported, its placement unknown.
        cgroup = ("error", err.errno)
        if cgroup not in known:
            known[cgroup] = Placement(None, None, None, None, None, None,
                                      error=err.strerror or str(err))
    place = known.get(cgroup)
    if place is None:
        place = known[cgroup] = placement_of(
            None if cgroup is None else parse_cgroup(cgroup), users)
    if place.container is None:
        pid = pdir.readlink("ns/pid")
        if pid is not None and own_ns[1] is not None and pid != own_ns[1]:
            key = (cgroup, "unknown")
            if key not in known:
                known[key] = place._replace(container="unknown")
            place = known[key]
    return place


# ---- detection -------------------------------------------------------------------------

# mkstemp()'s six random characters (glibc draws them from letters and digits): an entry
# for a temp file names exactly these, so that no other name in the directory matches.
_MKSTEMP = "[A-Za-z0-9]" * 6

# Deleted-looking names that never were a file on disk: the kernel names these objects
# itself. get_file_info() does not call them deleted.
KERNEL_OBJECTS = (
    # ipc/shm.c names a segment "SYSV%08x" after its key
    ("glob", "/SYSV" + "[0-9a-f]" * 8, "System V shared memory segment (the key in hex), not a file"),
    ("literal", "/dev/zero", "shared anonymous memory, which the kernel backs by /dev/zero"),
    # any name memfd_create() was given, '/' included (NVIDIA's /memfd:/.glXXXXXX)
    ("glob", "/memfd:*", "memfd_create() memory, anonymous by design; JITs map it executable"),
    ("literal", "/[aio]", "the ring buffer of an asynchronous I/O context"),
    ("literal", "/drm", "a GPU buffer shared through DRM"),
    ("literal", "/drm mm object", "a GPU buffer object shared through DRM"),
    ("literal", "/i915", "an Intel GPU buffer object"),
    ("literal", "/anon_hugepage", "shared anonymous memory in huge pages"),
)

# Deleted-looking mappings that are never an upgraded file: the objects above, and shared
# memory and temp files that programs map and unlink on purpose. (kind, pattern, reason);
# kind "glob" matches with glob_match(), "literal" the whole name. Matched against the
# name without its " (deleted)" marker. `*` and `?` match '/' too, so an entry names the
# files a program really creates and no more: a deleted library loaded from /tmp, or from
# a directory that happens to be called jna-1000, is worth seeing.
FALSE_POSITIVES = KERNEL_OBJECTS + (
    # shm_open() names, and the directories some programs make there (JACK's
    # /dev/shm/jack-1000/default/jack-shm-registry)
    ("glob", "/dev/shm/*", "POSIX shared memory (shm_open), unlinked by its users on purpose"),
    # liborc: mkstemp("DIR/orcexec.XXXXXX") in $XDG_RUNTIME_DIR, $HOME, $TMPDIR or /tmp
    ("glob", "*/orcexec." + _MKSTEMP, "code that liborc compiles at run time and unlinks"),
    # libffi: mkostemp("/tmp/ffiXXXXXX") when it cannot use memfd_create()
    ("glob", "/tmp/ffi" + _MKSTEMP, "libffi closure trampolines, unlinked once mapped"),
    # JNA: File.createTempFile("jna", null, dir) names jna<decimal>.tmp, in a directory
    # that varies (jna-<hash>/ under java.io.tmpdir, ~/.cache/JNA/temp, jna.tmpdir)
    ("glob", "*/jna[0-9]*.tmp", "the native stub that JNA unpacks and unlinks"),
    # nscd: mkostemp(_PATH_NSCD_XYZ_DB_TMP), "/var/run/nscd/dbXXXXXX" (/run on new systems)
    ("glob", "/var/run/nscd/db" + _MKSTEMP, "an nscd cache database, replaced while mapped"),
    ("glob", "/run/nscd/db" + _MKSTEMP, "an nscd cache database, replaced while mapped"),
)


# A hand-written matcher, not fnmatch: importing fnmatch (and re with it) costs 5.1 ms of
# start-up (python3 -X importtime, Python 3.11), where the floor bench.py measures for a
# whole scan of 100 processes is 11.8 ms; and nearly every machine maps some memfd or
# /dev/shm name (GPU drivers, browsers, PulseAudio), so a lazy import would be paid on
# nearly every run. The matcher runs once per deleted name (verdicts are cached).
def glob_match(pattern, name):
    """fnmatch.fnmatchcase(name, pattern): `*` matches any run of characters, `?` any one,
    '/' included; `[...]` one character of a set, `[!...]` one not in it. Linear in the
    name for a given pattern (at most len(name) * len(pattern) steps), never exponential."""
    segments = _glob_segments(pattern)
    first, last = segments[0], segments[-1]
    if len(segments) == 1:  # no star: the one segment is the whole name
        return first[0] == len(name) and _segment_at(first, name, 0)
    start, end = first[0], len(name) - last[0]
    if start > end or not _segment_at(first, name, 0) or not _segment_at(last, name, end):
        return False
    # Between the stars, each segment at its leftmost place: a star can take whatever a
    # later place would have left over, so no other choice needs trying (and fnmatch's
    # own translation, an atomic group per segment, makes the same one).
    for segment in segments[1:-1]:
        if not segment[0]:  # "**": nothing between the stars
            continue
        start = _find_segment(segment, name, start, end)
        if start < 0:
            return False
        start += segment[0]
    return True


def _glob_segments(pattern):
    """The pattern cut at its stars: a list of (length, atoms); an atom is a literal
    string, None for `?`, or (negate, members, ranges) for a set."""
    segments, atoms, length, i, n = [], [], 0, 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            segments.append((length, atoms))
            atoms, length = [], 0
            continue
        if char == "?":
            atoms.append(None)
        elif char == "[":
            j = i + 1 if pattern.startswith("!", i) else i
            if pattern.startswith("]", j):  # a ']' first is a member
                j += 1
            j = pattern.find("]", j)
            if j < 0:  # no closing ']': a literal '['
                atoms.append(char)
            else:
                atoms.append(_glob_set(pattern[i:j]))
                i = j + 1
        elif atoms and isinstance(atoms[-1], str):
            atoms[-1] += char
        else:
            atoms.append(char)
        length += 1  # whatever it was, it matches one character
    segments.append((length, atoms))
    return segments


def _glob_set(body):
    """(negate, members, ranges) for the text between `[` and `]`, read as fnmatch reads
    it: a '-' first or last is a member, a range whose ends are reversed is dropped."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    chunks, start, k = [], 0, 1
    while True:
        k = body.find("-", k)
        if k < 0:
            break
        chunks.append(body[start:k])
        start, k = k + 1, k + 3
    if start < len(body):
        chunks.append(body[start:])
    else:
        chunks[-1] += "-"
    for k in range(len(chunks) - 1, 0, -1):
        if chunks[k - 1][-1] > chunks[k][0]:  # an empty range, with both its ends
            chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
            del chunks[k]
    if not negate and chunks[0].startswith("!"):
        # What fnmatch makes of "[z-a!x]" and "[z-a!-x]": the '!' left first negates,
        # and a '-' after it is a member.
        negate, chunks[0] = True, chunks[0][1:]
        if not chunks[0] and len(chunks) > 1:
            chunks[:2] = ["-" + chunks[1]]
    ranges = tuple((chunks[k - 1][-1], chunks[k][0]) for k in range(1, len(chunks)))
    return negate, "".join(chunks), ranges


def _segment_at(segment, name, j):
    """True if the segment matches name[j:j + its length] (which must fit)."""
    for atom in segment[1]:
        if atom is None:
            j += 1
        elif isinstance(atom, str):
            if not name.startswith(atom, j):
                return False
            j += len(atom)
        else:
            negate, members, ranges = atom
            char = name[j]
            if (char in members or any(low <= char <= high for low, high in ranges)) == negate:
                return False
            j += 1
    return True


def _find_segment(segment, name, start, end):
    """The first place in name[start:end] where the segment matches, or -1."""
    length, atoms = segment
    head = atoms[0] if atoms and isinstance(atoms[0], str) else ""
    last = end - length
    while start <= last:
        if head:  # a literal start: let str.find skip to the next candidate
            start = name.find(head, start, last + len(head))
            if start < 0:
                return -1
        if _segment_at(segment, name, start):
            return start
        start += 1
    return -1


def is_ignored(name, table=FALSE_POSITIVES):
    """The reason `name` is a known false positive, or None."""
    for kind, pattern, reason in table:
        if (name == pattern) if kind == "literal" else glob_match(pattern, name):
            return reason
    return None


def ignore_table(patterns=(), literals=(), configured=()):
    """The built-in false-positive table plus the config's entries (see read_config)
    and one run's -i patterns and -I paths."""
    extra = tuple(("glob", p, "ignored by -i on the command line") for p in patterns)
    extra += tuple(("literal", p, "ignored by -I on the command line") for p in literals)
    return FALSE_POSITIVES + tuple(configured) + extra


def _find_marker(data, start=0, stop=None):
    """data.find(b"(deleted)", start, stop), found faster. Every process's maps are
    searched for the marker. Speed: a search for one byte (memchr) runs some ten to
    thirty times faster than one for nine; on 20 KB of maps 0.2 us against 1.9 to 7 us,
    5 to 20% of what such a process costs. A "(" is rare in maps except in the marker;
    where a file name has many, the plain search takes over."""
    stop = len(data) if stop is None else stop
    for _ in range(8):
        pos = data.find(b"(", start, stop)
        if pos < 0 or data.startswith(b"(deleted)", pos, stop):
            return pos
        start = pos + 1
    return data.find(b"(deleted)", start, stop)


def _deleted_lines(data, stop=None):
    """The lines of maps bytes (up to `stop`) that carry the deleted marker, found
    without splitting every line: most processes have none, and few lines have it."""
    stop = len(data) if stop is None else stop
    lines = []
    pos = _find_marker(data, 0, stop)
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos, stop)
        if end < 0:
            end = stop
        lines.append(data[start:end])
        pos = _find_marker(data, end, stop)
    return lines


def deleted_mappings(data, table=FALSE_POSITIVES, verdicts=None):
    """The file-backed mappings in maps bytes that the kernel marks deleted, less false
    positives: {path: Mapping}, one entry per path."""
    return _deleted_in_lines(_deleted_lines(data), table, verdicts)


def _deleted_in_lines(lines, table=FALSE_POSITIVES, verdicts=None):
    """deleted_mappings() of the maps lines that carry the marker. `verdicts` may carry
    is_ignored()'s answers from one process to the next (the same libraries recur in
    every one)."""
    found, seen = {}, set()
    verdicts = {} if verdicts is None else verdicts
    for line in lines:
        # A library has several mappings (text, data, ...): parse each name once.
        raw = line.split(None, 5)[-1]
        if raw in seen:
            continue
        seen.add(raw)
        mapping = split_maps_line(line)
        if mapping is None or not mapping.deleted or mapping.path in found:
            continue
        path = mapping.path
        if path not in verdicts:
            verdicts[path] = not path.startswith("/") or is_ignored(path, table) is not None
        if not verdicts[path]:
            found[path] = mapping
    return found


def drop_kept_files(pdir, found, inodes=None):
    """Remove from `found` (from deleted_mapped_files) the files really named
    "PATH (deleted)": the kernel's marker and such a name look the same in maps, and
    the name is looked up where the process's paths are (ProcDir.shown_stat).
    `inodes` is what map_files/ told (see _mapped_inode)."""
    for path, use in list(found.items()):
        if use.kind != "mapping":
            continue
        known = inodes.get(use.key) if inodes else None
        # An inode with no links left cannot be a file really named "PATH (deleted)".
        if not (known and known[1]) and pdir.shown_id(path + " (deleted)") == use.key:
            del found[path]
    return found


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


class FileUse:
    """A deleted file as a process uses it: kind (executable, library, mapping, fd or
    script), size in bytes where known, key, the file's (major, minor, inode),
    replaced: whether a new file stands at its path (None where unknown), and the
    Package that owns the path now (None where unknown or not looked up)."""

    __slots__ = ("path", "kind", "size", "key", "replaced", "package")

    def __init__(self, path, kind, size, key, replaced, package=None):
        self.path, self.kind, self.size, self.key, self.replaced = (
            path, kind, size, key, replaced)
        self.package = package

    def __eq__(self, other):
        return isinstance(other, FileUse) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self):
        return "FileUse(%s)" % ", ".join("%s=%r" % (f, getattr(self, f))
                                         for f in self.__slots__)


def _mapped_inode(pdir, mapping, inodes):
    """(size, unlinked) of the file a mapping maps, from its map_files/ link (following
    it needs CAP_SYS_ADMIN), or None. `inodes` keeps the answers by (major, minor,
    inode): after an upgrade, every process that maps the old library maps the same
    inode, so one stat serves them all."""
    key = mapping.dev + (mapping.inode,)
    if key in inodes:
        return inodes[key]
    try:
        st = pdir.stat("map_files/%x-%x" % (mapping.start, mapping.end))
    except OSError:
        return None
    if _file_id(st) != key:
        # Mapped anew since maps was read, or a filesystem whose stat numbers devices
        # otherwise (btrfs): only the size can be trusted.
        return (st.st_size, False)
    inodes[key] = (st.st_size, st.st_nlink == 0)
    return inodes[key]


def deleted_mapped_files(pdir, lines, table=FALSE_POSITIVES, sizes=False, verdicts=None,
                         inodes=None):
    """{path: FileUse} for the files that the marked maps lines (_deleted_lines) of the
    process of a ProcDir show deleted; sizes (which need CAP_SYS_ADMIN for
    map_files/) only when asked. `inodes` may carry what map_files/ told from one
    process to the next (see _mapped_inode). Files really named "PATH (deleted)" are
    still in (see drop_kept_files)."""
    found = {}
    for path, mapping in _deleted_in_lines(lines, table, verdicts).items():
        known = None
        if sizes or inodes is not None:
            known = _mapped_inode(pdir, mapping, {} if inodes is None else inodes)
        found[path] = FileUse(path, "mapping", known[0] if sizes and known else None,
                              mapping.dev + (mapping.inode,), None)
    return found


def deleted_open_files(pdir, table=FALSE_POSITIVES):
    """{path: FileUse} for the deleted regular files the process holds open through
    descriptors (memfd, sockets and anon inodes never count)."""
    return _scan_fds(pdir, table)[0]


def _scan_fds(pdir, table):
    """(deleted_open_files(), how many descriptors the process has)."""
    found, listed = {}, 0
    try:
        for name in pdir.names("fd"):
            listed += 1
            _deleted_open_file(pdir, "fd/" + name, table, found)
    except FileNotFoundError:
        pass  # gone, or a saved tree without descriptors
    return found, listed


def _deleted_open_file(pdir, link, table, found):
    """Add the descriptor `link` (fd/N) to `found` if it holds a deleted regular file."""
    target = pdir.readlink(link)
    if target is None or not (target.startswith("/") and target.endswith(" (deleted)")):
        return  # closed since the listing, or no deleted file
    path = _strip_deleted(target)
    if path in found or is_ignored(path, table):
        return
    try:
        st = pdir.stat(link)
    except FileNotFoundError:
        return  # closed since
    # A name that ends in " (deleted)" but still has links is not deleted.
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
        found[path] = FileUse(path, "fd", st.st_size, _file_id(st), None)


def is_replaced(pdir, path):
    """True if a file now stands at the path of a deleted file (an upgrade replaced
    it), False if none does (it was removed), None if where the process's paths are
    cannot be looked in."""
    try:
        pdir.shown_stat(path)
        return True
    except FileNotFoundError:
        pass
    except (OSError, ValueError):  # ValueError: a NUL, in a --proc tree only
        return None
    return False if pdir.shown_root_readable() else None


# Interpreters whose scripts are named on their command line, by the base name of their
# executable: (prefix, options that take a value, options after which no script follows).
INTERPRETERS = (
    ("python", ("-W", "-X", "--check-hash-based-pycs"), ("-c", "-m", "-")),
    ("perl", ("-I", "-M", "-m", "-x"), ("-e", "-E")),
    ("ruby", ("-I", "-r", "-C", "-E"), ("-e",)),
    ("node", ("-r", "--require", "--import", "--loader"), ("-e", "--eval", "-p", "--print")),
    ("nodejs", ("-r", "--require"), ("-e", "--eval", "-p", "--print")),
    ("php", ("-c", "-d", "-z", "-S", "-t"), ("-r", "-a")),
    ("bash", ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"), ("-c", "-s", "-i")),
    ("sh", ("-o", "+o"), ("-c", "-s", "-i")),
    ("dash", ("-o", "+o"), ("-c", "-s", "-i")),
    ("zsh", ("-o", "+o"), ("-c", "-s", "-i")),
    ("ksh", ("-o", "+o"), ("-c", "-s", "-i")),
    ("java", ("-cp", "-classpath", "--class-path", "-p", "--module-path", "-m", "--module"),
     ()),
)


_INTERPRETER_BY_NAME = {entry[0]: entry for entry in INTERPRETERS}


def _interpreter(exe_name):
    """The INTERPRETERS entry for an executable's base name (python3.11, perl5.36).
    Asked for every process, so one dictionary lookup."""
    return _INTERPRETER_BY_NAME.get(exe_name.rstrip("0123456789."))


def script_of(argv, exe_name):
    """The script (or for java, the -jar file) an interpreter runs, named on its
    command line; None if it runs none (python -c, bash -c, java without -jar)."""
    entry = _interpreter(exe_name)
    if entry is None:
        return None
    prefix, with_value, no_script = entry
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if prefix == "java":
            if arg == "-jar":
                return args[i + 1] if i + 1 < len(args) else None
            i += 2 if arg in with_value else 1
            continue
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if prefix == "php" and arg == "-f":
            return args[i + 1] if i + 1 < len(args) else None
        if arg in no_script:
            return None
        if arg in with_value and (prefix, arg) != ("perl", "-x"):  # perl -x[dir]
            i += 2
            continue
        if arg[:2] in with_value:  # the value attached: -Wignore, -I/usr/lib/perl
            i += 1
            continue
        if arg[:1] == "-" and arg[:2] != "--" and any(
                len(o) == 2 and o[1] in arg[1:] for o in no_script):
            return None  # a cluster such as bash -ec or perl -we, or -ccode
        if arg.startswith(("-", "+")) and arg not in ("-", "+"):
            i += 1
            continue
        return arg
    return None


def stale_script(pdir, argv, exe_name, clock):
    """FileUse of kind "script" if the script an interpreter runs was deleted or
    changed after the process started; None otherwise. Reads metadata only, and the
    start time only for a script changed since boot, which few are. A script named by
    a relative path is shown as an absolute one (see _script_path)."""
    script = script_of(argv, exe_name)
    if not script or script.startswith(("/dev/", "/proc/")):
        return None  # a script passed as a descriptor (bash <(...)): no file to check
    # The command line names the script as the process saw it when it was exec'd: from
    # its root or working directory, whatever its namespace.
    use = _script_use(pdir, script, clock, shown=False)
    if use is not None and script.startswith("/") and _chrooted_after_exec(pdir):
        use = _script_use(pdir, script, clock, shown=True)
    if use is not None:
        use.path = _script_path(pdir, script)
    return use


def _script_use(pdir, script, clock, shown):
    """stale_script's verdict on `script`, looked up as the process names it, or
    (`shown`) as its maps would show it."""
    try:
        st = pdir.shown_stat(script) if shown else pdir.named_stat(script)
    except FileNotFoundError:
        readable = (pdir.shown_root_readable() if shown
                    else _exists(pdir, "root/" if script.startswith("/") else "cwd/"))
        if not readable:
            return None  # nothing to look in (a fixture tree): no verdict
        return FileUse(script, "script", None, None, False)
    except (OSError, ValueError):
        return None
    changed = max(st.st_mtime, st.st_ctime)
    if clock.btime is not None and changed <= clock.btime:
        return None  # unchanged since boot, so since the process started
    start = _start_time(pdir, clock)
    # A second's grace: btime is truncated to whole seconds, so a start time may read
    # up to a second early; a script written just before its interpreter started is
    # not a changed one.
    if start is None or changed <= start + 1:
        return None
    return FileUse(script, "script", st.st_size, _file_id(st), True)


def _exists(pdir, name):
    try:
        pdir.stat(name)
        return True
    except OSError:
        return False


def _start_time(pdir, clock):
    """When the process started, in seconds since the epoch, or None (gone, or a saved
    tree without stat)."""
    try:
        return clock.epoch(_start_ticks(pdir.read("stat")))
    except FileNotFoundError:
        return None


def _chrooted_after_exec(pdir):
    """Whether a process in the reader's mount namespace chrooted itself after it was
    exec'd, as daemons that drop privileges do: its executable lies outside its root.
    Its command line then names paths from the reader's root. Asked only of a script
    that looks stale."""
    if pdir.shown_in_own_root():
        return False
    top, exe = pdir.readlink("root"), pdir.readlink("exe")
    if top is None or top == "/" or exe is None:
        return False
    return not exe.startswith(top.rstrip("/") + "/")


def _script_path(pdir, script):
    """The path to show for a script: a relative one joined to the process's working
    directory as its cwd link shows it (read only for a stale script). Left relative
    where that link cannot be read."""
    if script.startswith("/"):
        return script
    cwd = pdir.readlink("cwd")
    if cwd is None or not cwd.startswith("/"):
        return script
    return os.path.normpath(os.path.join(_strip_deleted(cwd), script))


class Finding(_Record):
    """A process that uses deleted files: `files` maps each path to its FileUse;
    `process` (ProcessInfo) and `placement` (Placement) are there when asked for;
    `exe` (its executable's path, from the exe link) where the scan read it, and
    `parent_and_session` ((ppid, session ID), from stat) for a process outside
    systemd's units, which the init-script lookup asks about."""

    __slots__ = _fields = ("pid", "argv", "files", "process", "placement", "exe",
                           "parent_and_session")
    _defaults = (None, None)


class Scan(_Record):
    """The result of a scan: findings, how many processes could not be read, and of
    those the PIDs that did not answer in time and those the scan did not reach."""

    __slots__ = _fields = ("findings", "scanned", "unreadable", "unanswered", "not_reached")
    _defaults = ((), ())

    @property
    def complete(self):
        return self.unreadable == 0


class ScanOptions(_Record):
    """What a scan looks at: fds (open descriptors instead of mappings), details
    (ProcessInfo, sizes, replaced-or-removed), services (units and containers),
    scripts (interpreters whose script changed) and the false-positive table."""

    __slots__ = _fields = ("fds", "details", "services", "scripts", "table")
    _defaults = (False, False, False, False, FALSE_POSITIVES)


class _Context:
    """What a scan reads once and shares between processes."""

    def __init__(self, proc, how):
        self.clock = _Clock(proc) if how.details or how.scripts else None
        self.users = {}
        self.verdicts = {}  # path: whether the false-positive table ignores it
        self.inodes = {}  # (major, minor, inode): (size, unlinked), see _mapped_inode
        self.own_ns = own_namespaces(proc) if how.services else None
        self.placements = {}  # cgroup file: Placement, see read_placement
        self.texts = {}  # each text of arguments and details once, see _argv
        self.reader = reader_root(proc)  # see ProcDir.shown_stat


_INTERPRETER_NAMES = frozenset(os.fsencode(entry[0]) for entry in INTERPRETERS)


def _interpreter_in(data):
    """The base name of the executable in maps bytes if it is a script interpreter.
    The kernel maps the executable first. Asked for every process, so it stays in bytes
    until it has an answer."""
    end = data.find(b"\n")
    if end < 0:
        end = len(data)
    if data.endswith(_DELETED, 0, end):  # the interpreter itself was replaced
        end -= len(_DELETED)
    name = data[data.rfind(b"/", 0, end) + 1 : end]
    if name.rstrip(b"0123456789.") not in _INTERPRETER_NAMES:
        return None
    return os.fsdecode(name)


def scan_pid(proc, pid, how, ctx):
    """The Finding for one PID of the procfs at `proc`, or None (scan_process)."""
    if how.fds:
        with ProcDir(proc, pid, reader=ctx.reader) as pdir:
            return scan_process(pdir, how, ctx)
    # Speed: most processes need nothing but their maps, which are read here by path;
    # only the few that may need more get their ProcDir. Opening every process's
    # directory too would cost 2 us a process, 5% of a scan (620 processes, mostly
    # small, in-process). The maps descriptor makes the guarantee a ProcDir gives: a
    # process's maps read empty once it has exited, and its PID is not reused before.
    try:
        fd = os.open("%s/%d/maps" % (proc, pid), _O_FILE)
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        raise NoSuchProcess(pid) from None
    try:
        maps = _marked_maps_lines(fd)
        if not maps[1]:
            if maps[0]:
                if not (how.scripts and _interpreter_in(maps[0])):
                    return None  # the common case: nothing more to read
            elif not _is_zombie(read_file("%s/%d/stat" % (proc, pid))):
                return None  # a kernel thread (see _live_thread)
        with ProcDir(proc, pid, reader=ctx.reader) as pdir:
            if maps[0] and not os.pread(fd, 1, 0):
                raise NoSuchProcess(pid)  # exited: the directory may be someone else's
            return scan_process(pdir, how, ctx, maps)
    finally:
        os.close(fd)


def scan_process(pdir, how, ctx, maps=None):
    """The Finding for the process of a ProcDir, or None if it uses no deleted file.
    `maps` is what its marked_maps() said, where already read. OSError if it cannot be
    read or is gone."""
    if how.fds:
        found, listed = _scan_fds(pdir, how.table)
        empty, script_exe = not listed, None
    else:
        first, marked = pdir.marked_maps() if maps is None else maps
        empty = not first
        # The quick test every process gets: only these can lead to a finding.
        script_exe = _interpreter_in(first) if how.scripts else None
        found = deleted_mapped_files(pdir, marked, how.table, how.details, ctx.verdicts,
                                     ctx.inodes) if marked else {}
    if empty:
        # A kernel thread, a zombie, or a process whose main thread exited while others
        # run on; that one is read through a live thread.
        thread = _live_thread(pdir)
        if thread is None:
            return None
        with thread:
            return scan_process(thread, how, ctx)
    if not found and script_exe is None:
        return None  # the common case: nothing more to read
    return _finding(pdir, how, ctx, found, script_exe)


def _live_thread(pdir):
    """For a process whose main thread has exited while other threads run (its state
    is Z, its maps, cmdline, descriptors and links empty), the ProcDir of a live
    thread, as lsof reads it; None for any other process."""
    try:
        if not _is_zombie(pdir.read("stat")):
            return None  # a kernel thread, or a process that is gone
        for tid in pdir.names("task"):
            if tid != str(pdir.pid) and tid.isascii() and tid.isdigit():
                return ProcDir(pdir.proc, pdir.pid, task=tid, reader=pdir.reader)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _is_zombie(stat_data):
    """Whether the stat bytes of a process say it is a zombie (state Z)."""
    return stat_data[stat_data.rfind(b")") + 2 : stat_data.rfind(b")") + 3] == b"Z"


def _finding(pdir, how, ctx, found, script_exe):
    """scan_process for a process that may need a restart: its deleted files
    (`found`) checked, its script checked (`script_exe`: the interpreter it runs, if it
    is one), and what the output shows of it read."""
    drop_kept_files(pdir, found, ctx.inodes)
    if not found and script_exe is None:
        return None  # only files really named "PATH (deleted)"
    argv = _argv(pdir, ctx)
    if script_exe is not None:
        script = stale_script(pdir, argv, script_exe, ctx.clock)
        if script is not None:
            found[script.path] = script
    if not found:
        return None  # an interpreter whose script is as it was: the usual answer
    info = _process_details(pdir, ctx, argv) if how.details else None
    # The exe link tells a deleted executable from a library, which only the detailed
    # formats show.
    exe = info.exe if info is not None else pdir.readlink("exe") if how.services else None
    exe = exe and _strip_deleted(exe)
    for use in found.values():
        if use.kind == "mapping":
            use.kind = file_kind(use.path, exe)
        if how.details and use.replaced is None:
            use.replaced = is_replaced(pdir, use.path)
    placement = read_placement(pdir, ctx.own_ns, ctx.users, ctx.placements) \
        if how.services else None
    parent_and_session = (_read_parent_and_session(pdir) if _outside_units(placement)
                          else None)
    return Finding(pdir.pid, _shown_argv(pdir, argv, info), found, info, placement, exe,
                   parent_and_session)


def _outside_units(place):
    """Whether a Placement is of a process that no systemd unit runs, outside any
    container, with its cgroup read: one that an init script may manage."""
    return (place is not None and place.unit is None and place.container is None
            and place.error is None)


def _read_parent_and_session(pdir):
    """(ppid, session ID) of the process, read from its stat while its ProcDir stands
    for it (with --json, process_info has read the file already); None in a saved tree
    without one."""
    try:
        return _parent_and_session(pdir.read("stat"))
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _argv(pdir, ctx):
    """The process's argument list. The workers of one service share their arguments:
    each text is kept once."""
    return [ctx.texts.setdefault(arg, arg) for arg in parse_cmdline(pdir.read("cmdline"))]


def _process_details(pdir, ctx, argv):
    """The ProcessInfo of the process (its texts kept once, as _argv's), or None if it
    is gone or a saved tree has no stat."""
    try:
        info = process_info(pdir, ctx.clock, ctx.users, argv)
    except FileNotFoundError:
        return None
    texts = ctx.texts
    return info._replace(comm=texts.setdefault(info.comm, info.comm),
                         exe=texts.setdefault(info.exe, info.exe),
                         cwd=texts.setdefault(info.cwd, info.cwd))


def _shown_argv(pdir, argv, info):
    """The argument list as the output shows it: an empty (or cut) one is shown by the
    command name in brackets, as ps does."""
    if argv and argv[0] != ARGV_CUT:
        return argv
    comm = info.comm if info is not None else os.fsdecode(pdir.read("comm").rstrip(b"\n"))
    return ["[%s]" % comm] + argv


def scan(proc=PROC, how=None, pids=None, timeout=DEFAULT_TIMEOUT):
    """Scan every process (or those in `pids`) for deleted files in use.

    Processes that exit during the scan are skipped; those that cannot be read are
    counted. Kernel threads and zombies map nothing; lib_users itself is left out. A
    process (or a file system it uses) that does not answer within `timeout` seconds
    is left behind and listed in `unanswered`; the whole scan ends within
    SCAN_BUDGETS times `timeout`, and what it did not reach is listed in `not_reached`.
    None waits as long as it takes.
    """
    how = how or ScanOptions()
    ctx = _Context(proc, how)
    me = own_pid(proc)
    findings, unreadable = [], 0
    if pids is None and me not in (None, 1) and not os.path.exists("%s/1" % proc):
        # hidepid=invisible: other users' processes are not even listed. PID 1 always
        # exists, so its absence says so; how many are hidden cannot be known.
        unreadable += 1
    total = None if timeout is None else SCAN_BUDGETS * timeout
    listed = _listed_pids(proc) if pids is None else pids
    answers, unanswered, not_reached, scanned = _watched(
        lambda pid: scan_pid(proc, pid, how, ctx), (pid for pid in listed if pid != me),
        timeout, total, _scan_workers())
    for _pid, error, finding in answers:
        if error is None:
            findings.append(finding)
            continue
        scanned -= 1
        if isinstance(error, (NoSuchProcess, FileNotFoundError, ProcessLookupError)):
            continue  # gone, or exited during the scan
        if not isinstance(error, (OSError, ValueError, IndexError)):
            raise error
        unreadable += 1  # EACCES/EPERM, or something odd in its files: not seen
    unreadable += len(unanswered) + len(not_reached)
    findings.sort(key=lambda finding: finding.pid)  # directories list in any order
    return Scan(findings, scanned, unreadable, unanswered, not_reached)


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

    __slots__ = _fields = ("argv", "pids", "files", "uses", "freed")


def group_by_argv(findings):
    """Group findings by their exact argument list, in a stable order."""
    members = {}
    for finding in findings:
        members.setdefault(tuple(finding.argv), []).append(finding)
    groups = []
    for argv, found in members.items():
        uses = {}
        for finding in found:
            uses.update(finding.files)
        groups.append(Group(argv=list(argv), pids=sorted(f.pid for f in found),
                            files=sorted(uses), uses=uses,
                            freed=freed_bytes(uses.values())))
    return sorted(groups, key=lambda g: (g.argv, g.pids))


# Units that must not be restarted blindly, with the reason and what to do instead:
# (glob on the unit name, reason). The first match wins; *.service units that match
# nothing here are safe to restart.
HELD_BACK = (
    ("init.scope", "systemd itself (PID 1): run systemctl daemon-reexec, or reboot"),
    ("dbus.service", "the system message bus: restarting it cuts every client off; reboot instead"),
    ("dbus-broker.service", "the system message bus: restarting it cuts every client off; reboot instead"),
    ("systemd-logind.service", "tracks every login session; restart it when nobody is logged in"),
    ("display-manager.service", "a display manager: restarting it ends every graphical session"),
    ("gdm.service", "a display manager: restarting it ends every graphical session"),
    ("gdm3.service", "a display manager: restarting it ends every graphical session"),
    ("sddm.service", "a display manager: restarting it ends every graphical session"),
    ("lightdm.service", "a display manager: restarting it ends every graphical session"),
    ("lxdm.service", "a display manager: restarting it ends every graphical session"),
    ("xdm.service", "a display manager: restarting it ends every graphical session"),
    ("NetworkManager.service", "manages the network: restarting it can cut a remote session off"),
    ("systemd-networkd.service", "manages the network: restarting it can cut a remote session off"),
    ("networking.service", "manages the network: restarting it can cut a remote session off"),
    ("wpa_supplicant.service", "manages the network: restarting it can cut a remote session off"),
    ("getty@*.service", "a console login: restarting it ends the session on that console"),
    ("serial-getty@*.service", "a console login: restarting it ends the session on that console"),
    ("container-getty@*.service", "a console login: restarting it ends the session on that console"),
    ("user@*.service", "the service manager of a logged-in user: ask them to log out and in"),
    ("session-*.scope", "a login session: ask its user to log out and in again"),
    ("*.scope", "a group of processes systemd did not start: restart the program itself"),
)


_NOT_A_SERVICE = "runs at boot, at shutdown or for a runlevel, not a service: never restart it"
_NETWORK = "manages the network: restarting it can cut a remote session off"
_DISPLAY_MANAGER = "a display manager: restarting it ends every graphical session"

# Init scripts that must not be restarted blindly, beyond those HELD_BACK already holds
# back as units (an init script is matched there as NAME and as NAME.service, so that
# dbus.service also holds back the script dbus): (glob on the script's name, reason).
# A table of its own, so that no systemd unit can match these.
HELD_BACK_SCRIPTS = (
    ("rc", _NOT_A_SERVICE),  # sysvinit: runs the scripts of a runlevel
    ("rcS", _NOT_A_SERVICE),  # sysvinit: runs the scripts of booting
    ("sendsigs", _NOT_A_SERVICE),  # sysvinit: ends every process at shutdown
    ("killprocs", _NOT_A_SERVICE),  # OpenRC: the same
    ("halt", _NOT_A_SERVICE),
    ("reboot", _NOT_A_SERVICE),
    ("single", _NOT_A_SERVICE),
    ("umountfs", _NOT_A_SERVICE),
    ("umountroot", _NOT_A_SERVICE),
    ("elogind", "tracks every login session; restart it when nobody is logged in"),
    ("consolekit", "tracks every login session; restart it when nobody is logged in"),
    ("network-manager", _NETWORK),  # Debian's script for NetworkManager
    ("network", _NETWORK),
    ("net.*", _NETWORK),  # OpenRC: net.lo, and a link to it for each interface (net.eth0)
    ("dhcpcd", _NETWORK),
    ("connman", _NETWORK),
    ("iwd", _NETWORK),
    ("wicd", _NETWORK),
    ("kdm", _DISPLAY_MANAGER),
    ("slim", _DISPLAY_MANAGER),
    ("nodm", _DISPLAY_MANAGER),
    ("wdm", _DISPLAY_MANAGER),
    # OpenRC: agetty.tty1 and its like, links to agetty
    ("agetty.*", "a console login: restarting it ends the session on that console"),
)


def held_back_reason(unit, configured=()):
    """Why `unit` must not be restarted blindly, or None if it is safe to restart.
    `configured` holds the config's (glob, reason) entries: they add to HELD_BACK, whose
    advice stands where both match."""
    for pattern, reason in HELD_BACK + tuple(configured):
        if glob_match(pattern, unit):
            return reason
    return None if unit.endswith(".service") else "not a service"


def script_held_back_reason(name, configured=()):
    """Why the init script `name` must not be restarted blindly, or None if it is safe
    to restart. Each glob of HELD_BACK, HELD_BACK_SCRIPTS and the config's entries
    (`configured`) is matched against NAME and against NAME.service, so that a unit's
    entry also holds back the script of that name."""
    for pattern, reason in HELD_BACK + HELD_BACK_SCRIPTS + tuple(configured):
        if glob_match(pattern, name) or glob_match(pattern, name + ".service"):
            return reason
    return None


_CONTAINER_RESTART = {"docker": "docker restart %s", "podman": "podman restart %s",
                      "nspawn": "machinectl reboot %s"}
# LXC containers are lxc.payload.NAME whichever tool made them, and each tool has its
# own command: classic LXC's, LXD's or Incus's, as far as it is installed here.
_LXC_RESTART = (("lxc-stop", "lxc-stop -n %s -r"), ("lxc", "lxc restart %s"),
                ("incus", "incus restart %s"))


def which(command):
    """The path of `command` on PATH, or None (shutil, imported only when asked)."""
    import shutil
    return shutil.which(command)


def container_advice(container, pod=None, which=which):
    """What to do about a process in `container` (a Placement's), in Kubernetes pod
    `pod`; `which` looks up a command on PATH (asked for LXC only)."""
    kind, _, name = container.partition(":")
    if pod is not None:
        return ("a container of the Kubernetes pod with UID %s: delete the pod (kubectl "
                "delete pod -n NAMESPACE NAME) so that its controller recreates it" % pod)
    if kind in _CONTAINER_RESTART:
        return "restart the container: " + _CONTAINER_RESTART[kind] % name
    if kind == "lxc":
        commands = [command % name for tool, command in _LXC_RESTART if which(tool)]
        if not commands:
            return ("restart the LXC container %s (none of lxc-stop, lxc or incus is "
                    "installed here)" % name)
        return "restart the container: " + " or ".join(commands)
    return "a process in another PID namespace: restart the container it runs in"


class UnitEntry(_Record):
    """One line of the restart plan: a unit (or container, or init script) label, its
    PIDs, the argv groups inside it, the reason it is held back (None: safe to
    restart), and the InitScript of processes that systemd does not run."""

    __slots__ = _fields = ("label", "unit", "container", "pids", "groups", "reason",
                           "init_script")
    _defaults = (None,)


class RestartPlan(_Record):
    """What to restart: `restart` lists system services that are safe to restart (unit
    names, and init scripts by name); `entries` every unit, init script, container and
    unit-less group with its processes."""

    __slots__ = _fields = ("restart", "entries")


def plan_restarts(findings, which=which, held_back=()):
    """Sort findings into units and containers and say which units to restart.
    `which` looks up commands on PATH (see container_advice); `held_back` holds the
    config's units not to restart (see held_back_reason)."""
    found = {}

    def cached(command):  # each command looked up once, and only if asked for
        if command not in found:
            found[command] = which(command)
        return found[command]

    members, labels = {}, {}
    for finding in findings:
        place = finding.placement or Placement(None, None, None, None, None, None)
        key, reason = _label_and_reason(place, cached, held_back)
        if key not in members:
            members[key], labels[key] = [], (place, reason)
        members[key].append(finding)
    entries = [UnitEntry(label=key, unit=labels[key][0].unit,
                         container=labels[key][0].container,
                         pids=sorted(f.pid for f in found), groups=group_by_argv(found),
                         reason=labels[key][1], init_script=labels[key][0].init_script)
               for key, found in members.items()]
    entries.sort(key=lambda e: (e.reason is not None, e.label == "", e.label))
    return RestartPlan([e.unit or e.init_script.name for e in entries if e.reason is None],
                       entries)


def _label_and_reason(place, which, held_back=()):
    """The label of a Placement in the restart plan, and why it is held back (None:
    safe to restart)."""
    if place.container is not None:
        return place.container, container_advice(place.container, place.pod, which)
    if place.error is not None:
        return "?", "its cgroup could not be read (%s): find out what runs it" % place.error
    if place.unit is None and place.init_script is not None:
        name = place.init_script.name
        return "/etc/init.d/" + name, script_held_back_reason(name, held_back)
    if place.unit is None:
        return "", "no systemd unit or init script: restart them by hand"
    if place.user_unit is not None:
        key = "%s in %s" % (place.user_unit, place.unit)
        who = place.user or place.uid
        if place.user_unit.endswith(".service"):
            return key, "a service of %s's user manager: as %s, systemctl --user restart %s" % (
                who, who, place.user_unit)
        # a scope: systemd cannot restart what it did not start
        return key, "processes %s started in their session: restart the program itself" % (
            who,)
    if place.session is not None:
        return place.unit, "a login session of %s: ask them to log out and in again" % (
            place.user or "uid %s" % place.uid)
    return place.unit, held_back_reason(place.unit, held_back)


def _version_key(version):
    """Sort key that orders 6.1.0-10-amd64 after 6.1.0-9-amd64: digit runs as numbers."""
    key, digits, other = [], "", ""
    for char in version + "\0":
        if char.isdigit():
            if other:
                key.append((1, other))
                other = ""
            digits += char
        else:
            if digits:
                key.append((2, int(digits)))
                digits = ""
            other += char
    return key


def kernel_reboot_reasons(root="/", release=None):
    """Why the running kernel wants a reboot, from the files under `root`: the
    distribution's flag, its modules directory gone, or a newer kernel installed."""
    release = release or os.uname().release
    join = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    reasons = []
    if os.path.exists(join("run", "reboot-required")):
        reason = "the distribution asks for one (/run/reboot-required)"
        try:
            with open(join("run", "reboot-required.pkgs"), "rb") as pkgs:
                names = sorted(set(os.fsdecode(pkgs.read()).split()))
            if names:
                reason += " after upgrading " + ", ".join(escape(n) for n in names)
        except OSError:
            pass
        reasons.append(reason)
    installed = set()
    for modules in (join("lib", "modules"), join("usr", "lib", "modules")):
        try:
            installed.update(n for n in os.listdir(modules)
                             if os.path.isdir(os.path.join(modules, n)))
        except OSError:
            pass
    if installed and release not in installed:
        reasons.append("the modules of the running kernel %s are gone" % escape(release))
    try:
        installed.update(n[len("vmlinuz-"):] for n in os.listdir(join("boot"))
                         if n.startswith("vmlinuz-"))
    except OSError:
        pass
    newest = max(installed, key=_version_key, default=None)
    if newest is not None and _version_key(newest) > _version_key(release):
        reasons.append("kernel %s is installed but %s is running" % (escape(newest),
                                                                     escape(release)))
    return reasons


class RebootHint(_Record):
    """Whether a reboot is needed, with the reasons, and the deleted files only a
    reboot replaces (those mapped by PID 1)."""

    __slots__ = _fields = ("needed", "reasons", "files")


def reboot_hint(findings, kernel_reasons=()):
    """RebootHint from the kernel's reasons and the findings for PID 1."""
    reasons, files = list(kernel_reasons), []
    for finding in findings:
        if finding.pid == 1 and any(u.kind != "fd" for u in finding.files.values()):
            files = sorted(p for p, u in finding.files.items() if u.kind != "fd")
            reasons.append("PID 1 uses deleted files that only a reboot (or re-executing "
                           "init: systemctl daemon-reexec with systemd, telinit u with "
                           "sysvinit) replaces: " + ", ".join(escape(f) for f in files))
    return RebootHint(bool(reasons), reasons, files)


class Report(_Record):
    """What a scan found, ready to render: groups, the Scan itself, whether it looked
    at descriptors (fds) instead of mappings, the bytes restarting would free, the
    RestartPlan and the RebootHint."""

    __slots__ = _fields = ("groups", "scan", "fds", "freed", "plan", "reboot")


def build_report(scan_result, fds=False, kernel_reasons=(), held_back=(), packages=None,
                 scripts=None):
    """The Report of a Scan; `held_back` as plan_restarts takes it. With `packages` (a
    PackageDb), each deleted file gets the package that owns its path now; with
    `scripts` (an InitScripts), each process outside systemd's units the init script
    that manages it."""
    findings = scan_result.findings
    if scripts is not None:
        findings = attach_init_scripts(findings, scripts)
        scan_result = scan_result._replace(findings=findings)
    if packages is not None:
        attach_packages(findings, packages)
    return Report(group_by_argv(findings), scan_result, fds,
                  freed_bytes(u for f in findings for u in f.files.values()),
                  plan_restarts(findings, held_back=held_back),
                  reboot_hint(findings, kernel_reasons))


# ---- packages --------------------------------------------------------------------------
# Which installed package owns a path, from dpkg's database: /var/lib/dpkg/info/*.list
# (one installed path a line, per package) and the versions in /var/lib/dpkg/status.
# Nothing is read unless a format shows packages, and then only for the paths asked
# for: each .list is searched as bytes for the whole line, and the search stops once
# every path is found. Other package managers (RPM's database needs its own library
# to read) answer None.

DPKG_DIR = "var/lib/dpkg"  # under the root
# Where no package installs files (the FHS, Debian Policy 9.1): a deleted file there is
# nobody's, and looking it up would read every .list for nothing.
_UNPACKAGED = ("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/", "/dev/", "/proc/",
               "/sys/", "/srv/", "/mnt/", "/media/", "/usr/local/")
# /bin, /sbin and /lib are links to their /usr directories on a merged-/usr system,
# where maps shows /usr/lib/... for a file that a package lists as /lib/...
_MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class Package(_Record):
    """An installed package: its name, the version installed now, its architecture
    ("" where the database does not say), and the init scripts it ships (the NAMEs of
    its /etc/init.d/NAME)."""

    __slots__ = _fields = ("name", "version", "arch", "init_scripts")


class PackageDb:
    """The package database of the system under `root`: owners() tells which package
    owns each path. Answers are kept, so each path is looked up once."""

    def __init__(self, root="/"):
        self.root = root
        self.info = os.path.join(root, DPKG_DIR, "info")
        self._owners = {}  # path: Package or None
        self._merged = [name for name in _MERGED_DIRS
                        if _readlink(os.path.join(root, name)) in ("usr/" + name,
                                                                    "/usr/" + name)]

    def owner(self, path):
        """The Package that owns `path`, or None."""
        return self.owners([path])[path]

    def owners(self, paths):
        """{path: Package or None} for each of `paths`."""
        wanted = [path for path in paths if path not in self._owners]
        if wanted:
            self._owners.update(dict.fromkeys(wanted))
            wanted = [path for path in wanted if not path.startswith(_UNPACKAGED)]
            if wanted:
                self._look_up(wanted)
        return {path: self._owners[path] for path in paths}

    def _names(self, path):
        """The lines a .list may have for `path`: itself, and on a merged-/usr system
        its other name (/lib/x for /usr/lib/x and back)."""
        names = [path]
        for name in self._merged:
            if path.startswith("/usr/%s/" % name):
                names.append(path[4:])
            elif path.startswith("/%s/" % name):
                names.append("/usr" + path)
        return names

    def _look_up(self, paths):
        # dpkg's .list files begin with "/.": the paths follow a newline (the first line
        # is checked apart, for lists that do not).
        needles = [(b"\n" + os.fsencode(name) + b"\n", path)
                   for path in paths for name in self._names(path)]
        try:
            info = os.open(self.info, _O_DIR)
        except OSError:
            return  # no dpkg here
        try:
            lists = sorted(entry for entry in os.listdir(info) if entry.endswith(".list"))
            status = None
            for entry in lists:
                try:
                    fd = os.open(entry, _O_FILE, dir_fd=info)
                    try:
                        data = _read_fd(fd)
                    finally:
                        os.close(fd)
                except OSError:
                    continue
                owned = {path for needle, path in needles
                         if needle in data or data.startswith(needle[1:])}
                if not owned:
                    continue
                if status is None:
                    status = self._status()
                name, _, arch = entry[: -len(".list")].partition(":")
                package = Package(name, _version(status, name, arch), arch,
                                  _init_scripts(data))
                for path in owned:
                    self._owners[path] = package
                needles = [(needle, path) for needle, path in needles if path not in owned]
                if not needles:
                    break
        finally:
            os.close(info)

    def _status(self):
        try:
            return b"\n" + read_file(os.path.join(self.root, DPKG_DIR, "status"))
        except OSError:
            return b""


def _version(status, name, arch):
    """The Version of package `name` (of architecture `arch`, where given) in the bytes
    of dpkg's status file (with a newline in front), or None."""
    start = status.find(b"\nPackage: %s\n" % os.fsencode(name))
    while start >= 0:
        end = status.find(b"\n\n", start + 1)
        stanza = status[start : end if end >= 0 else len(status)] + b"\n"
        if not arch or b"\nArchitecture: %s\n" % os.fsencode(arch) in stanza:
            at = stanza.find(b"\nVersion: ")
            if at >= 0:
                return os.fsdecode(stanza[at + 10 : stanza.find(b"\n", at + 1)])
        start = status.find(b"\nPackage: %s\n" % os.fsencode(name), start + 1)
    return None


def attach_packages(findings, packages):
    """Set each deleted file's `package` from `packages` (a PackageDb). A process in a
    container uses its image's files, which the machine's database does not know."""
    uses = [use for finding in findings
            if finding.placement is None or finding.placement.container is None
            for use in finding.files.values()]
    owners = packages.owners(sorted({use.path for use in uses}))
    for use in uses:
        use.package = owners[use.path]


def _init_scripts(data):
    """The NAMEs of the /etc/init.d/NAME lines of a .list file's bytes (never its first
    line, which is "/.")."""
    names, at = [], data.find(b"\n/etc/init.d/")
    while at >= 0:
        end = data.find(b"\n", at + 1)
        name = data[at + len(b"\n/etc/init.d/") : end if end >= 0 else len(data)]
        if name and b"/" not in name:
            names.append(os.fsdecode(name))
        at = data.find(b"\n/etc/init.d/", at + 1)
    return tuple(names)


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


# ---- init scripts ----------------------------------------------------------------------
# Which init script manages a process that systemd does not run (Devuan, Alpine and
# Gentoo with OpenRC, containers running several daemons, WSL, older servers). Two
# rules, the first that names an existing script wins:
# 1. a pid file in /run or /var/run, top level or one directory down, that names the
#    process or one of its ancestors in its session (the workers of nginx, apache or
#    postgres are children of the process in the pid file; a login under sshd starts a
#    session of its own, so it is not taken for the ssh service). The script whose text
#    names that pid file wins, else the one named after the file (NAME.pid) or its
#    directory (NAME/x.pid);
# 2. for a daemon (a process whose session leads up to PID 1), the package that ships
#    both its executable and one init script (or several, one named as the executable).
# Nothing is read unless a finding needs it, and then each file once, bounded.

_PID_FILE_MAX = 4096  # a pid file holds a number and a newline
_SCRIPT_MAX = 1 << 20  # init scripts are a few KiB
_ANCESTORS_MAX = 32  # how far up the parent chain a process is followed
# The bytes that may continue a path around a pid file's name in a script's text.
_PATH_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-")


class InitScript(_Record):
    """The init script that manages a process: its name (that of /etc/init.d/NAME), its
    init system ("sysvinit" or "openrc") and the command that restarts it
    (`COMMAND NAME restart`: invoke-rc.d, service or rc-service)."""

    __slots__ = _fields = ("name", "init", "command")


def init_system(root):
    """The init system of the machine under `root`: "systemd" where it was booted with
    systemd (as sd_booted(3) tells: /run/systemd/system is a directory), else "openrc"
    where openrc-run is installed, else "sysvinit" where /etc/init.d exists, else None."""
    if os.path.isdir(os.path.join(root, "run", "systemd", "system")):
        return "systemd"
    if any(os.path.exists(os.path.join(root, where, "openrc-run"))
           for where in ("sbin", "usr/sbin")):
        return "openrc"
    if os.path.isdir(os.path.join(root, "etc", "init.d")):
        return "sysvinit"
    return None


def restart_command(root, init):
    """The command that restarts an init script of `init` under `root`: Debian's
    invoke-rc.d (which honours the admin's policy-rc.d) where it is installed, else
    service, for sysvinit; rc-service for OpenRC. None for other init systems."""
    if init == "openrc":
        return "rc-service"
    if init == "sysvinit":
        invoke = os.path.exists(os.path.join(root, "usr", "sbin", "invoke-rc.d"))
        return "invoke-rc.d" if invoke else "service"
    return None


class InitScripts:
    """The init scripts of the machine under `root` and the pid files in its run
    directories: script_of(pid) tells which one manages a process of the procfs at
    `proc`. `packages` is the PackageDb to ask (one of `root`'s own where None)."""

    def __init__(self, root, proc=PROC, packages=None):
        self.root, self.proc = root, proc
        self.init = init_system(root)
        self.command = restart_command(root, self.init)
        self._packages = packages
        self._pid_files = None  # see _pid_files_by_pid
        self._texts = None  # {script name: its text}
        self._parents = {}  # {PID: (ppid, session) or None}: workers share ancestors

    def script_of(self, pid, exe=None, parent_and_session=None):
        """The InitScript that manages process `pid`, or None: none found, PID 1, or a
        machine that does not run init scripts itself (systemd runs each through a unit
        of its own). `exe` and `parent_and_session`: its executable's path and its
        (ppid, session ID), where the scan read them already."""
        if self.command is None or pid == 1:
            return None
        if parent_and_session is not None:
            self._parents.setdefault(pid, parent_and_session)
        chain, daemon = self._session_chain(pid)
        for member in chain:
            for pid_file in self._pid_files_by_pid().get(member, ()):
                name = self._script_of_pid_file(pid_file)
                if name is not None:
                    return InitScript(name, self.init, self.command)
        name = self._script_of_package(pid, exe) if daemon else None
        return None if name is None else InitScript(name, self.init, self.command)

    def _session_chain(self, pid):
        """(the process and its ancestors in its session, nearest first; whether the
        farthest of them is a child of PID 1, as daemons are). PID 1 is never in it."""
        chain, session = [], None
        for _ in range(_ANCESTORS_MAX):
            parent_and_session = self._parent_and_session_of(pid)
            if parent_and_session is None:
                return chain, False
            ppid, sid = parent_and_session
            if session is None:
                session = sid
            elif sid != session:
                return chain, False  # the session its parent started: not this service's
            chain.append(pid)
            if ppid <= 1:
                return chain, ppid == 1
            pid = ppid
        return chain, False

    def _parent_and_session_of(self, pid):
        """(ppid, session) from /proc/PID/stat, or None if it cannot be read."""
        if pid not in self._parents:
            try:
                self._parents[pid] = _parent_and_session(
                    read_file("%s/%d/stat" % (self.proc, pid)))
            except (OSError, ValueError, IndexError):
                self._parents[pid] = None
        return self._parents[pid]

    def _pid_files_by_pid(self):
        """{PID: the pid files (below their run directory) whose first word it is}."""
        if self._pid_files is None:
            self._pid_files = {}
            for run in run_directories(self.root):
                for pid_file in pid_files(run):
                    try:
                        words = read_file(os.path.join(run, pid_file), _PID_FILE_MAX).split()
                    except OSError:
                        continue
                    pid = _whole_number(words[0].decode("ascii", "replace")) if words else None
                    if pid is not None and pid_file not in self._pid_files.get(pid, ()):
                        self._pid_files.setdefault(pid, []).append(pid_file)
        return self._pid_files

    def _scripts(self):
        """{name: text} of the init scripts: the executable files in /etc/init.d (its
        README and skeleton are not)."""
        if self._texts is None:
            self._texts = {}
            directory = os.path.join(self.root, "etc", "init.d")
            for name in _names_in(directory):
                path = os.path.join(directory, name)
                try:
                    mode = os.stat(path).st_mode  # OpenRC's net.eth0 is a link to net.lo
                    if stat.S_ISREG(mode) and mode & 0o111:
                        self._texts[name] = read_file(path, _SCRIPT_MAX)
                except OSError:
                    continue
        return self._texts

    def _script_of_pid_file(self, pid_file):
        """The script that names the pid file RUN/`pid_file` (as /run/... or
        /var/run/...), where only one does, else the one named after the file or its
        directory (among those that name it, where several do); None if none is."""
        scripts = self._scripts()
        naming = [name for name, text in sorted(scripts.items())
                  if _names_path(text, os.fsencode(pid_file))]
        if len(naming) == 1:
            return naming[0]
        directory, _, base = pid_file.rpartition("/")
        for name in (base[: -len(".pid")], directory):
            if name in scripts and (not naming or name in naming):
                return name
        return None

    def _script_of_package(self, pid, exe=None):
        """The script that the package of the process's executable (`exe`, where the
        scan read it) ships: its only one, or the one named as the executable; None if
        there is none such."""
        if exe is None:
            exe = _readlink("%s/%d/exe" % (self.proc, pid))
            exe = exe and _strip_deleted(exe)
        if exe is None or not exe.startswith("/"):
            return None
        if self._packages is None:
            self._packages = PackageDb(self.root)
        package = self._packages.owner(exe)
        if package is None:
            return None
        shipped = [name for name in package.init_scripts if name in self._scripts()]
        if len(shipped) == 1:
            return shipped[0]
        base = exe.rsplit("/", 1)[-1]
        return base if base in shipped else None


def run_directories(root):
    """ROOT/run and ROOT/var/run, the latter left out where it is the same directory
    (on most systems it is a link to /run, which is followed inside `root`, not out of
    it)."""
    run = os.path.join(root, "run")
    var_run = os.path.join(root, "var", "run")
    target = _readlink(var_run)
    if target is not None:
        var_run = (os.path.join(root, target.lstrip("/")) if target.startswith("/")
                   else os.path.join(root, "var", target))
    try:
        if os.path.samefile(run, var_run):
            return [run]
    except OSError:
        pass
    return [run, var_run]


def pid_files(run):
    """The pid files in the run directory `run`, as paths below it, sorted: the regular
    files named *.pid at its top and one directory down, except in a directory that
    any user may write to (/run/lock), where anyone could leave one."""
    found = []
    for name in _names_in(run):
        path = os.path.join(run, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and name.endswith(".pid"):
            found.append(name)
        elif stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWOTH:
            for inner in _names_in(path):
                try:
                    if (inner.endswith(".pid")
                            and stat.S_ISREG(os.lstat(os.path.join(path, inner)).st_mode)):
                        found.append(name + "/" + inner)
                except OSError:
                    continue
    return found


def _names_in(directory):
    """The sorted names in `directory`; none if it cannot be read."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _names_path(text, pid_file):
    """Whether a script's text names RUN/`pid_file` (bytes) as /run/... or /var/run/...,
    as a whole path: not /run/x.pid.old, nor /srv/run/x.pid."""
    for needle in (b"/run/" + pid_file, b"/var/run/" + pid_file):
        at = text.find(needle)
        while at >= 0:
            end = at + len(needle)
            if (at == 0 or text[at - 1] not in _PATH_BYTES) and (
                    end == len(text) or text[end] not in _PATH_BYTES):
                return True
            at = text.find(needle, at + 1)
    return False


def attach_init_scripts(findings, scripts):
    """The findings, each process that has no systemd unit and is not in a container
    given the InitScript that manages it (from `scripts`, an InitScripts), if any."""
    attached = []
    for finding in findings:
        place = finding.placement
        if _outside_units(place):
            script = scripts.script_of(finding.pid, finding.exe, finding.parent_and_session)
            if script is not None:
                finding = finding._replace(placement=place._replace(init_script=script))
        attached.append(finding)
    return attached


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
    """A file in a -s list: commas and semicolons in its name escaped, so that the
    list splits cleanly; with --fds its size, and its package where looked up."""
    notes = [human_size(use.size)] if with_size and use.size is not None else []
    if use.package is not None:
        notes.append(_package_label(use.package))
    label = _escape_field(use.path)
    return "%s (%s)" % (label, ", ".join(notes)) if notes else label


def _package_label(package):
    """A package as text shows it: NAME VERSION, escaped, with commas and semicolons
    as in file names."""
    return _escape_field("%s %s" % (package.name, package.version or "?"))


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


def render_json(report):
    """One JSON document: the groups, each reported process with its details, what to
    restart, whether a reboot is needed, and whether the scan saw every process."""
    import json  # here, not at the top: only --json pays its 5 ms (most of it re)

    processes = [_process_doc(f) for f in sorted(report.scan.findings, key=lambda f: f.pid)]
    by_pid = {doc["pid"]: doc for doc in processes}
    doc = {
        "version": __version__,
        "mode": "fds" if report.fds else "maps",
        "complete": report.scan.complete,
        "unreadable": report.scan.unreadable,
        "unanswered": report.scan.unanswered,
        "groups": [],
    }
    for group in report.groups:
        entry = {"argv": group.argv, "pids": group.pids, "files": group.files}
        for field in ("unit", "container", "pod", "session", "service", "init"):
            # The group's unit (container, session) where all its processes share it.
            values = [by_pid[pid][field] for pid in group.pids]
            entry[field] = values[0] if all(v == values[0] for v in values) else None
        if report.fds:
            entry["freed_bytes"] = group.freed
        doc["groups"].append(entry)
    if report.fds:
        doc["freed_bytes"] = report.freed
    doc["restart"] = report.plan.restart
    doc["reboot"] = report.reboot._asdict()
    doc["processes"] = processes
    # One line, as json.dumps writes it by default (and with its C encoder: indented,
    # it takes the pure-Python one, 8.5 ms instead of 1.7 ms for 375 processes);
    # `python3 -m json.tool` or jq lay it out for reading. ensure_ascii escapes C0, C1,
    # every other non-ASCII character and the surrogates that stand for bytes that are
    # not UTF-8 (\udcXX: os.fsencode gives the bytes back), but leaves DEL raw.
    # Outside strings JSON has no DEL to confuse it with.
    return json.dumps(doc).replace("\x7f", "\\u007f") + "\n"


_FILE_KEYS = ("path", "kind", "size", "replaced")


def _package_doc(package):
    return None if package is None else {"name": package.name, "version": package.version}


def _process_doc(finding):
    doc = finding.process._asdict() if finding.process is not None else {
        "pid": finding.pid, "argv": finding.argv}
    doc.update(_placement_doc(finding.placement))
    doc["files"] = [dict({key: getattr(use, key) for key in _FILE_KEYS},
                         package=_package_doc(use.package))
                    for _path, use in sorted(finding.files.items())]
    return doc


_PLACEMENT_KEYS = ("unit", "user_unit", "container", "pod", "session", "cgroup_error",
                   "service", "init")


def _placement_doc(place):
    if place is None:
        return dict.fromkeys(_PLACEMENT_KEYS)
    session = None
    if place.session is not None:
        session = {"id": place.session, "uid": place.uid, "user": place.user}
    service, init = service_of(place)
    return {"unit": place.unit, "user_unit": place.user_unit, "container": place.container,
            "pod": place.pod, "session": session, "cgroup_error": place.error,
            "service": service, "init": init}


def service_of(place):
    """(service, init system) of a Placement: its systemd unit where that is a service,
    else the init script that manages it; (None, None) in a container, or for neither."""
    if place.container is not None:
        return None, None
    if place.unit is not None:
        return (place.unit, "systemd") if place.unit.endswith(".service") else (None, None)
    if place.init_script is not None:
        return place.init_script.name, place.init_script.init
    return None, None


def _head(pids, verbose):
    if len(pids) > 5 and not verbose:
        return plural(len(pids), "process")
    return ",".join(map(str, pids))


def render_services(report, verbose=False, showlibs=False):
    """-S: each unit (or init script, or container) with its processes, ready-to-run
    lines for the services that are safe to restart (one systemctl line for the units,
    one line for each init script), and why the others are held back."""
    lines = []
    for entry in report.plan.entries:
        for group in entry.groups:
            line = '%s %s "%s"' % (escape(entry.label) or "-", _head(group.pids, verbose),
                                   format_argv(group.argv))
            if showlibs:
                line += " uses " + ",".join(_file_label(group.uses[p], report.fds)
                                            for p in group.files)
            else:
                packages = sorted({group.uses[p].package for p in group.files} - {None},
                                  key=lambda package: package.name)
                if packages:
                    line += " (%s)" % ", ".join(_package_label(p) for p in packages)
            lines.append(line + "\n")
    safe = [e for e in report.plan.entries if e.reason is None]
    units = [e.unit for e in safe if e.init_script is None]
    if safe:
        lines.append("\n")
    if units:
        lines.append("systemctl restart %s\n" % " ".join(quote_arg(unit) for unit in units))
    for entry in safe:  # each of these commands takes one name
        if entry.init_script is not None:
            lines.append("%s %s restart\n" % (entry.init_script.command,
                                               quote_arg(entry.init_script.name)))
    held = [e for e in report.plan.entries if e.reason is not None]
    if held:
        lines.append("\n")
        for entry in held:
            lines.append("# %s: %s\n" % (escape(entry.label) or "processes without a unit",
                                         escape(entry.reason)))
    if report.fds:
        lines.append(_freed_line(report))
    return "".join(lines)


NAGIOS_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


def nagios_status(report, warning=0, critical=None):
    """The monitoring-plugins state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN): a count of
    processes above a threshold alerts, whether or not the scan saw every process (what
    was found stands); a scan that found nothing but missed processes is UNKNOWN."""
    count = len(report.scan.findings)
    if critical is not None and count > critical:
        return 2
    if count > warning:
        return 1
    if not report.scan.complete:
        return 3
    return 0


def render_nagios(report, warning=0, critical=None, verbose=False):
    """One status line with performance data, then the groups, one per line."""
    state = nagios_status(report, warning, critical)
    count, services = len(report.scan.findings), len(report.plan.restart)
    if count:
        summary = "%s %s deleted files, %d to restart" % (
            plural(count, "process"), "uses" if count == 1 else "use", services)
        if report.plan.restart:
            summary += " (%s)" % ", ".join(escape(u) for u in report.plan.restart)
    else:
        summary = "no process uses deleted files"
    if not report.scan.complete:
        summary += "; %s could not be read" % plural(report.scan.unreadable, "process")
        if report.scan.unanswered:
            summary += " (%d did not answer)" % len(report.scan.unanswered)
    if report.reboot.needed:
        summary += "; reboot needed"
    perf = "processes=%d;%d;%s;0 services=%d;;;0 unreadable=%d;;;0" % (
        count, warning, "" if critical is None else critical, services,
        report.scan.unreadable)
    # Nagios reads whatever follows a '|', in any line, as performance data.
    lines = ["LIB_USERS %s - %s | %s\n" % (NAGIOS_STATES[state],
                                            summary.replace("|", "\\x7c"), perf)]
    lines += ['%s "%s"\n' % (_head(g.pids, verbose),
                              format_argv(g.argv).replace("|", "\\x7c"))
              for g in report.groups]
    return "".join(lines), state


def _prom_label(value):
    # escape() for control characters, but a backslash only once: the format's own.
    text = "\\".join(escape(part) for part in value.split("\\"))
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_prometheus(report, now=None):
    """The Prometheus text exposition format, for node_exporter's textfile collector."""
    out = []

    def gauge(name, help_, samples):
        out.append("# HELP %s %s\n# TYPE %s gauge\n" % (name, help_, name))
        for labels, value in samples:
            label_text = ",".join('%s="%s"' % (k, _prom_label(v)) for k, v in labels)
            out.append("%s%s %s\n" % (name, "{%s}" % label_text if labels else "", value))

    findings = report.scan.findings
    gauge("lib_users_processes", "Processes that use deleted files.", [((), len(findings))])
    by_unit = {}
    for finding in findings:
        place, key = finding.placement, ("", "")
        if place is not None:
            # A process that systemd does not run is counted under its init script's name.
            script = place.init_script.name if place.init_script is not None else ""
            key = (place.unit or script, place.container or "")
        by_unit[key] = by_unit.get(key, 0) + 1
    gauge("lib_users_unit_processes",
          "Processes that use deleted files, by systemd unit (or init script) and "
          "container.",
          [((("unit", u), ("container", c)), n) for (u, c), n in sorted(by_unit.items())])
    by_package = {}
    for finding in findings:
        for package in {use.package for use in finding.files.values()} - {None}:
            key = (package.name, package.version or "")
            by_package[key] = by_package.get(key, 0) + 1
    gauge("lib_users_package_processes",
          "Processes that use deleted files of a package, by its installed version.",
          [((("package", n), ("version", v)), count)
           for (n, v), count in sorted(by_package.items())])
    gauge("lib_users_services_to_restart", "System services that should be restarted.",
          [((), len(report.plan.restart))])
    gauge("lib_users_reboot_required", "1 when the machine needs a reboot.",
          [((), int(report.reboot.needed))])
    gauge("lib_users_scan_complete", "1 when every process could be read.",
          [((), int(report.scan.complete))])
    gauge("lib_users_unreadable_processes", "Processes that could not be read.",
          [((), report.scan.unreadable)])
    gauge("lib_users_unanswered_processes",
          "Processes that did not answer in time (counted as unreadable too).",
          [((), len(report.scan.unanswered))])
    if report.fds:
        gauge("lib_users_deleted_bytes", "Bytes that deleted files held open pin on disk.",
              [((), report.freed)])
    gauge("lib_users_scan_timestamp_seconds", "When the scan ran, in seconds since the epoch.",
          [((), "%.3f" % (time.time() if now is None else now))])
    return "".join(out)


# ---- config ----------------------------------------------------------------------------
# What an admin always ignores, and the units they never want restarted blindly, each
# with its reason, one entry a line:
#     ignore-pattern /opt/app/jit-* -- code our app maps and unlinks
#     ignore-literal /srv/cache/index.db -- replaced nightly by the indexer while mapped
#     held-back postgresql@*.service -- the primary database: restart it in a window
# KEYWORD VALUE -- REASON: the value is a path or glob (spaces allowed), so the reason
# starts at the first " -- ". A hand-written reader, not configparser: importing that
# costs 8.2 ms of start-up (python3 -X importtime, Python 3.11: it imports re), paid on
# every run where a config exists, and an INI file would still need its own rule for
# the value-and-reason pair.

CONFIG = "/etc/lib_users.conf"  # and the snippets in /etc/lib_users.conf.d/*.conf
# keyword: kind of entry ("glob" and "literal" as in FALSE_POSITIVES; "unit" a glob on
# a unit name, as in HELD_BACK)
_CONFIG_KEYWORDS = {"ignore-pattern": "glob", "ignore-literal": "literal",
                    "held-back": "unit"}
_REASON_MARK = " -- "


class Config(_Record):
    """What config files add: `ignores` entries for ignore_table, `held_back` (glob,
    reason) entries for plan_restarts, and `problems`: one message for each line skipped
    or file that could not be read."""

    __slots__ = _fields = ("ignores", "held_back", "problems")
    _defaults = ((), (), ())


def parse_config(data, name):
    """The Config of one file's bytes; `name` is the file its problems name."""
    ignores, held_back, problems = [], [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = os.fsdecode(raw).strip()
        if not line or line.startswith("#"):
            continue
        keyword, rest = (line.split(None, 1) + [""])[:2]
        value, mark, reason = (" " + rest).partition(_REASON_MARK)
        value, reason = value.strip(), reason.strip()
        if keyword not in _CONFIG_KEYWORDS:
            problems.append("%s:%d: unknown keyword %s (ignore-pattern, ignore-literal or "
                            "held-back); line skipped" % (name, number, escape(keyword)))
        elif not (value and mark and reason):
            problems.append("%s:%d: %s needs a value and a reason (%s VALUE -- REASON); "
                            "line skipped" % (name, number, keyword, keyword))
        elif _CONFIG_KEYWORDS[keyword] == "unit":
            held_back.append((value, reason))
        else:
            ignores.append((_CONFIG_KEYWORDS[keyword], value, reason))
    return Config(tuple(ignores), tuple(held_back), tuple(problems))


def read_config(path=CONFIG, required=False):
    """The Config of `path` and of its snippets, `path`.d/*.conf in name order. A file or
    directory that does not exist adds nothing; if `required`, a `path` that cannot be
    read raises OSError."""
    files = [path]
    try:
        files += sorted(os.path.join(path + ".d", entry) for entry in os.listdir(path + ".d")
                        if entry.endswith(".conf"))
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR):
            files.append(path + ".d")  # its reading fails below, and says why
    ignores, held_back, problems = (), (), ()
    for name in files:
        try:
            data = read_file(name)
        except OSError as err:
            if name == path and required:
                raise
            if err.errno != errno.ENOENT or name != path:
                problems += ("%s: %s; not read" % (escape(name), err.strerror or err),)
            continue
        found = parse_config(data, escape(name))
        ignores += found.ignores
        held_back += found.held_back
        problems += found.problems
    return Config(ignores, held_back, problems)


# ---- command line ----------------------------------------------------------------------

# The one table of options: build_parser() makes the argparse parser from it, and the
# docs test checks that --help, README.md and lib_users.1 name every entry.
# (short, long, destination, metavar or None for a flag, help). A metavar ending in "..."
# marks a repeatable option, whose values argparse appends to a list.
OPTIONS = (
    ("-v", "--verbose", "verbose", None, "list every PID, also for groups of more than five"),
    ("-s", "--showlibs", "showlibs", None, "also list the deleted files each group uses"),
    ("-m", "--machine-readable", "machine", None, "print PIDS;FILES;ARGV lines"),
    (None, "--json", "json", None, "print one JSON document"),
    (None, "--fds", "fds", None,
     "report deleted files held open through descriptors, and the space they pin"),
    ("-p", "--pid", "pids", "PID[,PID...]...", "look only at these processes; repeatable"),
    (None, "--scripts", "scripts", None,
     "also report interpreters whose script was deleted or changed since they started"),
    ("-S", "--services", "services", None,
     "group by systemd unit, init script and container, and say what to restart"),
    (None, "--packages", "packages", None,
     "-s: also name the package that owns each deleted file (-S, --json and "
     "--prometheus always do)"),
    (None, "--nagios", "nagios", None, "print a monitoring-plugins status line; exit 0-3"),
    ("-w", "--warning", "warning", "N", "--nagios: WARNING above N processes (default 0)"),
    ("-c", "--critical", "critical", "N", "--nagios: CRITICAL above N processes"),
    (None, "--prometheus", "prometheus", None,
     "print metrics in the Prometheus text format"),
    ("-i", "--ignore-pattern", "patterns", "GLOB...",
     "also ignore deleted files whose whole name matches GLOB (* and ? match / too); "
     "repeatable"),
    ("-I", "--ignore-literal", "literals", "PATH...",
     "also ignore the deleted file PATH; repeatable"),
    (None, "--timeout", "timeout", "SECONDS",
     "skip a process that does not answer within SECONDS (default 2; 0: wait)"),
    (None, "--proc", "proc", "DIR", "read this procfs tree instead of /proc"),
    (None, "--root", "root", "DIR",
     "read the machine's own files (the package database, init scripts, pid files) "
     "under DIR instead of / "
     "(with --proc: none unless given)"),
    (None, "--config", "config", "FILE",
     "read FILE and FILE.d/*.conf instead of /etc/lib_users.conf and its snippets"),
    (None, "--no-config", "no_config", None, "read no config file"),
    (None, "--version", "version", None, "print the version and exit"),
    ("-h", "--help", "help", None, "show this help and exit"),
)

# Output formats: at most one of these may be given (an argparse exclusive group).
_FORMATS = ("machine", "json", "nagios", "prometheus")

_EXIT_STATUS = ("Exit status: 0 after a scan (whether or not anything was found), "
                "1 on a fatal error, 2 on a usage error, 130 when interrupted; "
                "with --nagios 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")


_HELP_WIDTH = 80  # columns of --help: one screen wide


class UsageError(Exception):
    """A command line that cannot be run."""


class Options:
    """Parsed command-line options, one attribute per entry of OPTIONS; parse_args()
    turns warning, critical, pids and timeout into numbers."""

    def __init__(self, **values):
        for _short, _long, dest, metavar, _help in OPTIONS:
            repeat = metavar is not None and metavar.endswith("...")
            setattr(self, dest, [] if repeat else (None if metavar else False))
        self.proc = PROC
        self.__dict__.update(values)


def build_parser():
    """The argparse parser of OPTIONS. Its errors raise UsageError; -h and --version are
    flags that command() answers, so that their output is written like any other."""
    import argparse  # here, not at the top: 6 ms of start-up (re, gettext; see parse_args)

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(escape(message))

    def formatter(prog):
        # A given width: argparse's default asks shutil for the terminal's, and shutil
        # imports bz2, lzma and fnmatch (some 3 ms), for every parse, not only --help.
        return argparse.HelpFormatter(prog, max_help_position=32, width=_HELP_WIDTH)

    parser = Parser(prog="lib_users", usage="%(prog)s [options]", add_help=False,
                    description=__doc__.split("\n\n")[0].replace("\n", " "),
                    epilog=_EXIT_STATUS, formatter_class=formatter)
    formats = parser.add_mutually_exclusive_group()
    for short, long_, dest, metavar, help_ in OPTIONS:
        names = [n for n in (short, long_) if n]
        group = formats if dest in _FORMATS else parser
        if metavar is None:
            group.add_argument(*names, dest=dest, action="store_true", help=help_)
        elif metavar.endswith("..."):
            group.add_argument(*names, dest=dest, action="append", help=help_,
                               metavar=metavar[:-3])
        else:
            group.add_argument(*names, dest=dest, help=help_, metavar=metavar)
    return parser


def help_text():
    return build_parser().format_help()


def parse_args(args):
    """Parse the command line into Options; UsageError for anything it cannot run."""
    options = Options()
    # Speed: with no arguments (the plain run that hooks and timers make) argparse is not
    # imported: it costs some 6 ms of start-up (python3 -X importtime, Python 3.11), 5% of
    # the floor bench.py measures at 1000 processes.
    if args:
        options, extra = build_parser().parse_known_args(args, options)
        kind = "unknown option"
        if extra[:1] == ["--"]:  # what follows "--" is an operand, and there are none
            extra, kind = extra[1:], "unexpected argument"
        if extra:
            if not extra[0].startswith("-") or extra[0] == "-":
                kind = "unexpected argument"
            raise UsageError("%s: %s" % (kind, escape(extra[0])))
    options.warning = _threshold(options.warning, "--warning")
    options.critical = _threshold(options.critical, "--critical")
    options.pids = parse_pids(options.pids) if options.pids else None
    options.timeout = _seconds(options.timeout)
    if options.config is not None and options.no_config:
        raise UsageError("--config and --no-config exclude each other")
    return options


def plural(count, noun):
    return "%d %s%s" % (count, noun, "" if count == 1 else "es" if noun.endswith("s") else "s")


def warn(message):
    """One line on stderr, prefixed, never raising (stderr may be closed too)."""
    if sys.stderr is None:  # started with stderr closed
        return
    try:
        sys.stderr.write("lib_users: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def write_output(text):
    """Write results to stdout. A closed pipe ends quietly; any other failure is an
    error the caller reports."""
    if sys.stdout is None:  # started with stdout closed (>&-)
        raise OSError(0, "standard output is closed")
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
            pid = _whole_number(item.strip())
            if pid is None:
                raise UsageError("not a PID: %s" % escape(item))
            pids.add(pid)
    return sorted(pids)


def _threshold(value, name):
    if value is None:
        return None
    number = _whole_number(value)
    if number is None:
        raise UsageError("%s takes a whole number, not %s" % (name, escape(value)))
    return number


def _seconds(value):
    """The --timeout value in seconds (None: no limit); UsageError if it is not a
    number of seconds."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:  # also NaN
        raise UsageError("--timeout takes a number of seconds, not %s" % escape(value))
    return seconds or None


def _whole_number(text):
    """The int of a string of ASCII digits, else None: str.isdigit() also accepts "²",
    which int() refuses, and int() refuses more than 4300 digits."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _comm_of(proc, pid):
    """The command name of a process, for a message ("?" where it cannot be read). The
    kernel answers comm without the locks a stalled process holds."""
    try:
        return escape(os.fsdecode(read_file("%s/%d/comm" % (proc, pid)).rstrip(b"\n")))
    except OSError:
        return "?"


def fatal(options, message):
    """Report a fatal error; --nagios reports it as UNKNOWN (exit 3), as monitors expect."""
    if options.nagios:
        write_output("LIB_USERS UNKNOWN - %s\n" % message)
        return 3
    warn(message)
    return 1


def run(options):
    """Scan and print as `options` say; returns the exit status."""
    pids, timeout = options.pids, options.timeout
    config = _config(options)
    services = options.services or options.json or options.nagios or options.prometheus
    how = ScanOptions(fds=options.fds, details=options.json, services=services,
                      scripts=options.scripts and not options.fds,
                      table=ignore_table(options.patterns, options.literals, config.ignores))
    try:
        result = scan(options.proc, how, pids, timeout)
    except OSError as err:
        return fatal(options, "cannot read %s: %s" % (
            escape(options.proc), escape(err.strerror or str(err))))
    if result.scanned == 0 and result.unreadable == 0 and pids is None:
        return fatal(options, "no processes found in %s; is procfs mounted there?"
                     % escape(options.proc))
    live = os.path.realpath(options.proc) == "/proc"
    # The machine's own files belong to its live /proc: a saved tree's are read only
    # where --root names them. The package database is read only where a format shows
    # packages, and something was found.
    root = options.root or ("/" if live else None)
    shows_packages = (options.services or options.json or options.prometheus
                      or (options.showlibs and options.packages))
    packages = (PackageDb(root) if root is not None and shows_packages and result.findings
                else None)
    # Init scripts and pid files too are read only where a format shows services.
    scripts = (InitScripts(root, options.proc, packages)
               if root is not None and services and result.findings else None)
    report = build_report(result, options.fds, kernel_reboot_reasons() if live else (),
                          config.held_back, packages, scripts)
    status = 0
    if options.json:
        text = render_json(report)
    elif options.machine:
        text = render_machine(report)
    elif options.nagios:
        text, status = render_nagios(report, options.warning or 0, options.critical,
                                     options.verbose)
    elif options.prometheus:
        text = render_prometheus(report)
    elif options.services:
        text = render_services(report, options.verbose, options.showlibs)
    else:
        text = render_text(report, options.verbose, options.showlibs)
    if not (options.json or options.nagios or options.prometheus):
        for reason in report.reboot.reasons:
            warn("reboot needed: " + reason)
    if not options.nagios:
        for pid in result.unanswered:
            warn("PID %d (%s) did not answer within %g s; skipped" % (
                pid, _comm_of(options.proc, pid), timeout))
        if result.not_reached:
            warn("the scan did not end within %g s; %s not read" % (
                SCAN_BUDGETS * timeout, plural(len(result.not_reached), "process")))
        unreadable = result.unreadable - len(result.unanswered) - len(result.not_reached)
        if unreadable:
            advice = "; run as root to see them all" if os.geteuid() != 0 else ""
            warn("%s could not be read%s" % (plural(unreadable, "process"), advice))
    write_output(text)
    return status


def _config(options):
    """The Config that `options` name (the machine's own, also with --proc), each of its
    problems said on stderr; UsageError if a --config file cannot be read."""
    if options.no_config:
        return Config()
    try:
        config = read_config(options.config or CONFIG, required=options.config is not None)
    except OSError as err:
        raise UsageError("--config %s: %s" % (escape(options.config),
                                              err.strerror or err)) from None
    for problem in config.problems:
        warn(problem)
    return config


def main(argv=None):
    """The lib_users command: command(argv) in a child process (see _in_a_child);
    this process then exits with its status."""
    return _in_a_child(command, argv)


def _in_a_child(call, *args):
    """call(*args) in a forked child; this process exits with its status as soon as the
    child has written its output and handed the status over.

    A process ends only when all its threads have, and a worker left waiting on a FUSE
    request that its server read but never answers cannot even be killed. So the
    process that a shell or apt waits for is not the one that scans: the child closes
    its output, says its status and ends, or waits alone until the server answers. (A
    fork costs some 0.3 ms, less than one process's maps.)
    """
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
    except OSError:  # no process to be had (a limit): scan here, as the API does
        os.close(read_end)
        os.close(write_end)
        return call(*args)
    if child == 0:
        status = 1
        try:
            os.close(read_end)
            status = call(*args)
        except BaseException:  # a bug: shown as Python shows it
            sys.excepthook(*sys.exc_info())
        _hand_over(status, write_end)
    os.close(write_end)
    while True:
        try:
            said = os.read(read_end, 1)
            break
        except KeyboardInterrupt:
            continue  # Ctrl-C reaches the child too, which says 130
    if said:
        status = said[0]
    else:  # it died without a word: killed
        _pid, status = os.waitpid(child, 0)
        status = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(
            status)
    # Speed: this process wrote nothing and holds nothing to flush, so it ends here, as
    # the child does; the interpreter's teardown would cost 2 ms (4% of a scan of 1000
    # processes), more than the fork.
    os._exit(status)


def _hand_over(status, pipe):
    """End the child of _in_a_child: output closed, the status written to `pipe`."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    for fd in (1, 2):  # the reader of the output sees its end now, not at our exit
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.write(pipe, bytes((status & 0xFF,)))
    finally:
        os._exit(status)


def command(argv=None):
    """The lib_users command in this process (what main() runs in its child). Returns
    the exit status."""
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        # Whatever the locale, an unencodable character is escaped, never an error.
        sys.stdout.reconfigure(errors="backslashreplace")
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        options = parse_args(args)
        if options.help:
            write_output(help_text())
            return 0
        if options.version:
            write_output("lib_users %s\n" % __version__)
            return 0
        return run(options)
    except UsageError as err:
        if any(a.startswith("--n") and "--nagios".startswith(a.partition("=")[0])
               for a in args):  # a monitor reads stdout and the exit status
            try:
                write_output("LIB_USERS UNKNOWN - usage error: %s\n" % err)
            except OSError as out_err:
                warn("cannot write output: %s" % (out_err.strerror or out_err))
                return 1
            return 3
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
