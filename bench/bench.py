#!/usr/bin/env python3
"""Benchmark lib_users against "the floor".

The floor is the least any tool of this kind must pay: the interpreter starting plus
reading every /proc/PID/maps once.  This script builds a realistic population of
processes, then times whole runs of lib_users (text, --json, -s, -S and --scripts) and of
the floor, alternating them so that machine drift cancels, and reports median wall times,
the ratio of each mode to the floor and lib_users's peak memory.  Where installed,
`lsof -n` (filtered for DEL), `needrestart -b` and `checkrestart` are timed too.

Population (default 1000 processes, -n up to 5000):
  * 70% sleepers: `cat` processes blocked reading a pipe that only this script holds
    open.  They are as cheap as `sleep`, and they exit by themselves (EOF) should this
    script die without cleaning up.
  * 30% interpreter daemons: children forked from a "zygote" Python process that has
    imported C-extension modules until its /proc/self/maps has about 150 lines.  Forking
    shares the zygote's pages, so a daemon costs well under 1 MiB.
  * A quarter of the daemons come from a second zygote that loaded (ctypes) a private
    copy of a system shared library and then deleted the copy, so their maps show
    `... (deleted)` like a process that outlived a library upgrade.  System libraries
    are only read, never touched.

Run from the repository root:
    python3 bench/bench.py                      # 1000 processes, 21 runs
    python3 bench/bench.py -n 20 -r 3           # tiny and quick (same as --quick)
    python3 bench/bench.py -n 5000 --json-out results.json
    python3 bench/bench.py --scale 100,1000,5000
    python3 bench/bench.py --python /usr/bin/python3

Every process started here is ended by PID (the zygotes end their own children, whose
PIDs cannot be reused before their parent reaps them), also on SIGINT/SIGTERM/SIGHUP,
and the temporary directory is removed.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LIB_USERS = os.path.join(os.path.dirname(HERE), "lib_users.py")

MAX_PROCESSES = 5000
SLEEPER_SHARE = 0.7  # the rest are interpreter daemons
DELETED_SHARE = 0.25  # of the daemons
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PLAIN_ROLE = "role=plain"  # command-line labels of the two kinds of daemons
DELETED_ROLE = "role=deleted-lib"

# The floor, verbatim as the issue defines it.  It is run with `python -c` by the same
# interpreter, with the same flags, as lib_users.
FLOOR_CODE = """\
import os
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open("/proc/%s/maps" % name, "rb") as f:
                f.read()
        except OSError:
            pass
