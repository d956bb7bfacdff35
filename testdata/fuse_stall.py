"""A tiny FUSE server that can stop answering, for the tests of lib_users.

    python3 fuse_stall.py MOUNTPOINT [SCRIPT]      (as root)

It opens /dev/fuse, mounts it on MOUNTPOINT with mount(2), drops to uid/gid 65534 and
serves a read-only directory with two files:

  data       16 pages. A READ of it is never answered, and the server prints
             "stalled READ PID" on stdout (PID: the thread that asked). It is opened with
             FOPEN_DIRECT_IO, so that every mmap() of it invalidates its page cache, which
             waits for the page that READ keeps locked: while holding the mmap lock.
  script.py  the bytes of the file SCRIPT (read at start), or a small default script
             that prints "ready" and waits for its stdin to close.

After SIGUSR1 it answers nothing at all any more (and prints "stalled all"): every
path lookup, stat, open or read on the mount then waits. A process waiting for the
answer to a request the server has read cannot even be killed; killing the server
(SIGKILL) aborts every request, and the waiting processes get an error and go on.
The server prints "ready" once the kernel's INIT is answered. Standard library only;
written from the kernel's FUSE protocol (include/uapi/linux/fuse.h), version 7.31.
"""

import ctypes
import errno
import os
import signal
import stat
import struct
import sys

NOBODY = 65534
PAGE = 4096

# Opcodes (fuse.h, enum fuse_opcode).
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE = 1, 2, 3, 14, 15, 18
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, BATCH_FORGET = 25, 26, 27, 28, 29, 42
INTERRUPT = 36
NO_REPLY = (FORGET, BATCH_FORGET, INTERRUPT)  # the kernel expects no answer to these

FOPEN_DIRECT_IO = 1

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<6Q10I")  # ino size blocks a/m/ctime, their nsecs, mode nlink uid
#                                 gid rdev blksize flags

DEFAULT_SCRIPT = (b"import sys\n"
                  b"sys.stdout.write('ready' + chr(10))\n"
                  b"sys.stdout.flush()\n"
                  b"sys.stdin.read()\n")

ROOT, DATA, SCRIPT = 1, 2, 3  # node ids; 1 is the root by the protocol


