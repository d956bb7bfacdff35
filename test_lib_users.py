"""Tests for lib_users, grouped by what a user sees:

- shared helpers and fixtures (used by more than one section);
- reading /proc: maps, stat, status and the argument list, bounded time;
- detection: deleted mappings, kept files, replaced or removed, chroots and mount
  namespaces, scripts, false positives;
- grouping and output formats: text, -s and -m, JSON, terminal safety, exit status and
  messages, options, --fds;
- services and containers: -S, placement, containers, reboot, Nagios, Prometheus;
- the Python API: FileInfo, ProcessFiles, ProcessInfo, against lsof, as an
  unprivileged user;
- robustness: churn, vanishing processes, hostile trees, stalled processes and FUSE,
  restricted /proc, output that cannot be written, memory bounds;
- documentation;
- config and the fleet path: /etc/lib_users.conf, node_exporter scraping our metrics;
- performance harness: the benchmark.

Run with: python3 -m pytest
"""

import ctypes
import errno
import functools
import json
import os
import pwd
import py_compile
import random
import re
import resource
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import warnings
import pytest

import lib_users


# ==== shared helpers and fixtures =======================================================
# Fixture /proc data: maps files under testdata/maps/ for the parser and procfs trees
# under testdata/proc-*/ for the command line (`--proc`), written by
# testdata/make_fixtures.py, whose docstring lists the cases; the trees under
# testdata/svc-* are written by testdata/make_svc_fixtures.py.


HERE = os.path.dirname(os.path.abspath(__file__))


LIB_USERS = os.path.join(HERE, "lib_users.py")


TESTDATA = os.path.join(HERE, "testdata")


# What most tests run as the command: lib_users.py compiled once for the session (see
# _compiled_cli). The source file itself is run by the tests of `python3 lib_users.py`.
_CLI_SCRIPT = LIB_USERS


@pytest.fixture(scope="session", autouse=True)
def _compiled_cli():
    """`python3 lib_users.py` compiles the whole source on every run, some 25 ms; the
    suite runs the command hundreds of times. Python runs a compiled file as it runs
    the source, so most tests run lib_users.py compiled here, once."""
    global _CLI_SCRIPT
    tmp = tempfile.mkdtemp(prefix="lib_users_cli_")
    try:
        os.chmod(tmp, 0o755)  # the tests that drop to uid 65534 run it too
        _CLI_SCRIPT = py_compile.compile(LIB_USERS, os.path.join(tmp, "lib_users.pyc"),
                                         doraise=True)
        os.chmod(_CLI_SCRIPT, 0o644)
        yield
    finally:
        _CLI_SCRIPT = LIB_USERS
        shutil.rmtree(tmp)


# Where libz may live when the dynamic linker cannot be asked. Tests copy it; they never
# touch it.
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
            "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")


def find_libz():
    """The path of the real libz shared library, or None.

    Asked of the dynamic linker first: a Python that loads libz with ctypes shows the
    file it mapped in its own /proc/self/maps. Standard library directories after that.
    """
    code = ("import ctypes, ctypes.util, sys\n"
            "name = ctypes.util.find_library('z')\n"
            "name and ctypes.CDLL(name)\n"
            "sys.stdout.write(open('/proc/self/maps').read())\n")
    try:
        maps = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        maps = ""
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and os.path.basename(fields[5]).startswith("libz.so"):
            if os.path.isfile(fields[5]):
                return fields[5]
    for directory in LIB_DIRS:
        for name in ("libz.so.1", "libz.so"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return os.path.realpath(path)
    return None


_FX_LIBDIR = "/usr/lib/x86_64-linux-gnu/"


def _fx_maps(name):
    """The bytes of a maps fixture, testdata/maps/NAME.maps."""
    with open(os.path.join(TESTDATA, "maps", name + ".maps"), "rb") as maps:
        return maps.read()


def _fx_line(path, inode=1900001, perms=b"r-xp", start=0x7F3A1C400000, dev=b"fe:01"):
    """One maps line laid out as the kernel does: the name starts at column 73."""
    head = b"%08x-%08x %s %08x %s %d " % (start, start + 0x1000, perms, 0, dev, inode)
    return head if not path else head.ljust(72) + b" " + path


def _fx_cli(*args):
    """Run lib_users as a user would; stdout and stderr as bytes."""
    env = dict(os.environ, LC_ALL="C.UTF-8")
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run([sys.executable, _CLI_SCRIPT] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=60)


def _fx_run(tree, *args):
    """Run lib_users on a procfs tree: a fixture name under testdata/, or a path. The
    committed fixtures do not change, so a run on one is made once per session: every
    run costs an interpreter start-up."""
    if os.sep in tree:
        return _fx_cli("--proc", tree, *args)
    return _fx_run_fixture(tree, args)


@functools.lru_cache(maxsize=None)
def _fx_run_fixture(tree, args):
    return _fx_cli("--proc", os.path.join(TESTDATA, tree), *args)


def _fx_ok(tree, *args):
    """stdout of a run that must succeed with nothing on stderr, as text."""
    result = _fx_run(tree, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    return result.stdout.decode("utf-8")


def _fx_json(tree, *args):
    result = _fx_run(tree, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.decode("ascii"))


def _fx_write_process(tree, pid, argv, maps, comm=b"app", exe=None):
    """A process in a procfs tree made at test time: cmdline, comm, maps, stat, status."""
    base = os.path.join(str(tree), str(pid))
    os.makedirs(base)
    files = {
        "cmdline": b"".join(arg + b"\0" for arg in argv),
        "comm": comm + b"\n",
        "maps": maps,
        "stat": b"%d (%s) S 1 %d %d 0 -1 4194560 1520 0 3 0 12 7 0 0 20 0 1 0 4800 "
                b"11866112 1423 18446744073709551615 1 1 0 0 0 0 0 4096 16387 1 0 0 17 "
                b"1 0 0 0 0 0 0 0 0 0 0 0 0 0\n" % (pid, comm, pid, pid),
        "status": b"Name:\t%s\nState:\tS (sleeping)\nPid:\t%d\nPPid:\t1\n"
                  b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n" % (comm, pid),
    }
    for name, data in files.items():
        with open(os.path.join(base, name), "wb") as out:
            out.write(data)
    if exe is not None:
        os.symlink(exe, os.path.join(base, "exe"))
    return base


_FX_NAMED_CHILD = r"""
import json, mmap, os, sys
shm_dir, lib, target = sys.argv[1:4]
keep = []
# JACK's layout: shared memory two directories below /dev/shm, mapped, then unlinked
os.makedirs(os.path.join(shm_dir, "default"))
shm = os.path.join(shm_dir, "default", "jack-shm-registry")
with open(shm, "wb") as f:
    f.write(b"\0" * 4096)
with open(shm, "r+b") as f:
    keep.append(mmap.mmap(f.fileno(), 4096))
os.unlink(shm)
# NVIDIA's: a memfd whose name starts with '/'
memfd = os.memfd_create("/.glA1b2C3")
os.ftruncate(memfd, 4096)
keep.append(mmap.mmap(memfd, 4096))
# the control: a deleted file that is worth reporting
with open(lib, "wb") as f:
    f.write(b"\0" * 4096)
with open(lib, "rb") as f:
    keep.append(mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ))
os.unlink(lib)
opath = os.open(target, os.O_PATH)
print(json.dumps({"memfd": memfd, "opath": opath, "shm": shm}), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def fx_named_child(tmp_path):
    """A real process that maps POSIX shared memory at depth below /dev/shm and a memfd
    named with a '/', holds an O_PATH descriptor, and maps one deleted file that is
    not a false positive. (child, its report, the deleted file's path)"""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        pytest.skip("needs a writable /dev/shm")
    shm_dir = tempfile.mkdtemp(prefix="lib_users_test_", dir="/dev/shm")
    lib = str(tmp_path / "libgone.so.1")
    child = subprocess.Popen([sys.executable, "-c", _FX_NAMED_CHILD, shm_dir, lib,
                              str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = child.stdout.readline()
        assert line, "the test child failed"
        yield child, json.loads(line), lib
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _api_kill(child)
        child.stdout.close()
        shutil.rmtree(shm_dir, ignore_errors=True)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux")
                                or not os.path.isdir("/proc/self/fd"),
                                reason="needs Linux with procfs at /proc")


_API_DELETED_SIZE = 12345


_API_MEMFD_NAME = "lib_users_api_memfd"


# The child: opens one file of each kind, reports what it knows about each descriptor
# as one JSON line on stdout, then sleeps until it is killed. argv[1] is a temp dir.
_API_CHILD = r'''
import fcntl, json, os, select, socket, sys, time
d = sys.argv[1]
out = {}

def _stat(fd):
    s = os.fstat(fd)
    return {"dev": [os.major(s.st_dev), os.minor(s.st_dev)], "ino": s.st_ino,
            "size": s.st_size, "nlink": s.st_nlink, "mode": s.st_mode,
            "rdev": [os.major(s.st_rdev), os.minor(s.st_rdev)]}

def add(name, fd, **extra):
    extra.update(fd=fd, stat=_stat(fd), pos=None,
                 flags=fcntl.fcntl(fd, fcntl.F_GETFL))
    try:
        extra["pos"] = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        pass
    out[name] = extra

keep = []
p = os.path.join(d, "regular.txt")
with open(p, "wb") as f:
    f.write(b"x" * 100)
fd = os.open(p, os.O_RDONLY)
os.lseek(fd, 42, os.SEEK_SET)
add("regular", fd, path=p)

p = os.path.join(d, "append.log")
fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, b"line\n")
add("append", fd, path=p)

p = os.path.join(d, "deleted.bin")
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"d" * int(sys.argv[2]))
os.unlink(p)
add("deleted", fd, path=p)

fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
add("dir", fd, path=d)

r, w = os.pipe()
add("pipe_r", r)
add("pipe_w", w)

p = os.path.join(d, "fifo")
os.mkfifo(p)
fr = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
fw = os.open(p, os.O_WRONLY)
add("fifo_r", fr, path=p)
add("fifo_w", fw, path=p)

fd = os.open(os.devnull, os.O_RDWR)
add("null", fd, path=os.devnull)

lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lis.bind(("127.0.0.1", 0))
lis.listen(5)
cli = socket.create_connection(lis.getsockname())
srv, _ = lis.accept()
cli.sendall(b"hello")
while len(srv.recv(5, socket.MSG_PEEK)) < 5:  # peeking leaves the 5 bytes queued
    time.sleep(0.01)
keep += [lis, cli, srv]
add("tcp_listen", lis.fileno(), local=lis.getsockname())
add("tcp_client", cli.fileno(), local=cli.getsockname(), remote=cli.getpeername())
add("tcp_server", srv.fileno(), local=srv.getsockname(), remote=srv.getpeername())

try:
    l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    l6.bind(("::1", 0))
    l6.listen(3)
    keep.append(l6)
    add("tcp6_listen", l6.fileno(), local=l6.getsockname()[:2])
except OSError as err:
    out["ipv6_error"] = str(err)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
keep.append(u)
add("udp", u.fileno(), local=u.getsockname())

p = os.path.join(d, "unix.sock")
us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
us.bind(p)
us.listen(1)
keep.append(us)
add("unix_path", us.fileno(), local=p)

name = "lib_users_api_%d" % os.getpid()
ua = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ua.bind("\0" + name)
keep.append(ua)
add("unix_abstract", ua.fileno(), local="@" + name,
    sockname=ua.getsockname().decode("ascii", "replace").replace("\0", "@"))

a, b = socket.socketpair()
keep += [a, b]
add("unix_pair", a.fileno())

p = os.path.join(d, "posix.lock")
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
add("posix_lock", fd, path=p)

p = os.path.join(d, "flock.lock")
fd = os.open(p, os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_SH)
add("flock", fd, path=p)

p = os.path.join(d, "range.lock")
fd = os.open(p, os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_SH, 10, 10)  # bytes 10 to 19
add("range_lock", fd, path=p)

if hasattr(fcntl, "F_OFD_SETLK"):
    import struct
    p = os.path.join(d, "ofd.lock")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
    add("ofd_lock", fd, path=p)

fd = os.memfd_create(sys.argv[3])
os.write(fd, b"m" * 4096)
add("memfd", fd, path="/memfd:" + sys.argv[3])

ep = select.epoll()
keep.append(ep)
add("epoll", ep.fileno())

shm = sys.argv[4]
if shm:
    fd = os.open(shm, os.O_RDWR | os.O_CREAT, 0o600)
    add("shm", fd, path=shm)

out["pid"] = os.getpid()
out["cwd"] = os.getcwd()
out["pgrp"] = os.getpgrp()
sys.stdout.write(json.dumps(out) + "\n")
sys.stdout.flush()
while True:
    time.sleep(60)
'''


def _api_kill(proc):
    """End a child we started, by its PID, and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _api_shm_dir():
    """A tmpfs that is a mount of its own (for a second mount_point/fs_type check)."""
    if os.path.isdir("/dev/shm") and os.path.ismount("/dev/shm") \
            and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


class _ApiChild:
    def __init__(self, proc, report, tmpdir, argv, spawned, shm):
        self.proc, self.pid, self.report = proc, proc.pid, report
        self.tmpdir, self.argv, self.spawned, self.shm = tmpdir, argv, spawned, shm

    def fd(self, name):
        return self.report[name]["fd"]


@pytest.fixture(scope="module")
def api_child():
    tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="lib_users_api_"))
    shm_dir = _api_shm_dir()
    shm = os.path.join(shm_dir, "lib_users_api_%d" % os.getpid()) if shm_dir else ""
    argv = [sys.executable, "-c", _API_CHILD, tmpdir, str(_API_DELETED_SIZE),
            _API_MEMFD_NAME, shm]
    spawned = time.time()
    proc = subprocess.Popen(argv, cwd=tmpdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the test child failed: %s" % proc.stderr.read().decode())
        report = json.loads(line)
        yield _ApiChild(proc, report, tmpdir, argv, spawned, shm)
    finally:
        _api_kill(proc)
        proc.stdout.close()
        proc.stderr.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        if shm:
            try:
                os.unlink(shm)
            except FileNotFoundError:
                pass


_SVC_LIVE = pytest.mark.skipif(not sys.platform.startswith("linux")
                               or not os.path.isdir("/proc/self/fd"),
                               reason="needs Linux with procfs at /proc")


def _svc_tree(name):
    return os.path.join(TESTDATA, name)


def _svc_run(*args, proc=None, env=None):
    cmd = [sys.executable, LIB_USERS] + (["--proc", _svc_tree(proc)] if proc else [])
    return subprocess.run(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60, env=env)


def _svc_json(*args, proc=None, env=None):
    result = _svc_run("--json", *args, proc=proc, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


_SVC_LIBPOD = "53807d4f4e361ef7488336dd14129d90a1ee4e9cebdadc72f1634cda70750af7"


_SVC_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


_SVC_LABEL_START = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


_SVC_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?\Z")


_SVC_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z|[+-]?Inf\Z|NaN\Z")


_SVC_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def _svc_prom_labels(text, line):
    labels, i = {}, 0
    while i < len(text):
        match = _SVC_LABEL_START.match(text, i)
        assert match, "bad label at %d: %r" % (i, line)
        name, i, value = match.group(1), match.end(), []
        while True:
            assert i < len(text), "unterminated label value: %r" % line
            char = text[i]
            if char == "\\":
                assert text[i + 1: i + 2] in _SVC_UNESCAPE, "bad escape: %r" % line
                value.append(_SVC_UNESCAPE[text[i + 1]])
                i += 2
            elif char == '"':
                i += 1
                break
            else:
                value.append(char)
                i += 1
        assert name not in labels and not name.startswith("__"), line
        labels[name] = "".join(value)
        if i < len(text):
            assert text[i] == ",", line
            i += 1
    return labels


def _svc_parse_prometheus(text):
    """Check the text exposition format; {name: {"help", "type", "samples"}} where
    samples are [(labels dict with unescaped values, float value)]."""
    assert text.endswith("\n")
    families, order, current = {}, [], None
    for line in text[:-1].split("\n"):
        assert line, "empty line"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[0] == "#" and parts[1] in ("HELP", "TYPE") and len(parts) >= 3, line
            name = parts[2]
            assert _SVC_METRIC_NAME.match(name), line
            family = families.setdefault(name, {"help": None, "type": None, "samples": []})
            if name not in order:
                order.append(name)
            current = name
            key = parts[1].lower()
            assert family[key] is None, "second %s for %s" % (parts[1], name)
            assert not family["samples"], "%s after the samples of %s" % (parts[1], name)
            value = parts[3] if len(parts) > 3 else ""
            if key == "type":
                assert value in ("counter", "gauge", "histogram", "summary", "untyped"), line
            else:
                assert "\\" not in value.replace("\\\\", "").replace("\\n", ""), line
            family[key] = value
            continue
        match = _SVC_SAMPLE.match(line)
        assert match, "bad sample: %r" % line
        name, labels, value = match.group(1), match.group(2), match.group(3)
        assert name == current, "sample of %s outside its family: %r" % (name, line)
        assert _SVC_FLOAT.match(value), line
        families[name]["samples"].append((_svc_prom_labels(labels or "", line), float(value)))
    for name, family in families.items():
        assert family["help"] is not None and family["type"] is not None, name
    return families


def _svc_value(families, name, **labels):
    values = [v for l, v in families[name]["samples"] if l == labels]
    assert len(values) == 1, (name, labels, families[name]["samples"])
    return values[0]


# The child: sets up what argv[1] names, says "ready" on stdout, then waits until its
# stdin is closed (or it is killed), so it never outlives the test run. Written without
# single quotes and backslashes so that its argument list shows up in lib_users' text
# output in a form _live_argv_text can predict.
_LIVE_CHILD = """
import ctypes, mmap, os, sys
mode = sys.argv[1]
keep = []
if mode in ("lib", "longmaps", "hugeargs", "leaderexit", "manymaps"):
    keep.append(ctypes.CDLL(sys.argv[2]))
if mode == "hugeargs":
    # Point the argument area at 1 GiB never written, so that cmdline reads as that
    # many NULs. PR_SET_MM_MAP sets the whole layout at once and needs no privilege.
    size = 1 << 30
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
    start = ctypes.addressof(ctypes.c_char.from_buffer(area))
    with open("/proc/self/stat", "rb") as f:
        fields = [int(x) for x in f.read().rpartition(b")")[2].split()[1:]]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype = ctypes.c_void_p
    # start_code end_code start_data end_data start_brk brk start_stack arg_start
    # arg_end env_start env_end (stat fields 26-28 and 45-51), auxv, auxv_size, exe_fd
    layout = (ctypes.c_uint64 * 13)(
        fields[22], fields[23], fields[41], fields[42], fields[43],
        libc.sbrk(ctypes.c_long(0)), fields[24], start, start + size, fields[46],
        fields[47], 0, 0xFFFFFFFF << 32)  # no auxv; auxv_size 0 and exe_fd -1 in one word
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(35, 14, layout, 104, 0):  # PR_SET_MM, PR_SET_MM_MAP, its size
        sys.exit("prctl: %s" % os.strerror(ctypes.get_errno()))
    keep.append(area)
if mode == "manymaps":
    # One page of one file mapped many times over: every mapping a line of its own
    # (same offset, so the kernel merges none), each with the long name of the file.
    fd = os.open(sys.argv[3], os.O_RDONLY)
    libc = ctypes.CDLL(None)  # mmap.mmap would hold a descriptor for each
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    for _ in range(int(sys.argv[4])):
        libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
if mode == "leaderexit":
    # The main thread ends (SYS_exit, not exit_group) while another runs on: the
    # maps, cmdline and links of the process read empty, those of its threads do not.
    import threading
    threading.Thread(target=sys.stdin.read).start()
    sys.stdout.write("ready" + chr(10))
    sys.stdout.flush()
    ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[os.uname().machine], 0)
if mode == "longmaps":
    # Mappings made after the library land below it, so before it in maps. Alternating
    # protections keep the kernel from merging neighbours into one line.
    for i in range(int(sys.argv[3])):
        prot = mmap.PROT_READ if i % 2 else mmap.PROT_READ | mmap.PROT_WRITE
        keep.append(mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE, prot=prot))
if mode == "memfd":
    fd = os.memfd_create("lib_users_live")
    os.write(fd, bytes(mmap.PAGESIZE))
    keep.append(mmap.mmap(fd, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_EXEC))
if mode == "shm":
    fd = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, mmap.PAGESIZE)
    keep.append(mmap.mmap(fd, mmap.PAGESIZE))
    os.unlink(sys.argv[2])
sys.stdout.write("ready" + chr(10))
sys.stdout.flush()
sys.stdin.read()
"""


_LIVE_STARTUP_LIMIT = 60  # seconds; only a guard against hanging forever, never asserted


def _live_copy(src, dst, mode=0o644):
    """A private copy of src at dst (the system file is only ever read)."""
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)
    return dst


def _live_maps(pid):
    """The whole /proc/PID/maps of a child, as bytes: what the kernel says."""
    with open("/proc/%d/maps" % pid, "rb") as f:
        return f.read()


def _live_maps_line(pid, name):
    """The first maps line of `pid` whose path field is exactly `name` (bytes, with the
    kernel's \\012 for newline), or None."""
    for line in _live_maps(pid).split(b"\n"):
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5] == name:
            return line
    return None


def _live_maps_name(path, deleted):
    """The path field the kernel prints in maps for `path`."""
    name = os.fsencode(path).replace(b"\n", b"\\012")
    return name + b" (deleted)" if deleted else name


def _live_wait_ready(proc):
    """Wait for the child's "ready" line; fail with its stderr if it died instead."""
    ready, _, _ = select.select([proc.stdout], [], [], _LIVE_STARTUP_LIMIT)
    line = proc.stdout.readline() if ready else b""
    if line != b"ready\n":
        proc.kill()
        proc.wait()
        pytest.fail("child %d did not get ready: %r" % (proc.pid, proc.stderr.read()))


def _live_child_argv(mode, *args, python=sys.executable):
    return [python, "-c", _LIVE_CHILD, mode] + list(args)


def _live_argv_text(argv):
    """How the text output shows an argument list made of the plain arguments these
    tests use: an argument with a space, newline or double quote is single-quoted, a
    newline shown as \\n."""
    out = []
    for arg in argv:
        assert "'" not in arg and "\\" not in arg, "not a plain argument: %r" % arg
        assert all(c.isprintable() or c == "\n" for c in arg), "not plain: %r" % arg
        if any(c in arg for c in ' \n"'):
            out.append("'%s'" % arg.replace("\n", "\\n"))
        else:
            out.append(arg)
    return " ".join(out)


def _live_run(*args, python=sys.executable, script=None, **kwargs):
    """Run the lib_users command; stdout and stderr are captured as bytes unless
    `kwargs` says otherwise. Most tests look only at their children (-p): a full scan
    of a busy machine takes long, and the full-scan tests show that it finds the same."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([python, script or _CLI_SCRIPT] + list(args), timeout=120,
                          **kwargs)


def _live_text_lines(stdout):
    return stdout.decode("utf-8", "replace").splitlines()


def _live_line_for(stdout, pid):
    """The text-output line (run with -v, so every PID is listed) whose PID list holds
    `pid`, or None."""
    for line in _live_text_lines(stdout):
        head, sep, _rest = line.partition(' "')
        if sep and all(p.isdigit() for p in head.split(",")):
            if pid in [int(p) for p in head.split(",")]:
                return line
    return None


def _live_json_group(stdout, pid):
    """The --json group whose pids hold `pid`, or None."""
    doc = json.loads(stdout.decode("ascii"))
    for group in doc["groups"]:
        if pid in group["pids"]:
            return group
    return None


def _live_stale_child(spawn, tmp, libz, *extra):
    """A child that maps a copy of libz which is then deleted: (Popen, copy path)."""
    copy = _live_copy(libz, os.path.join(tmp, "libz.so.1"))
    child = spawn(_live_child_argv("lib", copy, *extra))
    os.unlink(copy)
    assert _live_maps_line(child.pid, _live_maps_name(copy, True)) is not None
    return child, copy


@pytest.fixture(scope="session")
def _live_libz():
    """The path of the real libz; these tests only ever copy it."""
    path = find_libz()
    if path is None:
        pytest.skip("needs libz (the zlib shared library)")
    return path


@pytest.fixture
def _live_tmp():
    """A temporary directory readable by every user, removed afterwards. Not under a
    directory whose deleted files lib_users ignores (such as /dev/shm)."""
    base = tempfile.gettempdir()
    if lib_users.is_ignored(os.path.join(base, "lib_users_live_x", "libz.so.1")):
        base = "/var/tmp"  # e.g. TMPDIR=/dev/shm: deleted files there are not reported
    path = tempfile.mkdtemp(prefix="lib_users_live_", dir=base)
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def _live_spawn():
    """spawn(argv, ready=True, **popen_kwargs): start a child (waiting for its "ready"
    line); every child is killed and reaped afterwards, by its PID."""
    children = []

    def spawn(argv, ready=True, **kwargs):
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, **kwargs)
        children.append(child)
        if ready:
            _live_wait_ready(child)
        return child

    try:
        yield spawn
    finally:
        for child in children:
            child.kill()  # a no-op for a child already reaped
            child.wait()
            for pipe in (child.stdin, child.stdout, child.stderr):
                pipe.close()


@pytest.fixture
def _live_stale_children(_live_libz, _live_tmp, _live_spawn):
    """Three children that map a deleted copy of libz: ["-p", "PID,PID,PID"] for a
    scan of them, which prints a line."""
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    children = [_live_spawn(_live_child_argv("lib", copy)) for _ in range(3)]
    os.unlink(copy)
    pids = ",".join(str(pid) for pid in sorted(child.pid for child in children))
    result = _live_run("-v", "-p", pids)
    line = _live_line_for(result.stdout, children[0].pid)
    assert line is not None and line.startswith(pids + ' "')
    return ["-p", pids]


_RB_ENV = dict(os.environ, LC_ALL="C.UTF-8")
_RB_ENV.pop("PYTHONIOENCODING", None)
_RB_ENV.pop("PYTHONWARNINGS", None)


# Characters a terminal must never receive raw: C0 and C1 controls, DEL, bidi
# embeddings, overrides and isolates, zero-width and other invisible format characters,
# line and paragraph separators, the byte order mark.
_RB_FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20) if c != 0x0A] + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + [chr(c) for c in range(0x200B, 0x2010)] + ["\u2028", "\u2029"]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)] + ["\ufeff"])


_RB_ADDRESS_LIMIT = 1 << 30  # a runaway child fails instead of eating the machine


class _RbResult:
    """How a run of the command ended: returncode, stdout, stderr (bytes), max_rss
    (KiB, of that process alone) and timed_out."""

    def __init__(self, returncode, stdout, stderr, max_rss, timed_out):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.max_rss, self.timed_out = max_rss, timed_out

    def __repr__(self):
        return "<exit %r, %d KiB, stdout %r, stderr %r%s>" % (
            self.returncode, self.max_rss, self.stdout[:300], self.stderr[:600],
            ", timed out" if self.timed_out else "")


def _rb_limit_memory(limit=_RB_ADDRESS_LIMIT):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _rb_run(args, timeout=60, stdout=subprocess.PIPE, cmd=None, env=None,
            first_line_only=False, limit_memory=True, **kwargs):
    """Run lib_users (or `cmd`) and wait for it with os.wait4, so that its own maximum
    resident size is known. Killed (by its PID) after `timeout` seconds. With
    first_line_only, stdout is closed after its first line, as `| head -1` does."""
    argv = list(cmd) if cmd is not None else [sys.executable, _CLI_SCRIPT] + list(args)
    if limit_memory:
        kwargs.setdefault("preexec_fn", _rb_limit_memory(
            _RB_ADDRESS_LIMIT if limit_memory is True else limit_memory))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE, env=env or _RB_ENV, **kwargs)
    chunks = {}
    pipes = [p for p in (proc.stdout, proc.stderr) if p is not None]
    for pipe in pipes:
        chunks[pipe] = []
    deadline = time.monotonic() + timeout
    timed_out, reaped, status, usage = False, False, 0, None
    try:
        while pipes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(pipes, [], [], remaining)
            for pipe in ready:
                data = os.read(pipe.fileno(), 65536)
                if data:
                    chunks[pipe].append(data)
                if not data or (first_line_only and pipe is proc.stdout
                                and b"\n" in b"".join(chunks[pipe])):
                    pipes.remove(pipe)
                    if pipe is proc.stdout and first_line_only:
                        pipe.close()  # the reader goes away
        while True:
            if timed_out:
                proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0 if timed_out else os.WNOHANG)
            if pid:
                reaped = True
                break
            if time.monotonic() > deadline:
                timed_out = True
                continue
            time.sleep(0.002)
    finally:
        if not reaped:
            proc.kill()
            _pid, status, usage = os.wait4(proc.pid, 0)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    proc.returncode = code  # reaped here: Popen must not wait for it again
    out = b"".join(chunks.get(proc.stdout, [])) if proc.stdout is not None else b""
    err = b"".join(chunks[proc.stderr])
    return _RbResult(code, out, err, usage.ru_maxrss if usage else 0, timed_out)


def _rb_unsafe(data):
    """Why bytes meant for a terminal are not safe, or None: not UTF-8, or a control,
    bidi, invisible or otherwise unprintable character other than newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return "not UTF-8: %s" % err
    for i, char in enumerate(text):
        if char == "\n":
            continue
        if char in _RB_FORBIDDEN or not char.isprintable():
            return "raw U+%04X at %d: %r" % (ord(char), i, text[max(0, i - 40) : i + 40])
    return None


def _rb_json_problem(data):
    """Why --json output is not one ASCII JSON document, or None."""
    if any(b >= 0x80 for b in data):
        return "not ASCII"
    try:
        json.loads(data.decode("ascii"))
    except ValueError as err:
        return "not JSON: %s" % err
    return None


def _rb_stderr_problem(stderr, status):
    """Why stderr is not what lib_users writes: `lib_users:` lines only, exactly one
    line when it gives up (exit 1), terminal-safe."""
    if b"Traceback" in stderr:
        return "traceback"
    lines = stderr.decode("utf-8", "replace").splitlines()
    if any(not line.startswith("lib_users: ") for line in lines):
        return "a stderr line without the lib_users: prefix"
    if status == 1 and len(lines) != 1:
        return "exit 1 without exactly one lib_users: line"
    unsafe = _rb_unsafe(stderr)
    return "stderr: " + unsafe if unsafe else None


def _rb_problem(kind, status, stdout, stderr):
    """Why one run's outcome is wrong, or None."""
    allowed = (0, 1, 2, 3) if kind == "nagios" else (0, 1)
    if status not in allowed:
        return "exit status %r" % (status,)
    problem = _rb_stderr_problem(stderr, status if kind != "nagios" else None)
    if problem:
        return problem
    if kind == "json" and status == 0:
        return _rb_json_problem(stdout)
    if kind == "nagios" and not stdout.startswith(b"LIB_USERS "):
        return "no nagios status line"
    unsafe = _rb_unsafe(stdout)
    return "stdout: " + unsafe if unsafe else None


def _rb_text_pids(stdout):
    """PIDs at the head of text lines (`PIDS "ARGV"`, or `LABEL PIDS "ARGV"` with -S)."""
    pids = set()
    for line in stdout.decode("utf-8", "replace").splitlines():
        head, sep, _rest = line.partition(' "')
        if not sep or not head:
            continue
        token = head.split()[-1]
        if all(p.isdigit() for p in token.split(",")):
            pids.update(int(p) for p in token.split(","))
    return pids


def _rb_reported(args, stdout):
    """{pid: argv or None} of every process the output lists (-v, -m or --json)."""
    if "--json" in args:
        doc = json.loads(stdout.decode("ascii"))
        return {p["pid"]: p["argv"] for p in doc["processes"]}
    if "-m" in args:
        found = {}
        for line in stdout.decode("utf-8", "replace").splitlines():
            fields = line.split(";", 2)
            if len(fields) == 3 and fields[0]:
                found.update((int(p), None) for p in fields[0].split(","))
        return found
    return dict.fromkeys(_rb_text_pids(stdout))


class _RbLink:
    """A symbolic link in a tree spec."""

    def __init__(self, target):
        self.target = target


class _RbFifo:
    """A named pipe in a tree spec."""


def _rb_populate(path, spec):
    """Write a tree: spec maps names (str) to bytes (a file), a dict (a directory),
    _RbLink or _RbFifo."""
    os.mkdir(path)
    for name, value in spec.items():
        full = os.path.join(path, name)
        if isinstance(value, dict):
            _rb_populate(full, value)
        elif isinstance(value, _RbLink):
            os.symlink(value.target, full)
        elif isinstance(value, _RbFifo):
            os.mkfifo(full)
        else:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, value)  # tmpfs and ext4 write a whole MiB at once
            finally:
                os.close(fd)


def _rb_tree(path, spec):
    """(Re)write the tree at path; its path as a str."""
    path = str(path)
    if os.path.lexists(path):
        shutil.rmtree(path)
    _rb_populate(path, spec)
    return path


def _rb_maps_line(path, inode=1900001, perms=b"r-xp", start=0x7F3A1C400000, dev=b"fe:01",
                  offset=0):
    """One maps line laid out as the kernel does: the name starts at column 73."""
    head = b"%08x-%08x %s %08x %s %d " % (start, start + 0x1000, perms, offset, dev, inode)
    return head if not path else head.ljust(72) + b" " + path


_RB_BTIME = 1763700000


def _rb_stat(pid, comm=b"prog", state=b"S", starttime=b"12345", flags=b"4194560"):
    return (b"%d (%s) %s 1 %d %d 0 -1 %s 0 0 0 0 0 0 0 0 20 0 1 0 %s 1000 100 "
            b"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
            % (pid, comm, state, pid, pid, flags, starttime))


def _rb_process(pid, argv, deleted=(), exe=b"/usr/bin/prog", cgroup=None, comm=b"prog"):
    """The files of one ordinary process that maps the given deleted paths (bytes)."""
    lines = [_rb_maps_line(exe, 1000, perms=b"r-xp", start=0x55D0C8A00000)]
    for i, path in enumerate(deleted):
        lines.append(_rb_maps_line(path + b" (deleted)", 2000 + i,
                                   start=0x7F3A1C400000 + i * 0x10000))
    lines.append(_rb_maps_line(b"[stack]", 0, perms=b"rw-p", start=0x7FFC00000000,
                               dev=b"00:00"))
    spec = {
        "maps": b"\n".join(lines) + b"\n",
        "cmdline": b"".join(a + b"\0" for a in argv),
        "stat": _rb_stat(pid, comm),
        "status": b"Name:\t%s\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n" % comm,
        "comm": comm + b"\n",
        "exe": _RbLink(exe),
    }
    if cgroup is not None:
        spec["cgroup"] = cgroup
    return spec


def _rb_root_stat(btime=b"%d" % _RB_BTIME):
    return b"cpu  1 0 1 1 0 0 0 0 0 0\nintr 0\nctxt 1\nbtime %s\nprocesses 1\n" % btime


def _rb_main(capsysbinary, args):
    """lib_users.command() (the command, in this process): (status, stdout, stderr,
    exception)."""
    try:
        status = lib_users.command(args)
        error = None
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: B902 - anything escaping main() is the bug
        status, error = None, err
    out, err_out = capsysbinary.readouterr()
    return status, out, err_out, error


def _rb_describe(error):
    """Where an exception escaped from: its type, message and innermost lib_users frame."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if f.filename.endswith("lib_users.py")]
    where = "%s:%d %s" % (frames[-1].name, frames[-1].lineno, frames[-1].line) if frames else "?"
    return "%s: %s at %s" % (type(error).__name__, str(error)[:120], where)


def _rb_in_process(capsysbinary, args):
    status, out, err, error = _rb_main(capsysbinary, args)
    assert error is None, _rb_describe(error)
    return status, out, err


# ==== reading /proc =====================================================================


# ---- maps ------------------------------------------------------------------------------


_FX_VSYSCALL = b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0" + b" " * 18 + b"[vsyscall]\n"


def test_fx_split_maps_line_reads_every_field():
    line = _fx_maps("odd-names").split(b"\n")[6]
    assert line.startswith(b"7f3a1c400000-7f3a1c426000 r--p 00000000 fe:01 1900101 ")
    mapping = lib_users.split_maps_line(line)
    assert (mapping.start, mapping.end) == (0x7F3A1C400000, 0x7F3A1C426000)
    assert (mapping.perms, mapping.offset) == ("r--p", 0)
    assert mapping.dev == (254, 1)  # maps writes the device in hex
    assert mapping.inode == 1900101
    assert mapping.path == "/opt/My App/lib/libcore 2.so"
    assert mapping.deleted is True


def test_fx_split_maps_line_anonymous_and_malformed():
    line = b"7f3a1c988000-7f3a1c98b000 rw-p 00000000 00:00 0 "  # a bare trailing space
    anonymous = lib_users.split_maps_line(line)
    assert (anonymous.path, anonymous.deleted, anonymous.inode) == ("", False, 0)
    assert lib_users.split_maps_line(b"") is None
    assert lib_users.split_maps_line(b"not a maps line at all") is None


def test_fx_parse_maps_keeps_every_line_and_pseudo_entries():
    with open(os.path.join(TESTDATA, "proc-basic", "845", "maps"), "rb") as maps:
        data = maps.read()
    mappings = lib_users.parse_maps(data)
    assert len(mappings) == data.count(b"\n")
    paths = [m.path for m in mappings]
    for pseudo in ("[heap]", "[stack]", "[vvar]", "[vdso]", "[vsyscall]"):
        assert pseudo in paths
    assert "" in paths  # anonymous memory
    assert mappings[-1].start == 0xFFFFFFFFFF600000
    deleted = {m.path for m in mappings if m.deleted}
    assert deleted == {_FX_LIBDIR + "libssl.so.3", _FX_LIBDIR + "libcrypto.so.3"}


def test_fx_paths_with_spaces_tabs_newlines_and_bad_bytes():
    found = lib_users.deleted_mappings(_fx_maps("odd-names"))
    assert set(found) == {
        "/opt/My App/lib/libcore 2.so",
        "/opt/app/lib\tplugin.so",
        "/opt/app/new\nline.so",  # the kernel wrote the newline as \012
        os.fsdecode(b"/opt/app/caf\xe9.so"),
        "/opt/app/esc\x1b[2J.so",
        "/opt/app/trail.so ",  # the name itself ends in a space
    }
    keep = [m for m in lib_users.parse_maps(_fx_maps("odd-names"))
            if m.path == "/opt/My App/lib/libkeep.so"]
    assert len(keep) == 5 and not any(m.deleted for m in keep)


def test_fx_non_utf8_path_is_decoded_with_surrogateescape():
    path = os.fsdecode(b"/opt/app/caf\xe9.so")
    mapping = lib_users.deleted_mappings(_fx_maps("odd-names"))[path]
    assert mapping.path == "/opt/app/caf\udce9.so"
    assert os.fsencode(mapping.path) == b"/opt/app/caf\xe9.so"  # the real name, back
    assert lib_users.escape(mapping.path) == "/opt/app/caf\\xe9.so"


def test_fx_openvz_prefix_marker():
    found = lib_users.deleted_mappings(_fx_maps("openvz-prefix"))
    assert set(found) == {"/usr/lib64/libssl.so.1.0.1e", "/usr/lib64/libcrypto.so.1.0.1e"}
    mapping = lib_users.split_maps_line(
        _fx_line(b"(deleted)/usr/lib/libfoo.so", perms=b"r-xp"))
    assert (mapping.path, mapping.deleted) == ("/usr/lib/libfoo.so", True)


def test_fx_deleted_inside_a_name_is_not_the_marker():
    data = _fx_maps("deleted-in-name")
    assert lib_users.deleted_mappings(data).keys() == {
        "/opt/(deleted)/liby.so",  # a directory named (deleted); the file is deleted
        "/opt/libv.so (deleted)",  # a file really named so, then deleted
    }
    flags = {m.path: m.deleted for m in lib_users.parse_maps(data)}
    for name in ("/opt/(deleted)/libx.so", "/opt/x (deleted).so", "/opt/libw.so(deleted)",
                 "/opt/libx.so (deleted) ", "/opt/(deleted)libz.so"):
        assert flags[name] is False, name


def test_fx_large_maps_file(tmp_path):
    """20000 lines, about 2 MB: every line parsed, the few deleted ones found wherever
    they are, also past the first 64 KiB read."""
    lines, deleted = [], {}
    for i in range(20000):
        start = 0x7F0000000000 + i * 0x2000
        if i in (3, 9000, 19997):
            path = b"/usr/lib/x86_64-linux-gnu/libdeleted%d.so.1" % i
            deleted[os.fsdecode(path)] = start
            lines.append(_fx_line(path + b" (deleted)", 2000000 + i, start=start))
        elif i == 15000:
            lines.append(_fx_line(b"/memfd:jit-cache (deleted)", 77, b"r-xs", start,
                                  b"00:01"))
        elif i % 3 == 0:
            lines.append(_fx_line(b"", 0, b"rw-p", start, b"00:00"))
        else:
            lines.append(_fx_line(b"/usr/lib/x86_64-linux-gnu/libmod%d.so" % (i % 400),
                                  1500000 + i % 400, start=start))
    data = b"".join(line + b"\n" for line in lines)
    assert len(data) > 1000000
    mappings = lib_users.parse_maps(data)
    assert len(mappings) == 20000
    assert sum(m.deleted for m in mappings) == 4
    found = lib_users.deleted_mappings(data)
    assert {path: m.start for path, m in found.items()} == deleted
    # and through the command line, from a file read in many chunks
    pid_dir = _fx_write_process(tmp_path, 4321, [b"/usr/bin/bigapp"], data, b"bigapp")
    assert os.path.getsize(os.path.join(pid_dir, "maps")) == len(data)
    out = _fx_ok(str(tmp_path), "-s")
    assert out == '4321 "/usr/bin/bigapp" uses %s\n' % ",".join(sorted(deleted))


def test_fx_maps_end_at_the_kernels_vsyscall_line_only():
    """The vsyscall page comes last in maps, at an address no file has: a chunk that ends
    with its line ends the file. A file name cannot fake that line: names ending in
    "[vsyscall]" sit on lines with other addresses, and a newline in a name is escaped."""
    lib = _fx_line(b"/usr/lib/libc.so.6") + b"\n"
    assert lib_users._ends_maps(lib + _FX_VSYSCALL)
    assert lib_users._ends_maps(_FX_VSYSCALL)
    assert not lib_users._ends_maps(lib)
    assert not lib_users._ends_maps(_fx_line(b"/tmp/x [vsyscall]") + b"\n")
    assert not lib_users._ends_maps(
        _fx_line(b"/tmp/x\\012" + _FX_VSYSCALL[:-1].replace(b" ", b"\\040")) + b"\n")
    assert not lib_users._ends_maps(_FX_VSYSCALL[10:])  # its start in an earlier chunk


def test_fx_maps_reading_stops_at_the_vsyscall_line():
    """No read() after the vsyscall line: a non-blocking pipe that stays open would fail
    with EAGAIN if one were made. Without the line, reading goes on to the end."""
    body = b"".join(_fx_line(b"/usr/lib/libm%d.so" % i) + b"\n" for i in range(40))
    gone = _fx_line(b"/usr/lib/libgone.so.1 (deleted)")
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(read_end, False)
        os.write(write_end, body + gone + b"\n" + _FX_VSYSCALL)
        first, marked = lib_users._marked_maps_lines(read_end)
        assert first.startswith(body[:body.index(b"\n") + 1]) and marked == [gone]
        os.write(write_end, body)
        with pytest.raises(BlockingIOError):
            lib_users._marked_maps_lines(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("data", [
    b"", b"(deleted)", b"x (deleted)\n", b"/a (deleted", b"(" * 20 + b"/b (deleted)\n",
    b"/a(1)/b (deleted)\n/c (deleted)", b"(deleted)/x\n", b"/((((((((((\n" * 3,
    b"/l (x)(y)(z)(w)(v)(u)(t)(s)(r)(q) (deleted)\n/m (deleted)\n",
])
def test_fx_find_marker_finds_what_find_finds(data):
    """The one-byte search for the deleted marker answers as bytes.find does, from
    every start, also past many "(" that are not the marker."""
    for start in range(len(data) + 2):
        assert lib_users._find_marker(data, start) == data.find(b"(deleted)", start)


def test_live_maps_read_keeps_every_marked_line_of_the_kernels(_live_libz, _live_tmp,
                                                                _live_spawn):
    """Reading maps a chunk at a time, stopping at the vsyscall line where there is
    one, keeps every line the kernel marks deleted, and the first line."""
    child, copy = _live_stale_child(_live_spawn, _live_tmp, _live_libz)
    fd = os.open("/proc/%d/maps" % child.pid, os.O_RDONLY)
    try:
        first, marked = lib_users._marked_maps_lines(fd)
    finally:
        os.close(fd)
    whole = _live_maps(child.pid)
    assert marked == [line for line in whole.split(b"\n") if b"(deleted)" in line]
    assert len(marked) > 1 and all(os.fsencode(copy) in line for line in marked)
    assert first.startswith(whole[:whole.index(b"\n") + 1])


# ---- stat, status and the argument list ------------------------------------------------


def test_fx_start_ticks_reads_field_22_past_any_comm():
    for comm in (b"cat", b"a) (b c", b") 1 2 3 (", b"x\ny"):
        data = b"4242 (" + comm + b") S " + b" ".join(b"%d" % i for i in range(4, 53)) + b"\n"
        assert lib_users._start_ticks(data) == int(lib_users.parse_stat(data)[1][19]) == 22
    with pytest.raises(ValueError):
        lib_users._start_ticks(b"4242 cat S 1 2 3")


@pytest.mark.parametrize("data, argv", [
    (b"prog\0x\0\0", ["prog", "x", ""]),
    (b"prog\0\0x\0", ["prog", "", "x"]),
    (b"prog\0-v\0", ["prog", "-v"]),
    (b"nginx: worker process\0\0\0\0\0\0", ["nginx: worker process"]),
    (b"sshd: alice [priv]", ["sshd: alice [priv]"]),
    (b"\0\0\0", []),
    (b"", []),
])
def test_fx_parse_cmdline_keeps_every_argument(data, argv):
    assert lib_users.parse_cmdline(data) == argv


def test_fx_parse_cmdline_cuts_past_its_bound():
    argv = lib_users.parse_cmdline(b"a\0" + b"B" * lib_users.CMDLINE_MAX)
    assert argv == ["a", "B" * (lib_users.CMDLINE_MAX - 2), lib_users.ARGV_CUT]
    assert lib_users.parse_cmdline(b"B" * lib_users.CMDLINE_MAX) == [
        "B" * lib_users.CMDLINE_MAX]  # at the bound: whole


def test_fx_real_uid_is_the_first_number_on_the_uid_line():
    status = (b"Name:\tUid: 7\nUmask:\t0022\nState:\tS (sleeping)\n"
              b"Uid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n")
    assert lib_users._real_uid(status) == 1000
    assert lib_users._real_uid(b"Uid:\t33\t0\t0\t0") == 33  # first line, no newline
    assert lib_users._real_uid(b"Name:\tx\nGid:\t0\n") is None
    with pytest.raises(ValueError):
        lib_users._real_uid(b"Name:\tx\nUid:\tnobody\n")


def test_fx_saved_tree_with_only_cmdline_comm_and_maps(tmp_path):
    """A saved copy of /proc (README: --proc) may hold only what a scan needs: cmdline,
    comm and maps. Every process in it is reported, an interpreter running a script
    too, and --json gives the same groups as the text, with the details unknown."""
    lib = _fx_line(b"/usr/lib/libold.so.1 (deleted)", start=0x7F3A1C500000) + b"\n"
    python = _fx_line(b"/usr/bin/python3.11", 1311500, b"r-xp", 0x55D0C8A00000) + b"\n"
    app, worker = [b"/usr/bin/app", b"-d"], [b"/usr/bin/python3", b"/srv/app/worker.py"]
    for pid, argv, maps in ((20, app, lib), (21, app, lib), (22, worker, python + lib)):
        pid_dir = _fx_write_process(tmp_path, pid, argv, maps)
        os.remove(os.path.join(pid_dir, "stat"))
        os.remove(os.path.join(pid_dir, "status"))
    assert _fx_ok(str(tmp_path)) == (
        '20,21 "/usr/bin/app -d"\n22 "/usr/bin/python3 /srv/app/worker.py"\n')
    result = _fx_run(str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout.decode("ascii"))
    assert [(g["argv"], g["pids"]) for g in doc["groups"]] == [
        (["/usr/bin/app", "-d"], [20, 21]),
        (["/usr/bin/python3", "/srv/app/worker.py"], [22])]


def test_rb_process_whose_main_thread_exited_is_read_through_a_live_thread(
        _live_libz, _live_tmp, _live_spawn):
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    argv = _live_child_argv("leaderexit", copy)
    child = _live_spawn(argv)
    os.unlink(copy)
    for _ in range(500):  # the leader's exit follows its "ready" line
        with open("/proc/%d/stat" % child.pid, "rb") as f:
            if f.read().rpartition(b")")[2].split()[0] == b"Z":
                break
        time.sleep(0.01)
    with open("/proc/%d/maps" % child.pid, "rb") as maps:
        assert maps.read() == b""  # the case: nothing to see through the leader
    result = _rb_run(["-s", "-p", str(child.pid)])
    line = _live_line_for(result.stdout, child.pid)
    assert line == '%d "%s" uses %s' % (child.pid, _live_argv_text(argv), copy), result
    doc = json.loads(_rb_run(["--json", "-p", str(child.pid)]).stdout)
    assert [f["path"] for f in doc["processes"][0]["files"]] == [copy]
    assert doc["processes"][0]["argv"] == argv


def test_rb_trailing_empty_arguments_are_kept(_live_libz, _live_tmp, _live_spawn):
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    argv = _live_child_argv("lib", copy, "x", "")
    child = _live_spawn(argv)
    os.unlink(copy)
    line = _live_line_for(_rb_run(["-p", str(child.pid)]).stdout, child.pid)
    assert line.endswith(" x ''\""), line
    doc = json.loads(_rb_run(["--json", "-p", str(child.pid)]).stdout)
    assert doc["groups"][0]["argv"] == argv


# ---- bounded time ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_rb_watchdog_leaves_a_stalled_item_behind_and_goes_on(workers):
    # The watchdog on its own, with work that really blocks: item 2 reads a pipe that
    # nobody writes to until the end.
    read_end, write_end = os.pipe()
    try:
        def work(item):
            if item == 2:
                os.read(read_end, 1)
            return item * 10

        answers, unanswered, not_reached, answered = lib_users._watched(
            work, iter([1, 2, 3, 4]), 0.3, workers=workers)
        assert answers == [(1, None, 10), (3, None, 30), (4, None, 40)]
        assert (unanswered, not_reached, answered) == ([2], [], 3)
    finally:
        os.close(write_end)  # the abandoned worker wakes (end of file) and ends
        os.close(read_end)


@pytest.mark.parametrize("workers", [1, 2])
def test_rb_watchdog_ends_the_whole_run_at_its_bound(workers):
    read_end, write_end = os.pipe()
    try:
        def work(item):
            if item > 1:
                os.read(read_end, 1)
            return item

        answers, unanswered, not_reached, answered = lib_users._watched(
            work, [1, 2, 3, 4, 5], 0.2, total=0.3, workers=workers)
        assert answers == [(1, None, 1)] and answered == 1
        # Where the bound falls between the stalls depends on the clock; that it falls,
        # and that every item is accounted for in order, does not.
        assert not_reached and unanswered + not_reached == [2, 3, 4, 5]
    finally:
        os.close(write_end)
        os.close(read_end)


def test_rb_watchdog_workers_share_the_items_and_answer_in_their_order():
    # Two workers, items taken from a generator as they go: every item is worked on
    # once, and the answers come back in the items' order whoever took them.
    taken = []

    def items():
        for item in range(200):
            taken.append(item)
            yield item

    answers, unanswered, not_reached, answered = lib_users._watched(
        lambda item: item if item % 3 else None, items(), 5, workers=2)
    assert taken == list(range(200)) and answered == 200
    assert answers == [(item, None, item) for item in range(200) if item % 3]
    assert (unanswered, not_reached) == ([], [])


@pytest.mark.parametrize("tree", ["svc-units", "initd-proc", "proc-grouping"])
def test_rb_scan_with_two_workers_finds_what_one_finds(monkeypatch, tree):
    how = lib_users.ScanOptions(details=True, services=True, scripts=True)
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(lib_users, "_scan_workers", lambda: workers)
        results.append(lib_users.scan(os.path.join(TESTDATA, tree), how))
    assert results[0] == results[1] and results[0].findings
    pids = [finding.pid for finding in results[1].findings]
    assert pids == sorted(set(pids))  # each process once, in PID order


def test_rb_two_workers_find_every_live_process_once(monkeypatch, _live_libz, _live_tmp,
                                                      _live_spawn):
    # Real processes, half of them mapping a deleted copy of libz, among every other
    # process of the machine: both workers take PIDs from one listing of /proc.
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    stale = [_live_spawn(_live_child_argv("lib", copy)) for _ in range(10)]
    os.unlink(copy)
    fresh = [_live_spawn(_live_child_argv("lib", _live_libz)) for _ in range(10)]
    ours = {child.pid for child in stale + fresh}
    for workers in (1, 2):
        monkeypatch.setattr(lib_users, "_scan_workers", lambda: workers)
        result = lib_users.scan()
        found = [finding for finding in result.findings if finding.pid in ours]
        assert [f.pid for f in found] == sorted(child.pid for child in stale), workers
        assert all(list(f.files) == [copy] for f in found), workers
        assert result.scanned >= len(ours), workers


def test_rb_watchdog_raises_what_reading_the_items_raised():
    def items():
        yield 1
        raise OSError(errno.EIO, "Input/output error")

    for timeout in (None, 5):
        with pytest.raises(OSError, match="Input/output"):
            lib_users._watched(lambda item: item, items(), timeout, workers=2)


def test_rb_watchdog_passes_errors_through():
    answers, unanswered, _, answered = lib_users._watched(lambda item: 1 // item, [1, 0], 5)
    assert answers[0] == (1, None, 1) and unanswered == [] and answered == 2
    assert answers[1][0] == 0 and isinstance(answers[1][1], ZeroDivisionError)
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_process_files(2 ** 22 + 1)  # no such PID: the API's own error


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e9", ""])
def test_rb_timeout_must_be_seconds(capsysbinary, value):
    status, out, err = _rb_in_process(capsysbinary, ["--timeout", value])
    assert status == 2 and out == b"", (status, out, err)
    assert err.startswith(b"lib_users: --timeout takes a number of seconds"), err


# ==== detection =========================================================================
# Most of these tests use real processes, for what only the kernel can show. Each test
# starts its own children (Python processes that map a private copy of a real
# shared library, or a copy of a real executable), changes the file under them the way an
# upgrade does, checks in /proc/PID/maps that the kernel really shows what the test is
# about, and runs the lib_users command on the live /proc. Other processes on the machine
# may be reported too; the assertions are about the children's PIDs and lines only.


@pytest.fixture
def _svc_tmp():
    path = tempfile.mkdtemp(prefix="lib_users_svc_")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def _svc_children():
    children = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()  # by its PID
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def _svc_spawn(children, argv, cwd=None):
    """Start a child that prints `ready` once set up, then reads stdin until killed."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
    children.append(child)
    line = child.stdout.readline()
    assert line.strip() == b"ready", line
    return child


def _svc_files(pid, *args):
    doc = _svc_json("-p", str(pid), *args)
    assert [p["pid"] for p in doc["processes"]] == [pid]
    return {f["path"]: f for f in doc["processes"][0]["files"]}


def _live_wait_exe(proc, path):
    """Wait until the child has exec'd `path` and sleeps: its /proc/PID/exe points there
    and the kernel has mapped the file (exe changes before the ELF loader maps it)."""
    name = _live_maps_name(path, False)
    deadline = time.monotonic() + _LIVE_STARTUP_LIMIT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open("/proc/%d/stat" % proc.pid, "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
            if (state == b"S" and os.readlink("/proc/%d/exe" % proc.pid) == path
                    and _live_maps_line(proc.pid, name) is not None):
                return
        except OSError:
            pass
        time.sleep(0.01)
    pytest.fail("child %d did not start %s" % (proc.pid, path))


def _live_reported_pids(stdout):
    """Every PID listed at the head of a text-output line (run with -v)."""
    pids = set()
    for line in _live_text_lines(stdout):
        head, sep, _rest = line.partition(' "')
        if sep and all(p.isdigit() for p in head.split(",")):
            pids.update(int(p) for p in head.split(","))
    return pids


def _live_json_process(stdout, pid):
    """The --json "processes" entry of `pid`, or None."""
    doc = json.loads(stdout.decode("ascii"))
    for process in doc["processes"]:
        if process["pid"] == pid:
            return process
    return None


# ---- deleted mappings ------------------------------------------------------------------


def _live_machine_line(stdout, pid):
    """The -m line (PIDS;FILES;ARGV) whose PIDs hold `pid`, split in three, or None."""
    for line in _live_text_lines(stdout):
        fields = line.split(";", 2)
        if len(fields) == 3 and str(pid) in fields[0].split(","):
            return fields
    return None


def test_live_deleted_library_is_reported(_live_libz, _live_tmp, _live_spawn):
    child, copy = _live_stale_child(_live_spawn, _live_tmp, _live_libz)
    argv = _live_child_argv("lib", copy)
    pid = str(child.pid)
    expected = '%d "%s"' % (child.pid, _live_argv_text(argv))

    result = _live_run("-v")  # a full scan finds it among all processes
    assert result.returncode == 0
    assert _live_line_for(result.stdout, child.pid) == expected

    result = _live_run("-v", "-p", pid)
    assert result.returncode == 0
    assert _live_line_for(result.stdout, child.pid) == expected

    result = _live_run("-v", "-s", "-p", pid)
    assert result.returncode == 0
    assert _live_line_for(result.stdout, child.pid) == expected + " uses " + copy

    result = _live_run("--json", "-p", pid)
    assert result.returncode == 0
    group = _live_json_group(result.stdout, child.pid)
    assert group is not None
    assert (group["argv"], group["pids"], group["files"]) == (argv, [child.pid], [copy])
    process = _live_json_process(result.stdout, child.pid)
    assert process is not None and process["argv"] == argv
    assert [(f["path"], f["kind"], f["replaced"]) for f in process["files"]] == [
        (copy, "library", False)]

    result = _live_run("-m", "-p", pid)
    assert result.returncode == 0
    assert _live_machine_line(result.stdout, child.pid) == [
        pid, copy, _live_argv_text(argv)]


def test_live_deleted_library_after_long_maps_is_reported(_live_libz, _live_tmp,
                                                          _live_spawn):
    # Big processes (browsers, JVMs) have maps files of hundreds of KiB, and a deleted
    # library can be listed anywhere in them.
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    child = _live_spawn(_live_child_argv("longmaps", copy, "3000"))
    os.unlink(copy)
    maps = _live_maps(child.pid)
    assert maps.find(_live_maps_name(copy, True)) > 65536  # far past the first read()

    result = _live_run("-v", "-s", "-p", str(child.pid))
    assert result.returncode == 0
    line = _live_line_for(result.stdout, child.pid)
    assert line is not None, "child %d not reported" % child.pid
    assert line.endswith(" uses %s" % copy)

    # The same through --proc, a tree that holds only a link to the child's /proc/PID.
    proc = os.path.join(_live_tmp, "proc")
    os.mkdir(proc)
    os.symlink("/proc/%d" % child.pid, os.path.join(proc, str(child.pid)))
    result = _live_run("--proc", proc, "-s")
    assert (result.returncode, result.stderr) == (0, b""), result
    out = result.stdout.decode()
    assert out.startswith("%d " % child.pid) and out.endswith(" uses %s\n" % copy), out
    assert out.count("\n") == 1, out


def test_live_deleted_library_with_newline_in_name_is_reported(_live_libz, _live_tmp,
                                                              _live_spawn):
    # The kernel writes the newline as \012 in maps; lib_users shows it as \n.
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "lib\nz.so.1"))
    child = _live_spawn(_live_child_argv("lib", copy))
    os.unlink(copy)
    assert _live_maps_line(child.pid, _live_maps_name(copy, True)) is not None

    result = _live_run("--json", "-p", str(child.pid))
    assert result.returncode == 0
    group = _live_json_group(result.stdout, child.pid)
    assert group is not None and group["files"] == [copy]

    result = _live_run("-v", "-s", "-p", str(child.pid))
    line = _live_line_for(result.stdout, child.pid)
    assert line is not None and line.endswith(" uses %s" % copy.replace("\n", "\\n"))


def test_live_one_deleted_inode_in_many_processes(_live_libz, _live_tmp, _live_spawn):
    """What map_files tells of an inode is shared between the processes that map it:
    each of them is still reported, with the file's size. Only an inode with no link
    left spares the lookup of "PATH (deleted)": a deleted name whose inode keeps another
    link is looked up, and reported too."""
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    linked = _live_copy(_live_libz, os.path.join(_live_tmp, "libz-linked.so.1"))
    os.link(linked, os.path.join(_live_tmp, "libz-other-name.so.1"))
    children = [_live_spawn(_live_child_argv("lib", copy)) for _ in range(3)]
    children.append(_live_spawn(_live_child_argv("lib", linked)))
    os.unlink(copy)
    os.unlink(linked)
    pids = [child.pid for child in children]

    result = _live_run("--json", "-p", ",".join(map(str, pids)))
    assert result.returncode == 0
    size = os.path.getsize(_live_libz)
    for pid in pids[:3]:
        files = _live_json_process(result.stdout, pid)["files"]
        assert [(f["path"], f["kind"], f["size"], f["replaced"]) for f in files] == [
            (copy, "library", size, False)]
    files = _live_json_process(result.stdout, pids[3])["files"]
    assert [(f["path"], f["size"]) for f in files] == [(linked, size)]

    result = _live_run("-v", "-p", ",".join(map(str, pids)))
    assert result.returncode == 0
    assert _live_reported_pids(result.stdout) == set(pids)


def test_live_deleted_executable_is_reported(_live_tmp, _live_spawn):
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("needs the sleep command")
    copy = _live_copy(os.path.realpath(sleep), os.path.join(_live_tmp, "sleep"), 0o755)
    child = _live_spawn([copy, "300"], ready=False)
    _live_wait_exe(child, copy)
    os.unlink(copy)
    assert _live_maps_line(child.pid, _live_maps_name(copy, True)) is not None

    result = _live_run("-v", "-p", str(child.pid))
    assert result.returncode == 0
    assert _live_line_for(result.stdout, child.pid) == '%d "%s 300"' % (child.pid, copy)

    result = _live_run("--json", "-p", str(child.pid))
    assert result.returncode == 0
    group = _live_json_group(result.stdout, child.pid)
    assert group is not None and copy in group["files"]
    process = _live_json_process(result.stdout, child.pid)
    assert process is not None
    assert (copy, "executable") in [(f["path"], f["kind"]) for f in process["files"]]


# ---- kept files ------------------------------------------------------------------------


def test_live_kept_library_is_not_reported(_live_libz, _live_tmp, _live_spawn):
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    child = _live_spawn(_live_child_argv("lib", copy))
    assert _live_maps_line(child.pid, _live_maps_name(copy, False)) is not None

    result = _live_run("-v")
    assert result.returncode == 0
    assert child.pid not in _live_reported_pids(result.stdout)
    result = _live_run("--json", "-p", str(child.pid))
    assert result.returncode == 0
    assert _live_json_group(result.stdout, child.pid) is None
    assert _live_json_process(result.stdout, child.pid) is None


# ---- replaced or removed ---------------------------------------------------------------


_SVC_LOADER = ("import ctypes, sys\nctypes.CDLL(sys.argv[1])\n"
               "print('ready', flush=True)\nsys.stdin.readline()\n")


def _svc_load_copy(children, tmp):
    lib = os.path.join(tmp, "libz.so.1")
    shutil.copyfile(find_libz() or pytest.skip("no libz.so.1 to copy"), lib)
    child = _svc_spawn(children, [sys.executable, "-c", _SVC_LOADER, lib])
    with open("/proc/%d/maps" % child.pid) as maps:
        assert lib in maps.read()
    return child, lib


@_SVC_LIVE
def test_svc_live_library_removed(_svc_children, _svc_tmp):
    child, lib = _svc_load_copy(_svc_children, _svc_tmp)
    os.unlink(lib)
    files = _svc_files(child.pid)
    assert files[lib]["kind"] == "library"
    assert files[lib]["replaced"] is False


def test_live_library_replaced_by_rename_is_reported(_live_libz, _live_tmp, _live_spawn):
    # What a package manager does: write the new file next to the old, rename it over.
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    child = _live_spawn(_live_child_argv("lib", copy))
    result = _live_run("--json", "-p", str(child.pid))
    assert _live_json_process(result.stdout, child.pid) is None  # nothing to report yet
    new = _live_copy(_live_libz, copy + ".dpkg-new")
    os.rename(new, copy)
    assert _live_maps_line(child.pid, _live_maps_name(copy, True)) is not None

    result = _live_run("-v", "-s", "-p", str(child.pid))
    assert result.returncode == 0
    line = _live_line_for(result.stdout, child.pid)
    assert line is not None, "child %d not reported" % child.pid
    assert line.endswith(" uses %s" % copy)

    result = _live_run("--json", "-p", str(child.pid))
    process = _live_json_process(result.stdout, child.pid)
    assert process is not None
    assert [(f["path"], f["kind"], f["replaced"]) for f in process["files"]] == [
        (copy, "library", True)]


# ---- chroots and mount namespaces ------------------------------------------------------


# Maps and fd links name a file relative to the reader's root where it can reach it: a
# process chrooted in lib_users's own mount namespace shows host paths, one in another
# mount namespace its own. These children load a private libz and a kept file named
# "libk.so.1 (deleted)", hold a data file open, then (for a chroot) chroot into the
# temp dir; they run as a script file, so --scripts looks at them too.
_NS_CHILD = """
import ctypes, os, sys
lib, kept, data, root = sys.argv[1:5]
keep = [ctypes.CDLL(lib), ctypes.CDLL(kept), open(data)]
if root != "-":
    os.chroot(root)
    os.chdir("/")
sys.stdout.write("ready" + chr(10))
sys.stdout.flush()
sys.stdin.read()
"""


_NS_KEPT = "libk.so.1 (deleted)"


def _ns_require(*tools):
    if os.geteuid() != 0:
        pytest.skip("needs root: chroot and unshare")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip("needs %s" % tool)
    if "unshare" in tools and subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("unshare -m is not permitted here")


def _ns_populate(directory, libz):
    """The child's files in `directory`: libz.so.1, the kept file, data.txt, child.py."""
    _live_copy(libz, os.path.join(directory, "libz.so.1"))
    _live_copy(libz, os.path.join(directory, _NS_KEPT))
    with open(os.path.join(directory, "data.txt"), "w") as out:
        out.write("data\n")
    with open(os.path.join(directory, "child.py"), "w") as out:
        out.write(_NS_CHILD)


def _ns_child_args(directory, root="-"):
    return [os.path.join(directory, "child.py"), os.path.join(directory, "libz.so.1"),
            os.path.join(directory, _NS_KEPT), os.path.join(directory, "data.txt"), root]


def _ns_replace(path):
    """Replace `path` as a package manager does: write a new file, rename it over."""
    shutil.copyfile(path, path + ".dpkg-new")
    os.rename(path + ".dpkg-new", path)


def _ns_files(pid, *args):
    """{path: (kind, replaced)} of what lib_users --json reports for `pid`."""
    result = _live_run("--json", "-p", str(pid), *args)
    assert result.returncode == 0, result.stderr
    process = _live_json_process(result.stdout, pid)
    return {} if process is None else {
        f["path"]: (f["kind"], f["replaced"]) for f in process["files"]}


def _ns_check_files(pid, shown, there):
    """What a user checks for a child: nothing reported while all is as it was (the kept
    file included); a library replaced by rename reported with replaced true, one
    removed with false; a deleted open file with --fds. `shown` is the directory as
    lib_users names it, `there` where the test reaches it."""
    assert _ns_files(pid) == {}
    assert _ns_files(pid, "--scripts") == {}
    assert _ns_files(pid, "--fds") == {}
    _ns_replace(os.path.join(there, "libz.so.1"))
    assert _ns_files(pid) == {shown + "/libz.so.1": ("library", True)}
    os.unlink(os.path.join(there, "libz.so.1"))
    assert _ns_files(pid) == {shown + "/libz.so.1": ("library", False)}
    os.unlink(os.path.join(there, "data.txt"))
    assert _ns_files(pid, "--fds") == {shown + "/data.txt": ("fd", False)}


def _ns_cat_root(directory, libz):
    """A root for `cat` with libz preloaded: cat and the libraries it needs, copied."""
    cat = os.path.realpath(shutil.which("cat"))
    ldd = subprocess.run(["ldd", cat], stdout=subprocess.PIPE, check=True).stdout.decode()
    needed = [cat] + [word for word in ldd.split() if word.startswith("/")]
    for path in needed:
        for name in {path, os.path.realpath(path)}:
            target = directory + name
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                _live_copy(os.path.realpath(path), target, 0o755)
    _live_copy(libz, os.path.join(directory, "libz.so.1"))
    with open(os.path.join(directory, "data.txt"), "w") as out:
        out.write("data\n")
    return cat


# A container: a tmpfs root with the host's /usr bound in (merged /usr: lib, lib64 and
# bin are links into it) and a /proc for umount, pivot_root into it, the old root
# detached.
_NS_PIVOT = """
set -e
new=$1
mount -t tmpfs lib_users_test "$new"
mkdir "$new/usr" "$new/old" "$new/opt" "$new/proc"
mount --bind /usr "$new/usr"
mount -t proc proc "$new/proc"
ln -s usr/lib "$new/lib"
ln -s usr/lib64 "$new/lib64"
ln -s usr/bin "$new/bin"
cp "$2"/* "$new/opt/"
cd "$new"
pivot_root . old
umount -l /old
exec /usr/bin/python3 /opt/child.py /opt/libz.so.1 "/opt/$3" /opt/data.txt -
"""


def test_live_chroot_in_own_namespace(_live_libz, _live_tmp, _live_spawn):
    # As sshd's privsep child or postfix's smtpd: chrooted after it started.
    _ns_require()
    _ns_populate(_live_tmp, _live_libz)
    child = _live_spawn([sys.executable] + _ns_child_args(_live_tmp, root=_live_tmp))
    assert os.readlink("/proc/%d/root" % child.pid) == _live_tmp
    assert _live_maps_line(child.pid, _live_maps_name(
        os.path.join(_live_tmp, _NS_KEPT), False)) is not None  # host paths in maps
    _ns_check_files(child.pid, _live_tmp, _live_tmp)


def test_live_chroot_in_own_namespace_script_changed(_live_libz, _live_tmp, _live_spawn):
    # Its command line names the script from the root it was started in, ours.
    _ns_require()
    _ns_populate(_live_tmp, _live_libz)
    child = _live_spawn([sys.executable] + _ns_child_args(_live_tmp, root=_live_tmp))
    script = os.path.join(_live_tmp, "child.py")
    assert _ns_files(child.pid, "--scripts") == {}
    with open(script, "a") as out:
        out.write("# version 2\n")
    later = time.time() + 5  # past lib_users's second of grace, without sleeping
    os.utime(script, (later, later))
    assert _ns_files(child.pid, "--scripts") == {script: ("script", True)}


def test_live_unshare_root_in_own_namespace(_live_libz, _live_tmp, _live_spawn):
    # util-linux chroots, then execs cat inside: same mount namespace, host paths.
    _ns_require("unshare", "ldd")
    cat = _ns_cat_root(_live_tmp, _live_libz)
    data = os.open(os.path.join(_live_tmp, "data.txt"), os.O_RDONLY)
    try:
        child = _live_spawn(["unshare", "--root", _live_tmp, cat], ready=False,
                            env={"LD_PRELOAD": "/libz.so.1"}, pass_fds=(data,))
    finally:
        os.close(data)
    _live_wait_exe(child, _live_tmp + cat)
    assert _live_maps_line(child.pid, _live_maps_name(
        os.path.join(_live_tmp, "libz.so.1"), False)) is not None
    assert os.readlink("/proc/%d/ns/mnt" % child.pid) == os.readlink("/proc/self/ns/mnt")
    assert _ns_files(child.pid) == {}
    _ns_replace(os.path.join(_live_tmp, "libz.so.1"))
    assert _ns_files(child.pid) == {_live_tmp + "/libz.so.1": ("library", True)}
    os.unlink(os.path.join(_live_tmp, "libz.so.1"))
    assert _ns_files(child.pid) == {_live_tmp + "/libz.so.1": ("library", False)}
    os.unlink(os.path.join(_live_tmp, "data.txt"))
    assert _ns_files(child.pid, "--fds") == {_live_tmp + "/data.txt": ("fd", False)}


def test_live_private_mount_namespace(_live_libz, _live_tmp, _live_spawn):
    # Its own mount namespace (as systemd sandboxes services), the same files.
    _ns_require("unshare")
    _ns_populate(_live_tmp, _live_libz)
    child = _live_spawn(["unshare", "-m", "--propagation", "private", sys.executable]
                        + _ns_child_args(_live_tmp))
    assert os.readlink("/proc/%d/ns/mnt" % child.pid) != os.readlink("/proc/self/ns/mnt")
    _ns_check_files(child.pid, _live_tmp, _live_tmp)


def test_live_pivot_root_container(_live_libz, _live_tmp, _live_spawn):
    # Paths as the container sees them, looked up through /proc/PID/root.
    _ns_require("unshare", "pivot_root", "mount")
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (with ctypes) for the container")
    files = os.path.join(_live_tmp, "files")
    new_root = os.path.join(_live_tmp, "root")
    os.mkdir(files)
    os.mkdir(new_root)
    _ns_populate(files, _live_libz)
    # The mounts live in the child's namespace only: they go when it is killed.
    child = _live_spawn(["unshare", "-m", "--propagation", "private", "sh", "-c",
                         _NS_PIVOT, "sh", new_root, files, _NS_KEPT])
    there = "/proc/%d/root/opt" % child.pid
    assert os.readlink("/proc/%d/root" % child.pid) == "/"
    assert _live_maps_line(child.pid, b"/opt/libz.so.1") is not None
    assert not os.path.exists("/opt/libz.so.1")  # only in the container
    _ns_check_files(child.pid, "/opt", there)


# ---- scripts ---------------------------------------------------------------------------


_SVC_SCRIPT = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"


def _svc_start_script(children, tmp, name="svc_script.py", cwd=None):
    script = os.path.join(tmp, name)
    with open(script, "w") as out:
        out.write(_SVC_SCRIPT)
    child = _svc_spawn(children, [sys.executable, name if cwd else script], cwd=cwd)
    return child, script


@pytest.mark.parametrize("argv, exe, expected", [
    (["python3", "/srv/app.py", "--port", "80"], "python3.11", "/srv/app.py"),
    (["python3", "-u", "app.py"], "python3", "app.py"),
    (["python3", "-m", "http.server"], "python3", None),
    (["python3", "-c", "import time; time.sleep(9)"], "python3", None),
    (["python3", "-W", "ignore", "app.py"], "python3", "app.py"),
    (["python3", "-Wignore", "app.py"], "python3", "app.py"),
    (["python3", "-X", "dev", "-W", "x", "app.py"], "python3", "app.py"),
    (["python3", "-Im", "venv"], "python3", None),
    (["python3", "-"], "python3", None),
    (["python3"], "python3", None),
    (["python3", "--", "app.py"], "python3", "app.py"),
    (["perl", "-e", "print 1"], "perl", None),
    (["perl", "-w", "tool.pl"], "perl5.36", "tool.pl"),
    (["perl", "-ne", "print", "file"], "perl", None),
    (["perl", "-Ilib", "-Mstrict", "tool.pl"], "perl", "tool.pl"),
    (["perl", "-I", "lib", "tool.pl"], "perl", "tool.pl"),
    (["perl", "-x", "tool.sh"], "perl", "tool.sh"),  # -x[dir]: the dir is attached only
    (["bash", "-ec", "sleep 1"], "bash", None),
    (["bash", "-c", "sleep 1"], "bash", None),
    (["bash", "-e", "/usr/local/bin/job.sh"], "bash", "/usr/local/bin/job.sh"),
    (["bash", "-o", "pipefail", "job.sh"], "bash", "job.sh"),
    (["-bash"], "bash", None),
    (["bash", "-i"], "bash", None),
    (["sh", "/etc/init.d/x", "start"], "dash", "/etc/init.d/x"),
    (["sh", "-c", "x"], "sh", None),
    (["java", "-jar", "app.jar"], "java", "app.jar"),
    (["java", "-Xmx1g", "-cp", "lib/*", "-jar", "/opt/app.jar", "serve"], "java",
     "/opt/app.jar"),
    (["java", "-cp", "app.jar", "com.example.Main"], "java", None),
    (["java", "-jar"], "java", None),
    (["node", "-e", "setTimeout(()=>0, 9)"], "node", None),
    (["node", "--require", "x", "server.js"], "node", "server.js"),
    (["node", "-p", "1"], "nodejs", None),
    (["php", "-f", "index.php"], "php8.2", "index.php"),
    (["php", "-d", "x=1", "cron.php"], "php", "cron.php"),
    (["php", "-r", "echo 1;"], "php", None),
    (["php", "-S", "localhost:8000"], "php", None),  # the built-in web server, no script
    (["php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"], "php-fpm8.2", None),
    (["/usr/bin/app", "x.py"], "app", None),
    (["shellcheck", "x.sh"], "shellcheck", None),
])
def test_svc_script_of(argv, exe, expected):
    assert lib_users.script_of(argv, exe) == expected


@_SVC_LIVE
def test_svc_live_script_changed(_svc_children, _svc_tmp):
    child, script = _svc_start_script(_svc_children, _svc_tmp)
    with open(script, "w") as out:
        out.write(_SVC_SCRIPT + "# version 2\n")
    later = time.time() + 5  # past lib_users's second of grace, without sleeping
    os.utime(script, (later, later))
    files = _svc_files(child.pid, "--scripts")
    assert files == {script: {"path": script, "kind": "script",
                              "size": len(_SVC_SCRIPT) + 12, "replaced": True,
                              "package": None}}  # no package installs files in /tmp
    result = _svc_run("--scripts", "-s", "-p", str(child.pid))
    assert result.stdout == '%d "%s %s" uses %s\n' % (child.pid, sys.executable, script,
                                                     script)
    # Only asked for: without --scripts, interpreters are not looked at.
    assert _svc_run("-s", "-p", str(child.pid)).stdout == ""
    assert _svc_json("-p", str(child.pid))["processes"] == []


@_SVC_LIVE
def test_svc_live_script_unchanged(_svc_children, _svc_tmp):
    child, _script = _svc_start_script(_svc_children, _svc_tmp)
    doc = _svc_json("--scripts", "-p", str(child.pid))
    assert doc["processes"] == [] and doc["groups"] == []
    assert _svc_run("--scripts", "-p", str(child.pid)).stdout == ""


@_SVC_LIVE
def test_svc_live_script_deleted(_svc_children, _svc_tmp):
    child, script = _svc_start_script(_svc_children, _svc_tmp)
    os.unlink(script)
    files = _svc_files(child.pid, "--scripts")
    assert files == {script: {"path": script, "kind": "script", "size": None,
                              "replaced": False, "package": None}}


@_SVC_LIVE
def test_svc_live_relative_script_deleted(_svc_children, _svc_tmp):
    # Looked up from the process's working directory, not lib_users's.
    child, script = _svc_start_script(_svc_children, _svc_tmp, "rel.py", cwd=_svc_tmp)
    assert _svc_json("--scripts", "-p", str(child.pid))["processes"] == []
    os.unlink(script)
    # Shown as the absolute path, joined to its working directory.
    assert _svc_files(child.pid, "--scripts") == {script: {
        "path": script, "kind": "script", "size": None, "replaced": False,
        "package": None}}


@_SVC_LIVE
def test_svc_live_relative_script_changed_is_shown_absolute(_svc_children, _svc_tmp):
    # python3 ./manage.py started in /srv/app: the report names /srv/app/manage.py.
    child, script = _svc_start_script(_svc_children, _svc_tmp, "./manage.py", cwd=_svc_tmp)
    with open(script, "a") as out:
        out.write("# version 2\n")
    later = time.time() + 5
    os.utime(script, (later, later))
    script = os.path.join(_svc_tmp, "manage.py")
    assert _svc_files(child.pid, "--scripts")[script]["replaced"] is True
    result = _svc_run("--scripts", "-s", "-p", str(child.pid))
    assert result.stdout == '%d "%s ./manage.py" uses %s\n' % (child.pid, sys.executable,
                                                               script)


@_SVC_LIVE
def test_svc_live_shell_script_changed(_svc_children, _svc_tmp):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = os.path.join(_svc_tmp, "job.sh")
    with open(script, "w") as out:
        out.write("echo ready\nread -r line\n")
    child = _svc_spawn(_svc_children, [bash, script])
    later = time.time() + 5
    os.utime(script, (later, later))
    assert _svc_files(child.pid, "--scripts")[script]["kind"] == "script"


@_SVC_LIVE
def test_svc_live_bash_c_is_not_a_script(_svc_children):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    child = _svc_spawn(_svc_children, [bash, "-c", "echo ready; read -r line"])
    doc = _svc_json("--scripts", "-p", str(child.pid))
    assert doc["processes"] == []


# ---- false positives -------------------------------------------------------------------


_FX_NEAR_MISSES = (
    "/tmp/libfoo.so",
    "/var/tmp/ffi-bridge.so",
    "/dev/shmem-helper.so",
    "/opt/app/SYSV/libipc.so",
    "/run/nscd/libnss_cache.so",
    "/run/nscd/dbx/a.so",
    "/tmp/ffix/y.so",
    "/tmp/orcexec.d/a.so",
    "/SYSV0052e2c1/libipc.so",
    "/opt/app/jna-1000/libjnidispatch.so",
    "/drm/libdrm_amdgpu.so.1",
    _FX_LIBDIR + "libssl.so.3",
)


def _fx_example_name(kind, pattern, star="x7Qz"):
    """A concrete name that an entry of FALSE_POSITIVES matches: each set stands for
    its first member."""
    if kind == "literal":
        return pattern
    name = re.sub(r"\[!?(.)[^]]*\]", r"\1", pattern).replace("*", star).replace("?", "q")
    return name if name.startswith("/") else "/tmp" + name[len(star):]


# Entries that ignore whatever lies below them, on purpose: every memfd is anonymous,
# and POSIX shared memory lives at any depth below /dev/shm.
_FX_WHOLE_TREES = ("/memfd:*", "/dev/shm/*")


# JNA's jna<digits>.tmp cannot be said without a star in the middle, which takes '/'
# too: that entry also takes a *.tmp file below a directory named jna<digit>..., which
# no package installs.
_FX_MIDDLE_STAR_ALLOWED = ("*/jna[0-9]*.tmp",)


_FX_HOSTILE_GLOBS = r"""
import sys
sys.path.insert(0, sys.argv[1])
import lib_users
parts = ("/", "*", "?", "[", "]", "a", "/memfd:", "/dev/shm/", "/tmp/ffi", "orcexec.",
         "/jna1", ".tmp", "/SYSV", "db", "**/", "[!a]")
names = [("/" + part * 4096)[:4096] for part in parts]
names += [("/a" * 2048)[:4095] + "c", ("/" + "jna1/" * 900)[:4092] + ".tmp",
          "/memfd:" + "/*" * 2044, "/dev/shm" + "/a?" * 1362]
# Names that pass every literal head and tail of a table entry, then fail or match
# only at the end: where a backtracking matcher does its worst.
filler = "/jna1/orcexec./db/ffi*?[a]" * 150
for _, pattern, _ in lib_users.FALSE_POSITIVES:
    head, _, tail = pattern.replace("[A-Za-z0-9]", "a").replace("[0-9a-f]", "0") \
        .replace("[0-9]", "1").partition("*")
    names += [(head + filler)[:4096 - len(tail)] + tail,
              (head + filler)[:4095 - len(tail)] + "/" + tail]
patterns = [p for _, p, _ in lib_users.FALSE_POSITIVES]
patterns += ["*a" * 100 + "*b", "*/" * 100 + "x", "**" * 200 + "/*b", "*?" * 100 + "c",
             "/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*.so", "*[!a]*[!a]*[!a]*" * 20 + "q",
             "*" + "/a" * 60 + "*" + "/a" * 60 + "*c", "**a" * 30 + "**b**c",
             "/**/" * 40 + "*.tmp"]
count = 0
for name in names:
    for pattern in patterns:
        lib_users.glob_match(pattern, name)
        count += 1
print(count)
"""


@pytest.fixture
def _live_shm_path():
    """A fresh name under /dev/shm, removed afterwards if it still exists."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("needs /dev/shm")
    path = "/dev/shm/lib_users_live_%d_%d" % (os.getpid(), time.monotonic_ns())
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def test_fx_false_positives_fixture_keeps_only_real_files():
    """Every false positive in a real-looking maps file is dropped; deleted files with
    similar names (in /tmp, next to /dev/shm, ...) are reported."""
    found = lib_users.deleted_mappings(_fx_maps("false-positives"))
    assert set(found) == set(_FX_NEAR_MISSES)


def test_fx_false_positives_fixture_covers_the_whole_table():
    """An entry added to FALSE_POSITIVES needs an example in the fixture."""
    mappings = lib_users.parse_maps(_fx_maps("false-positives"))
    names = [m.path for m in mappings if m.deleted]
    for entry in lib_users.FALSE_POSITIVES:
        assert any(lib_users.is_ignored(name, (entry,)) for name in names), entry


@pytest.mark.parametrize("entry", lib_users.FALSE_POSITIVES, ids=lambda e: e[1])
def test_fx_each_false_positive_is_dropped(entry):
    kind, pattern, reason = entry
    name = _fx_example_name(kind, pattern)
    assert lib_users.is_ignored(name, (entry,)) == reason
    assert lib_users.is_ignored(name)  # with the whole table
    data = (_fx_line(name.encode() + b" (deleted)", 501, b"rw-s") + b"\n"
            + _fx_line(b"/tmp/libfoo.so (deleted)", 502, start=0x7F3A1C500000) + b"\n")
    assert list(lib_users.deleted_mappings(data)) == ["/tmp/libfoo.so"]


@pytest.mark.parametrize("entry", lib_users.FALSE_POSITIVES, ids=lambda e: e[1])
def test_fx_no_false_positive_hides_a_library(entry):
    """`*` and `?` match '/', so an entry that is too loose would ignore a library in a
    directory of a matching name: each entry matches only what its program creates."""
    kind, pattern, _ = entry
    if pattern in _FX_WHOLE_TREES:
        return
    name = _fx_example_name(kind, pattern)
    libraries = [name + "/libfoo.so.1", name + "/lib/libssl.so.3",
                 name[:-3] + "/ab"]  # as long as a match, with a '/' in the last part
    if "*" in pattern[1:] and pattern not in _FX_MIDDLE_STAR_ALLOWED:
        libraries.append(_fx_example_name(kind, pattern, "x/lib/libfoo.so"))
    for library in libraries:
        assert lib_users.is_ignored(library, (entry,)) is None, library


def test_fx_false_positives_with_slashes_in_their_names():
    """Issue 12: names seen on real machines with '/' after the part that says what
    they are."""
    for name in ("/memfd:/.glD3fk2a", "/memfd:/.nvidia_drv.Xq81Lz", "/memfd:a/b/c",
                 "/drm", "/dev/shm/jack-1000/default/jack-shm-registry",
                 "/dev/shm/a/b/c/d", "/tmp/jna--1968219957/jna5713984829126186522.tmp",
                 "/root/.cache/JNA/temp/jna17.tmp", "/home/ana/orcexec.p0Rt7c"):
        assert lib_users.is_ignored(name), name
    for name in ("/drm/libdrm.so.2", "/tmp/ffi/libffi.so.8", "/tmp/ffiabcdefg",
                 "/var/run/nscd/db/libx.so", "/SYSV0000001/x", "/tmp/jna/libjna.so",
                 "/tmp/jnaXYZ.tmp"):
        assert lib_users.is_ignored(name) is None, name


def test_fx_glob_match_agrees_with_fnmatchcase():
    """The matcher answers as fnmatch.fnmatchcase, the documented rule (`*` and `?`
    match '/'), on random patterns and names over the characters that mean something
    to either, sets with ranges, '!' and ']' in odd places included."""
    import fnmatch
    rng = random.Random(15)
    for alphabet in ("ab/*?[]!-", "az0/-[]!*?^\\", "!-[]a/"):
        for _ in range(20000):
            pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            name = "".join(rng.choice(alphabet + "xz") for _ in range(rng.randint(0, 10)))
            assert lib_users.glob_match(pattern, name) == fnmatch.fnmatchcase(name, pattern), (
                pattern, name)


def test_fx_glob_match_is_bounded_on_hostile_names_and_patterns():
    """Issue 15: a crafted 4096-byte name made the old backtracking matcher run for
    minutes. Every table entry and many-star -i patterns against such names finish
    together well inside the time limit (a hang fails the test, not a slow run)."""
    result = subprocess.run([sys.executable, "-c", _FX_HOSTILE_GLOBS, HERE],
                            stdout=subprocess.PIPE, timeout=10)
    assert result.returncode == 0 and int(result.stdout) > 1000


def test_fx_hostile_name_and_patterns_through_the_command_line(tmp_path):
    """The same, as a user meets it: a process maps a deleted file with a crafted long
    name, the scan runs with many-star -i patterns, and the file is still reported."""
    name = b"/opt/app/" + b"a/" * 2000 + b"lib.so"
    maps = _fx_line(name + b" (deleted)") + b"\n"
    _fx_write_process(tmp_path, 4100, [b"/usr/bin/app"], maps)
    args = [sys.executable, _CLI_SCRIPT, "--proc", str(tmp_path), "-s", "-m"]
    for pattern in ("*a" * 100 + "*b", "*/" * 300 + "x", "**" * 200 + "q",
                    "**a" * 30 + "**z**.so", "/opt/**/" * 20 + "*.so.1"):
        args += ["-i", pattern]
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=20)
    assert result.returncode == 0, result.stderr
    assert os.fsencode("lib.so") in result.stdout


def test_fx_tmp_is_not_ignored_as_a_whole():
    for name in ("/tmp/libfoo.so", "/tmp/build/lib/libcrypto.so.3", "/tmp/a.out"):
        assert lib_users.is_ignored(name) is None, name
    # FALSE_POSITIVES holds no entry that swallows a whole directory
    assert not any(lib_users.is_ignored(prefix + "libx.so") for prefix in
                   ("/tmp/", "/run/user/1000/", "/var/run/", "/dev/", "/"))


def test_fx_kernel_threads_zombies_and_false_positives_are_not_reported():
    out = _fx_ok("proc-basic", "-m")
    pids = {int(pid) for line in out.splitlines() for pid in line.split(";")[0].split(",")}
    # not 1 (clean), 2 (kthreadd), 1290 and 1340 (shared memory only), 2002 (zombie)
    assert pids == {612, 845, 1502}


def test_fx_file_really_named_deleted_is_not_reported(tmp_path):
    """maps cannot tell a deleted file from one named "x (deleted)": lib_users looks the
    name up inside the process's root and reports it only if it is not the mapped file."""
    rootfs = tmp_path / "rootfs" / "opt" / "app"
    rootfs.mkdir(parents=True)
    real = rootfs / "libreal.so (deleted)"  # really named so, and still there
    real.write_bytes(b"\0" * 64)
    other = rootfs / "libswap.so (deleted)"  # that name now leads to another file
    other.write_bytes(b"\0" * 64)

    def line(name, st, inode=None):
        dev = b"%02x:%02x" % (os.major(st.st_dev), os.minor(st.st_dev))
        return _fx_line(name, st.st_ino if inode is None else inode, dev=dev) + b"\n"

    st_real, st_other = os.stat(str(real)), os.stat(str(other))
    maps = (line(b"/opt/app/libreal.so (deleted)", st_real)
            + line(b"/opt/app/libswap.so (deleted)", st_other, st_other.st_ino + 1)
            + line(b"/opt/app/libgone.so (deleted)", st_real, 4242))
    proc = tmp_path / "proc"
    pid_dir = _fx_write_process(proc, 900, [b"/opt/app/bin/server"], maps, b"server")
    os.symlink(str(tmp_path / "rootfs"), os.path.join(pid_dir, "root"))
    out = _fx_ok(str(proc), "-s")
    assert out == ('900 "/opt/app/bin/server" uses '
                   '/opt/app/libgone.so,/opt/app/libswap.so\n')


def test_fx_real_shm_at_depth_and_memfd_with_slash_are_not_reported(fx_named_child, tmp_path):
    """The kernel shows a memfd's name as given, '/' included, and shared memory below
    /dev/shm at any depth as deleted: neither is reported; the deleted file next to
    them is."""
    child, report, lib = fx_named_child
    with open("/proc/%d/maps" % child.pid, "rb") as maps:
        data = maps.read()
    assert b" /memfd:/.glA1b2C3 (deleted)\n" in data
    assert os.fsencode(report["shm"]) + b" (deleted)\n" in data
    proc = tmp_path / "proc"
    proc.mkdir()
    os.symlink("/proc/%d" % child.pid, str(proc / str(child.pid)))
    out = _fx_ok(str(proc), "-s")
    assert out.startswith("%d " % child.pid) and out.endswith(" uses %s\n" % lib), out
    (finding,) = lib_users.scan(pids=[child.pid]).findings
    assert set(finding.files) == {lib}


@pytest.mark.parametrize("name", ["libz.so.1 (deleted)", "lib\nz.so.1 (deleted)"],
                         ids=["plain", "newline"])
def test_live_file_really_named_deleted_is_not_reported(_live_libz, _live_tmp,
                                                       _live_spawn, name):
    # In maps, a kept file named "X (deleted)" looks exactly like a deleted file X.
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, name))
    child = _live_spawn(_live_child_argv("lib", copy))
    assert _live_maps_line(child.pid, _live_maps_name(copy, False)) is not None
    assert os.path.exists(copy)

    result = _live_run("-v", "-p", str(child.pid))
    assert result.returncode == 0
    assert child.pid not in _live_reported_pids(result.stdout)


def test_live_executable_memfd_is_not_reported(_live_spawn):
    child = _live_spawn(_live_child_argv("memfd"))
    line = _live_maps_line(child.pid, b"/memfd:lib_users_live (deleted)")
    assert line is not None and line.split()[1].startswith(b"r-x")

    result = _live_run("-v", "-p", str(child.pid))
    assert result.returncode == 0
    assert child.pid not in _live_reported_pids(result.stdout)


def test_live_deleted_dev_shm_mapping_is_not_reported(_live_spawn, _live_shm_path):
    child = _live_spawn(_live_child_argv("shm", _live_shm_path))
    assert not os.path.exists(_live_shm_path)
    assert _live_maps_line(child.pid, _live_maps_name(_live_shm_path, True)) is not None

    result = _live_run("-v", "-p", str(child.pid))
    assert result.returncode == 0
    assert child.pid not in _live_reported_pids(result.stdout)


# ==== grouping and output formats =======================================================


def _fx_groups(doc):
    """The groups of a --json document, with the fields this file checks."""
    return [{key: g[key] for key in ("argv", "pids", "files")} for g in doc["groups"]]


_FX_BASIC_TEXT = (
    '612 "/usr/sbin/cron -f"\n'
    '845 "/usr/sbin/sshd -D"\n'
    '1502 "[backupd]"\n'
)


# ---- text, -s and -m -------------------------------------------------------------------


def test_fx_text_output():
    """`PIDS "ARGV"`; a process with an empty argument list shows [comm], as ps does;
    the kernel thread, the zombie, shared memory and clean processes are not shown."""
    assert _fx_ok("proc-basic") == _FX_BASIC_TEXT


def test_fx_showlibs():
    assert _fx_ok("proc-basic", "-s") == (
        '612 "/usr/sbin/cron -f" uses %slibc.so.6,/usr/sbin/cron\n'
        '845 "/usr/sbin/sshd -D" uses %slibcrypto.so.3,%slibssl.so.3\n'
        '1502 "[backupd]" uses %slibzstd.so.1.5.4\n'
    ) % ((_FX_LIBDIR,) * 4)
    assert _fx_ok("proc-basic", "--showlibs") == _fx_ok("proc-basic", "-s")


def test_fx_machine_readable():
    assert _fx_ok("proc-basic", "-m") == (
        "612;%slibc.so.6,/usr/sbin/cron;/usr/sbin/cron -f\n"
        "845;%slibcrypto.so.3,%slibssl.so.3;/usr/sbin/sshd -D\n"
        "1502;%slibzstd.so.1.5.4;[backupd]\n"
    ) % ((_FX_LIBDIR,) * 4)


def test_fx_grouping_by_exact_argument_list():
    """`sh -c 'a b'` and `sh -c a b` are different commands: two groups, quoted so that
    a reader sees which is which."""
    lines = _fx_ok("proc-grouping").splitlines()
    assert lines[0] == '4101 "/bin/sh -c /opt/app/bin/sync --all"'
    assert lines[1] == "4100 \"/bin/sh -c '/opt/app/bin/sync --all'\""
    groups = _fx_json("proc-grouping")["groups"]
    assert [g["argv"] for g in groups[:2]] == [
        ["/bin/sh", "-c", "/opt/app/bin/sync", "--all"],
        ["/bin/sh", "-c", "/opt/app/bin/sync --all"],
    ]


def test_fx_more_than_five_processes_are_counted():
    assert _fx_ok("proc-grouping") == (
        '4101 "/bin/sh -c /opt/app/bin/sync --all"\n'
        "4100 \"/bin/sh -c '/opt/app/bin/sync --all'\"\n"
        '6 processes "/usr/bin/python3 /srv/app/worker.py --queue default"\n'
        "7,501,502,5003,50004 \"'php-fpm: pool www'\"\n"  # five: listed, numerically
    )


def test_fx_verbose_lists_every_pid_ascending():
    for flag in ("-v", "--verbose"):
        lines = _fx_ok("proc-grouping", flag).splitlines()
        assert lines[2] == ('98,99,100,1000,1001,20000 '
                            '"/usr/bin/python3 /srv/app/worker.py --queue default"')
        assert lines[3].startswith("7,501,502,5003,50004 ")


def test_fx_setproctitle_titles_group_together():
    """A title with NUL padding, one trailing NUL, or none at all is the same title."""
    groups = _fx_groups(_fx_json("proc-grouping"))
    assert groups[3] == {"argv": ["php-fpm: pool www"], "pids": [7, 501, 502, 5003, 50004],
                         "files": [_FX_LIBDIR + "libxml2.so.2.9.14"]}


def test_fx_showlibs_lists_the_files_of_the_whole_group_sorted():
    line = _fx_ok("proc-grouping", "-s").splitlines()[2]
    assert line == (
        '6 processes "/usr/bin/python3 /srv/app/worker.py --queue default" uses '
        "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so,"
        "%slibcrypto.so.3,%slibssl.so.3" % (_FX_LIBDIR, _FX_LIBDIR))


def test_fx_machine_readable_lists_every_pid():
    lines = _fx_ok("proc-grouping", "-m").splitlines()
    assert lines[2] == (
        "98,99,100,1000,1001,20000;"
        "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so,"
        "%slibcrypto.so.3,%slibssl.so.3;"
        "/usr/bin/python3 /srv/app/worker.py --queue default" % (_FX_LIBDIR, _FX_LIBDIR))
    assert lines[3] == "7,501,502,5003,50004;%slibxml2.so.2.9.14;'php-fpm: pool www'" % (
        _FX_LIBDIR)


@pytest.mark.parametrize("args", [(), ("-v", "-s"), ("-m",), ("--json",)])
def test_fx_output_is_deterministic(tmp_path, args):
    """The same processes give the same output, whatever order the directory lists
    them in: copy the tree PID by PID, highest first."""
    first = _fx_run("proc-grouping", *args)
    again = _fx_cli("--proc", os.path.join(TESTDATA, "proc-grouping"), *args)
    assert again.stdout == first.stdout
    source = os.path.join(TESTDATA, "proc-grouping")
    copy = tmp_path / "proc"
    copy.mkdir()
    for name in sorted(os.listdir(source), key=lambda n: -int(n) if n.isdigit() else 0):
        src = os.path.join(source, name)
        if os.path.isdir(src):
            shutil.copytree(src, str(copy / name), symlinks=True)
        else:
            shutil.copy(src, str(copy / name))
    assert _fx_run(str(copy), *args).stdout == first.stdout


def test_live_argv_is_quoted_and_escaped(_live_libz, _live_tmp, _live_spawn):
    child, copy = _live_stale_child(_live_spawn, _live_tmp, _live_libz, "x y", "\x1b[31m")

    result = _live_run("-v", "-p", str(child.pid))
    assert result.returncode == 0
    assert b"\x1b" not in result.stdout
    line = _live_line_for(result.stdout, child.pid)
    assert line is not None, "child %d not reported" % child.pid
    assert line.endswith(""" 'x y' \\x1b[31m\"""")

    result = _live_run("--json", "-p", str(child.pid))
    assert b"\x1b" not in result.stdout
    group = _live_json_group(result.stdout, child.pid)
    assert group is not None and group["argv"][-2:] == ["x y", "\x1b[31m"]


# ---- JSON ------------------------------------------------------------------------------


def test_fx_json_records_keep_every_value_exactly():
    """Every value of a process record comes back from the document as it was read:
    quotes, %, control characters, a byte that is not UTF-8, a character past U+FFFF;
    and the document is ASCII with nothing raw for a terminal to act on."""
    how = lib_users.ScanOptions(details=True, services=True)
    findings = [f for tree in ("proc-basic", "proc-hostile", "svc-units", "svc-odd")
                for f in lib_users.scan(os.path.join(TESTDATA, tree), how).findings]
    info = lib_users.ProcessInfo(
        7, 1, 7, None, None, "S", "caf\xe9 \"%s\" \x1b\x7f",
        ["a\tb", os.fsdecode(b"\xff"), "", "\U0001f600"], None, "/100%", "/", 1.5e9,
        False, False)
    odd = lib_users.Package("lib\x1bz", "1:2\x7f", "amd64", ())
    files = {path: lib_users.FileUse(path, "library", size, (8, 1, 2), replaced, package)
             for path, size, replaced, package in (("/z\u2028.so", None, None, None),
                                                    ("/a.so", 10, True, odd))}
    place = lib_users.Placement("session-3.scope", None, 0, "root", "3", "docker:abc")
    findings += [lib_users.Finding(7, info.argv, files, info, place),
                 lib_users.Finding(8, ["x"], dict(files), None, None)]
    assert sum(f.process is not None for f in findings) > 10
    text = lib_users.render_json(lib_users.build_report(
        lib_users.Scan(findings, len(findings), 0)))
    assert all(0x20 <= ord(char) < 0x7F or char == "\n" for char in text)
    records = json.loads(text)["processes"]  # by PID; PIDs of two trees keep their order
    assert len(records) == len(findings)
    for finding, record in zip(sorted(findings, key=lambda f: f.pid), records):
        assert record["pid"] == finding.pid
        if finding.process is not None:
            for key, value in finding.process._asdict().items():
                assert record[key] == value, (finding.pid, key)
        else:
            assert record["argv"] == finding.argv
        assert [f["path"] for f in record["files"]] == sorted(finding.files)
    records = {p["pid"]: p for p in records if p["pid"] in (7, 8)}
    assert os.fsencode(records[7]["argv"][1]) == b"\xff"
    assert records[7]["comm"] == "caf\xe9 \"%s\" \x1b\x7f"
    assert records[7]["files"] == [
        {"path": "/a.so", "kind": "library", "size": 10, "replaced": True,
         "package": {"name": "lib\x1bz", "version": "1:2\x7f"}},
        {"path": "/z\u2028.so", "kind": "library", "size": None, "replaced": None,
         "package": None}]
    assert (records[7]["unit"], records[7]["container"]) == ("session-3.scope", "docker:abc")
    assert records[7]["session"] == {"id": "3", "uid": 0, "user": "root"}
    assert records[8] == dict(dict.fromkeys(lib_users._PLACEMENT_KEYS), pid=8, argv=["x"],
                              files=records[7]["files"])


@pytest.mark.parametrize("count", [0, 1, 20, 250])
def test_fx_json_document_lists_the_processes_last_by_pid(count):
    """The JSON document holds every process, by PID whatever the scan's order, after
    everything else, and ends with one newline."""
    how = lib_users.ScanOptions(details=True, services=True)
    base = lib_users.scan(os.path.join(TESTDATA, "svc-units"), how).findings
    findings = []
    for i in range(count):  # many processes, in no order
        f = base[i % len(base)]
        findings.append(lib_users.Finding(
            5000 - i, f.argv, f.files, lib_users.ProcessInfo(
                **dict(f.process._asdict(), pid=5000 - i)) if f.process else None,
            f.placement))
    report = lib_users.build_report(lib_users.Scan(findings, count, 0))
    text = lib_users.render_json(report)
    doc = json.loads(text)
    assert [p["pid"] for p in doc["processes"]] == sorted(f.pid for f in findings)
    assert list(doc)[-1] == "processes"
    assert text.endswith("}\n") and not text.endswith("\n\n")
    by_pid = {f.pid: f for f in findings}
    for record in doc["processes"]:
        assert record["argv"] == by_pid[record["pid"]].argv
        assert [f["path"] for f in record["files"]] == sorted(by_pid[record["pid"]].files)
    assert sorted(pid for g in doc["groups"] for pid in g["pids"]) == sorted(by_pid)


def test_fx_json_output():
    doc = _fx_json("proc-basic")
    assert doc["version"] == lib_users.__version__
    assert doc["complete"] is True and doc["unreadable"] == 0
    assert _fx_groups(doc) == [
        {"argv": ["/usr/sbin/cron", "-f"], "pids": [612],
         "files": [_FX_LIBDIR + "libc.so.6", "/usr/sbin/cron"]},
        {"argv": ["/usr/sbin/sshd", "-D"], "pids": [845],
         "files": [_FX_LIBDIR + "libcrypto.so.3", _FX_LIBDIR + "libssl.so.3"]},
        {"argv": ["[backupd]"], "pids": [1502],
         "files": [_FX_LIBDIR + "libzstd.so.1.5.4"]},
    ]


def test_fx_json_example_in_readme_is_laid_out_and_named_as_the_output():
    """The document is one line; README's --json example has its members, in its order,
    laid out as `jq .` does."""
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    shown = json.loads(example)
    assert json.dumps(shown, indent=2) + "\n" == example
    output = _fx_run("proc-basic", "--json").stdout
    assert output.count(b"\n") == 1 and output.endswith(b"}\n")
    real = json.loads(output)
    assert list(shown) == list(real)
    assert list(shown["groups"][0]) == list(real["groups"][0])
    assert list(shown["reboot"]) == list(real["reboot"])
    assert list(shown["processes"][0]) == list(real["processes"][0])
    assert list(shown["processes"][0]["files"][0]) == list(real["processes"][0]["files"][0])


def test_fx_json_process_details():
    """--json also describes each reported process; the replaced binary, named by the
    exe link, is an executable, the rest libraries."""
    processes = {p["pid"]: p for p in _fx_json("proc-basic")["processes"]}
    assert sorted(processes) == [612, 845, 1502]
    cron = processes[612]
    assert cron["comm"] == "cron" and cron["argv"] == ["/usr/sbin/cron", "-f"]
    kinds = {f["path"]: f["kind"] for f in cron["files"]}
    assert kinds == {"/usr/sbin/cron": "executable", _FX_LIBDIR + "libc.so.6": "library"}


# ---- terminal safety -------------------------------------------------------------------


def _fx_assert_terminal_safe(data):
    """Nothing in `data` (bytes written to a terminal) can act on the terminal: no C0
    control but the line end, no DEL, valid UTF-8, no C1 and no invisible format
    character such as the bidi override U+202E."""
    bad = sorted({byte for byte in data if (byte < 0x20 and byte != 0x0A) or byte == 0x7F})
    assert not bad, "raw control bytes %r in %r" % (bad, data)
    text = data.decode("utf-8")  # strict: a raw byte that is not UTF-8 fails here
    for char in text:
        assert not 0x80 <= ord(char) <= 0x9F, "raw C1 character %r" % char
        assert char != "\u202e", "raw bidi override"
        if char != "\n":
            assert unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp"), (
                "raw invisible character %r in %r" % (char, text))
    return text


_FX_HOSTILE_TEXT = (
    "3003 \"/bin/sh -c C:\\\\temp\\\\x1b 'tab\\there'\" uses /opt/evil/a\\x2cb\\x3bc.so\n"
    '3002 "/opt/evil/\\u202etxt.exe caf\\xe9 \\u009b31m del\\x7f" uses '
    "/opt/evil/caf\\xe9.so,/opt/evil/\\u009bcsi.so,/opt/evil/\\u202eos.so\n"
    "3001 \"/usr/local/bin/evil\\x1b[2J --title=\\x1b]0;pwned\\x07 'line1\\nline2'\" uses "
    "/opt/evil/\\x1b]0\\x3bowned\\x07lib.so,/opt/evil/new\\nline.so\n"
)


_RB_INVISIBLE = "".join(chr(c) for c in list(range(0x200B, 0x2010))
                        + [0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                           0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF, 0x00AD, 0x061C])


_RB_C1 = "".join(chr(c) for c in range(0x80, 0xA0))


def _rb_terminal_tree(path):
    every_byte = bytes(range(1, 256))
    path_bytes = bytes(b for b in range(1, 256) if b != 0x0A)  # newline as \012
    ansi = b"\x1b[31mred\x1b[0m\x1b]0;title\x07\x1b]8;;http://evil/\x1b\\link\x1b[2J"
    invisible = _RB_INVISIBLE.encode()
    c1 = _RB_C1.encode()
    unit = b"ev" + ansi + "\u202eil".encode() + b".service"
    spec = {
        "stat": _rb_root_stat(),
        "9001": _rb_process(
            9001, [b"/usr/bin/evil", every_byte, ansi, invisible, c1, b"\x9b31m"],
            [b"/opt/" + path_bytes + b"\\012x.so.1", b"/opt/" + ansi + b".so",
             b"/opt/" + invisible + b".so", b"/opt/" + c1 + b".so"],
            cgroup=b"0::/system.slice/" + unit + b"\n"),
        "9002": dict(_rb_process(9002, [b"x"], ["/usr/lib/lib\u202egnp.so.1".encode()],
                                 comm=b"\x1b]0;x\x07" + invisible),
                     cmdline=b""),
        "9003": _rb_process(
            9003, [b"/usr/bin/c" + b"\x1b[1m" + invisible],
            [b"/usr/lib/x" + every_byte.replace(b"\n", b"\\012") + b".so"],
            cgroup=b"0::/system.slice/docker-" + ansi + invisible + b".scope\n"),
        "9004": _rb_process(
            9004, [b"/usr/bin/ok"], [b"/usr/lib/libok.so.1"],
            cgroup=b"0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
                   + ansi + b".service\n"),
    }
    return _rb_tree(path, spec)


def test_fx_hostile_names_are_escaped_in_text():
    assert _fx_ok("proc-hostile", "-s") == _FX_HOSTILE_TEXT


@pytest.mark.parametrize("args", [(), ("-s",), ("-m",)])
def test_fx_hostile_names_cannot_reach_the_terminal(args):
    result = _fx_run("proc-hostile", *args)
    assert result.returncode == 0
    text = _fx_assert_terminal_safe(result.stdout)
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 4  # one record per line, three groups
    heads = [line.split(" ")[0].split(";")[0] for line in lines[:3]]
    assert heads == ["3003", "3002", "3001"]
    for escaped in ("\\x1b", "\\x07", "\\n", "\\u202e", "\\u009b", "\\xe9", "\\x7f"):
        assert escaped in text, escaped
    assert "C:\\\\temp\\\\x1b" in text  # a real backslash is doubled: not an escape


@pytest.mark.parametrize("args, status", [(("-S", "-s"), 0), (("--nagios",), 1),
                                          (("--prometheus",), 0)])
def test_fx_hostile_names_cannot_reach_the_terminal_in_other_formats(args, status):
    result = _fx_run("proc-hostile", *args)
    assert result.returncode == status  # --nagios: the tree's findings are a WARNING
    _fx_assert_terminal_safe(result.stdout)


def test_fx_hostile_machine_readable_escapes_its_separators():
    lines = _fx_ok("proc-hostile", "-m").splitlines()
    assert lines[0] == ("3003;/opt/evil/a\\x2cb\\x3bc.so;"
                        "/bin/sh -c C:\\\\temp\\\\x1b 'tab\\there'")
    for line in lines:
        pids, files, argv = line.split(";", 2)
        assert pids.isdigit()
        assert len(files.split(",")) == {"3003": 1, "3002": 3, "3001": 2}[pids]


def test_fx_hostile_json_is_valid_ascii_and_keeps_the_text():
    result = _fx_run("proc-hostile", "--json")
    assert result.returncode == 0
    assert all(0x20 <= byte < 0x7F or byte == 0x0A for byte in result.stdout)
    doc = json.loads(result.stdout.decode("ascii"))
    argv = {g["pids"][0]: g["argv"] for g in doc["groups"]}
    files = {g["pids"][0]: g["files"] for g in doc["groups"]}
    # JSON's own escapes give the program the real characters back...
    assert argv[3001] == ["/usr/local/bin/evil\x1b[2J", "--title=\x1b]0;pwned\x07",
                          "line1\nline2"]
    assert files[3001] == ["/opt/evil/\x1b]0;owned\x07lib.so", "/opt/evil/new\nline.so"]
    assert argv[3003] == ["/bin/sh", "-c", "C:\\temp\\x1b", "tab\there"]
    assert files[3003] == ["/opt/evil/a,b;c.so"]
    assert argv[3002] == ["/opt/evil/\u202etxt.exe", os.fsdecode(b"caf\xe9"), "\u009b31m",
                          "del\x7f"]
    # ...also the bytes that are not UTF-8 (\udcXX, as os.fsdecode holds them)...
    assert [os.fsencode(a) for a in argv[3002][1:]] == [b"caf\xe9", b"\xc2\x9b31m",
                                                         b"del\x7f"]
    assert [os.fsencode(f) for f in files[3002]] == [
        b"/opt/evil/caf\xe9.so", b"/opt/evil/\xc2\x9bcsi.so", b"/opt/evil/\xe2\x80\xaeos.so"]
    # ...which a name that really holds a backslash cannot be taken for.
    assert os.fsencode(argv[3003][2]) == b"C:\\temp\\x1b"
    text = result.stdout.decode("ascii")
    assert '"caf\\udce9"' in text and '"del\\u007f"' in text
    assert '"C:\\\\temp\\\\x1b"' in text


def test_rb_terminal_safe_output(tmp_path):
    tree = _rb_terminal_tree(tmp_path / "proc")
    modes = ([], ["-v"], ["-s"], ["-m"], ["-S"], ["-S", "-s", "-v"], ["--nagios"],
             ["--nagios", "-v"], ["--prometheus"], ["--json"], ["--fds", "-s"])
    for env in (_RB_ENV, dict(_RB_ENV, LC_ALL="C")):
        for args in modes:
            result = _rb_run(["--proc", tree] + args, env=env)
            kind = "json" if "--json" in args else "nagios" if "--nagios" in args else "text"
            assert _rb_problem(kind, result.returncode, result.stdout, result.stderr) is None, (
                args, env["LC_ALL"], _rb_problem(kind, result.returncode, result.stdout,
                                                 result.stderr), result)
            # --nagios: the tree's findings are a WARNING
            assert result.returncode == (1 if kind == "nagios" else 0), (args, result)
            if "--prometheus" not in args and "--fds" not in args:
                shown = _rb_reported(["-m" if "-m" in args else "--json" if kind == "json"
                                      else "-v"], result.stdout)
                if "-v" in args or "-m" in args or kind == "json":
                    assert {9001, 9002, 9003, 9004} <= set(shown), (args, result)
    # Messages on stderr, too.
    for args, status in ((["--bogus\x1b[31m\u202e"], 2),
                         (["--proc", "/nonexistent/\x1b]0;x\x07\u202e"], 1),
                         (["-p", "1\x1b[2J"], 2), (["--nagios", "--x\u2028y"], 3)):
        result = _rb_run(args)
        assert result.returncode == status, (args, result)
        assert _rb_stderr_problem(result.stderr, None) is None, (args, result)
        assert _rb_unsafe(result.stdout) is None, (args, result)


def test_rb_reboot_reasons_are_terminal_safe(tmp_path):
    # What run() prints as "reboot needed: ..." comes from file names under / and from
    # /run/reboot-required.pkgs (written by package hooks).
    nasty = "\x1b]0;x\x07\u202e\x9b2J"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_bytes(b"")
    (tmp_path / "run" / "reboot-required.pkgs").write_bytes(
        ("libc6\nlinux-image" + nasty + "\n").encode() + b"\xff\x1b[31m\n")
    (tmp_path / "lib" / "modules" / ("9.9.9" + nasty)).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / ("vmlinuz-10.0" + nasty)).write_bytes(b"")
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release="6.1.0-1-amd64")
    assert len(reasons) == 3, reasons
    for reason in reasons:
        assert _rb_unsafe(os.fsencode(reason)) is None, repr(reason)


# ---- exit status and messages ----------------------------------------------------------


def test_fx_exit_status_zero_with_and_without_findings():
    assert _fx_ok("proc-basic") != ""
    assert _fx_ok("proc-clean") == ""
    assert _fx_ok("proc-clean", "-m") == ""
    doc = _fx_json("proc-clean")
    assert doc["groups"] == [] and doc["complete"] is True and doc["unreadable"] == 0


@pytest.mark.parametrize("args", [
    ("--bogus",), ("-x",), ("-m", "--json"), ("--json", "--machine-readable"),
    ("--proc",), ("-s", "extra-argument"),
])
def test_fx_usage_errors_exit_2(args):
    result = _fx_cli(*args)
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lib_users: "), lines


def test_fx_usage_error_names_the_problem():
    assert b"--bogus" in _fx_cli("--bogus").stderr
    message = _fx_run("proc-basic", "-m", "--json").stderr
    assert b"--machine-readable" in message and b"--json" in message


def test_fx_missing_proc_dir_exits_1(tmp_path):
    result = _fx_run(str(tmp_path / "no-such-dir"))
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"lib_users: ")
    assert b"no-such-dir" in result.stderr and b"Traceback" not in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_fx_version():
    result = _fx_cli("--version")
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == ("lib_users %s\n" % lib_users.__version__).encode()


# ---- options ---------------------------------------------------------------------------


def test_fx_bundled_flags_and_abbreviated_options():
    assert _fx_ok("proc-grouping", "-sv") == _fx_ok("proc-grouping", "-s", "-v")
    both = _fx_ok("proc-grouping", "-s", "-v")
    assert _fx_ok("proc-grouping", "--verb", "--showl") == both
    assert _fx_ok("proc-grouping", "--machine") == _fx_ok("proc-grouping", "-m")


def test_fx_ignore_literal():
    ssl, crypto = _FX_LIBDIR + "libssl.so.3", _FX_LIBDIR + "libcrypto.so.3"
    lines = _fx_ok("proc-basic", "-s", "-I", ssl).splitlines()
    assert lines[1] == '845 "/usr/sbin/sshd -D" uses %s' % crypto
    # repeatable: with both libraries ignored, sshd needs no restart
    out = _fx_ok("proc-basic", "-I", ssl, "--ignore-literal", crypto)
    assert out == '612 "/usr/sbin/cron -f"\n1502 "[backupd]"\n'
    # a literal is the whole name, not a prefix
    assert _fx_ok("proc-basic", "-I", _FX_LIBDIR + "libssl") == _FX_BASIC_TEXT


def test_fx_ignore_pattern():
    out = _fx_ok("proc-basic", "-s", "-i", _FX_LIBDIR + "*")
    assert out == '612 "/usr/sbin/cron -f" uses /usr/sbin/cron\n'
    out = _fx_ok("proc-basic", "-s", "-i", _FX_LIBDIR + "libssl.so.?",
                 "--ignore-pattern", "**/libzstd.so*")
    assert out == (
        '612 "/usr/sbin/cron -f" uses %slibc.so.6,/usr/sbin/cron\n'
        '845 "/usr/sbin/sshd -D" uses %slibcrypto.so.3\n') % (_FX_LIBDIR, _FX_LIBDIR)


def test_fx_ignoring_lasts_one_run():
    assert _fx_ok("proc-basic", "-i", "/**") == ""
    assert _fx_ok("proc-basic") == _FX_BASIC_TEXT


# ---- --fds -----------------------------------------------------------------------------


def _api_run_cli(*args):
    return subprocess.run([sys.executable, _CLI_SCRIPT] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)


def test_api_cli_fds_text(api_child):
    result = _api_run_cli("--fds", "-s")
    assert result.returncode == 0, result.stderr
    deleted = api_child.report["deleted"]["path"]
    lines = result.stdout.splitlines()
    mine = [line for line in lines if line.split(" ", 1)[0].split(",").count(
        str(api_child.pid))]
    assert len(mine) == 1, result.stdout
    expected = "%s (%s)" % (deleted, lib_users.human_size(_API_DELETED_SIZE))
    assert expected in mine[0]
    assert mine[0].endswith(" uses " + expected)  # and nothing else of the child's
    assert "memfd:" + _API_MEMFD_NAME not in result.stdout
    assert "socket:[" not in result.stdout and "anon_inode" not in result.stdout
    match = re.match(r"total: .* \((\d+) bytes\) would be freed", lines[-1])
    assert match, lines[-1]
    assert int(match.group(1)) >= _API_DELETED_SIZE


def test_api_cli_fds_json(api_child):
    result = _api_run_cli("--fds", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"] == "fds"
    assert doc["freed_bytes"] >= _API_DELETED_SIZE
    procs = [p for p in doc["processes"] if p["pid"] == api_child.pid]
    assert len(procs) == 1
    files = [{key: use.get(key) for key in ("path", "kind", "size")}
             for use in procs[0]["files"]]
    assert files == [{"path": api_child.report["deleted"]["path"],
                      "kind": "fd", "size": _API_DELETED_SIZE}]
    assert procs[0]["argv"] == api_child.argv
    for proc in doc["processes"]:
        for use in proc["files"]:
            assert not use["path"].startswith("/memfd:"), use
            assert not use["path"].startswith(("socket:", "anon_inode:", "pipe:")), use


def test_api_cli_fds_only_the_child(api_child):
    result = _api_run_cli("--fds", "--json", "-p", str(api_child.pid))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["freed_bytes"] == _API_DELETED_SIZE
    assert [p["pid"] for p in doc["processes"]] == [api_child.pid]
    assert doc["groups"][0]["files"] == [api_child.report["deleted"]["path"]]
    assert doc["groups"][0]["freed_bytes"] == _API_DELETED_SIZE


# ==== services and containers ===========================================================


_SVC_LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"


_SVC_DOCKER = "4f3c2a1b9e8d7c6b5a49382716f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3"


_SVC_PODMAN = "9a8b7c6d5e4f30211f2e3d4c5b6a79881a2b3c4d5e6f708192a3b4c5d6e7f809"


_SVC_SAFE = ["cron.service", "openvpn@office.service", "ssh.service",
             "systemd-journald.service", "systemd-timesyncd.service"]


def _svc_user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


_SVC_LINE = re.compile(r'^(.+) (\d+(?:,\d+)*|\d+ processes) "(.*)"$')


def _svc_sections(text):
    """(unit lines as [(label, pids, argv)], the systemctl line or None, {label: reason})."""
    units, restart, held = [], None, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("systemctl restart "):
            assert restart is None, "two systemctl lines"
            restart = line
        elif line.startswith("# "):
            label, sep, reason = line[2:].partition(": ")
            assert sep and label not in held, line
            held[label] = reason
        else:
            match = _SVC_LINE.match(line)
            assert match, line
            units.append((match.group(1), match.group(2), match.group(3)))
    return units, restart, held


@pytest.fixture(scope="module")
def _svc_units_json():
    return _svc_json(proc="svc-units")


# ---- -S --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _svc_units_S():
    result = _svc_run("-S", proc="svc-units")
    assert result.returncode == 0
    assert result.stderr == ""
    return _svc_sections(result.stdout)


def test_svc_S_unit_lines(_svc_units_S):
    units, _restart, _held = _svc_units_S
    assert sorted(units) == sorted([
        ("systemd-journald.service", "300", "/lib/systemd/systemd-journald"),
        ("ssh.service", "612", "'sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups'"),
        ("cron.service", "640", "/usr/sbin/cron -f"),
        ("openvpn@office.service", "655",
         "/usr/sbin/openvpn --daemon ovpn-office --config /etc/openvpn/office.conf"),
        ("systemd-timesyncd.service", "660", "/lib/systemd/systemd-timesyncd"),
        ("dbus.service", "700", "/usr/bin/dbus-daemon --system --address=systemd: --nofork "
         "--nopidfile --systemd-activation --syslog-only"),
        ("getty@tty1.service", "710", "/sbin/agetty -o '-p -- \\\\u' --noclear - linux"),
        ("session-3.scope", "1001", "'sshd: root@pts/0'"),
        ("session-3.scope", "1005", "-bash"),
        ("user@1000.service", "1100", "/lib/systemd/systemd --user"),
        ("pipewire.service in user@1000.service", "1150", "/usr/bin/pipewire"),
        ("app-firefox\\\\x2desr-4242.scope in user@1000.service", "1160",
         "/usr/lib/firefox-esr/firefox-esr"),
        ("session-7.scope", "1200", "'sshd: cloud@pts/1'"),
        ("docker:4f3c2a1b9e8d", "2100", "'nginx: master process nginx -g daemon off;'"),
        ("libpod-conmon-%s.scope" % _SVC_PODMAN, "2190",
         "/usr/bin/conmon --api-version 1 -c %s" % _SVC_PODMAN),
        ("podman:9a8b7c6d5e4f", "2200", "'redis-server *:6379'"),
        ("lxc:web1", "2300", "/usr/sbin/apache2 -k start"),
        ("nspawn:debian-test", "2400", "/usr/sbin/cron -f"),
        ("unknown", "2500", "/usr/bin/python3 /srv/app/worker.py"),
        ("-", "2600,2601", "/opt/agent/bin/agent --foreground"),
    ])


def test_svc_S_safe_units_listed_first(_svc_units_S):
    units, _restart, held = _svc_units_S
    labels = [label for label, _pids, _argv in units]
    safe = [label for label in labels if label not in held and label != "-"]
    assert sorted(set(safe)) == _SVC_SAFE
    assert labels[: len(safe)] == safe  # restartable units come before held-back ones


def test_svc_S_restart_line_lists_exactly_the_safe_services(_svc_units_S):
    _units, restart, _held = _svc_units_S
    words = shlex.split(restart)
    assert words[:2] == ["systemctl", "restart"]
    assert words[2:] == _SVC_SAFE
    for unit in words[2:]:
        assert unit.endswith(".service")
        assert not unit.startswith(("dbus", "getty@", "user@", "session-", "docker-",
                                    "libpod-", "machine-"))


def test_svc_S_held_back_reasons(_svc_units_S):
    units, _restart, held = _svc_units_S
    labels = {label for label, _pids, _argv in units}
    # Every unit that is not restarted says why; nothing safe is held back.
    assert set(held) == (labels - set(_SVC_SAFE) - {"-"}) | {"processes without a unit"}
    assert "message bus" in held["dbus.service"]
    assert "console" in held["getty@tty1.service"]
    assert "log out" in held["user@1000.service"]
    assert "root" in held["session-3.scope"]
    cloud = _svc_user(1000)
    assert (cloud or "uid 1000") in held["session-7.scope"]
    assert "systemctl --user restart pipewire.service" in held[
        "pipewire.service in user@1000.service"]
    assert (cloud or "1000") in held["pipewire.service in user@1000.service"]
    assert held["docker:4f3c2a1b9e8d"].endswith("docker restart 4f3c2a1b9e8d")
    assert held["podman:9a8b7c6d5e4f"].endswith("podman restart 9a8b7c6d5e4f")
    assert "web1" in held["lxc:web1"]
    assert held["nspawn:debian-test"].endswith("machinectl reboot debian-test")
    assert "another PID namespace" in held["unknown"]
    assert "restart the program" in held["libpod-conmon-%s.scope" % _SVC_PODMAN]
    assert "by hand" in held["processes without a unit"]


def test_svc_S_user_scope_is_not_restartable(_svc_units_S):
    # A scope (here an app launched from a desktop) cannot be restarted by systemd:
    # `systemctl --user restart x.scope` fails ("Job type restart is not applicable").
    _units, _restart, held = _svc_units_S
    reason = held["app-firefox\\\\x2desr-4242.scope in user@1000.service"]
    assert "systemctl --user restart" not in reason


def test_svc_S_showlibs_and_verbose():
    result = _svc_run("-S", "-s", "-p", "612,2600,2601", proc="svc-units")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == ('ssh.service 612 "\'sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 '
                        'startups\'" uses %s' % _SVC_LIBSSL)
    assert lines[1] == '- 2600,2601 "/opt/agent/bin/agent --foreground" uses %s' % _SVC_LIBSSL
    assert lines[3] == "systemctl restart ssh.service"


def test_svc_S_container_service_is_not_restarted_on_the_host():
    # cron.service runs on the host (640) and inside the nspawn container (2400): only
    # the host's is a unit of ours.
    units, restart, held = _svc_sections(_svc_run("-S", "-p", "640,2400",
                                                  proc="svc-units").stdout)
    assert ("cron.service", "640", "/usr/sbin/cron -f") in units
    assert ("nspawn:debian-test", "2400", "/usr/sbin/cron -f") in units
    assert shlex.split(restart)[2:] == ["cron.service"]
    assert list(held) == ["nspawn:debian-test"]


def test_svc_S_nothing_to_restart():
    result = _svc_run("-S", "-p", "700,2100", proc="svc-units")
    assert "systemctl" not in result.stdout
    assert result.stdout.count("\n# ") == 2


def test_svc_S_restart_line_is_shell_safe_with_systemd_escapes():
    # systemd writes '-' inside an instance name as \x2d; the printed command, run by a
    # shell, must restart the unit of that very name.
    result = _svc_run("-S", "-p", "500,520", proc="svc-odd")
    _units, restart, _held = _svc_sections(result.stdout)
    assert shlex.split(restart) == ["systemctl", "restart",
                                    "openvpn-client@my\\x2dvpn.service", "relay.service"]


def test_svc_S_restart_line_quotes_odd_unit_names():
    # A cgroup may be named anything; a quote in it must not break the shell command.
    result = _svc_run("-S", "-p", "510", proc="svc-odd")
    _units, restart, _held = _svc_sections(result.stdout)
    assert shlex.split(restart) == ["systemctl", "restart", 'odd"name.service']


# ---- placement -------------------------------------------------------------------------


_SVC_POD = "3b5a1e8c-7d2f-4c1a-9e6b-0f4d2c8a7b91"  # a Kubernetes pod UID


_SVC_POD_ = _SVC_POD.replace("-", "_")  # as kubelet's systemd driver writes it


_SVC_PLACES = {  # pid: (unit, user_unit, container, session id)
    300: ("systemd-journald.service", None, None, None),
    612: ("ssh.service", None, None, None),
    640: ("cron.service", None, None, None),
    655: ("openvpn@office.service", None, None, None),
    660: ("systemd-timesyncd.service", None, None, None),
    700: ("dbus.service", None, None, None),
    710: ("getty@tty1.service", None, None, None),
    1001: ("session-3.scope", None, None, "3"),
    1005: ("session-3.scope", None, None, "3"),
    1100: ("user@1000.service", None, None, None),
    1150: ("user@1000.service", "pipewire.service", None, None),
    1160: ("user@1000.service", "app-firefox\\x2desr-4242.scope", None, None),
    1200: ("session-7.scope", None, None, "7"),
    2100: ("docker-%s.scope" % _SVC_DOCKER, None, "docker:4f3c2a1b9e8d", None),
    2190: ("libpod-conmon-%s.scope" % _SVC_PODMAN, None, None, None),
    2200: ("libpod-%s.scope" % _SVC_PODMAN, None, "podman:9a8b7c6d5e4f", None),
    2300: ("apache2.service", None, "lxc:web1", None),
    2400: ("machine-debian\\x2dtest.scope", None, "nspawn:debian-test", None),
    2500: (None, None, "unknown", None),
    2600: (None, None, None, None),
    2601: (None, None, None, None),
}


def test_svc_json_processes_placement(_svc_units_json):
    doc = _svc_units_json
    assert doc["complete"] is True
    got = {p["pid"]: (p["unit"], p["user_unit"], p["container"],
                      p["session"] and p["session"]["id"]) for p in doc["processes"]}
    assert got == _SVC_PLACES
    sessions = {p["pid"]: p["session"] for p in doc["processes"] if p["session"]}
    assert sessions[1001] == {"id": "3", "uid": 0, "user": "root"}
    assert sessions[1200] == {"id": "7", "uid": 1000, "user": _svc_user(1000)}
    for process in doc["processes"]:
        # A fixture tree has no root, and without --root no package database.
        assert process["files"] == [{"path": _SVC_LIBSSL, "kind": "library", "size": None,
                                     "replaced": None, "package": None}]


def test_svc_json_groups_and_restart(_svc_units_json):
    doc = _svc_units_json
    assert doc["restart"] == _SVC_SAFE
    assert doc["reboot"] == {"needed": False, "reasons": [], "files": []}
    groups = {tuple(g["pids"]): g for g in doc["groups"]}
    for group in doc["groups"]:
        assert {"unit", "container", "session"} <= set(group)
    assert groups[(612,)]["unit"] == "ssh.service"
    assert groups[(2100,)]["container"] == "docker:4f3c2a1b9e8d"
    assert groups[(1001,)]["session"] == {"id": "3", "uid": 0, "user": "root"}
    assert groups[(2600, 2601)]["unit"] is None
    # The same argv on the host and in a container: the group has no single unit.
    cron = groups[(640, 2400)]
    assert cron["unit"] is None and cron["container"] is None


def test_svc_json_unit_with_backslash_is_exact():
    doc = _svc_json("-p", "500", proc="svc-odd")
    assert doc["processes"][0]["unit"] == "openvpn-client@my\\x2dvpn.service"
    assert doc["restart"] == ["openvpn-client@my\\x2dvpn.service"]


def test_svc_read_placement_permission_denied(monkeypatch):
    """EACCES on the cgroup file (an LSM, hidepid=noaccess) gives a placement that says
    so; ESRCH still means the process is gone."""
    tree = _svc_tree("svc-units")
    own = lib_users.own_namespaces(tree)

    class Refusing(lib_users.ProcDir):
        error = PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        def read(self, name):
            if name == "cgroup":
                raise self.error
            return super().read(name)

    known = {}
    for pid, container in ((612, None), (2500, "unknown")):
        with Refusing(tree, pid) as pdir:
            place = lib_users.read_placement(pdir, own, {}, known)
        assert (place.unit, place.container, place.error) == (
            None, container, "Permission denied")
    Refusing.error = ProcessLookupError(errno.ESRCH, "gone")
    with Refusing(tree, 612) as pdir, pytest.raises(ProcessLookupError):
        lib_users.read_placement(pdir, own, {}, {})


@pytest.mark.parametrize("data, expected", [
    (b"0::/system.slice/ssh.service\n", "/system.slice/ssh.service"),
    (b"12:pids:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n0::/\n",
     "/system.slice/cron.service"),
    (b"1:name=systemd:/\n0::/system.slice/ssh.service\n", "/system.slice/ssh.service"),
    (b"1:name=systemd:/system.slice/x.service\n", "/system.slice/x.service"),
    (b"4:memory:/docker/abc\n", None),
    (b"0::/\n", "/"),
    (b"", None),
    (b"0::/system.slice/a:b.service\n", "/system.slice/a:b.service"),
])
def test_svc_parse_cgroup(data, expected):
    assert lib_users.parse_cgroup(data) == expected


@pytest.mark.parametrize("cgroup, expected", [
    ("/system.slice/docker-%s.scope" % _SVC_DOCKER, "docker:4f3c2a1b9e8d"),
    ("/docker/%s" % _SVC_DOCKER, "docker:4f3c2a1b9e8d"),
    ("/machine.slice/libpod-%s.scope/container" % _SVC_PODMAN, "podman:9a8b7c6d5e4f"),
    ("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-%s.scope" % _SVC_PODMAN,
     "podman:9a8b7c6d5e4f"),
    ("/machine.slice/libpod-conmon-%s.scope" % _SVC_PODMAN, None),
    ("/lxc.payload.web1", "lxc:web1"),
    ("/lxc.payload.web1/system.slice/apache2.service", "lxc:web1"),
    ("/lxc.monitor.web1", None),
    ("/machine.slice/machine-debian\\x2dtest.scope", "nspawn:debian-test"),
    ("/machine.slice/systemd-nspawn@arch.service/payload", "nspawn:arch"),
    # podman's cgroupfs manager; its conmon is beside the container, not in it.
    ("/libpod_parent/libpod-%s" % _SVC_PODMAN, "podman:9a8b7c6d5e4f"),
    ("/libpod_parent/conmon", None),
    ("/libpod_parent/libpod-conmon-%s" % _SVC_PODMAN, None),
    ("/libpod_parent/libpod-%s" % _SVC_PODMAN[:12], None),  # not a container ID
    ("/machine.slice/machine-libpod_pod_%s.slice/libpod-%s.scope" % (_SVC_DOCKER, _SVC_PODMAN),
     "podman:9a8b7c6d5e4f"),  # a podman pod under systemd
    # Kubernetes, kubelet's systemd driver: containerd, CRI-O and its conmon.
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/"
     "cri-containerd-%s.scope" % (_SVC_POD_, _SVC_DOCKER), "containerd:4f3c2a1b9e8d"),
    ("/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%s.scope" % (_SVC_POD_, _SVC_DOCKER),
     "containerd:4f3c2a1b9e8d"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod%s.slice/"
     "crio-%s.scope" % (_SVC_POD_, _SVC_PODMAN), "cri-o:9a8b7c6d5e4f"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod%s.slice/"
     "crio-conmon-%s.scope" % (_SVC_POD_, _SVC_PODMAN), None),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/"
     "docker-%s.scope" % (_SVC_POD_, _SVC_DOCKER), "docker:4f3c2a1b9e8d"),  # dockershim
    # kubelet's cgroupfs driver: only CRI-O names the runtime.
    ("/kubepods/burstable/pod%s/%s" % (_SVC_POD, _SVC_DOCKER), "cri:4f3c2a1b9e8d"),
    ("/kubepods/pod%s/%s" % (_SVC_POD, _SVC_DOCKER), "cri:4f3c2a1b9e8d"),
    ("/kubepods/besteffort/pod%s/crio-%s" % (_SVC_POD, _SVC_PODMAN), "cri-o:9a8b7c6d5e4f"),
    ("/kubepods/burstable/pod%s" % _SVC_POD, None),  # the pod itself is no container
    ("/system.slice/pod%s/%s" % (_SVC_POD, _SVC_DOCKER), None),  # not below kubepods
    ("/system.slice/ssh.service", None),
    ("/", None),
    (None, None),
])
def test_svc_container_of(cgroup, expected):
    assert lib_users.container_of(cgroup) == expected


@pytest.mark.parametrize("cgroup, expected", [
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/"
     "cri-containerd-%s.scope" % (_SVC_POD_, _SVC_DOCKER), _SVC_POD),
    ("/kubepods.slice/kubepods-pod%s.slice/crio-%s.scope" % (_SVC_POD_, _SVC_DOCKER), _SVC_POD),
    ("/kubepods/burstable/pod%s/%s" % (_SVC_POD, _SVC_DOCKER), _SVC_POD),
    ("/kubepods/pod%s/%s" % (_SVC_POD, _SVC_DOCKER), _SVC_POD),
    # A static pod's UID is a hash, without dashes.
    ("/kubepods/pod0f1e2d3c4b5a69788796a5b4c3d2e1f0/%s" % _SVC_DOCKER,
     "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
    ("/libpod_parent/libpod-%s" % _SVC_PODMAN, None),
    ("/system.slice/docker-%s.scope" % _SVC_DOCKER, None),
    (None, None),
])
def test_svc_pod_of(cgroup, expected):
    assert lib_users.pod_of(cgroup) == expected
    assert lib_users.placement_of(cgroup).pod == expected


def test_svc_placement_of():
    place = lib_users.placement_of("/user.slice/user-0.slice/session-3.scope")
    assert (place.unit, place.user_unit, place.uid, place.user, place.session,
            place.container) == ("session-3.scope", None, 0, "root", "3", None)
    place = lib_users.placement_of("/user.slice/user-1000.slice/user@1000.service/init.scope")
    assert (place.unit, place.user_unit, place.uid) == ("user@1000.service", None, 1000)
    place = lib_users.placement_of(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service")
    assert (place.unit, place.user_unit) == ("user@1000.service", "pipewire.service")
    place = lib_users.placement_of("/system.slice/system-getty.slice/getty@tty1.service")
    assert (place.unit, place.session, place.uid) == ("getty@tty1.service", None, None)
    place = lib_users.placement_of("/")
    assert place == lib_users.Placement(None, None, None, None, None, None)


@pytest.mark.parametrize("unit, safe", [
    ("ssh.service", True), ("openvpn@office.service", True),
    ("systemd-journald.service", True), ("cron.service", True),
    ("dbus.service", False), ("dbus-broker.service", False), ("getty@tty1.service", False),
    ("serial-getty@ttyS0.service", False), ("user@1000.service", False),
    ("session-3.scope", False), ("init.scope", False), ("systemd-logind.service", False),
    ("gdm.service", False), ("docker-abc.scope", False), ("var-lib.mount", False),
])
def test_svc_held_back_reason(unit, safe):
    assert (lib_users.held_back_reason(unit) is None) == safe


def test_svc_plan_restarts_unknown_uid():
    finding = lib_users.Finding(10, ["x"], {}, None, lib_users.placement_of(
        "/user.slice/user-4242424.slice/session-9.scope"))
    plan = lib_users.plan_restarts([finding])
    assert plan.restart == []
    assert plan.entries[0].label == "session-9.scope"
    assert "uid 4242424" in plan.entries[0].reason


def test_svc_own_namespaces_of_a_tree_are_its_pid_1():
    assert lib_users.own_namespaces(_svc_tree("svc-units")) == ("mnt:[4026531841]",
                                                                 "pid:[4026531836]")
    assert lib_users.own_namespaces(_svc_tree("no-such-tree")) == (None, None)


@_SVC_LIVE
def test_svc_own_namespaces_live():
    assert lib_users.own_namespaces() == (os.readlink("/proc/self/ns/mnt"),
                                          os.readlink("/proc/self/ns/pid"))


def test_svc_read_placement_namespaces():
    tree = _svc_tree("svc-units")
    own = lib_users.own_namespaces(tree)

    def place(pid):
        with lib_users.ProcDir(tree, pid) as pdir:
            return lib_users.read_placement(pdir, own, {})

    assert place(660).container is None  # a mount namespace of its own: a sandbox
    assert place(2500).container == "unknown"  # another PID namespace, no name
    assert place(2100).container == "docker:4f3c2a1b9e8d"  # the name wins


def test_svc_read_placement_shares_answers_by_cgroup_and_namespace(tmp_path):
    """One unit's processes share one Placement; one in another PID namespace with the
    same cgroup file is still told apart, and sharing never changes an answer."""
    cgroup = b"0::/system.slice/app.service\n"
    for pid, pid_ns in ((1, "pid:[1]"), (10, "pid:[1]"), (11, "pid:[2]"), (12, None)):
        os.makedirs(tmp_path / str(pid) / "ns")
        (tmp_path / str(pid) / "cgroup").write_bytes(cgroup if pid > 1 else b"0::/init.scope\n")
        if pid_ns is not None:
            os.symlink(pid_ns, tmp_path / str(pid) / "ns" / "pid")
    own = (None, "pid:[1]")
    known = {}

    def place(pid, known):
        with lib_users.ProcDir(str(tmp_path), pid) as pdir:
            return lib_users.read_placement(pdir, own, {}, known)

    answers = [place(pid, known) for pid in (10, 11, 12, 10, 11)]
    assert answers == [place(pid, None) for pid in (10, 11, 12, 10, 11)]
    assert [a.container for a in answers] == [None, "unknown", None, None, "unknown"]
    assert {a.unit for a in answers} == {"app.service"}
    assert answers[0] is answers[2] is answers[3] and answers[1] is answers[4]


# ---- containers ------------------------------------------------------------------------


_SVC_DELETE_POD = ("a container of the Kubernetes pod with UID %s: delete the pod (kubectl "
                   "delete pod -n NAMESPACE NAME) so that its controller recreates it")


_SVC_CONTAINERS = {  # pid: (label, held-back reason), with no LXC tool on PATH
    3090: ("-", "no systemd unit or init script: restart them by hand"),  # podman's conmon
    3100: ("podman:53807d4f4e36", "restart the container: podman restart 53807d4f4e36"),
    3110: ("podman:c887a7dbb850", "restart the container: podman restart c887a7dbb850"),
    3200: ("containerd:e1d2c3b4a596",
           _SVC_DELETE_POD % "3b5a1e8c-7d2f-4c1a-9e6b-0f4d2c8a7b91"),
    3210: ("containerd:0b1c2d3e4f5a",
           _SVC_DELETE_POD % "8f2e6d4c-1b3a-4e5f-a6b7-c8d9e0f1a2b3"),
    3290: ("crio-conmon-7c6b5a4938271605f4e3d2c1b0a9f8e77e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b.scope",
           "a group of processes systemd did not start: restart the program itself"),
    3300: ("cri-o:7c6b5a493827", _SVC_DELETE_POD % "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f"),
    3310: ("cri-o:3a4b5c6d7e8f", _SVC_DELETE_POD % "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f"),
    3400: ("cri:a0b1c2d3e4f5", _SVC_DELETE_POD % "6e7f8091-a2b3-4c4d-9e5f-061728394a5b"),
    3410: ("cri:5f4e3d2c1b0a", _SVC_DELETE_POD % "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"),
    3490: ("-", "no systemd unit or init script: restart them by hand"),  # the LXC monitor
    3500: ("lxc:db1", "restart the LXC container db1 (none of lxc-stop, lxc or incus is "
                      "installed here)"),
    3600: ("?", "its cgroup could not be read (Is a directory): find out what runs it"),
}


def _svc_path_with(tmp_path, *commands):
    """An environment whose PATH holds only these (empty, executable) commands."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in commands:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    return dict(os.environ, PATH=str(folder))


# The container's root is a directory of symlinks into the host's /usr, bind-mounted
# read-only, so no image (and no registry) is needed. Its Python loads a copy of libz
# from a bind-mounted temporary directory, deletes it and sleeps.
_SVC_IN_CONTAINER = ("import ctypes, os, time\nctypes.CDLL('/lu/libz.so.1')\n"
                     "os.unlink('/lu/libz.so.1')\ntime.sleep(600)\n")


def _svc_cgroup_hybrid_with_v2_controllers():
    """crun refuses a cgroup v1 hybrid host whose v2 hierarchy has controllers ("cgroups
    in hybrid mode not supported, drop all controllers from cgroupv2")."""
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as controllers:
            return bool(controllers.read().split())
    except OSError:
        return False


def _svc_podman(*args, timeout=120, private_cgroup2=False):
    cmd = ["podman"] + list(args)
    if private_cgroup2:
        # Only in a mount namespace of the test's own: podman and crun then see a plain
        # cgroup v1 host; the host's mounts are untouched.
        cmd = ["unshare", "-m", "sh", "-c",
               'umount /sys/fs/cgroup/unified && exec "$@"', "sh"] + cmd
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


@pytest.fixture
def _svc_podman_container():
    """(container ID, PID of its Python, PID of its conmon); the container is removed
    and the directories deleted afterwards, whatever happens."""
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    if os.geteuid() != 0:
        pytest.skip("needs root (rootless podman lays its cgroups out otherwise)")
    libz = find_libz() or pytest.skip("no libz.so.1 to copy")
    top = tempfile.mkdtemp(prefix="lib_users_podman_")
    rootfs, shared = os.path.join(top, "root"), os.path.join(top, "lu")
    for name in ("proc", "sys", "dev", "tmp", "run", "etc", "usr"):
        os.makedirs(os.path.join(rootfs, name))
    for name in ("bin", "lib", "lib64", "sbin"):
        os.symlink("usr/" + name, os.path.join(rootfs, name))
    os.mkdir(shared)
    shutil.copyfile(libz, os.path.join(shared, "libz.so.1"))
    private = _svc_cgroup_hybrid_with_v2_controllers() and shutil.which("unshare")
    name = "lib_users_test_%d_%d" % (os.getpid(), int(time.time() * 1000))
    container = None
    try:
        # The limits: podman raises them for root, which fails without CAP_SYS_RESOURCE.
        run = _svc_podman(
            "run", "-d", "--name", name, "--network", "none",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "-v", "/usr:/usr:ro", "-v", "%s:/lu" % shared,
            "--rootfs", rootfs, "/usr/bin/python3", "-c", _SVC_IN_CONTAINER,
            private_cgroup2=bool(private))
        container = run.stdout.strip() or None
        if run.returncode != 0 or container is None:
            pytest.skip("podman cannot run a container here: %s" % (
                run.stderr.strip().splitlines() or ["exit %d" % run.returncode])[-1])
        state = _svc_podman("inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}",
                            container)
        assert state.returncode == 0, state.stderr
        pid, conmon = map(int, state.stdout.split())
        deadline = time.monotonic() + 30
        while True:  # until the copy is loaded and deleted
            with open("/proc/%d/maps" % pid) as maps:
                if "/lu/libz.so.1 (deleted)" in maps.read():
                    break
            assert time.monotonic() < deadline, "the container's Python never got ready"
            time.sleep(0.05)
        yield container, pid, conmon
    finally:
        _svc_podman("rm", "-f", "-t", "0", container or name, timeout=60,
                    private_cgroup2=bool(private))
        usr = os.path.join(rootfs, "usr")
        if os.path.ismount(usr) or os.listdir(usr):
            # Never delete through a bind mount of the host's /usr.
            warnings.warn("left %s behind: its usr/ is still mounted" % top)
        else:
            shutil.rmtree(top, ignore_errors=True)


# Classic LXC, with an lxcpath of the test's own: a root of symlinks into the host's
# /usr as for podman, and the same Python.
@pytest.fixture
def _svc_lxc_container():
    """(name, lxcpath, PID of its Python, PID of its monitor); stopped and deleted
    afterwards, whatever happens."""
    if shutil.which("lxc-start") is None or shutil.which("lxc-stop") is None:
        pytest.skip("needs lxc-start and lxc-stop (classic LXC)")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    libz = find_libz() or pytest.skip("no libz.so.1 to copy")
    top = tempfile.mkdtemp(prefix="lib_users_lxc_")
    name = "lu%d" % os.getpid()
    rootfs, shared = os.path.join(top, name, "rootfs"), os.path.join(top, "lu")
    for sub in ("proc", "sys", "dev", "tmp", "run", "etc", "usr", "lu"):
        os.makedirs(os.path.join(rootfs, sub))
    for sub in ("bin", "lib", "lib64", "sbin"):
        os.symlink("usr/" + sub, os.path.join(rootfs, sub))
    os.mkdir(shared)
    shutil.copyfile(libz, os.path.join(shared, "libz.so.1"))
    with open(os.path.join(shared, "run.py"), "w") as script:
        script.write(_SVC_IN_CONTAINER)
    with open(os.path.join(top, name, "config"), "w") as config:
        config.write("lxc.uts.name = %s\nlxc.rootfs.path = dir:%s\n"
                     "lxc.mount.entry = /usr usr none bind,ro 0 0\n"
                     "lxc.mount.entry = %s lu none bind 0 0\n"
                     "lxc.mount.auto = proc:mixed sys:ro\nlxc.autodev = 1\n"
                     "lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n"
                     "lxc.init.cmd = /usr/bin/python3 /lu/run.py\n" % (name, rootfs, shared))

    def lxc(tool, *args):
        return subprocess.run([tool, "-P", top, "-n", name] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60)

    try:
        start = lxc("lxc-start", "-d", "-o", os.path.join(top, "log"))
        if start.returncode != 0:
            pytest.skip("lxc-start cannot start a container here: %s" % (
                start.stdout.strip().splitlines() or ["exit %d" % start.returncode])[-1])
        pid = None
        deadline = time.monotonic() + 30
        while True:  # until it runs, and its Python has loaded and deleted the copy
            info = lxc("lxc-info", "-p", "-H")
            if info.returncode == 0 and info.stdout.strip().isdigit():
                pid = int(info.stdout)
                try:
                    with open("/proc/%d/maps" % pid) as maps:
                        if "/lu/libz.so.1 (deleted)" in maps.read():
                            break
                except FileNotFoundError:
                    pass
            assert time.monotonic() < deadline, "the container's Python never got ready"
            time.sleep(0.05)
        with open("/proc/%d/stat" % pid) as stat_file:  # its parent is the monitor
            monitor = int(stat_file.read().rsplit(")", 1)[1].split()[1])
        yield name, top, pid, monitor
    finally:
        lxc("lxc-stop", "-k")
        usr = os.path.join(rootfs, "usr")
        if os.path.ismount(usr) or os.listdir(usr):
            warnings.warn("left %s behind: its usr/ is still mounted" % top)
        else:
            shutil.rmtree(top, ignore_errors=True)


def test_svc_containers_S_labels_and_advice(tmp_path):
    result = _svc_run("-S", proc="svc-containers", env=_svc_path_with(tmp_path))
    assert result.returncode == 0 and result.stderr == ""
    units, restart, held = _svc_sections(result.stdout)
    assert restart is None  # nothing here is a host service
    assert {int(pids): label for label, pids, _argv in units} == {
        pid: label for pid, (label, _reason) in _SVC_CONTAINERS.items()}
    reasons = {label: reason for label, reason in _SVC_CONTAINERS.values()}
    assert held == dict(reasons, **{"processes without a unit": reasons.pop("-")})


@pytest.mark.parametrize("commands, advice", [
    ((), "restart the LXC container db1 (none of lxc-stop, lxc or incus is installed here)"),
    (("lxc-stop",), "restart the container: lxc-stop -n db1 -r"),
    (("lxc",), "restart the container: lxc restart db1"),
    (("incus",), "restart the container: incus restart db1"),
    (("lxc-stop", "incus"), "restart the container: lxc-stop -n db1 -r or incus restart db1"),
])
def test_svc_containers_S_lxc_advice_names_installed_commands(tmp_path, commands, advice):
    result = _svc_run("-S", "-p", "3500", proc="svc-containers",
                      env=_svc_path_with(tmp_path, *commands))
    assert _svc_sections(result.stdout)[2] == {"lxc:db1": advice}


def test_svc_containers_lxc_commands_looked_up_once_and_only_for_lxc():
    asked = []

    def which(command):
        asked.append(command)
        return "/usr/bin/" + command if command == "lxc" else None

    findings = [lib_users.Finding(pid, ["x"], {}, None, lib_users.placement_of(cgroup))
                for pid, cgroup in ((1, "/lxc.payload.a"), (2, "/lxc.payload.b"),
                                    (3, "/docker/" + _SVC_DOCKER), (4, "/system.slice/x.service"))]
    plan = lib_users.plan_restarts(findings, which)
    assert sorted(asked) == ["incus", "lxc", "lxc-stop"]
    assert {e.label: e.reason for e in plan.entries}["lxc:b"] == (
        "restart the container: lxc restart b")
    assert lib_users.plan_restarts(findings[2:], which).restart == ["x.service"]
    assert sorted(asked) == ["incus", "lxc", "lxc-stop"]  # no LXC: nothing looked up


def test_svc_containers_json(tmp_path):
    doc = _svc_json(proc="svc-containers", env=_svc_path_with(tmp_path))
    assert doc["complete"] is True and doc["unreadable"] == 0
    assert doc["restart"] == []
    procs = {p["pid"]: p for p in doc["processes"]}
    assert sorted(procs) == sorted(_SVC_CONTAINERS)
    got = {pid: (p["container"], p["pod"], p["cgroup_error"]) for pid, p in procs.items()}
    assert got == {
        3090: (None, None, None),
        3100: ("podman:53807d4f4e36", None, None),
        3110: ("podman:c887a7dbb850", None, None),
        3200: ("containerd:e1d2c3b4a596", "3b5a1e8c-7d2f-4c1a-9e6b-0f4d2c8a7b91", None),
        3210: ("containerd:0b1c2d3e4f5a", "8f2e6d4c-1b3a-4e5f-a6b7-c8d9e0f1a2b3", None),
        3290: (None, None, None),
        3300: ("cri-o:7c6b5a493827", "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f", None),
        3310: ("cri-o:3a4b5c6d7e8f", "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f", None),
        3400: ("cri:a0b1c2d3e4f5", "6e7f8091-a2b3-4c4d-9e5f-061728394a5b", None),
        3410: ("cri:5f4e3d2c1b0a", "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6", None),
        3490: (None, None, None),
        3500: ("lxc:db1", None, None),
        3600: (None, None, "Is a directory"),
    }
    assert procs[3090]["unit"] is None  # conmon: name=systemd is "/", v2 is "/"
    assert procs[3200]["unit"] == "cri-containerd-%s.scope" % (
        "e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e")
    assert procs[3400]["unit"] is None  # kubelet's cgroupfs driver makes no units
    assert procs[3600]["unit"] is None and procs[3600]["files"][0]["path"] == _SVC_LIBSSL
    groups = {tuple(g["pids"]): g for g in doc["groups"]}
    assert groups[(3300,)]["pod"] == "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f"
    assert groups[(3100,)]["pod"] is None
    assert all("pod" in g for g in doc["groups"])


def test_svc_containers_unreadable_cgroup_in_every_format(tmp_path):
    # A process whose cgroup file cannot be read is still a process that uses a deleted
    # library: every format reports it, and the scan is complete.
    env = _svc_path_with(tmp_path)
    text = _svc_run("-p", "3600", proc="svc-containers", env=env)
    assert text.stdout == '3600 "/opt/tool/bin/tool --serve"\n'
    units, restart, held = _svc_sections(
        _svc_run("-S", "-p", "3600", proc="svc-containers", env=env).stdout)
    assert units == [("?", "3600", "/opt/tool/bin/tool --serve")] and restart is None
    assert "could not be read" in held["?"]
    doc = _svc_json("-p", "3600", proc="svc-containers", env=env)
    assert [p["pid"] for p in doc["processes"]] == [3600] and doc["complete"] is True
    nagios = _svc_run("--nagios", "-p", "3600", proc="svc-containers", env=env)
    assert nagios.returncode == 1 and "1 process uses deleted files" in nagios.stdout
    families = _svc_parse_prometheus(
        _svc_run("--prometheus", "-p", "3600", proc="svc-containers", env=env).stdout)
    assert _svc_value(families, "lib_users_processes") == 1
    assert _svc_value(families, "lib_users_scan_complete") == 1


def test_svc_containers_prometheus_labels():
    families = _svc_parse_prometheus(_svc_run("--prometheus", proc="svc-containers").stdout)
    series = {(labels["unit"], labels["container"]): value for labels, value in
              families["lib_users_unit_processes"]["samples"]}
    assert series[("", "podman:53807d4f4e36")] == 1
    assert series[("", "cri:a0b1c2d3e4f5")] == 1
    assert series[("", "cri-o:3a4b5c6d7e8f")] == 1
    crio = "7c6b5a4938271605f4e3d2c1b0a9f8e77e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
    assert series[("crio-%s.scope" % crio, "cri-o:7c6b5a493827")] == 1
    assert series[("", "lxc:db1")] == 1
    assert series[("", "")] == 3  # the monitors, and the process with no cgroup read
    assert sum(series.values()) == len(_SVC_CONTAINERS)


def test_svc_podman_live(_svc_podman_container):
    container, pid, conmon = _svc_podman_container
    label = "podman:" + container[:12]
    with open("/proc/%d/cgroup" % pid) as cgroup:
        lines = cgroup.read().splitlines()
    # What svc-containers copies: cgroupfs puts it in /libpod_parent/libpod-ID, systemd
    # in a libpod-ID.scope.
    assert any(line.endswith(("/libpod_parent/libpod-" + container,
                              "/libpod-%s.scope" % container, "/libpod-%s.scope/container"
                              % container)) for line in lines), lines
    result = _svc_run("-S", "-p", str(pid))
    assert result.returncode == 0, result.stderr
    units, restart, held = _svc_sections(result.stdout)
    assert [(u[0], u[1]) for u in units] == [(label, str(pid))]
    assert restart is None
    assert held == {label: "restart the container: podman restart " + container[:12]}
    doc = _svc_json("-p", str(pid))
    (record,) = doc["processes"]
    assert (record["container"], record["pod"], record["cgroup_error"]) == (label, None, None)
    assert record["files"][0]["path"] == "/lu/libz.so.1"
    assert record["files"][0]["replaced"] is False  # deleted, and nothing in its place
    # conmon watches the container from outside: never labelled as the container.
    with open("/proc/%d/cgroup" % conmon, "rb") as cgroup:
        place = lib_users.placement_of(lib_users.parse_cgroup(cgroup.read()))
    assert place.container is None


def test_svc_lxc_live(_svc_lxc_container, tmp_path):
    name, _lxcpath, pid, monitor = _svc_lxc_container
    label = "lxc:" + name
    with open("/proc/%d/cgroup" % pid) as cgroup:
        lines = cgroup.read().splitlines()
    assert any(line.endswith(":/lxc.payload." + name) for line in lines), lines
    with open("/proc/%d/cgroup" % monitor, "rb") as cgroup:
        place = lib_users.placement_of(lib_users.parse_cgroup(cgroup.read()))
    assert place.container is None  # the monitor: lxc.monitor.NAME, beside it
    env = _svc_path_with(tmp_path, "lxc-stop")  # classic LXC only, whatever is installed
    units, restart, held = _svc_sections(_svc_run("-S", "-p", str(pid), env=env).stdout)
    assert [(u[0], u[1]) for u in units] == [(label, str(pid))] and restart is None
    assert held == {label: "restart the container: lxc-stop -n %s -r" % name}
    (record,) = _svc_json("-p", str(pid), env=env)["processes"]
    assert record["container"] == label and record["files"][0]["path"] == "/lu/libz.so.1"


# ---- reboot ----------------------------------------------------------------------------


_SVC_RELEASE = "6.1.0-9-amd64"


def _svc_boot(root, kernels=(_SVC_RELEASE,), modules=(_SVC_RELEASE,), usr=False):
    (root / "boot").mkdir()
    (root / "boot" / ("config-" + _SVC_RELEASE)).write_text("CONFIG_X=y\n")
    for release in kernels:
        (root / "boot" / ("vmlinuz-" + release)).write_bytes(b"\x7fELF")
    for release in modules:
        base = root / "usr" / "lib" / "modules" if usr else root / "lib" / "modules"
        (base / release / "kernel").mkdir(parents=True)


_SVC_SHARED = "/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so"


def test_svc_reboot_nothing(tmp_path):
    _svc_boot(tmp_path)
    assert lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE) == []


def test_svc_reboot_empty_root(tmp_path):
    assert lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE) == []


def test_svc_reboot_older_kernels_are_fine(tmp_path):
    _svc_boot(tmp_path, kernels=("6.1.0-8-amd64", _SVC_RELEASE, "5.10.0-30-amd64"),
              modules=("6.1.0-8-amd64", _SVC_RELEASE))
    assert lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE) == []


def test_svc_reboot_newer_kernel(tmp_path):
    _svc_boot(tmp_path, kernels=(_SVC_RELEASE, "6.1.0-10-amd64"),
              modules=(_SVC_RELEASE, "6.1.0-10-amd64"))
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert reasons == ["kernel 6.1.0-10-amd64 is installed but 6.1.0-9-amd64 is running"]


def test_svc_reboot_newer_kernel_only_in_boot(tmp_path):
    _svc_boot(tmp_path, kernels=(_SVC_RELEASE, "6.1.0-10-amd64"), modules=(_SVC_RELEASE,))
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert len(reasons) == 1 and "6.1.0-10-amd64 is installed" in reasons[0]


def test_svc_reboot_modules_gone(tmp_path):
    _svc_boot(tmp_path, modules=("6.1.0-8-amd64",))
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert reasons == ["the modules of the running kernel 6.1.0-9-amd64 are gone"]


def test_svc_reboot_modules_in_usr_lib(tmp_path):
    _svc_boot(tmp_path, usr=True)
    assert lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE) == []
    (tmp_path / "usr" / "lib" / "modules" / _SVC_RELEASE / "kernel").rmdir()
    (tmp_path / "usr" / "lib" / "modules" / _SVC_RELEASE).rmdir()
    (tmp_path / "usr" / "lib" / "modules" / "6.1.0-8-amd64").mkdir()
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert reasons == ["the modules of the running kernel 6.1.0-9-amd64 are gone"]


def test_svc_reboot_flag_file_with_packages(tmp_path):
    _svc_boot(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("*** System restart required ***\n")
    (tmp_path / "run" / "reboot-required.pkgs").write_text("libc6\nlinux-base\nlibc6\n")
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert reasons == ["the distribution asks for one (/run/reboot-required) after "
                       "upgrading libc6, linux-base"]


def test_svc_reboot_flag_file_alone(tmp_path):
    _svc_boot(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("")
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert reasons == ["the distribution asks for one (/run/reboot-required)"]


def test_svc_reboot_all_reasons(tmp_path):
    _svc_boot(tmp_path, kernels=("6.1.0-10-amd64",), modules=("6.1.0-10-amd64",))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("")
    reasons = lib_users.kernel_reboot_reasons(root=str(tmp_path), release=_SVC_RELEASE)
    assert len(reasons) == 3


def test_svc_reboot_json_pid_1():
    doc = _svc_json(proc="svc-reboot")
    assert doc["reboot"]["needed"] is True
    assert doc["reboot"]["files"] == [_SVC_SHARED]
    assert len(doc["reboot"]["reasons"]) == 1 and _SVC_SHARED in doc["reboot"]["reasons"][0]
    # What re-executes init instead, with systemd and with sysvinit.
    assert all(way in doc["reboot"]["reasons"][0]
               for way in ("systemctl daemon-reexec", "telinit u"))
    assert doc["restart"] == ["ssh.service"]


@pytest.mark.parametrize("mode", [[], ["-S"], ["-m"]])
def test_svc_reboot_text_says_it_once(mode):
    result = _svc_run(*mode, proc="svc-reboot")
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lib_users: reboot needed: ")
    assert _SVC_SHARED in lines[0]
    assert "reboot" not in result.stdout.replace("or reboot", "")


def test_svc_reboot_S_holds_back_init():
    _units, restart, held = _svc_sections(_svc_run("-S", proc="svc-reboot").stdout)
    assert shlex.split(restart)[2:] == ["ssh.service"]
    assert "daemon-reexec" in held["init.scope"]


def test_svc_no_reboot_message_without_reason():
    result = _svc_run(proc="svc-units")
    assert result.stderr == ""
    assert _svc_run("--json", proc="svc-reboot").stderr == ""


# ---- Nagios ----------------------------------------------------------------------------


_SVC_NAGIOS = re.compile(r"^LIB_USERS (OK|WARNING|CRITICAL|UNKNOWN) - ([^|]*) \| "
                         r"processes=(\d+);(\d*);(\d*);0 services=(\d+);;;0 unreadable=(\d+);;;0$")


@pytest.fixture(scope="module")
def _svc_found_pids(_svc_units_json):
    return sorted(p["pid"] for p in _svc_units_json["processes"])


def test_svc_nagios_warning_line_by_line(_svc_units_json):
    result = _svc_run("--nagios", proc="svc-units")
    assert result.returncode == 1
    assert result.stderr == ""
    lines = result.stdout.split("\n")
    assert lines[-1] == ""
    count = len(_svc_units_json["processes"])
    assert lines[0] == ("LIB_USERS WARNING - %d processes use deleted files, 5 to restart "
                        "(%s) | processes=%d;0;;0 services=5;;;0 unreadable=0;;;0"
                        % (count, ", ".join(_SVC_SAFE), count))
    groups = _svc_units_json["groups"]
    assert len(lines) == 1 + len(groups) + 1
    for line, group in zip(lines[1:], groups):
        pids = ",".join(map(str, group["pids"]))
        assert line.startswith('%s "' % pids) and line.endswith('"')


@pytest.mark.parametrize("count, state, status", [
    (0, "OK", 0), (5, "OK", 0), (6, "WARNING", 1), (10, "WARNING", 1),
    (11, "CRITICAL", 2), (None, "CRITICAL", 2)])
def test_svc_nagios_thresholds(_svc_found_pids, count, state, status):
    pids = _svc_found_pids if count is None else _svc_found_pids[:count]
    if count == 0:
        pids = [2700]  # a process that uses no deleted file
    result = _svc_run("--nagios", "-w", "5", "-c", "10", "-p", ",".join(map(str, pids)),
                      proc="svc-units")
    assert result.returncode == status
    match = _SVC_NAGIOS.match(result.stdout.split("\n")[0])
    assert match, result.stdout
    assert match.group(1) == state
    assert match.group(3, 4, 5) == (str(len(pids) if count != 0 else 0), "5", "10")


def test_svc_nagios_ok_on_a_clean_tree():
    result = _svc_run("--nagios", proc="svc-clean")
    assert result.returncode == 0
    assert result.stdout == ("LIB_USERS OK - no process uses deleted files | "
                             "processes=0;0;;0 services=0;;;0 unreadable=0;;;0\n")
    assert result.stderr == ""


def test_svc_nagios_what_was_found_wins_over_an_incomplete_scan():
    # 1 process found, 1 unreadable: the finding alerts, the gap is said beside it.
    result = _svc_run("--nagios", proc="svc-unreadable")
    assert result.returncode == 1
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines == ["LIB_USERS WARNING - 1 process uses deleted files, 1 to restart "
                     "(cron.service); 1 process could not be read | "
                     "processes=1;0;;0 services=1;;;0 unreadable=1;;;0",
                     '640 "/usr/sbin/cron -f"']


def test_svc_nagios_critical_wins_over_an_incomplete_scan():
    result = _svc_run("--nagios", "-w", "0", "-c", "0", proc="svc-unreadable")
    assert result.returncode == 2
    assert result.stdout.startswith("LIB_USERS CRITICAL - 1 process uses deleted files")
    assert " unreadable=1;;;0\n" in result.stdout


def test_svc_nagios_unknown_when_nothing_found_and_incomplete():
    result = _svc_run("--nagios", "-p", "612,650", proc="svc-unreadable")
    assert result.returncode == 3
    assert result.stdout == ("LIB_USERS UNKNOWN - no process uses deleted files; 1 process "
                             "could not be read | processes=0;0;;0 services=0;;;0 "
                             "unreadable=1;;;0\n")


def test_svc_nagios_reboot_in_summary():
    result = _svc_run("--nagios", proc="svc-reboot")
    assert result.returncode == 1
    summary = _SVC_NAGIOS.match(result.stdout.split("\n")[0]).group(2)
    assert summary.endswith("; reboot needed")


def test_svc_nagios_missing_proc_dir(tmp_path):
    result = subprocess.run([sys.executable, LIB_USERS, "--nagios", "--proc",
                             str(tmp_path / "nowhere")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 3
    assert result.stdout.startswith("LIB_USERS UNKNOWN - cannot read ")
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_svc_nagios_empty_proc_dir(tmp_path):
    result = subprocess.run([sys.executable, LIB_USERS, "--nagios", "--proc", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60)
    assert result.returncode == 3
    assert result.stdout.startswith("LIB_USERS UNKNOWN - no processes found in ")


@pytest.mark.parametrize("args", [
    ["--nagios", "--bogus"], ["--nagios", "-w", "five"], ["--nagios", "-c", "-1"],
    ["--nagios", "--json"], ["--nagios", "-w"], ["--nagios", "extra"],
    ["--nag", "--bogus"],  # an abbreviation that parse_args accepts for --nagios
])
def test_svc_nagios_usage_error_is_unknown(args):
    result = _svc_run(*args, proc="svc-clean")
    assert result.returncode == 3
    assert result.stdout.startswith("LIB_USERS UNKNOWN - usage error: ")
    assert result.stdout.count("\n") == 1


def test_svc_nagios_long_output_has_no_pipe():
    # Nagios reads everything after a '|' in the long output as performance data: an
    # argv such as `sh -c 'a | b'` must not put one there.
    result = _svc_run("--nagios", proc="svc-odd")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].count("|") == 1
    assert len(lines) == 4
    for line in lines[1:]:
        assert "|" not in line, line


# ---- Prometheus ------------------------------------------------------------------------


def test_svc_prometheus_validator_rejects_bad_text():
    for bad in ('m{a="x} 1\n', "m 1\n", "# TYPE m gauge\nm{a=\"\\x\"} 1\n",
                "# HELP m h\n# TYPE m gauge\nm one\n", "# TYPE 1m gauge\n",
                "# HELP m h\n# TYPE m gauge\n# HELP n h\n# TYPE n gauge\nn 1\nm 1\n"):
        with pytest.raises(AssertionError):
            _svc_parse_prometheus(bad)
    good = _svc_parse_prometheus('# HELP m h\n# TYPE m gauge\nm{a="q\\"\\\\",b=""} +Inf\n')
    assert good["m"]["samples"] == [({"a": 'q"\\', "b": ""}, float("inf"))]


def test_svc_prometheus_units_tree(_svc_units_json):
    before = time.time()
    result = _svc_run("--prometheus", proc="svc-units")
    assert result.returncode == 0 and result.stderr == ""
    families = _svc_parse_prometheus(result.stdout)
    assert all(name.startswith("lib_users_") for name in families)
    assert all(f["type"] == "gauge" for f in families.values())
    assert set(families) == {
        "lib_users_processes", "lib_users_unit_processes", "lib_users_package_processes",
        "lib_users_services_to_restart", "lib_users_reboot_required", "lib_users_scan_complete",
        "lib_users_unreadable_processes", "lib_users_unanswered_processes",
        "lib_users_scan_timestamp_seconds"}
    count = len(_svc_units_json["processes"])
    assert _svc_value(families, "lib_users_processes") == count
    assert _svc_value(families, "lib_users_services_to_restart") == 5
    assert _svc_value(families, "lib_users_reboot_required") == 0
    assert _svc_value(families, "lib_users_scan_complete") == 1
    assert _svc_value(families, "lib_users_unreadable_processes") == 0
    assert _svc_value(families, "lib_users_unanswered_processes") == 0
    stamp = _svc_value(families, "lib_users_scan_timestamp_seconds")
    assert before - 1 <= stamp <= time.time() + 1
    by_unit = families["lib_users_unit_processes"]["samples"]
    assert all(set(labels) == {"unit", "container"} for labels, _v in by_unit)
    assert sum(v for _l, v in by_unit) == count
    unit = "lib_users_unit_processes"
    assert _svc_value(families, unit, unit="ssh.service", container="") == 1
    assert _svc_value(families, unit, unit="session-3.scope", container="") == 2
    assert _svc_value(families, unit, unit="", container="") == 2
    assert _svc_value(families, unit, unit="", container="unknown") == 1
    assert _svc_value(families, unit, unit="docker-%s.scope" % _SVC_DOCKER,
                      container="docker:4f3c2a1b9e8d") == 1
    assert _svc_value(families, unit, unit="apache2.service", container="lxc:web1") == 1


def test_svc_prometheus_incomplete_and_reboot():
    families = _svc_parse_prometheus(_svc_run("--prometheus", proc="svc-unreadable").stdout)
    assert _svc_value(families, "lib_users_processes") == 1  # what was found stands
    assert _svc_value(families, "lib_users_scan_complete") == 0
    assert _svc_value(families, "lib_users_unreadable_processes") == 1
    families = _svc_parse_prometheus(_svc_run("--prometheus", proc="svc-reboot").stdout)
    assert _svc_value(families, "lib_users_reboot_required") == 1


def test_svc_prometheus_clean_tree():
    families = _svc_parse_prometheus(_svc_run("--prometheus", proc="svc-clean").stdout)
    assert _svc_value(families, "lib_users_processes") == 0
    assert families["lib_users_unit_processes"]["samples"] == []


def test_svc_prometheus_label_escaping():
    result = _svc_run("--prometheus", proc="svc-odd")
    assert 'unit="odd\\"name.service"' in result.stdout
    families = _svc_parse_prometheus(result.stdout)
    units = {labels["unit"] for labels, _v in families["lib_users_unit_processes"]["samples"]}
    # Parsed back, a label is the unit's real name: systemd's \x2d stays one backslash.
    assert units == {'odd"name.service', "openvpn-client@my\\x2dvpn.service",
                     "relay.service"}


def test_svc_prometheus_fixed_timestamp():
    result = lib_users.scan(_svc_tree("svc-clean"), lib_users.ScanOptions(services=True))
    text = lib_users.render_prometheus(lib_users.build_report(result), now=1700000000.5)
    assert text.endswith("# TYPE lib_users_scan_timestamp_seconds gauge\n"
                         "lib_users_scan_timestamp_seconds 1700000000.500\n")
    _svc_parse_prometheus(text)


@_SVC_LIVE
def test_svc_prometheus_live_parses(_live_stale_children):
    result = _svc_run("--prometheus")
    assert result.returncode == 0
    _svc_parse_prometheus(result.stdout)
    # Three children that map a deleted library: three processes, all read.
    result = _svc_run("--prometheus", *_live_stale_children)
    assert result.returncode == 0
    families = _svc_parse_prometheus(result.stdout)
    assert _svc_value(families, "lib_users_processes") == 3
    assert _svc_value(families, "lib_users_scan_complete") == 1
    assert _svc_value(families, "lib_users_unreadable_processes") == 0


# ==== the Python API ====================================================================
# The lsof-style procfs API (get_processes, get_process_files, get_file_info) against a
# real child process that holds one file of every kind (api_child), and against lsof.


@pytest.fixture(scope="module")
def api_files(api_child):
    return lib_users.get_process_files(api_child.pid)


@pytest.fixture(scope="module")
def api_infos(api_child, api_files):
    """{fd number: FileInfo} for every descriptor of the child."""
    return {ref.fd: lib_users.get_file_info(ref) for ref in api_files.fds}


def _api_expected_mount(path):
    """(mount point, fs type) of an existing path: findmnt where installed, else the
    deepest (last-mounted) entry of our own mountinfo with the path's device."""
    findmnt = shutil.which("findmnt")
    if findmnt:
        out = subprocess.run([findmnt, "-n", "-o", "TARGET,FSTYPE", "-T", path],
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
        if len(out) == 2:
            return out[0], out[1]
    st = os.stat(path)
    best = None
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            fields = left.split()
            major, minor = map(int, fields[2].split(":"))
            point = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\012", "\n").replace("\\134", "\\")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev)) and inside:
                if best is None or len(point) >= len(best[0]):
                    best = (point, right.split()[0])
    return best


_API_TYPES = {
    "regular": "REG", "append": "REG", "deleted": "REG", "dir": "DIR", "pipe_r": "FIFO",
    "pipe_w": "FIFO", "fifo_r": "FIFO", "fifo_w": "FIFO", "null": "CHR",
    "tcp_listen": "IPv4", "tcp_client": "IPv4", "tcp_server": "IPv4",
    "tcp6_listen": "IPv6", "udp": "IPv4", "unix_path": "unix", "unix_abstract": "unix",
    "unix_pair": "unix", "posix_lock": "REG", "flock": "REG", "range_lock": "REG",
    "ofd_lock": "REG",
    "memfd": "REG", "epoll": "a_inode", "shm": "REG",
}


def _api_names(api_child):
    return [name for name in _API_TYPES if name in api_child.report]


# ---- FileInfo --------------------------------------------------------------------------


def _api_info(api_child, api_infos, name):
    return api_infos[api_child.fd(name)]


_API_MODES = {os.O_RDONLY: "r", os.O_WRONLY: "w", os.O_RDWR: "rw"}


def test_api_file_info_type_mode_flags(api_child, api_infos):
    for name in _api_names(api_child):
        known = api_child.report[name]
        info = _api_info(api_child, api_infos, name)
        assert info.ref == lib_users.FileRef(api_child.pid, known["fd"], info.ref.target)
        assert info.type == _API_TYPES[name], name
        assert info.mode == _API_MODES[known["flags"] & os.O_ACCMODE], name
        # fdinfo's flags are the file's status flags (plus O_CLOEXEC, O_LARGEFILE)
        for flag in (os.O_APPEND, os.O_NONBLOCK, os.O_ACCMODE):
            assert info.flags & flag == known["flags"] & flag, (name, flag)
    assert _api_info(api_child, api_infos, "append").flags & os.O_APPEND
    assert not _api_info(api_child, api_infos, "regular").flags & os.O_APPEND


def test_api_file_info_stat_fields(api_child, api_infos):
    for name in _api_names(api_child):
        known = api_child.report[name]["stat"]
        info = _api_info(api_child, api_infos, name)
        assert info.dev == tuple(known["dev"]), name
        assert info.inode == known["ino"], name
        assert info.nlink == known["nlink"], name
        assert info.rdev == tuple(known["rdev"]), name
        assert info.size == known["size"], name
    assert _api_info(api_child, api_infos, "null").rdev == (1, 3)
    deleted = _api_info(api_child, api_infos, "deleted")
    assert (deleted.size, deleted.nlink) == (_API_DELETED_SIZE, 0)


def test_api_file_info_position(api_child, api_infos):
    assert _api_info(api_child, api_infos, "regular").position == 42
    for name in _api_names(api_child):
        known = api_child.report[name]
        if known["pos"] is not None:
            assert _api_info(api_child, api_infos, name).position == known["pos"], name
    assert _api_info(api_child, api_infos, "deleted").position == _API_DELETED_SIZE


def test_api_file_info_path_and_deleted(api_child, api_infos):
    for name in ("regular", "append", "deleted", "dir", "fifo_r", "fifo_w", "null",
                 "posix_lock", "flock", "range_lock", "ofd_lock", "shm"):
        if name in api_child.report:
            info = _api_info(api_child, api_infos, name)
            assert info.path == api_child.report[name]["path"], name
            assert info.deleted is (name == "deleted"), name
    for name in ("pipe_r", "pipe_w", "tcp_listen", "tcp_client", "udp", "unix_path",
                 "unix_pair", "epoll"):
        info = _api_info(api_child, api_infos, name)
        assert info.path is None, name
        assert info.deleted is False, name


def test_api_file_info_mounts(api_child, api_infos):
    for name in ("regular", "deleted", "dir", "fifo_r", "null", "shm"):
        if name not in api_child.report:
            continue
        info = _api_info(api_child, api_infos, name)
        # the deleted file is gone: ask about the directory it was in
        path = api_child.tmpdir if name == "deleted" else api_child.report[name]["path"]
        assert (info.mount_point, info.fs_type) == _api_expected_mount(path), name
    for name in ("pipe_r", "tcp_listen", "unix_pair", "epoll"):
        info = _api_info(api_child, api_infos, name)
        assert (info.mount_point, info.fs_type) == (None, None), name


def test_api_file_info_locks(api_child, api_infos):
    Lock = lib_users.Lock
    assert _api_info(api_child, api_infos, "posix_lock").locks == [
        Lock("POSIX", "WRITE", 0, None, True)]
    assert _api_info(api_child, api_infos, "flock").locks == [
        Lock("FLOCK", "READ", 0, None, True)]
    assert _api_info(api_child, api_infos, "range_lock").locks == [
        Lock("POSIX", "READ", 10, 19, False)]
    if "ofd_lock" in api_child.report:
        assert _api_info(api_child, api_infos, "ofd_lock").locks == [
            Lock("OFDLCK", "WRITE", 0, None, True)]
    for name in ("regular", "append", "deleted", "null", "pipe_r", "tcp_listen"):
        assert _api_info(api_child, api_infos, name).locks == [], name


def test_api_file_info_inet_sockets(api_child, api_infos):
    report = api_child.report
    for name in ("tcp_listen", "tcp_client", "tcp_server", "tcp6_listen", "udp"):
        if name not in report:
            continue
        info = _api_info(api_child, api_infos, name)
        assert info.protocol == ("UDP" if name == "udp" else "TCP"), name
        assert info.local == tuple(report[name]["local"]), name
        if "remote" in report[name]:
            assert info.remote == tuple(report[name]["remote"]), name
        assert isinstance(info.tx_queue, int) and isinstance(info.rx_queue, int), name
        assert info.peers is None, name
    assert _api_info(api_child, api_infos, "tcp_listen").state == "LISTEN"
    assert _api_info(api_child, api_infos, "tcp_client").state == "ESTABLISHED"
    server = _api_info(api_child, api_infos, "tcp_server")
    assert server.state == "ESTABLISHED"
    assert server.rx_queue == 5  # "hello", sent by the client and not read yet
    assert _api_info(api_child, api_infos, "tcp_listen").remote == ("0.0.0.0", 0)


def test_api_file_info_ipv6_listener(api_child, api_infos):
    if "tcp6_listen" not in api_child.report:
        pytest.skip("IPv6 loopback unavailable: %s" % api_child.report.get("ipv6_error"))
    info = _api_info(api_child, api_infos, "tcp6_listen")
    assert (info.type, info.protocol, info.state) == ("IPv6", "TCP", "LISTEN")
    assert info.local == ("::1", api_child.report["tcp6_listen"]["local"][1])
    assert info.remote == ("::", 0)


def test_api_file_info_unix_sockets(api_child, api_infos):
    report = api_child.report
    bound = _api_info(api_child, api_infos, "unix_path")
    assert (bound.protocol, bound.local, bound.remote, bound.state) == (
        "UNIX", report["unix_path"]["local"], None, "LISTEN")
    abstract = _api_info(api_child, api_infos, "unix_abstract")
    assert abstract.protocol == "UNIX"
    assert abstract.local == "@lib_users_api_%d" % api_child.pid
    assert abstract.local == report["unix_abstract"]["sockname"]
    pair = _api_info(api_child, api_infos, "unix_pair")
    assert (pair.protocol, pair.local, pair.state) == ("UNIX", None, "CONNECTED")
    for name in ("unix_path", "unix_abstract", "unix_pair"):
        info = _api_info(api_child, api_infos, name)
        assert (info.tx_queue, info.rx_queue, info.peers) == (None, None, None), name


def test_api_file_info_non_socket_fields_are_none(api_child, api_infos):
    for name in ("regular", "dir", "null", "pipe_r", "fifo_r", "epoll", "memfd"):
        info = _api_info(api_child, api_infos, name)
        assert (info.protocol, info.local, info.remote, info.state,
                info.tx_queue, info.rx_queue) == (None,) * 6, name
    for name in ("regular", "dir", "null", "epoll", "memfd", "tcp_listen"):
        assert _api_info(api_child, api_infos, name).peers is None, name


def test_api_pipe_and_fifo_peers(api_child, api_infos):
    pid = api_child.pid
    assert _api_info(api_child, api_infos, "pipe_r").peers == [(pid, api_child.fd("pipe_w"))]
    assert _api_info(api_child, api_infos, "pipe_w").peers == [(pid, api_child.fd("pipe_r"))]
    assert _api_info(api_child, api_infos, "fifo_r").peers == [(pid, api_child.fd("fifo_w"))]
    assert _api_info(api_child, api_infos, "fifo_w").peers == [(pid, api_child.fd("fifo_r"))]
    # the child's stdout is a pipe whose other end is ours
    assert api_infos[1].type == "FIFO"
    assert api_infos[1].peers == [(os.getpid(), api_child.proc.stdout.fileno())]


def test_api_file_info_of_memfd_and_anon_inode(api_child, api_infos):
    memfd = _api_info(api_child, api_infos, "memfd")
    assert memfd.path == "/memfd:" + _API_MEMFD_NAME
    assert (memfd.type, memfd.size, memfd.nlink) == ("REG", 4096, 0)
    epoll = _api_info(api_child, api_infos, "epoll")
    assert epoll.ref.target == "anon_inode:[eventpoll]"
    assert (epoll.type, epoll.path) == ("a_inode", None)


def test_api_o_path_descriptor_has_no_mode(fx_named_child, tmp_path):
    """An O_PATH descriptor can neither read nor write: mode is None although its access
    bits read as O_RDONLY (lsof shows `u`, from the link's permissions)."""
    child, report, _ = fx_named_child
    ref = lib_users.FileRef(child.pid, report["opath"], str(tmp_path))
    info = lib_users.get_file_info(ref)
    assert info.flags & os.O_PATH and info.flags & os.O_ACCMODE == os.O_RDONLY
    assert (info.mode, info.type, info.path, info.deleted) == (None, "DIR", str(tmp_path),
                                                               False)


def test_api_memfd_named_with_a_slash_is_not_deleted(fx_named_child):
    """A memfd never was a file: the same table that the scan uses says so, whatever
    its name holds."""
    child, report, _ = fx_named_child
    ref = lib_users.FileRef(child.pid, report["memfd"], "")
    info = lib_users.get_file_info(ref)
    assert (info.path, info.deleted, info.type, info.mode) == (
        "/memfd:/.glA1b2C3", False, "REG", "rw")


# ---- ProcessFiles ----------------------------------------------------------------------


def test_api_process_files_fds(api_child, api_files):
    FileRef = lib_users.FileRef
    assert api_files.pid == api_child.pid
    by_fd = {ref.fd: ref for ref in api_files.fds}
    assert [ref.fd for ref in api_files.fds] == sorted(by_fd)
    for name in _api_names(api_child):
        known = api_child.report[name]
        ref = by_fd[known["fd"]]
        mode = known["stat"]["mode"]
        if stat.S_ISSOCK(mode):
            target = "socket:[%d]" % known["stat"]["ino"]
        elif name.startswith("pipe"):
            target = "pipe:[%d]" % known["stat"]["ino"]
        elif name == "epoll":
            target = "anon_inode:[eventpoll]"
        elif name in ("deleted", "memfd"):
            target = known["path"] + " (deleted)"
        else:
            target = known["path"]
        assert ref == FileRef(api_child.pid, known["fd"], target), name
    assert by_fd[0].target == os.devnull  # stdin is DEVNULL
    assert by_fd[1].target.startswith("pipe:[")


def test_api_process_files_exe_cwd_root(api_child, api_files):
    FileRef = lib_users.FileRef
    exe = os.path.realpath(sys.executable)
    assert api_files.exe == FileRef(api_child.pid, "exe", exe)
    assert api_files.cwd == FileRef(api_child.pid, "cwd", api_child.tmpdir)
    assert api_files.root == FileRef(api_child.pid, "root", "/")
    infos = {ref.fd: lib_users.get_file_info(ref)
             for ref in (api_files.exe, api_files.cwd, api_files.root)}
    exe_st, cwd_st = os.stat(exe), os.stat(api_child.tmpdir)
    assert (infos["exe"].type, infos["exe"].path, infos["exe"].inode) == (
        "REG", exe, exe_st.st_ino)
    assert infos["exe"].size == exe_st.st_size
    assert (infos["cwd"].type, infos["cwd"].path, infos["cwd"].inode) == (
        "DIR", api_child.tmpdir, cwd_st.st_ino)
    assert infos["root"].type == "DIR" and infos["root"].path == "/"
    for info in infos.values():
        assert (info.mode, info.flags, info.position, info.locks) == (None, None, None, [])
        assert info.deleted is False
    assert (infos["cwd"].mount_point, infos["cwd"].fs_type) == \
        _api_expected_mount(api_child.tmpdir)
    assert (infos["root"].mount_point, infos["root"].fs_type) == _api_expected_mount("/")


def test_api_process_files_mappings(api_child, api_files):
    exe = os.path.realpath(sys.executable)
    st = os.stat(exe)
    mapped = [m for m in api_files.mappings if m.path == exe]
    assert mapped, "the python executable is not among the mappings"
    for mapping in mapped:
        assert isinstance(mapping, lib_users.Mapping)
        assert mapping.inode == st.st_ino
        assert mapping.dev == (os.major(st.st_dev), os.minor(st.st_dev))
        assert mapping.deleted is False
        assert mapping.start < mapping.end
    assert any("x" in m.perms for m in api_files.mappings)


def test_api_cwd_at_a_mount_point():
    """A process whose cwd is a mount point itself (here /proc): mount_point and
    fs_type come from that mount."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            cwd="/proc", stdin=subprocess.PIPE)
    try:
        files = lib_users.get_process_files(proc.pid)
        assert files.cwd.target == "/proc"
        info = lib_users.get_file_info(files.cwd)
        assert (info.type, info.path) == ("DIR", "/proc")
        assert (info.mount_point, info.fs_type) == _api_expected_mount("/proc") \
            == ("/proc", "proc")
    finally:
        proc.stdin.close()
        _api_kill(proc)


def test_api_name_that_ends_in_deleted_marker(tmp_path):
    """A file really named "x (deleted)" is not deleted, and its path keeps the suffix."""
    path = os.path.join(os.path.realpath(str(tmp_path)), "x (deleted)")
    with open(path, "w") as f:
        f.write("abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        ref = lib_users.FileRef(os.getpid(), fd, path)
        info = lib_users.get_file_info(ref)
        assert (info.type, info.nlink, info.size) == ("REG", 1, 3)
        assert info.deleted is False
        assert info.path == path
    finally:
        os.close(fd)


# ---- ProcessInfo -----------------------------------------------------------------------


def test_api_process_info(api_child):
    import pwd

    (info,) = lib_users.get_processes([api_child.pid])
    assert isinstance(info, lib_users.ProcessInfo)
    assert info.pid == api_child.pid
    assert info.ppid == os.getpid()
    assert info.pgrp == os.getpgid(api_child.pid) == api_child.report["pgrp"]
    assert info.uid == os.getuid()
    assert info.user == pwd.getpwuid(os.getuid()).pw_name
    assert info.state in ("S", "R")
    assert info.comm == os.path.basename(sys.executable)[:15]
    assert info.argv == api_child.argv
    assert info.exe == os.path.realpath(sys.executable)
    assert info.cwd == api_child.tmpdir == os.path.realpath(api_child.report["cwd"])
    assert info.root == "/"
    # btime has whole seconds, and the child took some time to start: generous bounds
    assert abs(info.start_time - api_child.spawned) < 5
    assert info.kernel_thread is False and info.zombie is False


def test_api_get_processes_all_includes_child_and_self(api_child):
    pids = {info.pid: info for info in lib_users.get_processes()}
    assert api_child.pid in pids and os.getpid() in pids
    assert pids[os.getpid()].ppid == os.getppid()
    again = lib_users.get_processes([api_child.pid])[0]._asdict()
    first = pids[api_child.pid]._asdict()
    # start_time may come from the live uptime, read anew on each call: a few ms apart
    assert abs(first.pop("start_time") - again.pop("start_time")) < 0.1
    assert first == again


def test_api_kernel_thread():
    try:
        with open("/proc/2/comm") as comm:
            name = comm.read().strip()
    except OSError:
        name = None
    if name != "kthreadd":
        pytest.skip("PID 2 is not kthreadd here (a PID namespace?)")
    (info,) = lib_users.get_processes([2])
    assert info.kernel_thread is True
    assert info.zombie is False
    assert (info.comm, info.argv, info.exe, info.ppid, info.uid) == (
        "kthreadd", [], None, 0, 0)
    files = lib_users.get_process_files(2)
    assert (files.exe, files.mappings, files.fds) == (None, [], [])


def test_api_zombie():
    true = shutil.which("true")
    argv = [true] if true else [sys.executable, "-c", "pass"]
    proc = subprocess.Popen(argv)
    try:
        deadline = time.time() + 10
        while True:  # exited but not waited for: a zombie
            with open("/proc/%d/stat" % proc.pid, "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            assert time.time() < deadline, "the child did not exit"
            time.sleep(0.01)
        (info,) = lib_users.get_processes([proc.pid])
        assert (info.state, info.zombie, info.kernel_thread) == ("Z", True, False)
        assert info.ppid == os.getpid()
        assert (info.argv, info.exe, info.cwd, info.root) == ([], None, None, None)
        assert lib_users.get_process_files(proc.pid) == lib_users.ProcessFiles(
            proc.pid, None, None, None, [], [])
    finally:
        proc.wait()


def test_api_no_such_process():
    true = shutil.which("true")
    proc = subprocess.Popen([true] if true else [sys.executable, "-c", "pass"])
    proc.wait()
    pid = proc.pid
    assert not os.path.exists("/proc/%d" % pid)
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_process_files(pid)
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_file_info(lib_users.FileRef(pid, 0, "/dev/null"))
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_file_info(lib_users.FileRef(pid, "cwd", "/"))
    assert issubclass(lib_users.NoSuchProcess, LookupError)
    assert issubclass(lib_users.AccessDenied, PermissionError)


def test_api_get_processes_leaves_out_gone_pids(api_child):
    """A PID that is gone is left out, not an error (as the docstring says)."""
    true = shutil.which("true")
    proc = subprocess.Popen([true] if true else [sys.executable, "-c", "pass"])
    proc.wait()
    assert lib_users.get_processes([proc.pid]) == []
    assert [p.pid for p in lib_users.get_processes([proc.pid, api_child.pid])] == [
        api_child.pid]


def test_api_closed_descriptor_is_no_such_process(api_child):
    """A descriptor the (live) process does not have."""
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_file_info(lib_users.FileRef(api_child.pid, 999, "/nowhere"))


# ---- against lsof ----------------------------------------------------------------------


def _api_lsof_fields(pid):
    """{fd: {field letter: value}} from `lsof -p PID -F ...`; T fields in a dict."""
    lsof = shutil.which("lsof") or ("/usr/bin/lsof" if os.path.exists("/usr/bin/lsof")
                                    else None)
    if lsof is None:
        pytest.skip("lsof is not installed")
    out = subprocess.run([lsof, "-n", "-P", "-w", "-p", str(pid), "-F", "ftaoinDdPTl"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    files, current = {}, None
    for line in os.fsdecode(out).split("\n"):
        if not line:
            continue
        key, value = line[0], line[1:]
        if key == "f":
            current = files.setdefault(value, {"T": {}})
        elif current is not None:
            if key == "T":
                k, _, v = value.partition("=")
                current["T"][k] = v
            else:
                current[key] = value
    return files


def _api_lsof_name(info):
    """What lsof prints as the name of a FileInfo."""
    if info.type in ("IPv4", "IPv6"):
        def addr(pair):
            host = "[%s]" % pair[0] if info.type == "IPv6" else pair[0]
            return "%s:%d" % (host, pair[1])
        if info.state == "LISTEN" or info.protocol == "UDP" and info.remote[1] == 0:
            return addr(info.local)
        return "%s->%s" % (addr(info.local), addr(info.remote))
    if info.type == "a_inode":
        return info.ref.target[len("anon_inode:"):]
    if info.type == "FIFO" and info.path is None:
        return "pipe"
    # lsof prints the kernel's link text, marker included; lib_users does not call a
    # memfd deleted (it never was a file on disk) but keeps its name.
    marked = info.deleted or info.path.startswith("/memfd:")
    return info.path + (" (deleted)" if marked else "")


def test_api_matches_lsof(api_child, api_files, api_infos):
    lsof = _api_lsof_fields(api_child.pid)
    access = {"r": "r", "w": "w", "u": "rw"}
    lock_letter = {("WRITE", True): "W", ("READ", True): "R",
                   ("WRITE", False): "w", ("READ", False): "r"}
    compared = 0
    for fd, info in api_infos.items():
        entry = lsof.get(str(fd))
        assert entry is not None, "lsof does not list fd %d" % fd
        assert entry["t"] == info.type, fd
        assert access.get(entry["a"]) == info.mode, fd
        if info.type in ("IPv4", "IPv6"):
            assert int(entry["d"]) == info.inode, fd  # lsof: DEVICE holds the inode
            assert entry["P"] == info.protocol, fd
            if info.protocol == "TCP":
                assert entry["T"]["ST"] == info.state, fd
            if info.state != "LISTEN":  # lsof zeroes the queues of listeners
                assert (int(entry["T"]["QR"]), int(entry["T"]["QS"])) == (
                    info.rx_queue, info.tx_queue), fd
        else:
            assert int(entry["i"]) == info.inode, fd
        if "D" in entry:
            assert int(entry["D"], 16) == os.makedev(*info.dev), fd
        if info.type == "unix":
            if info.local:
                assert entry["n"].split(" type=")[0] == info.local, fd
            assert entry["T"].get("ST") == info.state, fd
        else:
            assert entry["n"] == _api_lsof_name(info), fd
        if entry.get("o", "").startswith("0t"):
            assert int(entry["o"][2:]) == info.position, fd
        letter = entry.get("l", " ").strip()
        if info.locks and info.locks[0].kind != "OFDLCK":  # lsof does not show those
            lock = info.locks[0]
            assert letter == lock_letter[(lock.access, lock.whole)], fd
        elif not info.locks:
            assert letter == "", fd
        compared += 1
    assert compared == len(api_files.fds)
    assert lsof[str(api_child.fd("regular"))]["o"] == "0t42"
    for name, ref in (("cwd", api_files.cwd), ("rtd", api_files.root),
                      ("txt", api_files.exe)):
        info = lib_users.get_file_info(ref)
        assert lsof[name]["t"] == info.type, name
        assert int(lsof[name]["i"]) == info.inode, name
        assert lsof[name]["n"] == info.path, name


# ---- as an unprivileged user -----------------------------------------------------------


_API_NOBODY_SCRIPT = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
import lib_users as L
root_pid = int(sys.argv[2])
res = {"uid": os.getuid()}

def attempt(name, call):
    try:
        call()
        res[name] = "ok"
    except L.AccessDenied:
        res[name] = "AccessDenied"
    except Exception as err:
        res[name] = "%s: %s" % (type(err).__name__, err)

attempt("files_root_child", lambda: L.get_process_files(root_pid))
attempt("info_root_child_fd", lambda: L.get_file_info(L.FileRef(root_pid, 0, "/dev/null")))
attempt("info_root_child_cwd", lambda: L.get_file_info(L.FileRef(root_pid, "cwd", "/")))
if len(sys.argv) > 3:
    attempt("files_pid1", lambda: L.get_process_files(int(sys.argv[3])))
(info,) = L.get_processes([root_pid])
res["root_child"] = {"uid": info.uid, "argv": info.argv, "exe": info.exe, "cwd": info.cwd}
me = os.path.join(sys.argv[1], "lib_users.py")
fd = os.open(me, os.O_RDONLY)
os.lseek(fd, 7, os.SEEK_SET)
files = L.get_process_files(os.getpid())
ref = [r for r in files.fds if r.fd == fd][0]
got = L.get_file_info(ref)
st = os.fstat(fd)
res["own_fd"] = {"target": ref.target, "path": got.path, "position": got.position,
                 "inode": got.inode == st.st_ino, "mode": got.mode, "type": got.type}
res["own_exe"] = files.exe is not None and files.cwd is not None
res["own_mappings"] = len(files.mappings)
(own,) = L.get_processes([os.getpid()])
res["own_info"] = {"uid": own.uid, "cwd": own.cwd, "exe": own.exe is not None}
print(json.dumps(res))
'''


def _api_demote():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _api_popen_kwargs():
    if sys.version_info >= (3, 9):
        return {"user": 65534, "group": 65534, "extra_groups": []}
    return {"preexec_fn": _api_demote}


def _api_nobody_python(workdir):
    """An interpreter that uid 65534 can run (sys.executable may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3"),
                      "/usr/local/bin/python3"):
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            check = subprocess.run([candidate, "-c", "import json, os"], cwd=workdir,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={"PATH": "/usr/bin:/bin"}, **_api_popen_kwargs())
        except OSError:  # not executable (or not reachable) for that user
            continue
        if check.returncode == 0:
            return candidate
    return None


def test_api_unprivileged_user(api_child):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a part as uid 65534")
    workdir = tempfile.mkdtemp(prefix="lib_users_api_nobody_")
    try:
        os.chmod(workdir, 0o755)
        shutil.copy(LIB_USERS, os.path.join(workdir, "lib_users.py"))
        os.chmod(os.path.join(workdir, "lib_users.py"), 0o644)
        python = _api_nobody_python(workdir)
        if python is None:
            pytest.skip("no Python interpreter that uid 65534 can run")
        args = [python, "-c", _API_NOBODY_SCRIPT, workdir, str(api_child.pid)]
        try:
            with open("/proc/1/status") as status:
                pid1_uid = [int(line.split()[1]) for line in status
                            if line.startswith("Uid:")][0]
        except OSError:
            pid1_uid = None
        if pid1_uid is not None and pid1_uid != 65534:
            args.append("1")
        result = subprocess.run(args, cwd=workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True,
                                env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                                timeout=60, **_api_popen_kwargs())
        assert result.returncode == 0, result.stderr
        res = json.loads(result.stdout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert res["uid"] == 65534
    assert res["files_root_child"] == "AccessDenied"
    assert res["info_root_child_fd"] == "AccessDenied"
    assert res["info_root_child_cwd"] == "AccessDenied"
    if "files_pid1" in res:
        assert res["files_pid1"] == "AccessDenied"
    # what anyone may read of another user's process, and None for the rest
    assert res["root_child"] == {"uid": 0, "argv": api_child.argv, "exe": None,
                                 "cwd": None}
    assert res["own_fd"] == {"target": os.path.join(workdir, "lib_users.py"),
                             "path": os.path.join(workdir, "lib_users.py"),
                             "position": 7, "inode": True, "mode": "r", "type": "REG"}
    assert res["own_exe"] is True
    assert res["own_mappings"] > 0
    assert res["own_info"]["uid"] == 65534 and res["own_info"]["exe"] is True
    assert res["own_info"]["cwd"] == os.path.realpath(workdir)


# ==== robustness ========================================================================
# Churn, hostile input, unreadable /proc, and nothing lost.
#
# - Churn: lib_users runs again and again on the live /proc while a helper forks and
#   reaps short-lived processes as fast as it can; long-lived processes that map a
#   deleted private copy of libz are reported by every run.
# - Vanishing mid-read: a process that exits (or whose PID is handed out again) between
#   listing /proc and reading its files is skipped, never mixed with another one.
# - Hostile input: thousands of small random --proc trees (a seeded random.Random, so
#   every run tries the same ones) in every output mode: no exception, an exit status
#   from the documented set, terminal-safe text, JSON that parses; a subset through the
#   real command line with a bound on time and memory.
# - Restricted /proc: as uid 65534, under hidepid mounts, and with a /proc that is not
#   procfs.
# - Stalled processes: a FUSE server that stops answering makes /proc files wait.
# - Output that cannot be written: /dev/full, and a reader that goes away.
# - Memory bounds: huge argument lists and many long mappings keep memory flat.
#
# Numbers (trees tried, runs under churn, processes churned) are printed; run pytest -s
# to see them.


NOBODY = 65534


def _live_stderr_lines(stderr):
    """stderr lines, less "reboot needed" hints: those describe the machine the tests
    run on (its kernel packages), not the processes under test."""
    lines = stderr.decode("utf-8", "replace").splitlines()
    return [line for line in lines if not line.startswith("lib_users: reboot needed: ")]


def _live_nobody_kwargs():
    """Popen arguments that run a child as uid/gid 65534 with no supplementary groups."""
    if sys.version_info >= (3, 9):
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}

    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return {"preexec_fn": drop}


@pytest.fixture(scope="session")
def _live_nobody_python():
    """A Python interpreter that uid 65534 may run (with ctypes and mmap)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: to run processes as uid 65534")
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3")]
    for python in candidates:
        if not python or not os.path.isfile(python):
            continue
        try:
            probe = subprocess.run([python, "-c", "import ctypes, mmap; print(42)"],
                                   capture_output=True, cwd="/", timeout=60,
                                   **_live_nobody_kwargs())
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == b"42":
            return python
    pytest.skip("needs a Python interpreter that uid 65534 may run")


# Output formats and what they print: (arguments, kind of output).
_RB_MODES = (
    ((), "text"),
    (("-s", "--scripts"), "text"),
    (("-m",), "text"),
    (("--json", "--scripts"), "json"),
    (("-S",), "text"),
    (("--fds",), "text"),
    (("--nagios",), "nagios"),
    (("--prometheus",), "text"),
)


# The long-lived child: maps argv[1] (a private copy of libz), says "ready", and waits
# until its stdin is closed (or it is killed).
_RB_STALE_CHILD = (
    "import ctypes, sys\n"
    "lib = ctypes.CDLL(sys.argv[1])\n"
    "sys.stdout.write('ready' + chr(10))\n"
    "sys.stdout.flush()\n"
    "sys.stdin.read()\n")


def _rb_deleted_in_maps(pid, path):
    with open("/proc/%d/maps" % pid, "rb") as maps:
        return os.fsencode(path) + b" (deleted)" in maps.read()


def _rb_stale_child(spawn, tmp, libz, tag, python=sys.executable, **kwargs):
    """A child that maps its own private copy of libz, which is then deleted:
    (Popen, argv)."""
    copy = os.path.join(tmp, "libz-%s.so.1" % tag)
    shutil.copyfile(libz, copy)
    os.chmod(copy, 0o644)
    argv = [python, "-c", _RB_STALE_CHILD, copy, "rb-" + tag]
    child = spawn(argv, **kwargs)
    os.unlink(copy)
    assert _rb_deleted_in_maps(child.pid, copy), "the kernel does not show the deletion"
    return child, argv


# ---- churn -----------------------------------------------------------------------------


_RB_CHURN_SECONDS = 4


# The churner: maps a private copy of libz (deleted by the test), then forks children as
# fast as it can until its stdin is closed or its own limits are reached. Most children
# end at once; some hold the inherited deleted mapping a moment; some exec /bin/true.
# It reaps them all and prints how many it started.
_RB_CHURNER = r"""
import ctypes, os, select, sys, time
lib = ctypes.CDLL(sys.argv[1])
seconds, limit, max_live = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
true = "/bin/true" if os.access("/bin/true", os.X_OK) else None
sys.stdout.write("ready\n")
sys.stdout.flush()
deadline = time.monotonic() + seconds
forks = live = 0
while forks < limit and time.monotonic() < deadline:
    if forks % 16 == 0 and select.select([0], [], [], 0)[0]:
        break  # stdin closed: stop
    pid = os.fork()
    if pid == 0:
        kind = forks % 8
        if kind in (1, 2, 3):
            time.sleep(0.001 * kind)
        elif kind == 4 and true:
            os.execv(true, [true])
        os._exit(0)
    forks += 1
    live += 1
    while live:
        pid, _status = os.waitpid(-1, 0 if live >= max_live else os.WNOHANG)
        if not pid:
            break
        live -= 1
while live:
    os.waitpid(-1, 0)
    live -= 1
sys.stdout.write("forks %d\n" % forks)
sys.stdout.flush()
"""


# (arguments, kind of output, whether it lists every PID)
_RB_CHURN_MODES = ((("-v",), "text", True), (("-m",), "text", True),
                   (("--json",), "json", True), (("-S", "-v"), "text", True),
                   (("-s", "-v"), "text", True), (("--nagios", "-v"), "nagios", True),
                   (("--fds",), "text", False), (("--prometheus",), "text", False))


def _rb_unreadable_pids():
    """The PIDs a scan cannot read, one at a time."""
    return {pid for pid in lib_users.list_pids()
            if pid != os.getpid() and lib_users.scan(pids=[pid]).unreadable}


def _rb_process_group(pid):
    """The process group of a PID, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def test_rb_churn_never_loses_a_stale_process(_live_libz, _live_tmp, _live_spawn):
    stale = {}
    for tag in ("a", "b", "c"):
        child, argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "churn-" + tag)
        stale[child.pid] = argv
    baseline = _rb_unreadable_pids()  # e.g. a PID 1 that not even root may read

    copy = os.path.join(_live_tmp, "libz-churner.so.1")
    shutil.copyfile(_live_libz, copy)
    # In a session of its own, so that its children are known by their process group.
    churner = _live_spawn([sys.executable, "-c", _RB_CHURNER, copy,
                         str(_RB_CHURN_SECONDS + 30), "300000", "64"],
                        start_new_session=True)
    os.unlink(copy)

    runs = sweeps = 0
    failures, new_unreadable, others = [], {}, {}
    deadline = time.monotonic() + _RB_CHURN_SECONDS
    # At least two rounds, however slow the machine: one mode's run alone proves little.
    while runs < 2 or time.monotonic() < deadline:
        args, kind, lists_pids = _RB_CHURN_MODES[runs % len(_RB_CHURN_MODES)]
        result = _rb_run(args, timeout=120)
        runs += 1
        problem = _rb_problem(kind, result.returncode, result.stdout, result.stderr)
        if problem is None and result.returncode != 0 and kind != "nagios":
            problem = "exit status %d" % result.returncode
        if problem is None and lists_pids:
            reported = _rb_reported(args, result.stdout)
            for pid, argv in stale.items():
                if pid not in reported:
                    problem = "stale PID %d not reported" % pid
                elif reported[pid] is not None and reported[pid] != argv:
                    problem = "PID %d reported with argv %r" % (pid, reported[pid])
        if problem:
            failures.append("run %d %s: %s %r" % (runs, " ".join(args), problem, result))
        # The same through the API, in this process, one PID at a time: a process of
        # ours that ends during its scan is gone, never unreadable. (Processes of others
        # are only counted: this machine may start some that root may not read.)
        sweeps += 1
        for pid in lib_users.list_pids():
            if pid == os.getpid():
                continue
            result = lib_users.scan(pids=[pid])
            if result.unreadable and pid not in baseline:
                ours = pid in stale or _rb_process_group(pid) == churner.pid
                target = new_unreadable if ours else others
                target[pid] = target.get(pid, 0) + 1
            if pid in stale and [f.argv for f in result.findings] != [stale[pid]]:
                failures.append("API sweep %d: stale PID %d found as %r" % (
                    sweeps, pid, result.findings))
        whole = lib_users.scan()
        missing = set(stale) - {f.pid for f in whole.findings}
        if missing:
            failures.append("API scan %d: stale PIDs %s not found" % (sweeps, sorted(missing)))

    churner.stdin.close()
    ready, _, _ = select.select([churner.stdout], [], [], 60)
    line = churner.stdout.readline() if ready else b""
    churner.wait(timeout=60)
    forks = int(line.split()[1]) if line.startswith(b"forks ") else None
    summary = "%d runs of lib_users and %d API sweeps under churn, %s processes churned" % (
        runs, sweeps, forks)
    if others:
        summary += " (other processes counted unreadable, PID: times: %r)" % (others,)
    print("\n" + summary)
    assert forks, "the churner did not report: %r %r (%s)" % (
        line, churner.stderr.read(), summary)
    assert not failures, "%s; %d failed:\n%s" % (summary, len(failures),
                                                 "\n".join(failures[:10]))
    assert not new_unreadable, "%s; counted unreadable (PID: times): %r" % (
        summary, new_unreadable)


# ---- vanishing processes ---------------------------------------------------------------


_RB_GONE = (FileNotFoundError, ProcessLookupError)


_RB_HOWS = (lib_users.ScanOptions(), lib_users.ScanOptions(scripts=True),
            lib_users.ScanOptions(details=True, scripts=True),
            lib_users.ScanOptions(services=True), lib_users.ScanOptions(fds=True),
            lib_users.ScanOptions(details=True, services=True))


def _rb_assert_gone(pdir, what):
    """Every read through a ProcDir opened before the process went, and not read from
    yet, says "gone"."""
    for how in _RB_HOWS:
        ctx = lib_users._Context(lib_users.PROC, how)
        with pytest.raises(_RB_GONE):
            result = lib_users.scan_process(pdir, how, ctx)
            pytest.fail("%s: scan_process(%r) returned %r" % (what, how, result))
    for name in ("maps", "cmdline", "stat", "status", "comm", "cgroup"):
        with pytest.raises(_RB_GONE):
            data = pdir.read(name)
            pytest.fail("%s: %s read %r" % (what, name, data[:200]))
    for name in ("exe", "cwd", "root"):
        with pytest.raises(_RB_GONE):
            os.readlink(name, dir_fd=pdir.fd)
        assert pdir.readlink(name) is None
    with pytest.raises(_RB_GONE):
        lib_users.process_info(pdir, lib_users._Clock(lib_users.PROC), {})
    with pytest.raises(_RB_GONE):
        lib_users.deleted_open_files(pdir)


def test_rb_process_gone_after_listing_is_skipped(_live_libz, _live_tmp, _live_spawn):
    child, argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "gone")
    pid = child.pid
    with lib_users.ProcDir(lib_users.PROC, pid) as pdir, \
            lib_users.ProcDir(lib_users.PROC, pid) as unread:
        how = lib_users.ScanOptions()
        found = lib_users.scan_process(pdir, how, lib_users._Context("/proc", how))
        assert found is not None and found.argv == argv
        child.kill()
        child.wait()
        _rb_assert_gone(unread, "reaped")
    if os.path.exists("/proc/%d" % pid):
        pytest.skip("PID %d was already handed out again" % pid)
    result = lib_users.scan(pids=[pid])
    assert (result.findings, result.scanned, result.unreadable) == ([], 0, 0)
    assert lib_users.get_processes(pids=[pid]) == []
    with pytest.raises(lib_users.NoSuchProcess):
        lib_users.get_process_files(pid)


def test_rb_zombie_is_skipped_quietly(_live_libz, _live_tmp, _live_spawn):
    # Killed but not reaped: maps and cmdline read empty.
    child, _argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "zombie")
    child.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % child.pid, "rb") as f:
            if f.read().rpartition(b")")[2].split()[0] == b"Z":
                break
        time.sleep(0.01)
    else:
        pytest.fail("child %d did not become a zombie" % child.pid)
    for how in _RB_HOWS:
        result = lib_users.scan(how=how, pids=[child.pid])
        assert result.findings == [] and result.unreadable == 0, (how, result)
    cli = _rb_run(["-v", "-p", str(child.pid)])
    assert (cli.returncode, cli.stdout) == (0, b""), cli
    assert _rb_stderr_problem(cli.stderr, 0) is None and b"could not" not in cli.stderr, cli


def test_rb_reused_pid_is_never_mixed(_live_libz, _live_tmp, _live_spawn):
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root and /proc/sys/kernel/ns_last_pid to hand a PID out again")
    old, _old_argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "old")
    pid = old.pid
    with lib_users.ProcDir(lib_users.PROC, pid) as pdir:
        old.kill()
        old.wait()
        copy = os.path.join(_live_tmp, "libz-new.so.1")
        shutil.copyfile(_live_libz, copy)
        new_argv = [sys.executable, "-c", _RB_STALE_CHILD, copy, "rb-new"]
        new = None
        for _attempt in range(50):
            try:
                with open("/proc/sys/kernel/ns_last_pid", "w") as last:
                    last.write(str(pid - 1))
            except OSError as err:
                pytest.skip("cannot write ns_last_pid: %s" % err)
            child = _live_spawn(new_argv, ready=False)
            if child.pid == pid:
                new = child
                break
            child.kill()
        if new is None:
            pytest.skip("PID %d was not handed out again in 50 tries" % pid)
        _live_wait_ready(new)
        os.unlink(copy)
        assert _rb_deleted_in_maps(pid, copy)
        # The old descriptor stays with the old process: nothing of the new one.
        _rb_assert_gone(pdir, "reused")
    result = lib_users.scan(pids=[pid])
    assert [f.argv for f in result.findings] == [new_argv]
    cli = _rb_run(["--json", "-p", str(pid)])
    assert cli.returncode == 0, cli
    assert _rb_reported(["--json"], cli.stdout) == {pid: new_argv}


def test_rb_empty_and_partial_files_are_skipped(tmp_path):
    good = b"/usr/lib/x86_64-linux-gnu/libgood.so.1"
    control = _rb_process(5001, [b"/usr/sbin/control", b"-d"], [good])
    truncated = _rb_process(5003, [b"/usr/sbin/cut"], [b"/usr/lib/libcut.so.1"])
    maps = truncated["maps"]
    cut_maps = maps[: maps.index(b" (deleted)") + 5]  # "... (del": not the marker
    half_line = _rb_process(5004, [b"/usr/sbin/half"], [b"/usr/lib/libhalf.so.1"])
    spec = {
        "stat": _rb_root_stat(),
        "5001": control,
        "5002": dict(_rb_process(5002, [b"/usr/sbin/empty"], [good]), maps=b""),
        "5003": dict(truncated, maps=cut_maps),
        "5004": dict(half_line, maps=half_line["maps"][:60]),
        "5005": dict(_rb_process(5005, [b"x"], [good], comm=b"nocmd"), cmdline=b""),
        "5006": dict(_rb_process(5006, [b"x"], [good]), cmdline=b"\0\0\0"),
        "5007": b"a PID that is a file\n",
        "5008": {},
        "5009": {"maps": b"", "cmdline": b""},
    }
    tree = _rb_tree(tmp_path / "proc", spec)
    for args, kind in _RB_MODES:
        result = _rb_run(["--proc", tree, "-v"] + list(args))
        assert _rb_problem(kind, result.returncode, result.stdout, result.stderr) is None, (
            args, result)
        assert b"could not be read" not in result.stderr, (args, result)
        if args in ((), ("-m",), ("--json",), ("-S",)):
            reported = _rb_reported(args, result.stdout)
            assert 5001 in reported and 5005 in reported, (args, result)
            assert not {5002, 5003, 5004, 5009} & set(reported), (args, result)
        assert result.returncode == (1 if kind == "nagios" else 0), (args, result)
    text = _rb_run(["--proc", tree, "-v"]).stdout
    assert b'"[nocmd]"' in text  # an empty argument list shows the command name


# ---- hostile trees ---------------------------------------------------------------------


_RB_MAX_RSS_KIB = 200 * 1024  # generous: a scan of a small tree needs about 20 MiB


_RB_FUZZ_TREES = 1200  # in-process, every mode each


_RB_CLI_TREES = 5  # of those, also through the command line, every mode each


_RB_SEED = "lib_users-robust-1"


_RB_NASTY = (
    b"\x1b[31m", b"\x1b[2J\x1b[H", b"\x1b]0;owned\x07", b"\x1b]8;;https://x/\x1b\\",
    b"\x9b31m", b"\xc2\x9b", b"\xc2\x85", b"\xe2\x80\xae", b"\xe2\x80\x8b", b"\xe2\x80\xa8",
    b"\xe2\x80\xa9", b"\xe2\x81\xa6", b"\xe2\x81\xa9", b"\xef\xbb\xbf", b"\x00", b"\r",
    b"\t", b"\x7f", b"\x08", b"\\", b"\\012", b"\\x41", b'"', b"'", b";", b",", b"|", b" ",
    b"(deleted)", b" (deleted)", b"\xff", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"%s",
    b"\n", b"\xe2\x80\x8f", b"\xc2\xa0", b"[", b"*", b"..", b"/", b"\xcc\x81", b"\xd8\x9c",
)


_RB_WORDS = (b"usr", b"lib", b"libz.so.1", b"libc.so.6", b"python3", b"bin", b"tmp",
             b"SYSV00000000", b"memfd:x", b"dev/shm/x", b"orcexec.1", b"ffi1",
             b"jna1.tmp", b"system.slice", b"x.service", b"docker-0123456789ab.scope",
             b"user-1000.slice", b"user@1000.service", b"session-3.scope",
             b"libpod-abc.scope", b"machine-a\\x2db.scope", b"user-\xc2\xb2.slice",
             b"user-99999999999999999999.slice", b"init.scope", b"lxc.payload.c1")


def _rb_bytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def _rb_text(rng, pieces=6):
    parts = []
    for _ in range(rng.randint(0, pieces)):
        roll = rng.random()
        if roll < 0.35:
            parts.append(rng.choice(_RB_WORDS))
        elif roll < 0.7:
            parts.append(rng.choice(_RB_NASTY))
        elif roll < 0.85:
            parts.append(_rb_bytes(rng, rng.randint(1, 6)))
        else:
            parts.append(bytes(rng.choice(b"abcxyz019._-") for _ in range(rng.randint(1, 8))))
    return b"".join(parts)


def _rb_path(rng):
    return b"/" + b"/".join(_rb_text(rng, 3) for _ in range(rng.randint(1, 4)))


def _rb_number(rng):
    return rng.choice((b"0", b"1", b"-1", b"12345", b"9" * 25, b"9" * 400, b"x", b"",
                       b"0x10", b"\xff", b"1e9", b"18446744073709551616"))


def _rb_long(rng, char=b"L"):
    """A long run of one byte: past PATH_MAX, or past a pipe buffer."""
    return char * rng.choice((4097, 16000))


def _rb_random_maps(rng):
    lines = []
    if rng.random() < 0.7:
        exe = rng.choice((b"/usr/bin/python3", b"/usr/bin/python3.11 (deleted)",
                          b"/usr/bin/perl", b"/bin/bash", b"/usr/bin/java", b"/bin/sh",
                          b"/usr/bin/node (deleted)", _rb_path(rng)))
        lines.append(_rb_maps_line(exe, 1000, start=0x55D0C8A00000))
    for i in range(rng.randint(0, 6)):
        start = 0x7F3A1C400000 + i * 0x10000
        roll = rng.random()
        if roll < 0.35:
            lines.append(_rb_maps_line(_rb_path(rng) + b" (deleted)", 2000 + i, start=start))
        elif roll < 0.45:
            lines.append(_rb_maps_line(_rb_path(rng), 2000 + i, start=start))
        elif roll < 0.5:
            lines.append(_rb_maps_line(b"(deleted)" + _rb_path(rng), 2000 + i, start=start))
        elif roll < 0.55:
            name = rng.choice((b"/SYSV00000001", b"/dev/zero", b"/memfd:jit", b"/[aio]",
                               b"/dev/shm/x", b"/tmp/ffiXYZ", b"/x/jna1.tmp"))
            lines.append(_rb_maps_line(name + b" (deleted)", 3, start=start))
        elif roll < 0.6:
            lines.append(_rb_maps_line(rng.choice((b"", b"[heap]", b"[anon:x]", b"[vdso]")),
                                       0, start=start))
        elif roll < 0.7:  # truncated
            line = _rb_maps_line(_rb_path(rng) + b" (deleted)", 2000 + i, start=start)
            lines.append(line[: rng.randint(0, len(line))])
        elif roll < 0.78:  # fields missing or odd
            fields = _rb_maps_line(_rb_path(rng) + b" (deleted)", 2000 + i,
                                   start=start).split(None, 5)
            del fields[rng.randrange(len(fields))]
            if rng.random() < 0.5 and fields:
                fields[rng.randrange(len(fields))] = _rb_number(rng)
            lines.append(b" ".join(fields))
        elif roll < 0.86:
            lines.append(_rb_bytes(rng, rng.randint(0, 80)))
        elif roll < 0.93:  # CRLF
            lines.append(_rb_maps_line(_rb_path(rng) + b" (deleted)", 2000 + i,
                                       start=start) + b"\r")
        else:
            lines.append(b"%s-%s %s %s %s %s %s" % (
                _rb_number(rng), _rb_number(rng), _rb_text(rng, 1), _rb_number(rng),
                rng.choice((b"fe:01", b"zz:zz", b"1:2:3", b":")), _rb_number(rng),
                _rb_path(rng) + b" (deleted)"))
    if rng.random() < 0.015:
        lines.append(_rb_maps_line(b"/" + _rb_long(rng) + b".so (deleted)", 9))
    rng.shuffle(lines) if rng.random() < 0.2 else None
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.8 else b"")


def _rb_random_cmdline(rng):
    roll = rng.random()
    if roll < 0.03:
        return b"/usr/bin/long\0" + _rb_long(rng) + b"\0"
    if roll < 0.4:
        return b"".join(_rb_text(rng, 3).replace(b"\0", b"") + b"\0"
                        for _ in range(rng.randint(1, 4)))
    if roll < 0.5:
        return b"\0".join(_rb_text(rng, 3).replace(b"\0", b"") for _ in range(3))
    if roll < 0.58:
        return _rb_text(rng).replace(b"\0", b" ")
    if roll < 0.64:
        return b"\0" * rng.randint(1, 5)
    if roll < 0.7:
        return b""
    if roll < 0.78:
        return _rb_bytes(rng, rng.randint(0, 60))
    interpreter = rng.choice((b"python3", b"/usr/bin/perl", b"bash", b"node", b"java",
                              b"php", b"ruby", b"sh"))
    rest = rng.choice(([b"-c", b"x"], [b"-jar", _rb_path(rng)], [b"--", _rb_path(rng)],
                       [b"-W", b"x", _rb_path(rng)], [_rb_text(rng, 2)], [b"/etc/hostname"],
                       [b"-f", _rb_path(rng)], []))
    return b"".join(a.replace(b"\0", b"") + b"\0" for a in [interpreter] + rest)


def _rb_random_stat(rng, pid):
    roll = rng.random()
    comm = _rb_text(rng, 3) + rng.choice((b")", b") (", b"\n", b")\n)", b""))
    if rng.random() < 0.015:
        comm = _rb_long(rng, b")")
    if roll < 0.6:
        return _rb_stat(pid, comm, state=rng.choice((b"S", b"Z", b"R", b"?")),
                        flags=rng.choice((b"4194560", b"2097216", b"x")))
    if roll < 0.7:
        return _rb_stat(pid, comm, starttime=_rb_number(rng))
    if roll < 0.8:
        line = _rb_stat(pid, comm)
        return line[: rng.randint(0, len(line))]
    if roll < 0.9:
        return _rb_bytes(rng, rng.randint(0, 50))
    return b""


def _rb_random_links(rng, spec):
    for name in ("exe", "cwd", "root"):
        roll = rng.random()
        if roll < 0.3:
            spec[name] = _RbLink(rng.choice(("/", "/nonexistent", "/usr/bin/python3 (deleted)")))
        elif roll < 0.45:
            spec[name] = _RbLink(name)  # a link to itself: ELOOP
        elif roll < 0.6:
            spec[name] = _RbLink(os.fsdecode(_rb_path(rng).replace(b"\0", b"")) or "/")
        elif roll < 0.65:
            spec[name] = b"not a link"
        elif roll < 0.7:
            spec[name] = {}
    if rng.random() < 0.4:
        ns = {}
        for kind in ("mnt", "pid"):
            roll = rng.random()
            if roll < 0.4:
                ns[kind] = _RbLink(rng.choice(("mnt:[4026531841]", "pid:[4026531836]",
                                               "pid:[1]", "x")))
            elif roll < 0.6:
                ns[kind] = _RbLink(kind)
            elif roll < 0.7:
                ns[kind] = b""
        spec["ns"] = ns if rng.random() < 0.9 else _RbLink("ns")
    if rng.random() < 0.3:
        fds = {}
        for _ in range(rng.randint(0, 4)):
            name = rng.choice(("0", "1", "2", "3", "x", "99999999999999999999"))
            if name in fds:
                continue
            roll = rng.random()
            if roll < 0.5:
                fds[name] = _RbLink(os.fsdecode(_rb_path(rng).replace(b"\0", b"")) + " (deleted)")
            elif roll < 0.65:
                fds[name] = _RbLink("socket:[12345]")
            elif roll < 0.8:
                fds[name] = _RbLink(name)
            else:
                fds[name] = b"file"
        spec["fd"] = fds if rng.random() < 0.85 else rng.choice((b"", _RbLink("fd")))


def _rb_random_process(rng, pid):
    spec = {}
    if rng.random() < 0.95:
        spec["maps"] = _rb_random_maps(rng) if rng.random() < 0.97 else {}
    if rng.random() < 0.9:
        spec["cmdline"] = _rb_random_cmdline(rng)
    if rng.random() < 0.85:
        spec["stat"] = _rb_random_stat(rng, pid)
    if rng.random() < 0.8:
        spec["status"] = rng.choice((b"Name:\tx\nUid:\t0\t0\t0\t0\n", b"Uid:\n",
                                     b"Uid:\t%s\t0\n" % _rb_number(rng), _rb_text(rng)))
    if rng.random() < 0.8:
        spec["comm"] = _rb_text(rng, 3) + b"\n"
    if rng.random() < 0.6:
        if rng.random() < 0.015:
            spec["cgroup"] = b"0::/system.slice/" + _rb_long(rng, b"u") + b".service\n"
        else:
            spec["cgroup"] = b"\n".join(
                rng.choice((b"0::", b"1:name=systemd:", b"2:cpu:", b"", b"0:")) + b"/".join(
                    _rb_text(rng, 2) if rng.random() < 0.3 else rng.choice(_RB_WORDS)
                    for _ in range(rng.randint(0, 4)))
                for _ in range(rng.randint(0, 3)))
    _rb_random_links(rng, spec)
    return spec


def _rb_random_tree(rng):
    """A small hostile procfs tree spec: a few processes and odd entries."""
    spec = {}
    roll = rng.random()
    if roll < 0.8:
        spec["stat"] = _rb_root_stat()
    elif roll < 0.9:
        spec["stat"] = _rb_root_stat(rng.choice((b"", b"x", b"9" * 400, b"-5", b"1e3")))
    elif roll < 0.95:
        spec["stat"] = _rb_bytes(rng, rng.randint(0, 40))
    pids = rng.sample(range(1, 40000), rng.randint(1, 4))
    for pid in pids:
        roll = rng.random()
        name = str(pid)
        if roll < 0.85:
            spec[name] = _rb_random_process(rng, pid)
        elif roll < 0.9:
            spec[name] = b"a PID that is a file"
        elif roll < 0.93:
            spec[name] = {}
        elif roll < 0.96:
            spec[name] = _RbLink(str(pids[0]) if str(pids[0]) != name else "/")
        else:
            spec[name] = _RbLink(name)  # a loop
    if rng.random() < 0.3:
        spec["self"] = _RbLink(rng.choice([str(p) for p in pids] + ["self", "x"]))
    if rng.random() < 0.1:
        spec["0%d" % pids[0]] = {"maps": b"", "cmdline": b"x\0"}
    return spec


def _rb_extra_args(rng, spec):
    args = []
    if rng.random() < 0.2:
        args.append("-v")
    if rng.random() < 0.1:
        args += ["-i", rng.choice(("/usr/**", "*", "[", "**/x*"))]
    if rng.random() < 0.1:
        pids = [n for n in spec if n.isdigit()]
        args += ["-p", ",".join(pids[:2] + ["4194304"])]
    return args


@pytest.fixture
def _rb_fast_tmp(tmp_path):
    """A directory in memory (tmpfs) where there is one: thousands of trees are
    written there."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(prefix="lib_users_rb_", dir="/dev/shm")
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield str(tmp_path)


def test_fx_odd_entries_do_not_stop_the_scan():
    """A PID entry that is a plain file is skipped; a process whose maps is a directory
    is counted as unreadable; the others are still reported, with exit status 0."""
    result = _fx_run("proc-odd-entries")
    assert result.returncode == 0
    assert result.stdout == b'702 "/usr/sbin/rsyslogd -n -iNONE"\n'
    assert result.stderr.startswith(b"lib_users: ")
    assert b"1 process could not be read" in result.stderr
    assert b"Traceback" not in result.stderr
    doc = _fx_json("proc-odd-entries")
    assert [g["pids"] for g in doc["groups"]] == [[702]]
    assert doc["complete"] is False and doc["unreadable"] == 1


def test_fx_entries_that_only_look_like_pids(tmp_path):
    """A --proc tree may hold any names; only PID directories matter. (str.isdigit()
    also accepts '²' and other Unicode digits that int() rejects.)"""
    maps = _fx_line(b"/usr/lib/libold.so.1 (deleted)") + b"\n"
    _fx_write_process(tmp_path, 5000, [b"/usr/bin/app"], maps)
    for name in ("\u00b2", "\u2460", "12a", "self-test"):
        (tmp_path / name).mkdir()
    result = _fx_run(str(tmp_path))
    assert b"Traceback" not in result.stderr
    assert result.returncode == 0
    assert result.stdout == b'5000 "/usr/bin/app"\n'


def test_rb_hostile_trees_in_every_mode(_rb_fast_tmp, capsysbinary, monkeypatch):
    # The parser is built once, not for each of the runs (it costs 1 ms, half the run
    # of a small tree): parsing leaves it as it was.
    monkeypatch.setattr(lib_users, "build_parser",
                        functools.lru_cache(maxsize=None)(lib_users.build_parser))
    root = os.path.join(_rb_fast_tmp, "proc")
    trees = runs = 0
    failures = {}  # one example per kind of failure
    for index in range(_RB_FUZZ_TREES):
        rng = random.Random("%s-%d" % (_RB_SEED, index))
        spec = _rb_random_tree(rng)
        _rb_tree(root, spec)
        trees += 1
        extra = _rb_extra_args(rng, spec)
        for args, kind in _RB_MODES:
            argv = ["--proc", root] + extra + list(args)
            status, out, err, error = _rb_main(capsysbinary, argv)
            runs += 1
            if error is not None:
                problem = _rb_describe(error)
            else:
                problem = _rb_problem(kind, status, out, err)
            if problem is not None:
                key = problem.split(" at ")[0][:80] if error is None else problem
                failures.setdefault(key, (index, argv[2:], status, out[:200], err[:300]))
    summary = "%d hostile trees tried, %d in-process runs" % (trees, runs)
    print("\n" + summary)
    assert not failures, "%s; %d kinds of failure (tree index, args, status, stdout, " \
        "stderr), reproduce with random.Random('%s-INDEX'):\n%s" % (
            summary, len(failures), _RB_SEED,
            "\n".join("%s\n    %r" % item for item in sorted(failures.items())))


def test_rb_hostile_trees_through_the_command_line(tmp_path):
    # A subset of the same trees through the real command, bounded in time and memory.
    indexes = list(range(_RB_CLI_TREES))
    runs, max_rss, failures = 0, 0, []
    for index in indexes:
        rng = random.Random("%s-%d" % (_RB_SEED, index))
        spec = _rb_random_tree(rng)
        tree = _rb_tree(tmp_path / ("proc-%d" % index), spec)
        extra = _rb_extra_args(rng, spec)
        for args, kind in _RB_MODES:
            result = _rb_run(["--proc", tree] + extra + list(args), timeout=60)
            runs += 1
            max_rss = max(max_rss, result.max_rss)
            problem = "timed out" if result.timed_out else _rb_problem(
                kind, result.returncode, result.stdout, result.stderr)
            if problem is None and result.max_rss > _RB_MAX_RSS_KIB:
                problem = "max RSS %d KiB" % result.max_rss
            if problem:
                failures.append("tree %d %s: %s %r" % (index, args, problem, result))
        shutil.rmtree(tree)
    summary = "%d hostile trees, %d command-line runs, max RSS %d KiB" % (
        len(indexes), runs, max_rss)
    print("\n" + summary)
    assert not failures, "%s:\n%s" % (summary, "\n".join(failures[:10]))


def test_rb_one_mib_inputs_in_every_mode(tmp_path):
    big = b"/opt/" + b"\xe2\x80\xae\x1b[31m" * 8 + b"L" * (1 << 20) + b".so.1"
    spec = {
        "stat": _rb_root_stat(),
        # (the unit name shorter: matching it against HELD_BACK's globs costs a second
        # per MiB, in every mode that looks at units)
        "6001": _rb_process(6001, [b"/usr/bin/big", b"A" * (1 << 20)], [big],
                            cgroup=b"0::/system.slice/" + b"s" * (1 << 17) + b".service\n"),
        "6002": dict(_rb_process(6002, [b"x"], [b"/usr/lib/libq.so.1"]),
                     cmdline=b"C" * (1 << 20), stat=_rb_stat(6002, b")\n" * (1 << 19))),
        "6003": dict(_rb_process(6003, [b"y"], [b"/usr/lib/libq.so.1"]),
                     cmdline=b"\0" * (1 << 20), comm=b"\x1b" * 1000),
        "6004": dict(_rb_process(6004, [b"z"], []),
                     maps=(_rb_maps_line(b"/usr/lib/libw.so.1 (deleted)") + b"\n") * 12000),
    }
    tree = _rb_tree(tmp_path / "proc", spec)
    for args, kind in _RB_MODES:
        result = _rb_run(["--proc", tree, "-s", "-v"] + list(args), timeout=120)
        assert not result.timed_out, (args, result)
        assert _rb_problem(kind, result.returncode, result.stdout, result.stderr) is None, (
            args, result)
        assert result.max_rss < _RB_MAX_RSS_KIB, (args, result)
        if "--fds" not in args and "--prometheus" not in args:
            assert b"6001" in result.stdout and b"6002" in result.stdout, (args, result)


@pytest.mark.parametrize("case", ["maps-fifo", "cmdline-fifo", "maps-dev-zero",
                                  "stat-fifo", "stat-dev-zero", "status-dev-zero"])
def test_rb_tree_files_that_never_end_do_not_hang(tmp_path, case):
    # A --proc tree whose files are links that point anywhere: a named pipe nobody
    # writes to, or /dev/zero, must not hang the scan or fill memory.
    name, kind = case.split("-", 1)
    target = _RbFifo() if kind == "fifo" else _RbLink("/dev/zero")
    process = _rb_process(7001, [b"/usr/sbin/victim"], [b"/usr/lib/libv.so.1"])
    control = _rb_process(7002, [b"/usr/sbin/control"], [b"/usr/lib/libc2.so.1"])
    spec = {"stat": _rb_root_stat(), "7001": process, "7002": control}
    if name == "stat" and kind == "fifo":
        spec["stat"] = target  # the tree's own /proc/stat
    else:
        process[name] = target
    tree = _rb_tree(tmp_path / "proc", spec)
    for args in ((), ("--json",)):
        result = _rb_run(["--proc", tree] + list(args), timeout=5, limit_memory=512 << 20)
        assert not result.timed_out, (case, args, "hangs", result)
        kind_ = "json" if args else "text"
        assert _rb_problem(kind_, result.returncode, result.stdout, result.stderr) is None, (
            case, args, result)
        assert result.max_rss < _RB_MAX_RSS_KIB, (case, args, result)
        assert 7002 in _rb_reported(args, result.stdout), (case, args, result)


@pytest.mark.parametrize("btime", [b"", b"9" * 400], ids=["empty", "huge"])
def test_rb_odd_btime_in_tree_stat(tmp_path, capsysbinary, btime):
    # /proc/stat with "btime" and no number, or a number no float holds.
    spec = {"stat": _rb_root_stat(btime),
            "8001": _rb_process(8001, [b"/usr/sbin/d"], [b"/usr/lib/libd.so.1"])}
    tree = _rb_tree(tmp_path / "proc", spec)
    for args in ((), ("--json",), ("-S",)):
        status, out, err = _rb_in_process(capsysbinary, ["--proc", tree] + list(args))
        assert status == 0 and b"8001" in out, (args, status, out, err)


def test_rb_huge_start_time_in_stat(tmp_path, capsysbinary):
    # A stat whose starttime no float holds: the start time is unknown, not a crash.
    # (scripts: a python process, so that the start time is needed in every mode.)
    process = _rb_process(8101, [b"python3", b"/srv/app.py"], [b"/usr/lib/libe.so.1"],
                          exe=b"/usr/bin/python3")
    process["stat"] = _rb_stat(8101, b"python3", starttime=b"9" * 400)
    tree = _rb_tree(tmp_path / "proc", {"stat": _rb_root_stat(), "8101": process})
    for args in ((), ("--json",)):
        status, out, err = _rb_in_process(capsysbinary, ["--proc", tree] + list(args))
        assert status == 0 and b"8101" in out, (args, status, out, err)


def test_rb_unicode_digits_in_cgroup_user_slice(tmp_path, capsysbinary):
    # "user-\u00b2.slice": str.isdigit() says yes, int() says no. The process is still
    # reported, and not counted unreadable.
    cgroup = "0::/user.slice/user-\u00b2.slice/session-1.scope\n".encode()
    spec = {"stat": _rb_root_stat(),
            "8201": _rb_process(8201, [b"/usr/bin/u"], [b"/usr/lib/libu.so.1"],
                                cgroup=cgroup)}
    tree = _rb_tree(tmp_path / "proc", spec)
    for args in (("-S",), ("--json",), ("--prometheus",)):
        status, out, err = _rb_in_process(capsysbinary, ["--proc", tree] + list(args))
        assert status == 0 and b"could not be read" not in err, (args, status, out, err)
        if "--prometheus" not in args:
            assert b"8201" in out, (args, out)


def test_rb_nul_in_mapped_path_in_json(tmp_path, capsysbinary):
    # Only a --proc tree can hold a NUL in a path; --json checks whether a new file
    # stands at it, and must not drop the process for it.
    spec = {"stat": _rb_root_stat(),
            "8301": _rb_process(8301, [b"/usr/bin/n"], [b"/usr/lib/lib\0n.so.1"])}
    tree = _rb_tree(tmp_path / "proc", spec)
    for args in ((), ("--json",)):
        status, out, err = _rb_in_process(capsysbinary, ["--proc", tree] + list(args))
        assert status == 0 and b"8301" in out, (args, status, out, err)
        assert b"could not be read" not in err, (args, err)


def test_rb_pid_entry_that_loops_does_not_end_the_scan(tmp_path, capsysbinary):
    spec = {"stat": _rb_root_stat(),
            "8401": _RbLink("8401"),
            "8402": _rb_process(8402, [b"/usr/bin/ok"], [b"/usr/lib/libok.so.1"])}
    tree = _rb_tree(tmp_path / "proc", spec)
    status, out, err = _rb_in_process(capsysbinary, ["--proc", tree, "-m"])
    assert status == 0 and out.startswith(b"8402;"), (status, out, err)


@pytest.mark.parametrize("args", [["-p", "\u00b2"], ["-p", "1" * 5000], ["-w", "\u00b2"],
                                  ["--nagios", "-c", "\u00b9"]],
                         ids=["pid-superscript", "pid-5000-digits", "warning-superscript",
                              "nagios-critical-superscript"])
def test_rb_hostile_option_values_are_usage_errors(capsysbinary, args):
    status, out, err = _rb_in_process(capsysbinary, ["--proc", TESTDATA + "/proc-basic"]
                                      + args)
    expected = 3 if "--nagios" in args else 2
    assert status == expected, (status, out, err)
    assert _rb_stderr_problem(err, None) is None, err


# ---- stalled processes and FUSE --------------------------------------------------------


# Any user can mount FUSE, so any user can make a process's /proc files wait forever:
# testdata/fuse_stall.py is such a server, run by the fixture _rb_fuse_stall (as root, to
# mount; it then serves as uid 65534). Two stalls, as checked on a 6.18 kernel:
#
# - mmap lock (start_victim): a thread of the victim faults on a mapping of MOUNT/data,
#   whose READ is never answered, so the page stays locked. (The fault itself holds no
#   lock: the kernel drops the mmap and VMA locks before it waits for the I/O.) Then the
#   victim's main thread maps that file with MAP_FIXED over a spare mapping: it takes
#   the mmap write lock, write-locks the spare VMA it replaces, and then waits for the
#   locked page, since every mmap() of a FOPEN_DIRECT_IO file first empties its page
#   cache. From then on /proc/PID/cmdline, environ, smaps, maps and map_files/ wait;
#   stat and status do not. Weaker recipes (munmap, mprotect or any other mmap() while a
#   thread faults; a read of /proc/self/mem in the faulting thread) block nothing, or
#   only cmdline: maps is read under per-VMA locks.
# - path lookups (start_script, then stall_lookups): once the server answers nothing
#   (nothing is cached: entry and attribute timeouts are 0), os.stat() of any path on
#   the mount waits, such as the script of a `python3 MOUNT/script.py` started before.
#
# A process that waits on a request the server has read cannot even be killed while the
# server lives; killing the server aborts every request. So the fixture kills the server
# first, always, and a watchdog kills it after _RB_FUSE_LIMIT seconds whatever the test
# does.
_RB_FUSE_SERVER = os.path.join(TESTDATA, "fuse_stall.py")


_RB_FUSE_LIMIT = 60  # seconds a fixture's stall may last at most; never asserted


# The victim: argv[1] is MOUNT/data, argv[2] (if given) a library to load first. Says
# "ready" with its faulting thread started, then takes the mmap lock for good once the
# test writes a line (after the server has seen that thread's READ).
_RB_FUSE_VICTIM = r"""
import ctypes, mmap, os, sys, threading
keep = [ctypes.CDLL(arg) for arg in sys.argv[2:]]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
libc.memcpy.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
page, MAP_FIXED = mmap.PAGESIZE, 0x10
fd = os.open(sys.argv[1], os.O_RDONLY)
data = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
spare = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
buf = ctypes.create_string_buffer(1)
# A ctypes call releases the GIL while the thread waits in the fault.
threading.Thread(target=libc.memcpy, args=(buf, data, 1), daemon=True).start()
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
libc.mmap(spare, page, mmap.PROT_READ, mmap.MAP_PRIVATE | MAP_FIXED, fd, 0)  # waits
sys.stdin.read()
"""


def _rb_state(pid):
    """The state letter of /proc/PID/stat (never waits on a held mmap lock), or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()
    except (OSError, IndexError):
        return None


class _RbFuseStall:
    """A running fuse_stall.py server. `mount` is its mount point. start_victim() and
    start_script() start processes (as uid 65534) and return their PID and Popen;
    stall_lookups() makes the server answer nothing; stop() kills it, which ends every
    stall. Everything is cleaned up by the fixture."""

    def __init__(self, mount, server, spawn, python, request):
        self.mount, self.server = mount, server
        self._spawn, self._python, self._request = spawn, python, request
        self._output = b""
        self._readers = []  # killed commands of finishes(), maybe not yet dead

    def _wait_line(self, prefix):
        """Wait (bounded) for a line from the server that starts with `prefix`; False
        if the server ended or said nothing in time."""
        deadline = time.monotonic() + _LIVE_STARTUP_LIMIT
        while True:
            lines = self._output.split(b"\n")
            for index, line in enumerate(lines[:-1]):
                if line.startswith(prefix):
                    self._output = b"\n".join(lines[index + 1:])
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.server.stdout], [], [],
                                                   remaining)[0]:
                return False
            data = os.read(self.server.stdout.fileno(), 4096)
            if not data:
                return False
            self._output += data

    def start_victim(self, deleted_library=False):
        """Start a process whose mmap lock stays held; return its PID. With
        deleted_library it maps a private copy of libz first, deleted before the stall."""
        argv = [self._python, "-c", _RB_FUSE_VICTIM, os.path.join(self.mount, "data")]
        copy = None
        if deleted_library:
            libz = self._request.getfixturevalue("_live_libz")
            tmp = self._request.getfixturevalue("_live_tmp")
            name = "libz-fuse-%d.so.1" % time.monotonic_ns()
            copy = _live_copy(libz, os.path.join(tmp, name))
            argv.append(copy)
        victim = self._spawn(argv, cwd="/", **_live_nobody_kwargs())
        if copy:
            os.unlink(copy)
            assert _rb_deleted_in_maps(victim.pid, copy)  # readable: no stall yet
        assert self._wait_line(b"stalled READ "), "the server saw no READ"
        victim.stdin.write(b"go\n")
        victim.stdin.flush()
        # The main thread sleeps uninterruptibly (D) in mmap(), holding the lock.
        deadline = time.monotonic() + _LIVE_STARTUP_LIMIT
        while _rb_state(victim.pid) != "D":
            if time.monotonic() > deadline:
                pytest.fail("victim %d did not block in mmap()" % victim.pid)
            time.sleep(0.01)
        return victim.pid

    def start_script(self):
        """Start `python3 MOUNT/script.py` (the server's own small script, which says
        "ready" and waits for its stdin to close) and return its Popen."""
        return self._spawn([self._python, os.path.join(self.mount, "script.py")], cwd="/",
                           **_live_nobody_kwargs())

    def finishes(self, argv, seconds):
        """Whether the command `argv` ends within `seconds`. If not, it is killed by its
        PID. A reader waiting for a mmap lock dies at once; one waiting for an answer
        the server owes dies only with the server, so it is reaped at teardown."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(seconds)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            self._readers.append(proc)
            return False

    def stall_lookups(self):
        """From now on the server answers nothing: lookups and stats on the mount wait."""
        self.server.send_signal(signal.SIGUSR1)
        assert self._wait_line(b"stalled all"), "the server did not stall"

    def stop(self):
        """Kill the server: the kernel aborts every request waiting for it. Idempotent,
        and called by the watchdog thread too."""
        if self.server.poll() is None:
            self.server.kill()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _rb_unmount(path):
    """Detach a mount at once, even while it is busy (umount2 with MNT_DETACH)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), 2) != 0:
        error = ctypes.get_errno()
        return error == errno.EINVAL  # EINVAL: not mounted (any more)
    return True


@pytest.fixture
def _rb_fuse_stall(request, _live_spawn, _live_nobody_python):
    """A _RbFuseStall on a fresh mount point. Teardown, bounded and always: kill the
    server, detach the mount, kill and reap its processes, remove the mount point."""
    if os.geteuid() != 0:
        pytest.skip("needs root: to mount FUSE")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    mount = tempfile.mkdtemp(prefix="lib_users_fuse_")
    os.chmod(mount, 0o755)
    server = subprocess.Popen([sys.executable, _RB_FUSE_SERVER, mount],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    children = []

    def spawn(argv, **kwargs):
        child = _live_spawn(argv, **kwargs)
        children.append(child)
        return child

    stall = _RbFuseStall(mount, server, spawn, _live_nobody_python, request)
    watchdog = threading.Timer(_RB_FUSE_LIMIT, stall.stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        if not stall._wait_line(b"ready"):
            stall.stop()
            error = server.stderr.read().decode("utf-8", "replace").strip().splitlines()
            pytest.skip("could not mount FUSE: %s" % (error[-1:] or ["no answer"])[0])
        yield stall
    finally:
        watchdog.cancel()
        stall.stop()
        unmounted = _rb_unmount(mount)
        for child in children + stall._readers:
            child.kill()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pipe in (server.stdout, server.stderr):
            pipe.close()
        if unmounted:
            os.rmdir(mount)  # never rmtree: it would walk into a mount still there
        assert unmounted, "could not unmount " + mount


# Every mode, the API and the package-manager hook finish with a stalled process
# present: it is named once on stderr, counted as not read, and a stale process beside
# it is still reported.
_RB_STALL_MODES = ((), ("-S",), ("-S", "--scripts"), ("--json",), ("-m",), ("--nagios",),
                   ("--prometheus",), ("--json", "--scripts"))


def _rb_stall_message(pid):
    return re.compile(rb"^lib_users: PID %d \([^)\n]*\) did not answer within 1 s; "
                      rb"skipped$" % pid, re.M)


def test_rb_fuse_stall_blocks_proc_readers(_rb_fuse_stall):
    """The harness works: readers of the victim's cmdline and maps wait while the
    server lives, and finish once it is killed."""
    pid = _rb_fuse_stall.start_victim()
    readers = [["cat", "/proc/%d/%s" % (pid, name)] for name in ("cmdline", "maps")]
    assert _rb_fuse_stall.finishes(["cat", "/proc/%d/status" % pid], 30)  # it is there
    for argv in readers:
        assert not _rb_fuse_stall.finishes(argv, 2), argv
    _rb_fuse_stall.stop()
    for argv in readers:
        assert _rb_fuse_stall.finishes(argv, 30), argv


def test_rb_fuse_stall_victim_with_deleted_library(_rb_fuse_stall):
    pid = _rb_fuse_stall.start_victim(deleted_library=True)
    assert not _rb_fuse_stall.finishes(["cat", "/proc/%d/maps" % pid], 2)


def test_rb_fuse_stall_lookups(_rb_fuse_stall):
    """A script run from the mount starts; after stall_lookups() a stat of it waits."""
    script = _rb_fuse_stall.start_script()
    path = os.path.join(_rb_fuse_stall.mount, "script.py")
    stat_it = [sys.executable, "-c", "import os, sys; os.stat(sys.argv[1])", path]
    assert script.poll() is None
    assert _rb_fuse_stall.finishes(stat_it, 30)
    _rb_fuse_stall.stall_lookups()
    assert not _rb_fuse_stall.finishes(stat_it, 2)


def test_rb_stalled_process_is_skipped_in_every_mode(_rb_fuse_stall, _live_libz,
                                                     _live_tmp, _live_spawn):
    victim = _rb_fuse_stall.start_victim(deleted_library=True)
    stale, _argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "beside-stall")
    for args in _RB_STALL_MODES:
        # The bound of _rb_run is the whole scan's (15 timeouts), with room to spare.
        result = _rb_run(["--timeout", "1"] + list(args), timeout=25)
        assert not result.timed_out, (args, result)
        kind = "json" if "--json" in args else "nagios" if "--nagios" in args else "text"
        assert result.returncode == (1 if kind == "nagios" else 0), (args, result)
        if kind == "nagios":  # a monitor reads stdout only: all of it is in the line
            assert result.stderr == b"", (args, result)
            assert b"could not be read (1 did not answer)" in result.stdout, (args, result)
            assert result.stdout.startswith(b"LIB_USERS WARNING - "), (args, result)
        else:
            assert len(_rb_stall_message(victim).findall(result.stderr)) == 1, (
                args, result)
        if kind == "json":
            doc = json.loads(result.stdout)
            assert doc["unanswered"] == [victim] and doc["complete"] is False, args
            assert stale.pid in {p["pid"] for p in doc["processes"]}, args
            assert victim not in {p["pid"] for p in doc["processes"]}, args
        elif "--prometheus" in args:
            families = _svc_parse_prometheus(result.stdout.decode())
            assert _svc_value(families, "lib_users_unanswered_processes") == 1
            assert _svc_value(families, "lib_users_scan_complete") == 0
            assert _svc_value(families, "lib_users_processes") >= 1  # the stale one
        else:
            assert str(stale.pid).encode() in result.stdout, (args, result)


def test_rb_stalled_process_through_the_api(_rb_fuse_stall, _live_libz, _live_tmp,
                                            _live_spawn):
    victim = _rb_fuse_stall.start_victim()
    stale, _argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "api-stall")
    result = lib_users.scan(timeout=1)
    assert result.unanswered == [victim] and not result.complete
    assert stale.pid in [f.pid for f in result.findings]
    infos = lib_users.get_processes(timeout=1)
    assert stale.pid in [p.pid for p in infos] and victim not in [p.pid for p in infos]
    with pytest.raises(lib_users.NoAnswer):
        lib_users.get_process_files(victim, timeout=1)
    assert lib_users.get_process_files(stale.pid, timeout=1).pid == stale.pid


def test_rb_stalled_lookups_are_skipped(_rb_fuse_stall, _live_libz, _live_tmp,
                                        _live_spawn):
    # A script on a mount whose server stopped answering: the --scripts check stats it.
    script = _rb_fuse_stall.start_script()
    holder = _rb_fuse_stall.start_victim()  # it holds MOUNT/data open
    stale, _argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "lookup-stall")
    _rb_fuse_stall.stall_lookups()
    for args in (("--scripts",), ("--scripts", "--json")):
        result = _rb_run(["--timeout", "1"] + list(args), timeout=25)
        assert not result.timed_out and result.returncode == 0, (args, result)
        assert len(_rb_stall_message(script.pid).findall(result.stderr)) == 1, result
        assert str(stale.pid).encode() in result.stdout, (args, result)
    # The API's details of an open file stat it: its file system answers nothing.
    fd_dir = "/proc/%d/fd" % holder
    refs = [lib_users.FileRef(holder, int(n), os.readlink(os.path.join(fd_dir, n)))
            for n in os.listdir(fd_dir)]
    on_mount = [r for r in refs if r.target.startswith(_rb_fuse_stall.mount + "/")]
    assert on_mount
    with pytest.raises(lib_users.NoAnswer):
        lib_users.get_file_info(on_mount[0], timeout=1)


# ---- restricted /proc ------------------------------------------------------------------


@pytest.fixture(scope="module")
def _rb_nobody():
    """(setpriv, python, script): lib_users as uid 65534 can run it, from a 0755 temp
    directory, with an interpreter it may execute."""
    if os.geteuid() != 0:
        pytest.skip("needs root: to run lib_users as uid 65534 and to mount /proc")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to run lib_users as uid 65534")
    tmp = tempfile.mkdtemp(prefix="lib_users_rb_nobody_")
    try:
        os.chmod(tmp, 0o755)
        script = os.path.join(tmp, "lib_users.py")
        shutil.copyfile(LIB_USERS, script)
        os.chmod(script, 0o644)
        for python in ("/usr/bin/python3", sys.executable, shutil.which("python3")):
            if not python or not os.path.isfile(python):
                continue
            probe = _rb_run([], cmd=_rb_as_nobody(setpriv, python, script, "--version"),
                            cwd="/")
            if probe.returncode == 0 and probe.stdout.startswith(b"lib_users "):
                yield setpriv, python, script
                return
        pytest.skip("needs a Python interpreter that uid 65534 may run")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rb_as_nobody(setpriv, python, script, *args):
    return [setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
            python, script] + list(args)


# Run a command with something else mounted on /proc, in a private mount namespace:
# sh -c SCRIPT sh KIND OPTION COMMAND...; exit 97 when the mount fails.
_RB_MOUNT_SCRIPT = """
kind=$1; option=$2; shift 2
case $kind in
  proc) mount -t proc -o "$option" proc /proc || exit 97 ;;
  tmpfs) mount -t tmpfs -o size=64k,mode=0755 lib_users_rb /proc || exit 97 ;;
  bind) mount --bind "$option" /proc || exit 97 ;;
esac
cd /
exec "$@"
"""


def _rb_with_proc(kind, option, command):
    """Run `command` with /proc replaced in a private mount namespace (and, if a plain
    mount of procfs is refused, in a new PID namespace too). Skips with the reason if
    neither can be set up."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) for a private mount namespace")
    tries = ([unshare, "-m", "--propagation", "private"],
             [unshare, "-m", "-p", "-f", "--propagation", "private"])
    reasons = []
    for prefix in tries if kind == "proc" else tries[:1]:
        cmd = prefix + ["sh", "-c", _RB_MOUNT_SCRIPT, "sh", kind, option] + command
        result = _rb_run([], cmd=cmd, limit_memory=False)
        if result.returncode != 97 and not result.stderr.startswith(b"unshare:"):
            return result
        reasons.append("%s: %s" % (" ".join(prefix[1:]), result.stderr.decode(
            "utf-8", "replace").strip()))
    pytest.skip("cannot mount %s on /proc in a private namespace: %s" % (
        kind + (" -o " + option if kind == "proc" else ""), "; ".join(reasons)))


_RB_HIDDEN_WARNING = "lib_users: %s could not be read; run as root to see them all"


def _rb_warnings(result):
    return [line for line in result.stderr.decode("utf-8", "replace").splitlines()
            if not line.startswith("lib_users: reboot needed: ")]


def test_live_unprivileged_scan_warns_and_reports_own_process(
        _live_libz, _live_tmp, _live_spawn, _live_nobody_python):
    # lib_users.py may sit where uid 65534 cannot reach it: run a copy from _live_tmp.
    script = _live_copy(LIB_USERS, os.path.join(_live_tmp, "lib_users.py"))
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    argv = _live_child_argv("lib", copy, python=_live_nobody_python)
    child = _live_spawn(argv, cwd=_live_tmp, **_live_nobody_kwargs())
    with open("/proc/%d/status" % child.pid) as f:
        assert "Uid:\t%d\t" % NOBODY in f.read()
    os.unlink(copy)
    assert _live_maps_line(child.pid, _live_maps_name(copy, True)) is not None

    # A full scan: root's processes (this test's own, at least) cannot be read.
    result = _live_run("-v", "-s", python=_live_nobody_python, script=script,
                       cwd=_live_tmp, **_live_nobody_kwargs())
    assert result.returncode == 0
    assert _rb_stderr_problem(result.stderr, 0) is None, result
    stderr = _live_stderr_lines(result.stderr)
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("lib_users: ") and "could not be read" in stderr[0]
    assert "root" in stderr[0]
    assert _live_line_for(result.stdout, child.pid) == '%d "%s" uses %s' % (
        child.pid, _live_argv_text(argv), copy)


@pytest.mark.parametrize("hidepid", ["invisible", "noaccess", "ptraceable"])
def test_rb_hidepid_proc_warns_and_succeeds(_rb_nobody, hidepid):
    result = _rb_with_proc("proc", "hidepid=" + hidepid, _rb_as_nobody(*_rb_nobody))
    assert _rb_stderr_problem(result.stderr, result.returncode) is None, result
    warnings = _rb_warnings(result)
    assert result.returncode == 0, (hidepid, result)
    assert len(warnings) == 1, (hidepid, result)
    if hidepid == "invisible":  # other users' processes are not listed: only PID 1 is missed
        assert warnings[0] == _RB_HIDDEN_WARNING % "1 process", (hidepid, result)
    else:
        assert re.fullmatch(_RB_HIDDEN_WARNING % r"\d+ process(es)?", warnings[0]), (
            hidepid, result)


def test_rb_hidepid_invisible_with_own_stale_process(_rb_nobody, _live_libz, _live_tmp,
                                                     _live_spawn):
    # Our own process is visible and reported; the others are hidden, which is said.
    _setpriv, python, _script = _rb_nobody
    if sys.version_info >= (3, 9):
        kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        kwargs = {"preexec_fn": lambda: (os.setgroups([]), os.setgid(NOBODY),
                                         os.setuid(NOBODY))}
    child, _argv = _rb_stale_child(_live_spawn, _live_tmp, _live_libz, "nobody", python=python,
                                   cwd="/", **kwargs)
    result = _rb_with_proc("proc", "hidepid=invisible",
                           _rb_as_nobody(*_rb_nobody) + ["-v"])
    assert result.returncode == 0, result
    assert child.pid in _rb_text_pids(result.stdout), result
    warnings = _rb_warnings(result)
    assert warnings == [_RB_HIDDEN_WARNING % "1 process"], result
    # A monitor learns that the scan did not see everything.
    result = _rb_with_proc("proc", "hidepid=invisible",
                           _rb_as_nobody(*_rb_nobody) + ["--json"])
    assert result.returncode == 0, result
    doc = json.loads(result.stdout.decode("ascii"))
    assert doc["complete"] is False, doc
    assert [g["pids"] for g in doc["groups"]] == [[child.pid]], doc


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
def test_rb_proc_that_is_not_procfs(_rb_nobody, _live_tmp, kind):
    _setpriv, python, script = _rb_nobody
    empty = os.path.join(_live_tmp, "empty")
    os.mkdir(empty)
    for args, status in (([], 1), (["--nagios"], 3), (["--json"], 1)):
        result = _rb_with_proc(kind, empty, [python, script] + args)
        assert result.returncode == status, (kind, args, result)
        assert _rb_stderr_problem(result.stderr, result.returncode) is None, result
        message = (result.stdout if "--nagios" in args else result.stderr).decode()
        assert message.count("\n") == 1 and "/proc" in message, (kind, args, result)
        if "--nagios" in args:
            assert message.startswith("LIB_USERS UNKNOWN - "), result
        else:
            assert message.startswith("lib_users: ") and result.stdout == b"", result


def test_rb_empty_proc_dir(tmp_path):
    empty = str(tmp_path)
    for args, status in (([], 1), (["--json"], 1), (["--nagios"], 3), (["--fds"], 1)):
        result = _rb_run(["--proc", empty] + args)
        assert result.returncode == status, (args, result)
        if "--nagios" not in args:
            assert result.stdout == b"", result
            lines = result.stderr.decode().splitlines()
            assert len(lines) == 1 and lines[0].startswith("lib_users: "), result
            assert empty in lines[0], result


# ---- output that cannot be written -----------------------------------------------------


def _rb_id(args):
    return " ".join(args) or "default"


_RB_PRINTING = ([], ["-s"], ["-m"], ["--json"], ["-S"], ["--fds"], ["--nagios"],
                ["--prometheus"], ["--help"], ["--version"], ["--nagios", "--bogus"],
                ["--nagios", "-c", "x"], ["-v", "-S", "-s"])


@pytest.fixture(scope="module")
def _rb_many_groups(tmp_path_factory):
    """A tree with 800 processes, each its own group with a long command line: output
    far past a pipe buffer in every format, from a tree that is quick to write."""
    root = tmp_path_factory.mktemp("rb_many") / "proc"
    spec = {"stat": _rb_root_stat()}
    for pid in range(10000, 10800):
        spec[str(pid)] = {
            "maps": _rb_maps_line(b"/usr/lib/x86_64-linux-gnu/libworker-%d.so.1 (deleted)"
                                  % pid, pid) + b"\n",
            "cmdline": b"/usr/bin/worker\0--id\0%d\0--name\0worker number %d %s\0" % (
                pid, pid, b"of the pool" * 20)}
    path = _rb_tree(root, spec)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_live_closed_stdout_is_not_a_traceback(_live_stale_children):
    # `lib_users -v >&-`: Python starts with no sys.stdout at all.
    def close_stdout():
        os.close(1)

    result = _live_run("-v", *_live_stale_children, stdout=None, preexec_fn=close_stdout)
    assert b"Traceback" not in result.stderr
    # The children make a line to print, which has nowhere to go: an error, said once.
    assert result.returncode == 1
    assert _live_stderr_lines(result.stderr) == [
        "lib_users: cannot write output: standard output is closed"]


@pytest.mark.parametrize("args", _RB_PRINTING, ids=_rb_id)
def test_rb_full_disk_is_one_line_error(args):
    with open("/dev/full", "wb") as full:
        result = _rb_run(["--proc", os.path.join(TESTDATA, "proc-basic")] + args,
                         stdout=full)
    assert result.returncode == 1, result
    assert b"Traceback" not in result.stderr, result
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    assert len(lines) == 1 and lines[0].startswith("lib_users: "), result
    assert os.strerror(errno.ENOSPC) in lines[0], result


@pytest.mark.parametrize("args", _RB_PRINTING, ids=_rb_id)
def test_rb_closed_pipe_is_quiet(args):
    argv = ["--proc", os.path.join(TESTDATA, "proc-basic")] + args
    expected = _rb_run(argv)
    assert expected.stdout, expected  # prints something
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _rb_run(argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (expected.returncode, b""), result
    if not args or args[0] in ("-s", "-m", "--json", "-S", "-v"):
        assert expected.returncode == 0, expected  # findings are no error


@pytest.mark.parametrize("args", [[], ["-s"], ["-m"], ["--json"], ["-S", "-s"],
                                  ["--nagios", "-v"]], ids=_rb_id)
def test_rb_reader_gone_after_first_line_is_quiet(_rb_many_groups, args):
    argv = ["--proc", _rb_many_groups] + args
    expected = _rb_run(argv)
    assert len(expected.stdout) > 2 * 65536 and expected.stderr == b"", expected
    result = _rb_run(argv, first_line_only=True)
    assert not result.timed_out, result
    assert (result.returncode, result.stderr) == (expected.returncode, b""), result
    assert result.stdout.split(b"\n")[0] == expected.stdout.split(b"\n")[0]


# ---- memory bounds ---------------------------------------------------------------------


# The address space these runs may use: less than what they read. (Their maximum RSS says
# little here: a child forked from pytest starts with the RSS of pytest.)
_RB_FLAT_MEMORY = 96 << 20


def test_rb_huge_argument_list_is_cut_and_memory_stays_flat(_live_libz, _live_tmp,
                                                           _live_spawn):
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    child = _live_spawn(_live_child_argv("hugeargs", copy))
    os.unlink(copy)
    with open("/proc/%d/cmdline" % child.pid, "rb") as cmdline:
        assert cmdline.read(4 << 20) == bytes(4 << 20)  # gigabytes of NULs, as promised
    for args in (["-p", str(child.pid)], ["--json", "-p", str(child.pid)]):
        result = _rb_run(args, timeout=60, limit_memory=_RB_FLAT_MEMORY)
        assert result.returncode == 0 and not result.timed_out, result
    line = _live_line_for(_rb_run(["-p", str(child.pid)]).stdout, child.pid)
    assert line.endswith(" '%s'\"" % lib_users.ARGV_CUT), line
    assert line.startswith('%d "[python' % child.pid), line  # its command name
    doc = json.loads(result.stdout)
    assert doc["groups"][0]["argv"][-1] == lib_users.ARGV_CUT


def test_rb_many_long_mappings_keep_memory_flat(_live_libz, _live_tmp, _live_spawn):
    # 30000 mappings of a file with a 4000-byte name: some 120 MB of maps, which the
    # scan reads a chunk at a time.
    directory = _live_tmp
    for _ in range(20):
        directory = os.path.join(directory, "d" * 199)
    os.makedirs(directory)
    page = os.path.join(directory, "page")
    with open(page, "wb") as f:
        f.write(bytes(4096))
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    child = _live_spawn(_live_child_argv("manymaps", copy, page, "30000"))
    os.unlink(copy)
    with open("/proc/%d/maps" % child.pid, "rb") as maps:
        size = sum(len(chunk) for chunk in iter(lambda: maps.read(1 << 20), b""))
    assert size > 100 << 20
    # Memory is the point here, not time: reading 120 MB of maps may take longer than
    # the default 2 s a process is given on a slow machine.
    for args in (["-p", str(child.pid)], ["-s", "--json", "-p", str(child.pid)]):
        result = _rb_run(args + ["--timeout", "60"], timeout=120,
                         limit_memory=_RB_FLAT_MEMORY)
        assert result.returncode == 0 and not result.timed_out, result
        assert str(child.pid).encode() in result.stdout, result


# ==== which package =====================================================================
# The package that owns each deleted file's path, from dpkg's database: a small fixture
# database under testdata/dpkg-root (given with --root, so that nothing depends on the
# machine's packages), and the machine's real one for a real library of a real package.

_PKG_ROOT = os.path.join(TESTDATA, "dpkg-root")


def _pkg_run(*args):
    return _fx_cli("--proc", os.path.join(TESTDATA, "proc-basic"), "--root", _PKG_ROOT,
                   "--no-config", *args)


def test_pkg_owner_of_paths_as_maps_shows_them():
    """A path is found as listed, and on a merged-/usr root also under its other name;
    the version is that of the package's own architecture; a path no package lists,
    one where packages install nothing, and a root without dpkg answer None."""
    db = lib_users.PackageDb(_PKG_ROOT)
    owners = db.owners([_FX_LIBDIR + "libc.so.6", _FX_LIBDIR + "libssl.so.3",
                        "/usr/sbin/cron", _FX_LIBDIR + "libzstd.so.1.5.4",
                        "/tmp/libz.so.1"])
    assert owners == {
        _FX_LIBDIR + "libc.so.6": lib_users.Package("libc6", "2.36-9+deb12u9", "amd64", ()),
        _FX_LIBDIR + "libssl.so.3": lib_users.Package("libssl3", "3.0.15-1~deb12u1",
                                                      "amd64", ()),
        "/usr/sbin/cron": lib_users.Package("cron", "3.0pl1-162", "", ("cron",)),
        _FX_LIBDIR + "libzstd.so.1.5.4": None,
        "/tmp/libz.so.1": None}
    assert db.owner(_FX_LIBDIR + "libc.so.6") is owners[_FX_LIBDIR + "libc.so.6"]
    with tempfile.TemporaryDirectory() as empty:
        assert lib_users.PackageDb(empty).owner(_FX_LIBDIR + "libc.so.6") is None


def test_pkg_missing_status_and_unreadable_list(tmp_path):
    """A package whose version the status file does not give has version None; a .list
    that cannot be read (a directory here) is passed over."""
    info = tmp_path / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (info / "a.list").mkdir()
    (info / "b:arm64.list").write_bytes(b"/usr/lib/libb.so.1\n")
    assert lib_users.PackageDb(str(tmp_path)).owner("/usr/lib/libb.so.1") == \
        lib_users.Package("b", None, "arm64", ())


def test_pkg_formats_name_the_package():
    """-s --packages, -S, --json and --prometheus name each file's package; -s alone
    and a --proc tree without --root do not."""
    shown = _pkg_run("-s", "--packages").stdout.decode()
    assert shown.splitlines()[0] == (
        '612 "/usr/sbin/cron -f" uses %slibc.so.6 (libc6 2.36-9+deb12u9),/usr/sbin/cron '
        '(cron 3.0pl1-162)' % _FX_LIBDIR)
    assert "libssl3" not in _pkg_run("-s").stdout.decode()
    services = _pkg_run("-S").stdout.decode().splitlines()
    assert '- 845 "/usr/sbin/sshd -D" (libssl3 3.0.15-1~deb12u1)' in services
    assert '- 1502 "[backupd]"' in services  # its library is no package's
    doc = json.loads(_pkg_run("--json").stdout)
    files = {f["path"]: f["package"] for p in doc["processes"] for f in p["files"]}
    assert files == {
        _FX_LIBDIR + "libc.so.6": {"name": "libc6", "version": "2.36-9+deb12u9"},
        "/usr/sbin/cron": {"name": "cron", "version": "3.0pl1-162"},
        _FX_LIBDIR + "libcrypto.so.3": {"name": "libssl3", "version": "3.0.15-1~deb12u1"},
        _FX_LIBDIR + "libssl.so.3": {"name": "libssl3", "version": "3.0.15-1~deb12u1"},
        _FX_LIBDIR + "libzstd.so.1.5.4": None}
    metrics = [line for line in _pkg_run("--prometheus").stdout.decode().splitlines()
               if line.startswith("lib_users_package_processes{")]
    assert metrics == [  # sshd counts once for its two files of libssl3
        'lib_users_package_processes{package="cron",version="3.0pl1-162"} 1',
        'lib_users_package_processes{package="libc6",version="2.36-9+deb12u9"} 1',
        'lib_users_package_processes{package="libssl3",version="3.0.15-1~deb12u1"} 1']
    plain = json.loads(_fx_cli("--proc", os.path.join(TESTDATA, "proc-basic"), "--json",
                               "--no-config").stdout)
    assert {f["package"] for p in plain["processes"] for f in p["files"]} == {None}


def test_pkg_names_are_escaped(tmp_path):
    """A package name or version with control characters is shown escaped."""
    info = tmp_path / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (info / "evil\x1b[2J.list").write_bytes(b"/usr/sbin/cron\n")
    (tmp_path / "var" / "lib" / "dpkg" / "status").write_bytes(
        b"Package: evil\x1b[2J\nVersion: 1\x07\n")
    out = _fx_cli("--proc", os.path.join(TESTDATA, "proc-basic"), "--root", str(tmp_path),
                  "--no-config", "-s", "--packages").stdout
    assert b"(evil\\x1b[2J 1\\x07)" in out and b"\x1b" not in out and b"\x07" not in out


_PKG_CHILD = """
import ctypes, os, sys
library, copy = sys.argv[1], sys.argv[2]
with open(copy, "rb") as f:
    data = f.read()
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result:
        sys.exit("%s: %s" % (what, os.strerror(ctypes.get_errno())))
# A mount namespace of its own, where a tmpfs over the library's directory takes the
# copy: the machine's library is never touched, and maps shows the package's path.
check(libc.unshare(0x00020000), "unshare")  # CLONE_NEWNS
check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "mount")  # MS_REC|MS_PRIVATE
check(libc.mount(b"tmpfs", os.path.dirname(library).encode(), b"tmpfs", 0, b"size=16m"),
      "mount tmpfs")
with open(library, "wb") as f:
    f.write(data)
keep = ctypes.CDLL(library)
os.unlink(library)
sys.stdout.write("ready" + chr(10))
sys.stdout.flush()
sys.stdin.read()
"""


def _pkg_dpkg_owner(path):
    """(package, version) that dpkg-query says owns `path` (or its merged-/usr name),
    or None: the real dpkg, an oracle independent of lib_users's reading."""
    for name in (path, path[4:] if path.startswith("/usr/") else "/usr" + path):
        found = subprocess.run(["dpkg-query", "-S", name], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        if found.returncode == 0 and ", " not in found.stdout:
            package = found.stdout.split(": ", 1)[0]
            version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                     stdout=subprocess.PIPE, text=True).stdout
            return package.split(":")[0], version
    return None


def test_pkg_real_library_of_a_real_package(_live_libz, _live_tmp, _live_spawn):
    """A process maps a deleted copy of libz at the path its package installs it (in a
    mount namespace of its own): every format names that package and its version, as
    dpkg-query does."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace of its own for the child)")
    if shutil.which("dpkg-query") is None:
        pytest.skip("needs dpkg (a Debian-like system), whose database lib_users reads")
    library = os.path.realpath(_live_libz)
    expected = _pkg_dpkg_owner(library)
    if expected is None:
        pytest.skip("no installed package owns %s here" % library)
    copy = _live_copy(library, os.path.join(_live_tmp, "libz-copy"))
    child = _live_spawn([sys.executable, "-c", _PKG_CHILD, library, copy])
    assert _live_maps_line(child.pid, _live_maps_name(library, True)) is not None
    run = functools.partial(_live_run, "--no-config", "-p", str(child.pid))
    doc = json.loads(run("--json").stdout)
    [process] = doc["processes"]
    assert [(f["path"], f["package"]) for f in process["files"]] == [
        (library, {"name": expected[0], "version": expected[1]})]
    assert ("(%s %s)" % expected).encode() in run("-s", "--packages").stdout
    assert ("(%s %s)" % expected).encode() in run("-S").stdout
    assert ('lib_users_package_processes{package="%s",version="%s"} 1' % expected).encode() \
        in run("--prometheus").stdout


# ==== documentation =====================================================================
# The options, the false-positive table and the JSON fields are each listed in --help,
# README.md and lib_users.1; these tests take the lists from the code, so that a new entry
# that one document misses fails here instead of drifting.


_DOC_README = os.path.join(HERE, "README.md")


_DOC_MAN = os.path.join(HERE, "lib_users.1")


# How the documents write the character classes of a glob: mkstemp's six random
# characters, System V's key in hex, JNA's digits.
_DOC_GLOB_NOTATION = (("[A-Za-z0-9]" * 6, "XXXXXX"), ("[0-9a-f]" * 8, "<8 hex digits>"),
                      ("[0-9]*", "<digits>"))


def _doc_read(path):
    with open(path, encoding="utf-8") as source:
        return source.read()


def _doc_man_text(source):
    """The text of a man page as it reads: macro arguments joined as the font macros
    join them, font changes dropped and groff's escapes for - \" ' \\ and space undone."""
    lines = []
    for line in source.splitlines():
        if line.startswith(".\\\""):
            continue
        if line.startswith("."):
            macro, _, rest = line[1:].partition(" ")
            args = [quoted or bare for quoted, bare in
                    re.findall(r'"([^"]*)"|((?:\\ |\S)+)', rest)]
            if macro in ("B", "I", "SH", "SS"):
                line = " ".join(args)
            elif macro in ("BR", "RB", "IR", "RI", "BI", "IB"):
                line = "".join(args)  # alternating fonts, no space between
            else:
                line = ""
        lines.append(line)
    text = re.sub(r"\\f[BIPR]", "", "\n".join(lines))
    for escaped, plain in (("\\-", "-"), ("\\(dq", '"'), ("\\(aq", "'"), ("\\ ", " "),
                           ("\\&", ""), ("\\e", "\\")):
        text = text.replace(escaped, plain)
    return text


def _doc_section(text, start, end):
    """The part of `text` from the line `start` to the next line `end`."""
    at = text.index("\n" + start + "\n")
    return text[at:text.index("\n" + end + "\n", at + 1)]


def _doc_word(word, text):
    return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), text) is not None


def _doc_option_names():
    # From the parser itself (argparse keeps its actions in _actions), not from a list.
    names = [name for action in lib_users.build_parser()._actions
             for name in action.option_strings]
    assert "--timeout" in names and "-I" in names and len(names) >= 25, names
    return names


def test_doc_man_text_renders_groff():
    assert _doc_man_text('.BR \\-p ", " \\-\\-pid " \\fIPID\\fP"\n.RI ( */jna <digits> .tmp),\n'
                         'a \\(dqb\\(dq \\fB\\-x\\fP') == '-p, --pid PID\n(*/jna<digits>.tmp),\na "b" -x'


@pytest.mark.parametrize("document", ["--help", "README.md", "lib_users.1"])
def test_doc_every_option_is_documented(document):
    if document == "--help":
        text = lib_users.help_text()
        found = lambda name: _doc_word(name, text)  # noqa: E731
    elif document == "README.md":
        text = _doc_section(_doc_read(_DOC_README), "| option | meaning |", "")
        found = lambda name: re.search(r"`%s[` ]" % re.escape(name), text)  # noqa: E731
    else:
        text = _doc_section(_doc_man_text(_doc_read(_DOC_MAN)), "OPTIONS", "OUTPUT")
        found = lambda name: _doc_word(name, text)  # noqa: E731
    missing = [name for name in _doc_option_names() if not found(name)]
    assert missing == [], "%s does not name %s" % (document, ", ".join(missing))


def _doc_pattern(pattern):
    for glob, notation in _DOC_GLOB_NOTATION:
        pattern = pattern.replace(glob, notation)
    assert "[" not in pattern or pattern == "/[aio]", "no notation for " + pattern
    return pattern


@pytest.mark.parametrize("document", ["README.md", "lib_users.1"])
def test_doc_every_false_positive_is_documented(document):
    if document == "README.md":
        text = _doc_section(_doc_read(_DOC_README), "## False positives", "## Limitations")
        found = lambda pattern: "`%s`" % pattern in text  # noqa: E731
    else:
        text = _doc_section(_doc_man_text(_doc_read(_DOC_MAN)), "FALSE POSITIVES",
                            "EXIT STATUS")
        found = lambda pattern: re.search(  # noqa: E731
            r"(?<![\w/.-])%s(?![\w/-])" % re.escape(pattern), text)
    entries = lib_users.FALSE_POSITIVES
    assert len(entries) >= 14
    missing = [_doc_pattern(p) for _kind, p, _why in entries if not found(_doc_pattern(p))]
    assert missing == [], "%s does not list %s" % (document, ", ".join(missing))


def _doc_json_keys():
    """Every member name of the JSON documents of fixture trees that, between them, hold
    every kind of record: units, sessions and containers, and --fds's freed bytes."""
    def collect(value):
        if isinstance(value, dict):
            for key, member in value.items():
                keys.add(key)
                collect(member)
        elif isinstance(value, list):
            for member in value:
                collect(member)

    keys = set()
    for tree, args in (("svc-units", ()), ("svc-containers", ()), ("proc-basic", ("--fds",))):
        collect(_fx_json(tree, *args) if tree.startswith("proc-")
                else json.loads(_svc_run("--json", *args, proc=tree).stdout))
    assert {"session", "id", "freed_bytes", "replaced", "unanswered"} <= keys, keys
    return sorted(keys)


@pytest.mark.parametrize("document", ["README.md", "lib_users.1"])
def test_doc_every_json_field_is_documented(document):
    if document == "README.md":
        text = _doc_section(_doc_read(_DOC_README), "### Machine-readable output",
                            "### Safe on a terminal")
        found = lambda key: '"%s":' % key in text or "`%s`" % key in text  # noqa: E731
    else:
        text = _doc_section(_doc_man_text(_doc_read(_DOC_MAN)), "JSON format (--json)",
                            "Services format (-S)")
        found = lambda key: _doc_word(key, text)  # noqa: E731
    missing = [key for key in _doc_json_keys() if not found(key)]
    assert missing == [], "%s does not describe %s" % (document, ", ".join(missing))


def _doc_setup_keywords():
    """The literal keyword arguments of setup() in setup.py."""
    import ast
    tree = ast.parse(_doc_read(os.path.join(HERE, "setup.py")))
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords
            if k.arg in ("entry_points", "data_files")}


def test_doc_every_command_has_an_installed_man_page():
    keywords = _doc_setup_keywords()
    commands = [entry.split("=")[0].strip()
                for entry in keywords["entry_points"]["console_scripts"]]
    assert sorted(commands) == ["fd_users", "lib_users"]
    installed = dict(keywords["data_files"])["share/man/man1"]
    assert sorted(installed) == sorted(command + ".1" for command in commands)
    for page in installed:
        text = _doc_read(os.path.join(HERE, page))
        assert re.search(r"^\.TH ", text, re.M) or text == ".so man1/lib_users.1\n", page
    # The alias leads to the page that describes fd_users.
    assert "fd_users" in _doc_man_text(_doc_read(_DOC_MAN)).split("DESCRIPTION")[0]


def test_doc_parse_args_keeps_the_short_ways_of_writing():
    options = lib_users.parse_args(["-sv", "--verb", "-p612", "--pid=1,2", "-i", "a*",
                                    "--ignore-pat", "b", "-I/x", "--time=0.5", "-w3"])
    assert (options.showlibs, options.verbose, options.pids) == (True, True, [1, 2, 612])
    assert (options.patterns, options.literals) == (["a*", "b"], ["/x"])
    assert (options.timeout, options.warning, options.critical) == (0.5, 3, None)
    defaults = lib_users.parse_args([])
    assert (defaults.pids, defaults.timeout, defaults.patterns) == (
        None, lib_users.DEFAULT_TIMEOUT, [])
    for args, message in ((["--ver"], "ambiguous option: --ver could match"),
                          (["--", "x"], "unexpected argument: x"),
                          (["-s", "-"], "unexpected argument: -"),
                          (["--bogus\x1b"], "unknown option: --bogus\\x1b"),
                          (["--json", "--prom"], "not allowed with")):
        with pytest.raises(lib_users.UsageError, match=re.escape(message)):
            lib_users.parse_args(args)


def test_doc_plain_run_does_not_import_argparse():
    # The no-argument run (hooks, timers) does without argparse's 6 ms of start-up.
    code = ("import sys, lib_users; lib_users.parse_args([]); print('argparse' in sys.modules);"
            "lib_users.parse_args(['-s']); print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    assert out == "False\nTrue\n"


# ==== config and the fleet path ========================================================
# The config (/etc/lib_users.conf and its snippets) read from fixture files in tmp_path,
# never the machine's own: every run names --config or --no-config. Then the path a
# fleet takes: --prometheus output through a real node_exporter's textfile collector.


def _cfg_cli(*args):
    """Run lib_users as a user would; (status, stdout, stderr) as text."""
    done = subprocess.run([sys.executable, _CLI_SCRIPT] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def _cfg_file(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


_CFG_BASIC = os.path.join(TESTDATA, "proc-basic")
_CFG_UNITS = os.path.join(TESTDATA, "svc-units")
_CFG_LIB = "/usr/lib/x86_64-linux-gnu/"


def _cfg_uses(out):
    """-s output: {first PID: [the files it uses]}."""
    return {line.split()[0]: line.rpartition(" uses ")[2].split(",")
            for line in out.splitlines()}


def _cfg_held(out):
    """-S output: the systemctl restart line's units and {label: reason} of the rest."""
    restart = [line.split()[2:] for line in out.splitlines() if line.startswith("systemctl ")]
    held = dict(line[2:].split(": ", 1) for line in out.splitlines() if line.startswith("# "))
    return (restart[0] if restart else []), held


def test_cfg_ignore_pattern_and_literal(tmp_path):
    config = _cfg_file(tmp_path / "lib_users.conf",
                       "# what this fleet always ignores",
                       "",
                       "ignore-pattern %slibcrypto.so* -- our own build, replaced on purpose"
                       % _CFG_LIB,
                       "   ignore-literal\t/usr/sbin/cron   --   cron is rebuilt nightly  ")
    status, out, err = _cfg_cli("--proc", _CFG_BASIC, "-s", "--config", config)
    assert (status, err) == (0, "")
    assert _cfg_uses(out) == {"612": [_CFG_LIB + "libc.so.6"],
                              "845": [_CFG_LIB + "libssl.so.3"],
                              "1502": [_CFG_LIB + "libzstd.so.1.5.4"]}
    # The same names ignored by -i and -I: the config is the command line made permanent.
    assert _cfg_cli("--proc", _CFG_BASIC, "-s", "--no-config", "-i", _CFG_LIB + "libcrypto.so*",
                    "-I", "/usr/sbin/cron")[1] == out


def test_cfg_ignore_literal_with_spaces_and_a_glob_only_as_a_pattern(tmp_path):
    found = lib_users.parse_config(
        b"ignore-literal /drm mm object -- a GPU buffer\n"
        b"ignore-literal /opt/app/jit-* -- a literal star\n", "x.conf")
    table = lib_users.ignore_table(configured=found.ignores)
    assert lib_users.is_ignored("/drm mm object", table)
    assert lib_users.is_ignored("/opt/app/jit-*", table) == "a literal star"
    assert lib_users.is_ignored("/opt/app/jit-1", table) is None


def test_cfg_held_back_units_show_their_reason_in_S(tmp_path):
    config = _cfg_file(tmp_path / "lib_users.conf",
                       "held-back ssh.service -- the only way in: restart it from the console",
                       "held-back openvpn@*.service -- VPN tunnels: restart in the window",
                       "held-back dbus.service -- ours")
    status, out, err = _cfg_cli("--proc", _CFG_UNITS, "-S", "--config", config)
    assert (status, err) == (0, "")
    restart, held = _cfg_held(out)
    assert restart == ["cron.service", "systemd-journald.service", "systemd-timesyncd.service"]
    assert held["ssh.service"] == "the only way in: restart it from the console"
    assert held["openvpn@office.service"] == "VPN tunnels: restart in the window"
    assert "message bus" in held["dbus.service"]  # the built-in advice stands
    # Every format counts what to restart from the same plan.
    prom = _cfg_cli("--proc", _CFG_UNITS, "--prometheus", "--config", config)[1]
    assert "\nlib_users_services_to_restart 3\n" in prom
    plain = _cfg_held(_cfg_cli("--proc", _CFG_UNITS, "-S", "--no-config")[1])[0]
    assert plain == sorted(restart + ["openvpn@office.service", "ssh.service"])


def test_cfg_malformed_lines_are_named_and_skipped(tmp_path):
    config = _cfg_file(tmp_path / "lib_users.conf",
                       "ignore-pattern %slibcrypto.so* -- fine" % _CFG_LIB,
                       "ignore-patern /usr/sbin/cron -- a typo",
                       "held-back ssh.service",
                       "held-back -- no unit",
                       "held-back ssh.service --",
                       "held-back ssh.service --no space",
                       "-- only a reason",
                       "held-back cron.service -- still read after the bad lines")
    status, out, err = _cfg_cli("--proc", _CFG_UNITS, "-S", "--config", config)
    assert status == 0
    lines = err.splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "%s:%d" % (config, n) for n in (2, 3, 4, 5, 6, 7)]
    assert all(line.startswith("lib_users: ") and line.endswith("; line skipped")
               for line in lines)
    assert "unknown keyword ignore-patern" in lines[0]
    assert "held-back needs a value and a reason (held-back VALUE -- REASON)" in lines[1]
    restart, held = _cfg_held(out)
    assert "ssh.service" in restart  # its broken lines held nothing back
    assert held["cron.service"] == "still read after the bad lines"
    # With --nagios too the problems go to stderr and the status is the scan's.
    status, out, err = _cfg_cli("--proc", _CFG_UNITS, "--nagios", "-w", "100", "--config",
                                config)
    assert (status, len(err.splitlines())) == (0, 6) and out.startswith("LIB_USERS OK")


def test_cfg_undecodable_and_control_characters_are_escaped(tmp_path):
    path = tmp_path / "lib_users.conf"
    path.write_bytes(b"bad\x1b[2J\xff x -- y\n")
    status, _out, err = _cfg_cli("--proc", _CFG_BASIC, "--config", str(path))
    assert status == 0
    assert err == "lib_users: %s:1: unknown keyword bad\\x1b[2J\\xff (ignore-pattern, " \
        "ignore-literal or held-back); line skipped\n" % path


def test_cfg_missing_config_file_is_a_usage_error(tmp_path):
    missing = str(tmp_path / "nowhere.conf")
    status, out, err = _cfg_cli("--proc", _CFG_BASIC, "--config", missing)
    assert (status, out) == (2, "")
    assert err == ("lib_users: --config %s: No such file or directory (see lib_users "
                   "--help)\n" % missing)
    status, out, _err = _cfg_cli("--proc", _CFG_BASIC, "--config", str(tmp_path))
    assert status == 2 and "Is a directory" in _err
    assert _cfg_cli("--config", missing, "--no-config")[0] == 2
    assert _cfg_cli("--nagios", "--config", missing)[:2] == (
        3, "LIB_USERS UNKNOWN - usage error: --config %s: No such file or directory\n"
        % missing)


def test_cfg_no_config_reads_nothing(tmp_path):
    config = _cfg_file(tmp_path / "lib_users.conf", "held-back *.service -- all of them")
    options = lib_users.parse_args(["--no-config"])
    assert options.no_config and lib_users._config(options) == lib_users.Config()
    assert lib_users._config(lib_users.parse_args(["--config", config])).held_back == (
        ("*.service", "all of them"),)
    # Without either option the machine's own file is the one read, also with --proc.
    assert lib_users.parse_args(["--proc", _CFG_BASIC]).config is None
    assert lib_users.CONFIG == "/etc/lib_users.conf"


def test_cfg_a_missing_default_file_is_no_error(tmp_path):
    assert lib_users.read_config(str(tmp_path / "lib_users.conf")) == lib_users.Config()
    # the snippets are read without the file
    (tmp_path / "lib_users.conf.d").mkdir()
    _cfg_file(tmp_path / "lib_users.conf.d" / "a.conf", "held-back x.service -- x")
    assert lib_users.read_config(str(tmp_path / "lib_users.conf")).held_back == (
        ("x.service", "x"),)


def test_cfg_snippets_are_read_in_name_order(tmp_path):
    config = _cfg_file(tmp_path / "lib_users.conf", "held-back cron.service -- main file",
                       "bad main")
    snippets = tmp_path / "lib_users.conf.d"
    snippets.mkdir()
    _cfg_file(snippets / "20-b.conf", "held-back ssh.service -- from 20-b", "bad b")
    _cfg_file(snippets / "10-a.conf", "held-back ssh.service -- from 10-a", "bad a")
    _cfg_file(snippets / "30-c.conf.dpkg-old", "held-back *.service -- not a .conf")
    (snippets / "40-d.conf").mkdir()  # not a file: named, and the rest still read
    status, out, err = _cfg_cli("--proc", _CFG_UNITS, "-S", "--config", config)
    assert status == 0
    assert [line.split(": ", 2)[1] for line in err.splitlines()] == [
        config + ":2", str(snippets / "10-a.conf") + ":2", str(snippets / "20-b.conf") + ":2",
        str(snippets / "40-d.conf")]
    assert err.splitlines()[-1].endswith(": Is a directory; not read")
    restart, held = _cfg_held(out)
    assert (held["cron.service"], held["ssh.service"]) == ("main file", "from 10-a")
    assert "systemd-journald.service" in restart


_FLEET_EXPORTERS = ("prometheus-node-exporter", "node_exporter")  # Debian's name, upstream's
_FLEET_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
_FLEET_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _fleet_samples(text, prefix):
    """The samples of a text exposition whose metric name starts with `prefix`:
    {(name, sorted labels): value}. Label order and number format are the writer's own
    (node_exporter sorts the labels and writes 1.7e+09), so both are normalised."""
    samples = {}
    for line in text.splitlines():
        found = _FLEET_SAMPLE.match(line)
        if found and found.group(1).startswith(prefix):
            labels = tuple(sorted(_FLEET_LABEL.findall(found.group(2) or "")))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def _fleet_readme_command():
    """The README's cron line for --prometheus: the shell command after the user field."""
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
        lines = [line for line in readme if "lib_users --prometheus >" in line]
    assert len(lines) == 1, "README.md shows one way to write the textfile"
    return lines[0].split(" root ", 1)[1].strip()


def _fleet_scrape(url, exporter, deadline):
    """The text at `url`, asked until it answers or `deadline` passes."""
    import urllib.request
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode("utf-8")
        except OSError:
            if exporter.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _fleet_free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fleet_node_exporter_serves_the_textfile(tmp_path):
    binary = next(filter(None, map(shutil.which, _FLEET_EXPORTERS)), None)
    if binary is None:
        pytest.skip("needs prometheus-node-exporter (.ci/run installs it)")
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    # The README's command, as cron would run it, with lib_users on the svc-units tree
    # (known values) and the collector's directory here.
    command = _fleet_readme_command()
    prom_dir = "/var/lib/prometheus/node-exporter"
    assert command.startswith("lib_users --prometheus > %s/" % prom_dir)
    command = command.replace(prom_dir, shlex.quote(str(textfiles))).replace(
        "lib_users", "%s %s --no-config --proc %s" % (
            shlex.quote(sys.executable), shlex.quote(_CLI_SCRIPT), shlex.quote(_CFG_UNITS)), 1)
    subprocess.run(["sh", "-c", command], check=True, timeout=60)
    assert os.listdir(str(textfiles)) == ["lib_users.prom"]  # the temp file was renamed
    written = (textfiles / "lib_users.prom").read_text()
    printed = _fleet_samples(written, "lib_users_")
    assert printed[("lib_users_processes", ())] == 21
    assert printed[("lib_users_services_to_restart", ())] == 5
    assert printed[("lib_users_unit_processes",
                    (("container", ""), ("unit", "ssh.service")))] == 1
    assert printed[("lib_users_unit_processes",
                    (("container", "nspawn:debian-test"),
                     ("unit", "machine-debian\\\\x2dtest.scope")))] == 1
    log = open(str(tmp_path / "node_exporter.log"), "wb")
    for _attempt in range(3):  # the port found free may be taken before it binds
        port = _fleet_free_port()
        exporter = subprocess.Popen(
            [binary, "--web.listen-address=127.0.0.1:%d" % port,
             "--collector.disable-defaults", "--collector.textfile",
             "--collector.textfile.directory=%s" % textfiles],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            metrics = _fleet_scrape("http://127.0.0.1:%d/metrics" % port, exporter,
                                    time.monotonic() + 15)
            break
        except OSError:
            if exporter.poll() is None:
                raise
        finally:
            exporter.kill()  # by its PID: only the exporter this test started
            exporter.wait()
    else:
        log.close()
        pytest.fail("node_exporter did not start: %s" % (
            (tmp_path / "node_exporter.log").read_text()[-2000:]))
    log.close()
    assert _fleet_samples(metrics, "lib_users_") == printed
    assert _fleet_samples(metrics, "node_textfile_scrape_error") == {
        ("node_textfile_scrape_error", ()): 0}
    files = [dict(labels).get("file", "") for _name, labels in _fleet_samples(
        metrics, "node_textfile_mtime_seconds")]
    assert [os.path.basename(name) for name in files] == ["lib_users.prom"]


def test_fleet_readme_alert_rules_use_metrics_lib_users_writes():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    rules = text.split("\n    groups:\n", 1)[1].split("\n\n", 1)[0]
    used = set(re.findall(r"\blib_users_\w+", rules))
    assert {"lib_users_processes", "lib_users_reboot_required", "lib_users_scan_complete",
            "lib_users_unanswered_processes"} <= used
    report = lib_users.build_report(lib_users.Scan([], 1, 0))
    written = set(_fleet_samples(lib_users.render_prometheus(report), "lib_users_"))
    assert used <= {name for name, _labels in written}


# ==== performance harness ===============================================================


def test_benchmark_runs_on_a_tiny_population():
    """bench/bench.py sets up its population, times every mode, finds the processes that
    map its deleted library, and leaves none of its processes behind."""
    before = set(os.listdir("/proc"))
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "bench", "bench.py"), "-n", "20", "-r", "2",
         "--no-tools", "--memory-runs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=240)
    out = run.stdout.decode()
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    for row in ("floor", "lib_users", "lib_users --json", "lib_users -s", "lib_users -S"):
        assert any(line.startswith(row + " ") for line in out.splitlines()), out
    assert "deleted-library daemons: 2/2 PIDs listed" in out, out
    assert "peak memory: lib_users" in out, out
    assert "package lookup" in out, out
    ours = [pid for pid in set(os.listdir("/proc")) - before if pid.isdigit()
            and b"bench_daemon.py" in _bench_cmdline(pid)]
    assert ours == [], "benchmark processes left behind: %s" % ours


def _bench_cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


# ==== services without systemd (init scripts) ===========================================
# -S, --json, --nagios and --prometheus on a machine that systemd does not run: each
# process outside systemd's units is given the init script that manages it, from pid
# files in /run and /var/run and from the package of its executable. The fixture trees
# are testdata/initd-proc (processes) with testdata/initd-root (Debian with sysvinit)
# or testdata/initd-openrc-root (OpenRC) as --root, written by
# testdata/make_initd_fixtures.py; what git cannot keep (directory modes, odd names)
# is made in copies under tmp_path. Then real processes named by a pid file, and a real
# daemon started as its init script starts it.


_INITD_PROC = os.path.join(TESTDATA, "initd-proc")
_INITD_ROOT = os.path.join(TESTDATA, "initd-root")
_INITD_OPENRC = os.path.join(TESTDATA, "initd-openrc-root")
_INITD_SSL = " (libssl3 3.0.15-1~deb12u1)"  # what -S names after each group


def _initd_cli(*args, proc=_INITD_PROC):
    """Run lib_users on a procfs tree (None: the machine's own), without the machine's
    config unless --config names one; (status, stdout, stderr) as text."""
    cmd = [sys.executable, _CLI_SCRIPT] + ([] if "--config" in args else ["--no-config"])
    cmd += ["--proc", proc] if proc else []
    done = subprocess.run(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def _initd_S(*args, proc=_INITD_PROC):
    """-S output as ({pid: label}, the restart lines, {label: reason}); each PID of a
    group line is given that line's label."""
    status, out, err = _initd_cli("-S", "-v", *args, proc=proc)
    assert (status, err) == (0, "")
    blocks = out.rstrip("\n").split("\n\n")
    labels = {}
    for line in blocks[0].splitlines():
        match = _SVC_LINE.match(line.replace(_INITD_SSL, ""))
        assert match, line
        labels.update((int(pid), match.group(1)) for pid in match.group(2).split(","))
    commands = blocks[1].splitlines() if len(blocks) > 1 and blocks[1][:1] != "#" else []
    held = dict(line[2:].split(": ", 1) for line in blocks[-1].splitlines()
                if line.startswith("# "))
    return labels, commands, held


def _initd_root_copy(tmp_path, tree=_INITD_ROOT):
    """A copy of a root fixture to change in a test (links kept as links)."""
    root = str(tmp_path / "root")
    shutil.copytree(tree, root, symlinks=True)
    return root


def _initd_script(root, name, text="#!/bin/sh\n"):
    path = os.path.join(root, "etc", "init.d", name)
    with open(path, "w") as out:
        out.write(text)
    os.chmod(path, 0o755)


def _initd_write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        out.write(text)


# Every process of initd-proc and its label with initd-root (Debian, sysvinit).
_INITD_LABELS = {
    612: "/etc/init.d/ssh",  # /run/sshd.pid, which only the ssh script names
    640: "/etc/init.d/cron",  # /run/crond.pid, which cron names as /var/run/crond.pid
    2000: "/etc/init.d/nginx",  # /run/nginx.pid: named after the file
    2001: "/etc/init.d/nginx",  # a worker: its parent is in the pid file
    2002: "/etc/init.d/nginx",
    2100: "/etc/init.d/postgresql",  # /run/postgresql/15-main.pid: its directory's name
    2101: "/etc/init.d/postgresql",
    740: "/etc/init.d/network-manager",  # named in its text
    700: "/etc/init.d/dbus",  # the package dbus ships both
    710: "/etc/init.d/rsyslog",  # the same, its executable replaced
    720: "/etc/init.d/smbd",  # samba ships smbd, nmbd and samba-ad-dc
    730: "-",  # lxc ships lxc and lxc-net, neither named lxc-start
    1000: "-",  # a login under sshd: sessions of its own
    1001: "-",
    1002: "-",
    1010: "-",  # smbd, but started from that shell: not a daemon
    2600: "-",  # nothing names it
    750: "-",  # agetty: no pid file here, no package that ships a script
    3000: "docker:0c1d2e3f4a5b",  # a pid file names it, but it runs in a container
    3100: "unbound.service",  # a pid file names it, but its unit wins
}


def test_initd_sysvinit_labels_and_invoke_rc_d_lines():
    labels, commands, held = _initd_S("--root", _INITD_ROOT)
    assert labels == _INITD_LABELS
    # One line for the units, then one for each script that is safe to restart.
    assert commands == ["systemctl restart unbound.service"] + [
        "invoke-rc.d %s restart" % name
        for name in ("cron", "nginx", "postgresql", "rsyslog", "smbd", "ssh")]
    assert set(held) == {"/etc/init.d/dbus", "/etc/init.d/network-manager",
                         "docker:0c1d2e3f4a5b", "processes without a unit"}
    assert "message bus" in held["/etc/init.d/dbus"]  # dbus.service's entry
    assert "network" in held["/etc/init.d/network-manager"]  # HELD_BACK_SCRIPTS
    assert "by hand" in held["processes without a unit"]


def test_initd_script_naming_the_pid_file_wins_only_where_it_alone_does(tmp_path):
    # In initd-root the README (not executable) names /run/sshd.pid, and sshguard names
    # /run/sshd.pid.old and /srv/run/sshd.pid: none of them counts, so ssh alone does.
    assert _initd_S("--root", _INITD_ROOT, "-p", "612")[0] == {612: "/etc/init.d/ssh"}
    root = _initd_root_copy(tmp_path)
    _initd_script(root, "ssh-rescue", "#!/bin/sh\nPIDFILE=/var/run/sshd.pid\n")
    # Two scripts name it, and neither is named sshd: no script from the pid file, and
    # with openssh-server out of the package database, none from the package either.
    os.remove(os.path.join(root, "var", "lib", "dpkg", "info", "openssh-server.list"))
    assert _initd_S("--root", root, "-p", "612")[0] == {612: "-"}
    # Among several that name it, the one named after the pid file.
    _initd_script(root, "sshd", "#!/bin/sh\n--pidfile /run/sshd.pid\n")
    assert _initd_S("--root", root, "-p", "612")[0] == {612: "/etc/init.d/sshd"}


@pytest.mark.parametrize("text, pid_file, names", [
    (b"--pidfile /run/sshd.pid \\", b"sshd.pid", True),
    (b'PIDFILE="/var/run/crond.pid"', b"crond.pid", True),
    (b"/run/sshd.pid", b"sshd.pid", True),
    (b"rm -f /run/sshd.pid.old", b"sshd.pid", False),
    (b"/srv/run/sshd.pid", b"sshd.pid", False),
    (b"/run/xsshd.pid /run/sshd.pid-x", b"sshd.pid", False),
    (b"PIDFILE=/run/$NAME.pid", b"nginx.pid", False),
    (b"pid=/run/postgresql/15-main.pid;", b"postgresql/15-main.pid", True),
])
def test_initd_names_path(text, pid_file, names):
    assert lib_users._names_path(text, pid_file) is names


def test_initd_service_where_invoke_rc_d_is_not_installed(tmp_path):
    root = _initd_root_copy(tmp_path)
    os.remove(os.path.join(root, "usr", "sbin", "invoke-rc.d"))
    labels, commands, _held = _initd_S("--root", root)
    assert labels == _INITD_LABELS
    assert commands[1:] == ["service %s restart" % name for name in (
        "cron", "nginx", "postgresql", "rsyslog", "smbd", "ssh")]


def test_initd_openrc_rc_service_lines():
    labels, commands, held = _initd_S("--root", _INITD_OPENRC)
    assert {pid: label for pid, label in labels.items() if label != "-"} == {
        612: "/etc/init.d/sshd",  # /run/sshd.pid: named after the file
        2000: "/etc/init.d/nginx", 2001: "/etc/init.d/nginx",  # /run/nginx/nginx.pid
        2002: "/etc/init.d/nginx",
        2100: "/etc/init.d/postgresql", 2101: "/etc/init.d/postgresql",
        700: "/etc/init.d/dbus",
        750: "/etc/init.d/agetty.tty1",  # a link to agetty, as OpenRC makes them
        3000: "docker:0c1d2e3f4a5b", 3100: "unbound.service"}
    assert commands == ["systemctl restart unbound.service", "rc-service nginx restart",
                        "rc-service postgresql restart", "rc-service sshd restart"]
    assert "console" in held["/etc/init.d/agetty.tty1"]
    assert "message bus" in held["/etc/init.d/dbus"]
    # No package database: the rule of packages names nothing (cron, rsyslog, smbd).
    assert labels[640] == labels[710] == labels[720] == "-"


def test_initd_systemd_booted_root_looks_up_no_script(tmp_path):
    root = _initd_root_copy(tmp_path)
    os.makedirs(os.path.join(root, "run", "systemd", "system"))
    labels, commands, _held = _initd_S("--root", root)
    assert labels == {pid: label if label in ("docker:0c1d2e3f4a5b", "unbound.service")
                      else "-" for pid, label in _INITD_LABELS.items()}
    assert commands == ["systemctl restart unbound.service"]
    # A process in a unit reads the same whatever the machine's init.
    assert _initd_cli("-S", "-p", "3100", "--root", root) == _initd_cli(
        "-S", "-p", "3100", "--root", _INITD_ROOT)
    doc = json.loads(_initd_cli("--json", "--root", root)[1])
    assert {p["pid"]: (p["service"], p["init"]) for p in doc["processes"]
            if p["service"] is not None} == {3100: ("unbound.service", "systemd")}


def test_initd_without_root_nothing_is_read():
    # A --proc tree reads no files of the machine unless --root names them.
    labels, commands, _held = _initd_S()
    assert labels == {pid: label if label in ("docker:0c1d2e3f4a5b", "unbound.service")
                      else "-" for pid, label in _INITD_LABELS.items()}
    assert commands == ["systemctl restart unbound.service"]


def test_initd_json_service_and_init():
    status, out, _err = _initd_cli("--json", "--root", _INITD_ROOT)
    assert status == 0
    doc = json.loads(out)
    processes = {p["pid"]: p for p in doc["processes"]}
    assert {pid: (p["service"], p["init"]) for pid, p in processes.items()} == {
        pid: (None, None) if label in ("-", "docker:0c1d2e3f4a5b")
        else ("unbound.service", "systemd") if label == "unbound.service"
        else (label[len("/etc/init.d/"):], "sysvinit")
        for pid, label in _INITD_LABELS.items()}
    assert processes[612]["unit"] is None and processes[3000]["container"]
    groups = {tuple(g["pids"]): g for g in doc["groups"]}
    assert (groups[(2001, 2002)]["service"], groups[(2001, 2002)]["init"]) == (
        "nginx", "sysvinit")
    assert (groups[(1000,)]["service"], groups[(1000,)]["init"]) == (None, None)
    # What to restart: units and scripts, as -S prints them.
    assert doc["restart"] == ["cron", "nginx", "postgresql", "rsyslog", "smbd", "ssh",
                              "unbound.service"]
    openrc = json.loads(_initd_cli("--json", "--root", _INITD_OPENRC, "-p", "612")[1])
    assert [(g["service"], g["init"]) for g in openrc["groups"]] == [("sshd", "openrc")]


def test_initd_prometheus_counts_scripts_as_units():
    status, out, _err = _initd_cli("--prometheus", "--root", _INITD_ROOT)
    assert status == 0
    families = _svc_parse_prometheus(out)
    samples = families["lib_users_unit_processes"]["samples"]
    assert all(set(labels) == {"unit", "container"} for labels, _value in samples)
    assert _svc_value(families, "lib_users_unit_processes", unit="nginx", container="") == 3
    assert _svc_value(families, "lib_users_unit_processes", unit="ssh", container="") == 1
    assert _svc_value(families, "lib_users_unit_processes", unit="unbound.service",
                      container="") == 1
    assert _svc_value(families, "lib_users_unit_processes", unit="", container="") == 7
    assert _svc_value(families, "lib_users_services_to_restart") == 7
    status, out, _err = _initd_cli("--nagios", "--root", _INITD_ROOT, "-p", "612,700,2600")
    assert (status, out.splitlines()[0]) == (1, (
        "LIB_USERS WARNING - 3 processes use deleted files, 1 to restart (ssh) | "
        "processes=3;0;;0 services=1;;;0 unreadable=0;;;0"))


@pytest.mark.parametrize("name, safe", [
    ("ssh", True), ("cron", True), ("nginx", True), ("postgresql", True),
    ("dbus", False), ("networking", False), ("NetworkManager", False),
    ("network-manager", False), ("wpa_supplicant", False), ("gdm3", False),
    ("lightdm", False), ("slim", False), ("display-manager", False),
    ("systemd-logind", False), ("elogind", False), ("rc", False), ("rcS", False),
    ("sendsigs", False), ("killprocs", False), ("net.eth0", False), ("agetty.tty1", False),
])
def test_initd_script_held_back_reason(name, safe):
    assert (lib_users.script_held_back_reason(name) is None) is safe


def test_initd_script_table_holds_back_no_unit():
    # HELD_BACK_SCRIPTS is for scripts only: no unit is held back by it.
    for pattern, _reason in lib_users.HELD_BACK_SCRIPTS:
        unit = pattern.replace("*", "x") + ".service"
        assert lib_users.held_back_reason(unit) is None, unit
        assert lib_users.script_held_back_reason(pattern.replace("*", "x")) is not None


def test_initd_config_holds_back_scripts_by_name_and_as_service(tmp_path):
    config = tmp_path / "lib_users.conf"
    config.write_text("held-back cron.service -- cron jobs run now: restart it tonight\n"
                      "held-back ngin* -- the front door: in the window\n")
    status, out, err = _initd_cli("-S", "--root", _INITD_ROOT, "--config", str(config),
                                  "-p", "612,640,2000")
    assert (status, err) == (0, "")
    assert out.split("\n\n")[1:] == [
        "invoke-rc.d ssh restart",
        "# /etc/init.d/cron: cron jobs run now: restart it tonight\n"
        "# /etc/init.d/nginx: the front door: in the window\n"]


def test_initd_pid_files_that_are_not_to_be_trusted(tmp_path):
    root = _initd_root_copy(tmp_path)
    _initd_script(root, "agent")
    # Anyone may write in /run/lock: a pid file there names nothing.
    lock = os.path.join(root, "run", "lock")
    os.mkdir(lock)
    os.chmod(lock, 0o1777)
    _initd_write(os.path.join(lock, "agent.pid"), "2600\n")
    # Nor does a link, nor a pid file two directories down.
    os.symlink("lock/agent.pid", os.path.join(root, "run", "agent.pid"))
    _initd_write(os.path.join(root, "run", "user", "0", "agent.pid"), "2600\n")
    assert _initd_S("--root", root, "-p", "2600")[0] == {2600: "-"}
    # A pid file that names PID 1 names no process that PID 1 started.
    os.remove(os.path.join(root, "run", "agent.pid"))
    _initd_write(os.path.join(root, "run", "agent.pid"), "1\n")
    assert _initd_S("--root", root, "-p", "2600")[0] == {2600: "-"}
    # The control: a pid file that names it.
    _initd_write(os.path.join(root, "run", "agent", "agent.pid"), "2600\n")
    assert _initd_S("--root", root, "-p", "2600")[0] == {2600: "/etc/init.d/agent"}


def test_initd_var_run_of_its_own_is_read_too(tmp_path):
    root = _initd_root_copy(tmp_path)
    var_run = os.path.join(root, "var", "run")
    # A link to /run, as Debian has it (not in the checkout: see make_initd_fixtures.py):
    # followed inside the root, and the same directory.
    os.symlink("/run", var_run)
    assert lib_users.run_directories(root) == [os.path.join(root, "run")]
    os.remove(var_run)
    _initd_write(os.path.join(var_run, "agent.pid"), "2600\n")
    _initd_script(root, "agent")
    assert lib_users.run_directories(root) == [os.path.join(root, "run"), var_run]
    labels = _initd_S("--root", root, "-p", "612,2600")[0]
    assert labels == {612: "/etc/init.d/ssh", 2600: "/etc/init.d/agent"}


def test_initd_odd_names_are_escaped(tmp_path):
    root = _initd_root_copy(tmp_path)
    odd = "ag\x1b[2Jent 'x'\u202e\udcff"  # a control, quotes, bidi, a byte not UTF-8
    path = os.path.join(os.fsencode(root), b"etc", b"init.d", os.fsencode(odd))
    with open(path, "w") as out:
        out.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    with open(os.path.join(os.fsencode(root), b"run", os.fsencode(odd + ".pid")), "w") as out:
        out.write("2600\n")
    done = subprocess.run([sys.executable, _CLI_SCRIPT, "--no-config", "--proc", _INITD_PROC,
                           "--root", root, "-S", "-p", "2600"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    text = _fx_assert_terminal_safe(done.stdout)
    shown = "ag\\x1b[2Jent 'x'\\u202e\\xff"
    assert text == (
        '/etc/init.d/%s 2600 "/opt/agent/bin/agent --foreground"%s\n\n'
        "invoke-rc.d '%s' restart\n" % (shown, _INITD_SSL, shown.replace("'", "'\"'\"'")))
    # JSON keeps the name exactly (a byte that is not UTF-8 as its surrogate).
    doc = json.loads(_initd_cli("--json", "--root", root, "-p", "2600")[1])
    assert doc["processes"][0]["service"] == odd and doc["restart"] == [odd]


def test_initd_readme_example_is_the_output():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
        text = readme.read().split("\n### Without systemd\n", 1)[1]
    block = text.split("\n\n", 2)[1].splitlines()
    command = block[0].split("# python3 -m lib_users ", 1)[1].split()
    shown = "".join(line[4:] + "\n" for line in block[1:])
    for paragraph in text.split("\n\n")[2:4]:  # the rest of the example, after blank lines
        shown += "\n" + "".join(line[4:] + "\n" for line in paragraph.splitlines())
    status, out, _err = _initd_cli(*[os.path.join(HERE, arg) if arg.startswith("testdata/")
                                     else arg for arg in command], proc=None)
    assert (status, out) == (0, shown)


def test_initd_api_script_of_reads_each_file_once(tmp_path, monkeypatch):
    scripts = lib_users.InitScripts(_INITD_ROOT, _INITD_PROC)
    assert (scripts.init, scripts.command) == ("sysvinit", "invoke-rc.d")
    reads, real = [], lib_users.read_file

    def read_file(path, *args):
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(lib_users, "read_file", read_file)
    assert scripts.script_of(2001) == lib_users.InitScript("nginx", "sysvinit", "invoke-rc.d")
    assert scripts.script_of(1) is None
    machine_files = [path for path in reads if not path.startswith(_INITD_PROC)]
    assert os.path.join(_INITD_ROOT, "run", "nginx.pid") in machine_files
    assert scripts.script_of(612).name == "ssh" and scripts.script_of(2002).name == "nginx"
    again = [path for path in reads if not path.startswith(_INITD_PROC)]
    assert machine_files == again and len(set(again)) == len(again)
    # A machine that runs no init scripts itself reads none of these files.
    assert lib_users.InitScripts(str(tmp_path)).script_of(612) is None
    assert lib_users.init_system(str(tmp_path)) is None


def test_initd_scan_reads_stat_once_for_the_lookup(monkeypatch):
    # The scan keeps each unit-less process's (ppid, session) from the stat it read
    # through its ProcDir; the init-script lookup reads by path only ancestors that
    # were not scanned.
    how = lib_users.ScanOptions(details=True, services=True)
    result = lib_users.scan(_INITD_PROC, how)
    outside = [f for f in result.findings if lib_users._outside_units(f.placement)]
    assert outside and all(f.parent_and_session is not None for f in outside)
    reads, real = [], lib_users.read_file

    def read_file(path, *args):
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(lib_users, "read_file", read_file)
    report = lib_users.build_report(
        result, scripts=lib_users.InitScripts(_INITD_ROOT, _INITD_PROC))
    found = {f.pid for f in result.findings}
    again = [path for path in reads if path.startswith(_INITD_PROC)
             and int(path.split("/")[-2]) in found]
    assert again == []
    labels = {e.label for e in report.plan.entries}
    assert "/etc/init.d/nginx" in labels and "/etc/init.d/ssh" in labels


# A stand-in daemon and its worker: the master starts the worker (_LIVE_CHILD, which
# maps a deleted copy of libz), prints the worker's PID, and waits for it.
_INITD_MASTER = ("import subprocess, sys\n"
                 "worker = subprocess.Popen(sys.argv[1:])\n"
                 "print(worker.pid, flush=True)\n"
                 "worker.wait()\n")


def _initd_kill_worker(pid, master):
    """Kill the worker `pid` of our `master`, by its PID, if it is still that one's."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            ppid = int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return
    if ppid == master.pid:
        os.kill(pid, signal.SIGKILL)


def test_initd_live_pid_file_names_a_real_master(_live_libz, _live_tmp, tmp_path):
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    master = subprocess.Popen([sys.executable, "-c", _INITD_MASTER] + _live_child_argv(
        "lib", copy), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)  # a daemon's session, which its worker shares
    worker = None
    try:
        worker = int(master.stdout.readline())
        _live_wait_ready(master)  # the worker's "ready", on the same pipe
        os.unlink(copy)
        root = str(tmp_path / "root")
        os.makedirs(os.path.join(root, "etc", "init.d"))
        _initd_script(root, "demo-daemon")
        _initd_write(os.path.join(root, "run", "demo-daemon.pid"), "%d\n" % master.pid)
        _initd_write(os.path.join(root, "usr", "sbin", "invoke-rc.d"), "#!/bin/sh\n")
        labels, commands, _held = _initd_S("--root", root, "-p", str(worker), proc=None)
        assert labels == {worker: "/etc/init.d/demo-daemon"}
        assert commands == ["invoke-rc.d demo-daemon restart"]
        # Without the pid file nothing names it: a python in a test is no daemon.
        os.remove(os.path.join(root, "run", "demo-daemon.pid"))
        assert _initd_S("--root", root, "-p", str(worker), proc=None)[0] == {worker: "-"}
    finally:
        if worker is not None:
            _initd_kill_worker(worker, master)
        master.kill()  # by its PID
        master.wait()
        for pipe in (master.stdin, master.stdout, master.stderr):
            pipe.close()


# The pid file each of these Debian packages' init script names, and the package.
_INITD_DEBIAN_SCRIPTS = (("ssh", "sshd.pid", "openssh-server"),
                         ("cron", "crond.pid", "cron"), ("nginx", "nginx.pid", "nginx-common"))


@pytest.mark.parametrize("name, pid_file, package", _INITD_DEBIAN_SCRIPTS)
def test_initd_live_real_debian_script_names_its_pid_file(name, pid_file, package,
                                                          _live_libz, _live_tmp, _live_spawn,
                                                          tmp_path):
    # The machine's own script is only read (copied into a root of the test's); the
    # daemon is not started: a stand-in process is named by the pid file instead.
    real = os.path.join("/etc/init.d", name)
    if not os.path.isfile(real):
        pytest.skip("needs Debian's %s (%s; .ci/run installs it)" % (real, package))
    child, _copy = _live_stale_child(_live_spawn, _live_tmp, _live_libz)
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "etc", "init.d"))
    shutil.copy(real, os.path.join(root, "etc", "init.d", name))
    base = pid_file[: -len(".pid")]
    if base != name:  # a script named after the pid file (sshd), which the text beats
        _initd_script(root, base)
    _initd_write(os.path.join(root, "run", pid_file), "%d\n" % child.pid)
    labels, commands, _held = _initd_S("--root", root, "-p", str(child.pid), proc=None)
    assert labels == {child.pid: "/etc/init.d/" + name}
    assert commands == ["service %s restart" % name]


_INITD_EXPORTER = "/usr/bin/prometheus-node-exporter"
_INITD_EXPORTER_SCRIPT = "/etc/init.d/prometheus-node-exporter"


def _initd_wait(predicate, what, limit=30):
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for %s" % what)
        time.sleep(0.05)


def _initd_exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def _initd_is_ours(pid, marker):
    """Whether `pid` is still the exporter this test started (its argv holds `marker`)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return os.fsencode(marker) in f.read()
    except OSError:
        return False


def test_initd_live_daemon_started_as_its_init_script_starts_it(_live_libz, _live_tmp,
                                                                tmp_path):
    """A real daemon of a real package, started the way its init script starts it
    (start-stop-daemon --background --make-pidfile), with a deleted library preloaded:
    found by its pid file, then by its package in the machine's dpkg database. Its
    init script is only read, not run: it would listen on every address (port 9100)
    and write to /var/log and /run."""
    ssd = shutil.which("start-stop-daemon")
    if not (ssd and os.path.isfile(_INITD_EXPORTER) and os.path.isfile(_INITD_EXPORTER_SCRIPT)
            and os.path.isfile("/var/lib/dpkg/info/prometheus-node-exporter.list")):
        pytest.skip("needs Debian's prometheus-node-exporter and start-stop-daemon "
                    "(.ci/run installs prometheus-node-exporter)")
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "etc", "init.d"))
    os.makedirs(os.path.join(root, "var", "lib"))
    shutil.copy(_INITD_EXPORTER_SCRIPT, os.path.join(root, "etc", "init.d"))
    os.symlink("/var/lib/dpkg", os.path.join(root, "var", "lib", "dpkg"))  # read only
    _initd_write(os.path.join(root, "usr", "sbin", "invoke-rc.d"), "#!/bin/sh\n")
    pid_file = os.path.join(root, "run", "prometheus", "prometheus-node-exporter.pid")
    os.makedirs(os.path.dirname(pid_file))
    textfiles = str(tmp_path / "textfiles")  # also the marker of our exporter's argv
    os.mkdir(textfiles)
    copy = _live_copy(_live_libz, os.path.join(_live_tmp, "libz.so.1"))
    subprocess.run([ssd, "--start", "--background", "--make-pidfile", "--pidfile", pid_file,
                    "--exec", _INITD_EXPORTER, "--", "--web.listen-address=127.0.0.1:0",
                    "--collector.disable-defaults", "--collector.textfile",
                    "--collector.textfile.directory=" + textfiles],
                   env=dict(os.environ, LD_PRELOAD=copy), check=True, timeout=60)
    pid = None
    try:
        _initd_wait(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(),
                    "the pid file")
        with open(pid_file) as f:
            pid = int(f.read())
        # The pid file is written before start-stop-daemon execs the exporter (and
        # start-stop-daemon too maps what LD_PRELOAD names).
        _initd_wait(lambda: _initd_exe(pid) == _INITD_EXPORTER
                    and _live_maps_line(pid, os.fsencode(copy)) is not None,
                    "the exporter to map libz")
        os.unlink(copy)
        args = ("--root", root, "-p", str(pid))
        labels, commands, _held = _initd_S(*args, proc=None)
        assert labels == {pid: "/etc/init.d/prometheus-node-exporter"}
        assert commands == ["invoke-rc.d prometheus-node-exporter restart"]
        doc = json.loads(_initd_cli("--json", *args, proc=None)[1])
        assert (doc["processes"][0]["service"], doc["processes"][0]["init"]) == (
            "prometheus-node-exporter", "sysvinit")
        assert doc["processes"][0]["ppid"] == 1  # a daemon, as start-stop-daemon leaves it
        # Without its pid file, the package that ships both its executable and the
        # script names it.
        os.remove(pid_file)
        assert _initd_S(*args, proc=None)[0] == {pid: "/etc/init.d/prometheus-node-exporter"}
    finally:
        if os.path.exists(copy):
            os.unlink(copy)
        if pid is not None and _initd_is_ours(pid, textfiles):
            os.kill(pid, signal.SIGTERM)  # by its PID: only the exporter started here
            _initd_wait(lambda: not _initd_is_ours(pid, textfiles), "the exporter to end")