"""

# The zygote that forks interpreter daemons.  It is written to the temp directory and
# run as a file (not with -c) so the daemons get a short, realistic command line:
# lib_users prints command lines, and a page of source code per process would distort
# the text-mode timing.
#
# Protocol: argv = role target-mappings [library-to-copy copy-path]
#   (role is PLAIN_ROLE or DELETED_ROLE: it only labels the command line, so that the
#   output of lib_users can be checked even where it counts processes instead of
#   listing their PIDs)
#   stdout "ready MAPS"        once set up
#   stdin  "spawn N"        -> stdout "pids P1 P2 ..." after all N children are ready
#   stdin  "quit" or EOF    -> kill and reap every child, exit
ZYGOTE_CODE = r'''
import gc, importlib, os, signal, sys

# The bench blocks signals while it starts us (so it cannot lose track of our PID);
# the mask is inherited, so undo it.  SIGINT is ignored: we are in our own session
# and the bench decides when we stop.
signal.pthread_sigmask(signal.SIG_SETMASK, [])
signal.signal(signal.SIGINT, signal.SIG_IGN)

def count_maps():
    with open("/proc/self/maps", "rb") as f:
        return f.read().count(b"\n")

target = int(sys.argv[2])
import ctypes
libc = ctypes.CDLL(None, use_errno=True)

if len(sys.argv) > 4:
    # Map a private copy of a real library, then unlink the copy: our maps (and our
    # children's) now show it as "(deleted)", exactly like after a package upgrade.
    import shutil
    src, copy = sys.argv[3], sys.argv[4]
    shutil.copyfile(src, copy)
    ctypes.CDLL(copy)
    os.unlink(copy)

# C extensions (each maps its .so and often pulls in a system library) in the order a
# typical daemon might need them; stop as soon as the target is reached.
MODULES = """_json _decimal _ssl _hashlib _sqlite3 _lzma _bz2 zlib _uuid mmap array
    select _socket _struct math _datetime _pickle pyexpat _csv _asyncio _queue
    _multiprocessing _posixshmem _random _bisect _heapq binascii unicodedata _blake2
    _sha512 _sha256 _md5 _sha1 _sha3 _statistics _zoneinfo termios resource fcntl grp
    _lsprof _multibytecodec _codecs_jp _codecs_cn _codecs_kr _codecs_tw _codecs_hk
    _codecs_iso2022 _crypt _curses readline _elementtree _contextvars""".split()
for name in MODULES:
    if count_maps() >= target:
        break
    try:
        importlib.import_module(name)
    except Exception:
        pass

# Freeze the heap so the garbage collector never writes to inherited objects: children
# then share almost all pages with us.
gc.collect()
gc.freeze()
zygote = os.getpid()
children = []
PR_SET_PDEATHSIG = 1

def child(ready_w):
    """Body of one daemon: become ready, then block forever."""
    try:
        # Die with the zygote, whatever happens to it (SIGKILL included).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != zygote:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.write(ready_w, b"x")
        os.close(ready_w)
        while True:
            signal.pause()
    finally:
        os._exit(0)

def spawn(n):
    ready_r, ready_w = os.pipe()
    new = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            child(ready_w)
        new.append(pid)
    children.extend(new)
    os.close(ready_w)
    # One byte per child once it is set up; EOF early means some child failed.
    got = 0
    while got < n:
        chunk = os.read(ready_r, n - got)
        if not chunk:
            break
        got += len(chunk)
    os.close(ready_r)
    return new

print("ready", count_maps(), flush=True)
try:
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["spawn"]:
            pids = spawn(int(words[1]))
            print("pids", *pids, flush=True)
        elif words[:1] == ["quit"]:
            break
except BrokenPipeError:
    # The bench died: no one to report to.  Silence the interpreter's final flush too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
finally:
    # We are the parent: until we reap them, these PIDs cannot be reused, so killing
    # by PID is exact.
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
'''


class Interrupted(Exception):
    """Raised from the SIGTERM/SIGHUP handler so that cleanup runs."""


def on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


class SignalsBlocked:
    """Context manager: block SIGINT/SIGTERM/SIGHUP for a short critical section.

    Used where a process is started and its PID recorded, and during cleanup, so that an
    interruption can neither leak a process nor abort the cleanup half-way.
    """

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        return False


# ---- helpers --------------------------------------------------------------------------


def count_proc_pids():
    """Number of processes /proc lists right now."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def count_maps(pid):
    """Lines in /proc/PID/maps, or None if the process cannot be read."""
    try:
        with open("/proc/%d/maps" % pid, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def proc_state(pid):
    """One-letter state from /proc/PID/stat (after the last ')', comm may hold any)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:][:1].decode()


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def find_library_to_copy():
    """Path of a real system shared library whose copy the deleted-library daemons map.

    The search starts from the directory our own libc is mapped from, which is correct
    on any multiarch or lib64 layout, then falls back to common directories.
    """
    dirs = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and "/libc.so" in fields[5]:
                dirs.append(os.path.dirname(fields[5].strip()))
                break
    dirs += ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
             "/lib64", "/usr/lib", "/lib"]
    for soname in ("libz.so.1", "libbz2.so.1.0", "libm.so.6"):
        for d in dirs:
            path = os.path.join(d, soname)
            if os.path.isfile(path):
                return os.path.realpath(path)
    raise SystemExit("bench: no system libz/libbz2/libm found to copy")


def split_counts(n):
    """(sleepers, daemons, deleted) for a population of n.

    Every count is non-decreasing in n, so a population can grow from one size to a
    larger one by adding processes only.
    """
    daemons = int(n * (1 - SLEEPER_SHARE) + 0.5)
    if n > 0 and daemons == 0:
        daemons = 1
    deleted = int(daemons * DELETED_SHARE)
    if daemons and not deleted:
        deleted = 1
    return n - daemons, daemons, deleted


# ---- the population -------------------------------------------------------------------


class Zygote:
    """A Python process that forks daemons sharing its ~150 mappings."""

    def __init__(self, registry, key, python, script, target_maps, lib=None, copy=None):
        """Start the zygote and record it in registry[key] before any signal can strike,
        so that cleanup always knows about it."""
        self.children = []
        self.pending = 0
        self.maps = None
        argv = [python, script, DELETED_ROLE if lib else PLAIN_ROLE, str(target_maps)]
        if lib:
            argv += [lib, copy]
        with SignalsBlocked():
            # Own session: a Ctrl-C at the terminal must not reach the population, or
            # processes could die and be reaped behind our back.
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         start_new_session=True, universal_newlines=True)
            registry[key] = self

    def wait_ready(self):
        """Wait for the zygote's setup (imports, deleted library) to finish."""
        self.maps = int(self._read_reply("ready")[1])

    def _read_reply(self, keyword):
        line = self.proc.stdout.readline()
        words = line.split()
        if words[:1] != [keyword]:
            raise RuntimeError("zygote %d: expected %r, got %r (exit status %r)"
                               % (self.proc.pid, keyword, line, self.proc.poll()))
        return words

    def request(self, n):
        """Ask for n more daemons; collect() returns them.  Lets us work meanwhile."""
        self.pending = n
        if n:
            self.proc.stdin.write("spawn %d\n" % n)
            self.proc.stdin.flush()

    def collect(self):
        if not self.pending:
            return []
        pids = [int(w) for w in self._read_reply("pids")[1:]]
        self.children.extend(pids)
        self.pending = 0
        return pids

    def stop(self, timeout=30):
        """Let the zygote kill and reap its children, then reap it (by its PID)."""
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Still our unreaped child, so its PID is exact.  Its children have
            # PR_SET_PDEATHSIG and die with it.
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Population:
    """Sleepers and daemons, grown on demand, all ended by close()."""

    def __init__(self, python, tmpdir, target_maps):
        self.python = python
        self.tmpdir = tmpdir
        self.target_maps = target_maps
        self.cat = shutil.which("cat") or "/bin/cat"
        self.sleepers = []  # PIDs of our own children, never reaped before close()
        self.zygotes = {}
        # The sleepers block reading this pipe.  Only we hold the write end (pipes are
        # close-on-exec, and the zygotes are started with close_fds), so if we die they
        # read EOF and exit on their own.
        self.lifeline_r, self.lifeline_w = os.pipe()
        self.lib = find_library_to_copy()
        self.deleted_path = None

    def start_zygotes(self):
        script = os.path.join(self.tmpdir, "bench_daemon.py")
        with open(script, "w") as f:
            f.write(ZYGOTE_CODE)
        libdir = os.path.join(self.tmpdir, "lib")
        os.mkdir(libdir)
        self.deleted_path = os.path.join(libdir, os.path.basename(self.lib))
        # Both start their (slow) setup at once; we wait for them afterwards.
        Zygote(self.zygotes, "plain", self.python, script, self.target_maps)
        Zygote(self.zygotes, "deleted", self.python, script, self.target_maps,
               self.lib, self.deleted_path)
        for z in self.zygotes.values():
            z.wait_ready()

    @property
    def daemons(self):
        return self.zygotes["plain"].children + self.zygotes["deleted"].children if \
            self.zygotes else []

    def counts(self):
        deleted = len(self.zygotes["deleted"].children) if self.zygotes else 0
        return len(self.sleepers), len(self.daemons), deleted

    def grow(self, n):
        """Add processes until the population is n: (sleepers, daemons, deleted) as
        split_counts(n).  Daemons are forked by the zygotes while we spawn sleepers,
        so the two proceed in parallel on two cores."""
        if not self.zygotes:
            self.start_zygotes()
        if len(self.zygotes) < 2 or any(z.maps is None for z in self.zygotes.values()):
            raise RuntimeError("daemon zygotes failed to start")
        want_s, want_d, want_del = split_counts(n)
        have_s, have_d, have_del = self.counts()
        self.zygotes["deleted"].request(max(0, want_del - have_del))
        self.zygotes["plain"].request(max(0, (want_d - want_del) - (have_d - have_del)))
        new_sleepers = []
        null = os.devnull
        for _ in range(max(0, want_s - have_s)):
            with SignalsBlocked():
                pid = os.posix_spawn(
                    self.cat, [self.cat], os.environ,
                    file_actions=[(os.POSIX_SPAWN_DUP2, self.lifeline_r, 0),
                                  (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0)],
                    setsid=True, setsigmask=())
                self.sleepers.append(pid)
            new_sleepers.append(pid)
        for z in self.zygotes.values():
            z.collect()
        self.wait_sleepers_ready(new_sleepers)

    def wait_sleepers_ready(self, pids, timeout=120):
        """A `cat` is set up once it sleeps in read(): the dynamic loader is done and its
        maps are final.  (The daemons report readiness themselves, through a pipe.)"""
        pending = set(pids)
        deadline = time.monotonic() + timeout
        while pending:
            states = {p: proc_state(p) for p in pending}
            if any(state in (None, "Z", "X") for state in states.values()):
                raise RuntimeError("a sleeper (%s) exited during setup" % self.cat)
            pending = {p for p, state in states.items() if state != "S"}
            if not pending:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("%d sleepers not ready after %ds" % (len(pending), timeout))
            time.sleep(0.01)

    def mapping_stats(self, sample=300):
        """Average maps lines of sleepers and daemons, measured (on a sample)."""
        def avg(pids):
            step = max(1, len(pids) // sample)
            counts = [c for c in (count_maps(p) for p in pids[::step]) if c is not None]
            return sum(counts) / len(counts) if counts else 0.0
        return avg(self.sleepers), avg(self.daemons)

    def close(self):
        """End every process we started, by PID, and reap them."""
        for z in self.zygotes.values():
            z.stop()
        # The sleepers are our unreaped children: their PIDs are still theirs.
        for pid in self.sleepers:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        for fd in (self.lifeline_w, self.lifeline_r):
            try:
                os.close(fd)
            except OSError:
                pass
        for pid in self.sleepers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.sleepers = []


# ---- timing ---------------------------------------------------------------------------


PR_SET_CHILD_SUBREAPER = 36


class Runner:
    """Runs one command at a time and measures it.

    It remembers the PIDs of the run in progress (our unreaped children, so the PIDs are
    exact) so that an interruption can end them.

    Wall time and peak memory are measured in separate runs.  The rusage that wait4()
    returns is useless for memory when the command is started directly: exec() records
    the high-water RSS of the *old* address space in the process's maxrss, and after
    posix_spawn (vfork) or fork that is this script's own RSS, which is larger than a
    bare interpreter's.  So for memory the command is started by a small `sh` that
    backgrounds it and exits: the command is then forked from sh's tiny address space
    and, as we are a child subreaper, it becomes our child and we collect its rusage.
    """

    def __init__(self):
        self.current = []
        self.group = None  # the process group of the run in progress
        self.sh = shutil.which("sh") or "/bin/sh"
        self.can_measure_memory = False
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            self.can_measure_memory = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass

    @staticmethod
    def _actions(stdout, stderr):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, stdout, flags, 0o600),
                (os.POSIX_SPAWN_OPEN, 2, stderr, flags, 0o600)]

    def _reap(self, pid):
        """Wait for pid to exit: (status, rusage).

        The wait itself does not reap (so it can be interrupted); the reaping is done with
        signals blocked, together with forgetting the PID: we never hold a PID that was
        already reaped, which stop() would kill although the kernel may reuse it.
        """
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with SignalsBlocked():
            _, status, usage = os.wait4(pid, 0)
            self.current.remove(pid)
        if os.WIFEXITED(status):
            status = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            status = -os.WTERMSIG(status)
        return status, usage

    def run(self, argv, stdout=os.devnull, stderr=os.devnull):
        """Run argv to completion: (wall seconds, exit status).

        The time is the command's own, until it exits, as a shell waits for it. The
        lib_users command scans in a child and exits without waiting for that child to
        end; the child, then ours (we are a subreaper), is waited for and reaped before
        the next run, untimed: it must neither run on beside the next command nor stay
        behind as a zombie that every later scan would list. Each command runs in a
        process group of its own, which tells its descendants from our population."""
        with SignalsBlocked():
            start = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, os.environ, setpgroup=0,
                                 file_actions=self._actions(stdout, stderr), setsigmask=())
            self.current.append(pid)
            self.group = pid
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        elapsed = time.perf_counter() - start
        status, _ = self._reap(pid)
        self._reap_group(pid)
        return elapsed, status

    def _reap_group(self, pgid):
        """Wait for and reap every child of ours left in process group `pgid`."""
        with SignalsBlocked():
            while True:
                try:
                    os.waitpid(-pgid, 0)
                except ChildProcessError:
                    break
            self.group = None

    def peak_rss(self, argv):
        """Run argv to completion: its max RSS in KiB (None if this cannot be measured)."""
        if not self.can_measure_memory:
            return None
        r, w = os.pipe()
        try:
            with SignalsBlocked():
                # sh reports the command's PID on fd 3 and exits.  Signals stay blocked
                # until we know both PIDs (sh answers within milliseconds).
                actions = self._actions(os.devnull, os.devnull) + [(os.POSIX_SPAWN_DUP2, w, 3)]
                sh = os.posix_spawn(self.sh, [self.sh, "-c", '"$@" 3>&- & echo $! >&3', "sh"] + argv,
                                    os.environ, file_actions=actions, setsigmask=())
                self.current.append(sh)
                os.close(w)
                w = None
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = os.read(r, 64)
                    if not chunk:
                        break
                    reply += chunk
                if reply.strip().isdigit():
                    self.current.append(int(reply))
        finally:
            os.close(r)
            if w is not None:
                os.close(w)
        self._reap(sh)
        if len(self.current) != 1:
            return None
        # sh has exited: the command is now our child (we are a subreaper).
        _, usage = self._reap(self.current[0])
        return usage.ru_maxrss

    def stop(self):
        """End the run in progress, if any (command first, then its sh)."""
        if self.group is not None:
            try:
                os.killpg(self.group, signal.SIGKILL)
            except OSError:
                pass
            self._reap_group(self.group)
        for pid in reversed(self.current):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in reversed(self.current):
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.current = []