class Server:
    def __init__(self, fd, script):
        self.fd = fd
        # node id -> (name, mode, contents); the root has no contents.
        self.nodes = {ROOT: ("", stat.S_IFDIR | 0o755, None),
                      DATA: ("data", stat.S_IFREG | 0o644, b"D" * (16 * PAGE)),
                      SCRIPT: ("script.py", stat.S_IFREG | 0o644, script)}
        self.stalled = False  # set by SIGUSR1: answer nothing from then on

    def reply(self, unique, error=0, payload=b""):
        try:
            os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error,
                                              unique) + payload)
        except FileNotFoundError:
            pass  # the request was interrupted meanwhile

    def attr(self, node):
        _name, mode, data = self.nodes[node]
        size = len(data) if data is not None else 0
        return ATTR.pack(node, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0, mode,
                         2 if data is None else 1, NOBODY, NOBODY, 0, PAGE, 0)

    def serve(self):
        while True:
            try:
                request = os.read(self.fd, 1 << 17)
            except FileNotFoundError:
                continue  # a request went away before we read it
            except OSError as e:
                if e.errno == errno.ENODEV:
                    return  # unmounted
                raise
            length, opcode, unique, node, _uid, _gid, pid, _ext, _pad = \
                IN_HEADER.unpack_from(request)
            body = request[IN_HEADER.size:length]
            if self.stalled or opcode in NO_REPLY:
                continue
            if opcode == READ and node == DATA:
                sys.stdout.write("stalled READ %d\n" % pid)
                sys.stdout.flush()
                continue  # never answered: the page stays locked, its reader waits
            self.handle(opcode, unique, node, body)

    def handle(self, opcode, unique, node, body):
        if opcode == INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            if major != 7 or minor < 31:
                return self.reply(unique, errno.EPROTO)
            # No flags: in particular no FUSE_ASYNC_READ, so reads are synchronous.
            # major minor max_readahead flags max_background congestion_threshold
            # max_write time_gran max_pages map_alignment flags2 max_stack_depth unused
            self.reply(unique, payload=struct.pack("<IIIIHHIIHHII24x", 7, 31, readahead,
                                                   0, 16, 12, PAGE, 1, 32, 0, 0, 0))
            sys.stdout.write("ready\n")
            sys.stdout.flush()
        elif opcode == LOOKUP:
            name = body.rstrip(b"\0").decode("utf-8", "replace")
            found = [n for n, (nm, _m, _d) in self.nodes.items() if nm == name and n != ROOT]
            if node != ROOT or not found:
                return self.reply(unique, errno.ENOENT)
            # nodeid generation entry_valid attr_valid (and nsecs) all 0: nothing is
            # cached, so every path lookup and stat asks the server again.
            self.reply(unique, payload=struct.pack("<QQQQII", found[0], 0, 0, 0, 0, 0)
                       + self.attr(found[0]))
        elif opcode == GETATTR:
            self.reply(unique, payload=struct.pack("<QII", 0, 0, 0) + self.attr(node))
        elif opcode in (OPEN, OPENDIR):
            flags = FOPEN_DIRECT_IO if node == DATA else 0
            self.reply(unique, payload=struct.pack("<QII", 0, flags, 0))  # fh flags pad
        elif opcode == READ:
            offset, size = struct.unpack_from("<QQI", body)[1:]
            self.reply(unique, payload=self.nodes[node][2][offset:offset + size])
        elif opcode == READDIR:
            offset, size = struct.unpack_from("<QQI", body)[1:]
            self.reply(unique, payload=self.dirents(offset, size))
        elif opcode in (RELEASE, RELEASEDIR, FLUSH):
            self.reply(unique)
        else:  # GETXATTR, STATFS, ACCESS, ...: not implemented, the kernel copes
            self.reply(unique, errno.ENOSYS)

    def dirents(self, offset, size):
        """fuse_dirent records (ino off namelen type name, padded to 8 bytes) from the
        entry at `offset` on, as many as fit in `size`."""
        entries = [(ROOT, "."), (ROOT, "..")] + [
            (n, nm) for n, (nm, _m, _d) in self.nodes.items() if n != ROOT]
        out = b""
        for index in range(offset, len(entries)):
            node, name = entries[index]
            name = name.encode()
            kind = stat.S_IFMT(self.nodes[node][1]) >> 12
            record = struct.pack("<QQII", node, index + 1, len(name), kind) + name
            record += b"\0" * (-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return out


def mount(fd, target):
    """mount(2) the FUSE connection `fd` on `target`, owned by uid/gid 65534."""
    libc = ctypes.CDLL(None, use_errno=True)
    options = "fd=%d,rootmode=40000,user_id=%d,group_id=%d,allow_other" % (
        fd, NOBODY, NOBODY)
    ms_nosuid, ms_nodev = 2, 4
    if libc.mount(b"lib_users_fuse_stall", os.fsencode(target), b"fuse",
                  ms_nosuid | ms_nodev, options.encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, "mount: " + os.strerror(error), target)


def main():
    target = sys.argv[1]
    script = DEFAULT_SCRIPT
    if len(sys.argv) > 2:
        with open(sys.argv[2], "rb") as f:
            script = f.read()
    fd = os.open("/dev/fuse", os.O_RDWR)
    mount(fd, target)
    # Serve as an unprivileged user, as a malicious local user would.
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    server = Server(fd, script)

    def stall(_signum, _frame):
        server.stalled = True
        sys.stdout.write("stalled all\n")  # the test waits for this line
        sys.stdout.flush()

    signal.signal(signal.SIGUSR1, stall)
    server.serve()


if __name__ == "__main__":
    main()