class Mode:
    """One row of the table: a name, a command, and its measurements."""

    def __init__(self, name, argv, kind, memory_argv=None):
        self.name, self.argv, self.kind = name, argv, kind  # kind: base, lib_users, tool
        # What the memory runs measure, where not argv itself (see build_modes).
        self.memory_argv = memory_argv or argv
        self.reset()

    def reset(self):
        self.times, self.exits, self.rss = [], [], []
        self.check = None  # what the warm-up run printed, see measure()

    def median_ms(self):
        return statistics.median(self.times) * 1000 if self.times else None

    def ratio(self, other):
        """Median over rounds of this mode's time divided by `other`'s in the same round.

        Pairing runs of the same round is what makes the alternation cancel drift: a
        slow phase of the machine slows both members of a pair.  Rounds are aligned by
        index (tools run in the first rounds only).
        """
        pairs = [a / b for a, b in zip(self.times, other.times) if b > 0]
        return statistics.median(pairs) if pairs else None

    def peak_kib(self):
        rss = [r for r in self.rss if r is not None]
        return max(rss) if rss else None


# What the installed `lib_users` command runs (pip's console-script wrapper, which also
# imports `re` for its own purposes), with the module's directory put first on the path.
INSTALLED_CODE = "import sys; sys.path.insert(0, %r); from lib_users import main; sys.exit(main())"
# main() scans in a child process and does not wait for it to end (so that a child
# left waiting on a FUSE server that never answers cannot hold the command up), so the
# memory runs measure the same command in one process: command().
IN_PROCESS_CODE = INSTALLED_CODE.replace("main", "command")


def compile_bytecode(py, path):
    """Compile lib_users.py to __pycache__ with the benchmarked interpreter, as pip does
    at install time (PYTHONDONTWRITEBYTECODE would otherwise keep it from being cached)."""
    subprocess.run(py + ["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                         "doraise=True)", path], check=True)


def build_modes(args, python):
    """The commands to compare.  Interpreter and flags are identical for all Python runs."""
    py = [python] + shlex.split(args.python_flags)
    # lib_users as installed: the `lib_users` command imports the module from its
    # compiled bytecode (pip compiles it at install time) and calls main().  Running
    # the source file (`python3 lib_users.py`) compiles all of it on every run; that row
    # shows what this costs.
    compile_bytecode(py, args.lib_users)
    where = os.path.dirname(os.path.abspath(args.lib_users))
    lu, mem = (py + ["-c", code % where] for code in (INSTALLED_CODE, IN_PROCESS_CODE))
    modes = [Mode("bare python", py + ["-c", "pass"], "base"),
             Mode("floor", py + ["-c", FLOOR_CODE], "base"),
             Mode("lib_users", lu, "lib_users", mem),
             Mode("lib_users --json", lu + ["--json"], "lib_users", mem + ["--json"]),
             Mode("lib_users -s", lu + ["-s"], "lib_users", mem + ["-s"]),
             Mode("lib_users -S", lu + ["-S"], "lib_users", mem + ["-S"]),
             # Every daemon here runs a script written after boot, so --scripts reads
             # each one's command line, stats its script and reads its start time.
             Mode("lib_users --scripts", lu + ["--scripts"], "lib_users",
                  mem + ["--scripts"]),
             # From a checkout: -m runs the cached bytecode (the bench runs in the
             # module's directory), the source file is compiled on every run.
             Mode("python3 -m lib_users", py + ["-m", "lib_users"], "lib_users",
                  mem),
             Mode("python3 lib_users.py", py + [args.lib_users], "lib_users")]
    skipped = []
    if not args.no_tools:
        sh = shutil.which("sh") or "/bin/sh"
        lsof = shutil.which("lsof")
        if lsof:
            # lsof shows mappings of deleted files with FD "DEL".
            modes.append(Mode("lsof -n | grep DEL", [sh, "-c", "%s -n 2>/dev/null | grep DEL"
                                                      % shlex.quote(lsof)], "tool"))
        else:
            skipped.append("lsof")
        for name, extra in (("needrestart", ["-b"]), ("checkrestart", [])):
            path = shutil.which(name)
            if path:
                modes.append(Mode(" ".join([name] + extra), [path] + extra, "tool"))
            else:
                skipped.append(name)
    return modes, skipped


def numbers_in(text):
    return {int(w) for w in re.findall(r"\b\d+\b", text)}


def check_output(text, expected, others):
    """Does an output report the processes mapping the deleted library, and only them?

    Outputs that list PIDs are checked PID by PID.  An output may instead name a group
    of processes with the same command line and count them ("76 processes ..."): then
    the deleted-library daemons' command line must appear (with the right count, if a
    line shows one), and the plain daemons' must not.
    """
    numbers = numbers_in(text)
    listed = len(numbers & expected)
    named = [line for line in text.splitlines() if DELETED_ROLE in line]
    counted = any(len(expected) in numbers_in(line.replace(DELETED_ROLE, ""))
                  for line in named)
    if listed == len(expected):
        verdict, ok = "%d/%d PIDs listed" % (listed, len(expected)), True
    elif named and not listed:
        verdict, ok = ("named by command line, %s" % (
            "count %d shown" % len(expected) if counted else "PIDs not listed")), True
    else:
        verdict, ok = "%d/%d PIDs listed" % (listed, len(expected)), False
    # Other numbers (counts, versions, inodes) may equal one of our PIDs, as PIDs wrap
    # around: look for our other PIDs only in outputs that list PIDs.
    false = len(numbers & others) if listed else 0
    false += 1 if PLAIN_ROLE in text else 0
    return {"verdict": verdict, "ok": ok, "listed": listed, "expected": len(expected),
            "named": bool(named), "false_positives": false}


def measure(modes, runs, tool_runs, memory_runs, runner, tmpdir, expected, others):
    """Warm up each mode once (checking its output), time `runs` rounds, then measure
    peak memory in `memory_runs` rounds.

    Each round runs every mode once, so floor and lib_users runs alternate and slow
    drift of the machine affects both alike. The order turns by one mode each round
    (bare, floor, lib_users, ...; then floor, lib_users, ..., bare): no mode always
    runs first, or always right after the same other one.
    External tools, which can be much slower, run only in the first `tool_runs` rounds.

    `expected` are the PIDs that map the deleted library, `others` the rest of ours: the
    warm-up output of lib_users and the tools is checked for both.
    """
    out, err = os.path.join(tmpdir, "out"), os.path.join(tmpdir, "err")
    for m in modes:
        m.reset()
        _, status = runner.run(m.argv, out, err)
        with open(out, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        with open(err, "rb") as f:
            tail = f.read()[-500:].decode("utf-8", "replace").strip()
        m.check = check_output(text, expected, others)
        m.check.update({"exit": status, "lines": text.count("\n"),
                        "stderr": tail.splitlines()[-1] if tail else ""})
    for i in range(runs):
        turn = i % len(modes)
        for m in modes[turn:] + modes[:turn]:
            if m.kind == "tool" and i >= tool_runs:
                continue
            elapsed, status = runner.run(m.argv)
            m.times.append(elapsed)
            m.exits.append(status)
    for i in range(memory_runs):
        for m in modes:
            if m.kind == "tool" and i >= tool_runs:
                continue
            m.rss.append(runner.peak_rss(m.memory_argv))


# ---- reporting ------------------------------------------------------------------------


def mib(kib):
    return kib / 1024.0


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(modes):
    by_name = {m.name: m for m in modes}
    floor, lu = by_name["floor"], by_name["lib_users"]
    print("%-22s %10s %5s %9s %10s %9s" % ("mode", "median ms", "runs", "ratio to",
                                           "ratio to", "peak MiB"))
    print("%-22s %10s %5s %9s %10s %9s" % ("", "", "", "floor", "lib_users", ""))
    for m in modes:
        med = m.median_ms()
        peak = m.peak_kib()
        print("%-22s %10s %5d %9s %10s %9s" % (
            m.name, fmt(med, ".1f"), len(m.times),
            fmt(m.ratio(floor), ".3f"),
            fmt(m.ratio(lu) if m.kind == "tool" else None, ".3f"),
            fmt(mib(peak) if peak else None, ".1f")))
    print("(ratios: median over rounds of the ratio between runs of the same round)")


def report_checks(modes):
    """Say what each command printed in its warm-up run, and flag failures: a non-zero
    exit, or lib_users (or a tool) not reporting the processes that map the deleted
    library, or reporting processes that do not."""
    for m in modes:
        c = m.check
        note = "exit %s, %d output lines" % (c["exit"], c["lines"])
        warnings = []
        if m.kind != "base":
            note += "; deleted-library daemons: " + c["verdict"]
            if not c["ok"]:
                warnings.append("misses %d of %d" % (c["expected"] - c["listed"], c["expected"]))
            if c["false_positives"]:
                warnings.append("reports processes that map no deleted file")
        statuses = set(m.exits) | {c["exit"]}
        if m.kind != "tool" and statuses != {0}:
            warnings.append("exit statuses %s" % sorted(statuses))
            if c["stderr"]:
                warnings.append("stderr: " + c["stderr"])
        if warnings:
            note += "  WARNING: " + "; ".join(warnings)
        print("  %-22s %s" % (m.name, note))


def memory_line(modes):
    """The peak-memory summary: (lib_users KiB, bare python KiB), None if unmeasured."""
    by_name = {m.name: m for m in modes}
    lu, bare = by_name["lib_users"].peak_kib(), by_name["bare python"].peak_kib()
    if lu is None or bare is None:
        print("peak memory: not measured (needs prctl(PR_SET_CHILD_SUBREAPER))")
        return lu, bare
    print("peak memory: lib_users %.1f MiB, bare python %.1f MiB, difference %.1f MiB"
          % (mib(lu), mib(bare), mib(lu - bare)))
    return lu, bare


def results_dict(modes):
    by_name = {m.name: m for m in modes}
    floor, lu = by_name["floor"], by_name["lib_users"]
    out = {}
    for m in modes:
        med = m.median_ms()
        out[m.name] = {
            "argv": m.argv if m.name != "floor" else m.argv[:-1] + ["<floor code>"],
            "median_ms": med,
            "times_ms": [t * 1000 for t in m.times],
            "ratio_to_floor": m.ratio(floor),
            "ratio_to_lib_users": m.ratio(lu),
            "ratio_of_medians_to_floor": med / floor.median_ms() if med else None,
            "max_rss_kib": m.peak_kib(),
            "exit_statuses": sorted(set(m.exits)),
            "warmup_check": m.check,
        }
    return out


# ---- main -----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--processes", type=int, default=1000,
                   help="population size (default 1000, at most %d)" % MAX_PROCESSES)
    p.add_argument("-r", "--runs", type=int, default=21, help="timed runs per mode (default 21)")
    p.add_argument("--tool-runs", type=int, default=None,
                   help="runs of lsof/needrestart/checkrestart (default min(runs, 5))")
    p.add_argument("--memory-runs", type=int, default=None,
                   help="extra runs per mode that measure peak memory (default min(runs, 3))")
    p.add_argument("--no-tools", action="store_true", help="skip lsof/needrestart/checkrestart")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the floor, lib_users and the daemons (default: %(default)s)")
    p.add_argument("--python-flags", default="",
                   help="interpreter flags for every Python run, e.g. '-I' (default none)")
    p.add_argument("--lib-users", default=DEFAULT_LIB_USERS,
                   help="lib_users.py to benchmark (default: %(default)s)")
    p.add_argument("--daemon-maps", type=int, default=150,
                   help="target mappings per interpreter daemon (default 150)")
    p.add_argument("--scale", metavar="N,N,...",
                   help="measure at several population sizes, growing one population")
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="same as -n 20 -r 3 --tool-runs 1")
    args = p.parse_args(argv)
    if args.quick:
        args.processes, args.runs, args.tool_runs, args.memory_runs = 20, 3, 1, 1
    if args.tool_runs is None:
        args.tool_runs = min(args.runs, 5)
    if args.memory_runs is None:
        args.memory_runs = min(args.runs, 3)
    sizes = [args.processes]
    if args.scale:
        try:
            sizes = sorted({int(s) for s in args.scale.split(",") if s.strip()})
        except ValueError:
            p.error("--scale wants comma-separated integers")
    if not sizes or min(sizes) < 0 or max(sizes) > MAX_PROCESSES:
        p.error("population sizes must be between 0 and %d" % MAX_PROCESSES)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.sizes = sizes
    args.python = shutil.which(args.python) or args.python
    if not os.path.isfile(args.lib_users):
        p.error("lib_users not found: %s" % args.lib_users)
    args.lib_users = os.path.abspath(args.lib_users)
    return args


def check_capacity(n):
    """Refuse populations the PID space cannot hold, before starting anything."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    if count_proc_pids() + n + 100 > pid_max * 0.9:
        raise SystemExit("bench: %d more processes would crowd pid_max %d" % (n, pid_max))


def python_version(python):
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True)
    return out.stdout.strip()


# What naming packages costs (-S, --json, --prometheus; -s --packages): a fresh
# PackageDb looks up the benchmark's library (owned by a package, on a dpkg system) and a
# path that no package owns (which reads every .list), in the benchmarked interpreter.
PACKAGE_CODE = """\
import os, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import lib_users
info = os.path.join("/", lib_users.DPKG_DIR, "info")
lists = len([n for n in os.listdir(info) if n.endswith(".list")]) if os.path.isdir(info) else 0
def cost(path):
    times = []
    for _ in range(7):
        t = time.perf_counter()
        owner = lib_users.PackageDb().owner(path)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, owner
owned, package = cost(os.path.realpath(sys.argv[2]))
unowned, _ = cost("/usr/lib/lib_users_bench_owned_by_none.so")
print("package lookup (%d dpkg .list files): %s %.1f ms, a path no package owns %.1f ms"
      % (lists, "%s (%s)" % (sys.argv[2], package.name) if package else sys.argv[2],
         owned, unowned))
"""


def package_cost(args, library):
    """One line: what a package lookup costs on this machine (PACKAGE_CODE)."""
    py = [args.python] + shlex.split(args.python_flags)
    done = subprocess.run(py + ["-c", PACKAGE_CODE, os.path.dirname(args.lib_users), library],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.stdout.strip() or "package lookup: not measured"


def bench(args, tmpdir, population, runner):
    """Grow the population to each size in turn and measure; returns the JSON results."""
    version = python_version(args.python)
    modes, skipped = build_modes(args, args.python)
    doc = {"python": args.python, "python_version": version,
           "python_flags": args.python_flags, "lib_users": args.lib_users,
           "runs": args.runs, "tool_runs": args.tool_runs,
           "memory_runs": args.memory_runs, "skipped_tools": skipped,
           "measurements": []}
    scale_rows = []
    for size in args.sizes:
        avail_before = mem_available_kib()
        t0 = time.monotonic()
        population.grow(size)
        setup = time.monotonic() - t0
        n_s, n_d, n_del = population.counts()
        maps_s, maps_d = population.mapping_stats()
        total = count_proc_pids()
        print()
        print("population: %d processes (%d sleepers, %d daemons with ~%d mappings, "
              "%d mapping a deleted library)" % (n_s + n_d, n_s, n_d, round(maps_d), n_del))
        print("  mappings measured in /proc: daemons %.1f on average (target %d), "
              "sleepers (cat) %.1f; plus 2 daemon parents (zygotes)"
              % (maps_d, args.daemon_maps, maps_s))
        print("  deleted library: copy of %s, mapped as %s (deleted)"
              % (population.lib, population.deleted_path))
        print("  /proc lists %d processes in all; set up in %.1f s; MemAvailable fell by "
              "%d MiB" % (total, setup, max(0, round(mib(avail_before - mem_available_kib())))))
        print("runs: %d (external tools: %d; peak memory: %d more), python: %s %s%s" % (
            args.runs, args.tool_runs, args.memory_runs, args.python, version,
            (" " + args.python_flags) if args.python_flags else ""))
        if skipped:
            print("not installed, skipped: %s" % ", ".join(skipped))
        deleted_zygote = population.zygotes["deleted"]
        expected = set(deleted_zygote.children) | {deleted_zygote.proc.pid}
        others = (set(population.sleepers) | set(population.zygotes["plain"].children)
                  | {population.zygotes["plain"].proc.pid})
        measure(modes, args.runs, args.tool_runs, args.memory_runs, runner, tmpdir,
                expected, others)
        print_table(modes)
        lu_rss, bare_rss = memory_line(modes)
        print(package_cost(args, population.lib))
        print("warm-up run of each command:")
        report_checks(modes)

        by_name = {m.name: m for m in modes}
        bare = by_name["bare python"].median_ms()
        row = {"processes": n_s + n_d, "proc_pids": total, "bare_ms": bare,
               "floor_ms": by_name["floor"].median_ms(),
               "lib_users_ms": by_name["lib_users"].median_ms()}
        row["floor_ms_per_process"] = (row["floor_ms"] - bare) / total
        row["lib_users_ms_per_process"] = (row["lib_users_ms"] - bare) / total
        scale_rows.append(row)
        doc["measurements"].append({
            "population": {"processes": n_s + n_d, "sleepers": n_s, "daemons": n_d,
                           "deleted_library_daemons": n_del, "proc_pids": total,
                           "daemon_maps_avg": maps_d, "sleeper_maps_avg": maps_s,
                           "deleted_library": population.deleted_path,
                           "setup_seconds": setup},
            "results": results_dict(modes),
            "peak_memory_kib": {"lib_users": lu_rss, "bare_python": bare_rss,
                                "difference": lu_rss - bare_rss
                                if lu_rss is not None and bare_rss is not None else None},
        })
    if len(scale_rows) > 1:
        print()
        print("scale: cost per process (/proc PID) above a bare interpreter start")
        print("%10s %10s %9s %9s %12s %14s %18s" % ("processes", "/proc PIDs", "bare ms",
                                                   "floor ms", "lib_users ms",
                                                   "floor ms/proc", "lib_users ms/proc"))
        for r in scale_rows:
            print("%10d %10d %9.1f %9.1f %12.1f %14.4f %18.4f" % (
                r["processes"], r["proc_pids"], r["bare_ms"], r["floor_ms"], r["lib_users_ms"],
                r["floor_ms_per_process"], r["lib_users_ms_per_process"]))
        doc["scale"] = scale_rows
    return doc


def reap_orphans():
    """Reap children that were reparented to us (we are a child subreaper) and have
    exited, e.g. daemons of a zygote that had to be killed.  Reaping ends nothing."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv=None):
    args = parse_args(argv)
    args.lib_users = os.path.abspath(args.lib_users)
    os.chdir(os.path.dirname(args.lib_users))  # where `python3 -m lib_users` finds it
    check_capacity(max(args.sizes))
    for sig in SIGNALS[1:]:
        signal.signal(sig, on_signal)
    runner = Runner()
    tmpdir = population = None
    try:
        tmpdir = tempfile.mkdtemp(prefix="lib_users_bench.")
        population = Population(args.python, tmpdir, args.daemon_maps)
        doc = bench(args, tmpdir, population, runner)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            print("results written to %s" % args.json_out)
    except (KeyboardInterrupt, Interrupted):
        print("\nbench: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        # No signal may cut the cleanup short.
        with SignalsBlocked():
            runner.stop()
            if population is not None:
                population.close()
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            reap_orphans()
    return 0


if __name__ == "__main__":
    sys.exit(main())
