#!/usr/bin/env python3
"""Write the /proc fixtures under testdata/ (run once; the generated files are committed).

The fixtures are ordinary files, meant to be opened and read. This script exists because
some of them hold bytes an editor mangles (NUL-separated cmdline files, ESC, bytes that
are not UTF-8, a trailing space) and because maps lines are easiest to get right with
the kernel's own layout: `start-end perms offset dev inode`, padded so that the path
starts at column 73, and a bare trailing space for an anonymous mapping.

    python3 testdata/make_fixtures.py

Cases (one directory or file each, named after it):
  maps/false-positives.maps  one deleted line per FALSE_POSITIVES entry, plus near misses
  maps/odd-names.maps        deleted paths with spaces, a tab, \\012, a non-UTF-8 byte,
                             ESC, a trailing space
  maps/openvz-prefix.maps    old OpenVZ kernels: `(deleted)/usr/lib64/...`
  maps/deleted-in-name.maps  "(deleted)" inside a name, which is not the kernel's marker
  proc-basic/                a small machine: upgraded cron and sshd, a kernel thread, a
                             zombie, shared memory only (PulseAudio; a JACK client with
                             NVIDIA memfds and a DRM buffer), a process with an empty
                             cmdline
  proc-clean/                nothing needs a restart
  proc-grouping/             `sh -c 'a b'` against `sh -c a b`, 6 and 5 identical workers
  proc-hostile/              argv and file names with terminal escapes, bidi, C1, bad bytes
  proc-odd-entries/          a PID that is a plain file; a process whose maps is a
                             directory
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

GENERATED = ("maps", "proc-basic", "proc-clean", "proc-grouping", "proc-hostile",
             "proc-odd-entries")

LIBDIR = b"/usr/lib/x86_64-linux-gnu/"
BTIME = 1763700000


# ---- maps lines, laid out as the kernel does --------------------------------------------

def maps_line(start, end, perms, offset, dev, inode, path=b""):
    """One maps line. show_map_vma() pads the header to 72 columns and adds one space
    before a name; an anonymous mapping keeps the header's trailing space."""
    head = b"%08x-%08x %s %08x %s %d " % (start, end, perms, offset, dev, inode)
    return head if not path else head.ljust(72) + b" " + path


class Maps:
    """Builds one process's maps, low addresses first, as the kernel lists them."""

    def __init__(self, exe=None, exe_inode=0, exe_deleted=False):
        self.lines = []
        self.addr = 0x7F3A1C400000
        if exe is not None:
            self.file_block(0x55D0C8A00000, exe, exe_inode, exe_deleted,
                            ((b"r--p", 0x4000), (b"r-xp", 0x1A000), (b"r--p", 0x8000),
                             (b"r--p", 0x1000), (b"rw-p", 0x1000)))
            self.lines.append(maps_line(0x55D0CA1E3000, 0x55D0CA204000, b"rw-p", 0,
                                        b"00:00", 0, b"[heap]"))

    def file_block(self, start, path, inode, deleted=False, segments=None, dev=b"fe:01"):
        """The usual five mappings of an ELF file; every one of them carries the marker."""
        segments = segments or ((b"r--p", 0x26000), (b"r-xp", 0x155000),
                                (b"r--p", 0x55000), (b"r--p", 0x4000), (b"rw-p", 0x2000))
        name = path + (b" (deleted)" if deleted else b"")
        offset = 0
        for perms, size in segments:
            self.lines.append(
                maps_line(start, start + size, perms, offset, dev, inode, name))
            offset += size
            start += size
        return start

    def lib(self, path, inode, deleted=False):
        self.addr = self.file_block(self.addr, path, inode, deleted) + 0x2000
        return self

    def one(self, perms, size, dev, inode, name):
        """One mapping of its own: shared memory, a pseudo entry, anonymous memory."""
        self.lines.append(
            maps_line(self.addr, self.addr + size, perms, 0, dev, inode, name))
        self.addr += size + 0x1000
        return self

    def data(self, with_tail=True):
        lines = list(self.lines)
        if with_tail:
            for start, end, perms, name in (
                    (0x7FFD5E2A1000, 0x7FFD5E2C2000, b"rw-p", b"[stack]"),
                    (0x7FFD5E3B0000, 0x7FFD5E3B4000, b"r--p", b"[vvar]"),
                    (0x7FFD5E3B4000, 0x7FFD5E3B6000, b"r-xp", b"[vdso]"),
                    (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, b"--xp", b"[vsyscall]")):
                lines.append(maps_line(start, end, perms, 0, b"00:00", 0, name))
        return b"".join(line + b"\n" for line in lines)


def base_libs(maps, deleted=()):
    """libc and the dynamic loader, which every process maps."""
    maps.one(b"rw-p", 0x3000, b"00:00", 0, b"")
    maps.lib(LIBDIR + b"libc.so.6", 1575112, b"libc.so.6" in deleted)
    maps.one(b"rw-p", 0xD000, b"00:00", 0, b"")
    maps.lib(LIBDIR + b"ld-linux-x86-64.so.2", 1575098, b"ld-linux-x86-64.so.2" in deleted)
    return maps


# ---- per-process files ------------------------------------------------------------------

def stat_line(pid, comm, state=b"S", ppid=1, flags=4194560, starttime=1500, threads=1,
              kernel=False):
    """/proc/PID/stat: pid (comm) and the 50 fields after it (kernel 6.x)."""
    if kernel:
        mem = (b"0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 "
               b"0 0 0 0 0 0 0 0 0")
    else:
        mem = (b"11866112 1423 18446744073709551615 94371843276800 94371843383433 "
               b"140726867339696 0 0 0 0 4096 16387 1 0 0 17 1 0 0 0 0 0 94371843399120 "
               b"94371843400832 94371870584832 140726867345883 140726867345901 "
               b"140726867345901 140726867349483 0")
    return b"%d (%s) %s %d %d %d 0 -1 %d 1520 0 3 0 12 7 0 0 20 0 %d 0 %d %s\n" % (
        pid, comm, state, ppid, pid if ppid <= 1 else ppid, pid if ppid <= 1 else ppid,
        flags, threads, starttime, mem)


def status_text(pid, comm, uid=0, state=b"S (sleeping)", ppid=1, kernel=False):
    return (b"Name:\t%s\nUmask:\t0022\nState:\t%s\nTgid:\t%d\nNgid:\t0\nPid:\t%d\n"
            b"PPid:\t%d\nTracerPid:\t0\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\n"
            b"FDSize:\t64\nGroups:\t\nNSpid:\t%d\nNSpgid:\t%d\nNSsid:\t%d\nKthread:\t%d\n"
            b"Threads:\t1\n" % (comm.replace(b"\n", b"\\n"), state, pid, pid, ppid,
                                uid, uid, uid, uid, uid, uid, uid, uid, pid, pid, pid,
                                1 if kernel else 0))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def cmdline(*args):
    """NUL-terminated arguments, as execve() leaves them."""
    return b"".join(arg + b"\0" for arg in args)


def process(tree, pid, comm, cmd, maps, exe=None, uid=0, state=b"S", ppid=1,
            kernel=False, starttime=1500):
    """Write /proc/PID/{cmdline,comm,maps,stat,status} and the exe link."""
    base = os.path.join(tree, str(pid))
    write(os.path.join(base, "cmdline"), cmd)
    write(os.path.join(base, "comm"), comm[:15] + b"\n")
    write(os.path.join(base, "maps"), maps)
    flags = 2129984 if kernel else 4194560  # PF_KTHREAD|PF_NOFREEZE|PF_FORKNOEXEC
    write(os.path.join(base, "stat"), stat_line(pid, comm[:15], state, ppid, flags,
                                                starttime, kernel=kernel))
    states = {b"S": b"S (sleeping)", b"Z": b"Z (zombie)", b"R": b"R (running)"}
    write(os.path.join(base, "status"), status_text(pid, comm[:15], uid, states[state],
                                                    ppid, kernel))
    if exe is not None:  # dangling on purpose: only the link text matters
        os.symlink(exe, os.path.join(base, "exe"))


def machine_files(tree):
    """Files at the top of a procfs that are not processes."""
    write(os.path.join(tree, "stat"),
          b"cpu  2747 0 2352 41409 97 0 17 18 0 0\nintr 0\nctxt 1830453\n"
          b"btime %d\nprocesses 8371\nprocs_running 1\nprocs_blocked 0\n" % BTIME)
    write(os.path.join(tree, "uptime"), b"5127.31 9984.40\n")
    write(os.path.join(tree, "sys", "kernel", "pid_max"), b"4194304\n")


# ---- the trees --------------------------------------------------------------------------

def systemd(tree):
    maps = Maps(b"/usr/lib/systemd/systemd", 1443310)
    maps.lib(LIBDIR + b"libsystemd-shared-252.so", 1443390)
    process(tree, 1, b"systemd", cmdline(b"/sbin/init"), base_libs(maps).data(),
            exe=b"/usr/lib/systemd/systemd", ppid=0, starttime=2)


def kthreadd(tree):
    process(tree, 2, b"kthreadd", b"", b"", ppid=0, kernel=True, starttime=2)


def bash(tree):
    maps = Maps(b"/usr/bin/bash", 1310789)
    maps.lib(LIBDIR + b"libtinfo.so.6.4", 1574990)
    process(tree, 2001, b"bash", cmdline(b"-bash"), base_libs(maps).data(),
            exe=b"/usr/bin/bash", uid=1000, ppid=1990, starttime=48211)


def pulseaudio(tree):
    """Maps only shared memory that looks deleted: nothing to restart."""
    maps = Maps(b"/usr/bin/pulseaudio", 1312204)
    maps.one(b"rw-s", 0x4000000, b"00:01", 3130, b"/memfd:pulseaudio (deleted)")
    maps.one(b"r--s", 0x4000000, b"00:1a", 12, b"/dev/shm/pulse-shm-2364583066 (deleted)")
    maps.lib(LIBDIR + b"pulseaudio/libpulsecommon-16.1.so", 1443702)
    process(tree, 1290, b"pulseaudio",
            cmdline(b"/usr/bin/pulseaudio", b"--daemonize=no", b"--log-target=journal"),
            base_libs(maps).data(), exe=b"/usr/bin/pulseaudio", uid=1000, ppid=1180,
            starttime=3301)


def ardour(tree):
    """A JACK client drawing with NVIDIA's driver: memfds whose names hold '/', a DRM
    buffer and JACK's shared memory below /dev/shm: nothing to restart."""
    maps = Maps(b"/usr/lib/ardour8/ardour-8.1.0", 1700400)
    maps.one(b"rw-s", 0x200000, b"00:01", 6201, b"/memfd:/.glD3fk2a (deleted)")
    maps.one(b"r-xs", 0x200000, b"00:01", 6202, b"/memfd:/.nvidia_drv.Xq81Lz (deleted)")
    maps.one(b"rw-s", 0x1000, b"00:04", 425984, b"/drm (deleted)")
    maps.one(b"rw-s", 0x8000, b"00:1a", 88,
             b"/dev/shm/jack-1000/default/jack-shm-registry (deleted)")
    maps.lib(LIBDIR + b"libjack.so.0.1.0", 1574700)
    maps.lib(LIBDIR + b"nvidia/current/libGLX_nvidia.so.525.147.05", 1574710)
    process(tree, 1340, b"ArdourGUI", cmdline(b"/usr/lib/ardour8/ardour-8.1.0"),
            base_libs(maps).data(), exe=b"/usr/lib/ardour8/ardour-8.1.0", uid=1000,
            ppid=1180, starttime=3920)


def proc_basic(tree):
    machine_files(tree)
    systemd(tree)
    kthreadd(tree)
    # cron, its binary and libc replaced by an upgrade
    maps = Maps(b"/usr/sbin/cron", 1316001, exe_deleted=True)
    process(tree, 612, b"cron", cmdline(b"/usr/sbin/cron", b"-f"),
            base_libs(maps, deleted=(b"libc.so.6",)).data(),
            exe=b"/usr/sbin/cron (deleted)", starttime=902)
    # sshd after an OpenSSL upgrade
    maps = Maps(b"/usr/sbin/sshd", 1316120)
    maps.lib(LIBDIR + b"libssl.so.3", 1574101, deleted=True)
    maps.lib(LIBDIR + b"libcrypto.so.3", 1574099, deleted=True)
    maps.lib(LIBDIR + b"libz.so.1.2.13", 1574360)
    process(tree, 845, b"sshd", cmdline(b"/usr/sbin/sshd", b"-D"), base_libs(maps).data(),
            exe=b"/usr/sbin/sshd", starttime=951)
    pulseaudio(tree)
    ardour(tree)
    # a daemon that blanked its own argument list: shown by its comm
    maps = Maps(b"/usr/local/sbin/backupd", 1700021)
    maps.lib(LIBDIR + b"libzstd.so.1.5.4", 1574420, deleted=True)
    process(tree, 1502, b"backupd", b"", base_libs(maps).data(),
            exe=b"/usr/local/sbin/backupd", starttime=4120)
    bash(tree)
    # a zombie: no maps, no cmdline, no exe
    process(tree, 2002, b"sleep", b"", b"", state=b"Z", uid=1000, ppid=2001,
            starttime=51877)


def proc_clean(tree):
    machine_files(tree)
    systemd(tree)
    kthreadd(tree)
    pulseaudio(tree)
    bash(tree)


def proc_grouping(tree):
    machine_files(tree)
    kthreadd(tree)
    ssl, crypto = LIBDIR + b"libssl.so.3", LIBDIR + b"libcrypto.so.3"
    dynload = b"/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"
    # the same words, but one argument against two: two groups
    for pid, args in ((4100, (b"/bin/sh", b"-c", b"/opt/app/bin/sync --all")),
                      (4101, (b"/bin/sh", b"-c", b"/opt/app/bin/sync", b"--all"))):
        maps = Maps(b"/usr/bin/dash", 1310800)
        process(tree, pid, b"sh", cmdline(*args),
                base_libs(maps, deleted=(b"libc.so.6",)).data(), exe=b"/usr/bin/dash",
                starttime=7000 + pid)
    # six workers with one argument list, each using some of the deleted libraries
    worker = (b"/usr/bin/python3", b"/srv/app/worker.py", b"--queue", b"default")
    uses = {20000: (ssl,), 1001: (ssl,), 1000: (ssl, dynload), 100: (crypto,),
            99: (ssl,), 98: (ssl,)}
    for pid, deleted in uses.items():  # written in a scrambled order on purpose
        maps = Maps(b"/usr/bin/python3.11", 1311500)
        for inode, lib in enumerate((ssl, crypto, dynload)):
            if lib in deleted:
                maps.lib(lib, 1574101 + inode, deleted=True)
        process(tree, pid, b"python3", cmdline(*worker), base_libs(maps).data(),
                exe=b"/usr/bin/python3.11", uid=33, starttime=9000 + pid)
    # five php-fpm workers whose title was set by setproctitle(): one argument; some
    # pad it with NULs, some leave no NUL at all
    title = b"php-fpm: pool www"
    for pid, raw in ((50004, title), (5003, title), (502, title + b"\0"),
                     (501, title), (7, title + b"\0" * 40)):
        maps = Maps(b"/usr/sbin/php-fpm8.2", 1316700)
        maps.lib(LIBDIR + b"libxml2.so.2.9.14", 1574800, deleted=True)
        process(tree, pid, b"php-fpm8.2", raw, base_libs(maps).data(),
                exe=b"/usr/sbin/php-fpm8.2", uid=33, starttime=12000 + pid)


def proc_hostile(tree):
    """Argument lists and file names that a local user controls, meant to attack the
    terminal of whoever reads lib_users' output."""
    machine_files(tree)
    evil = b"/opt/evil/"
    # ESC: clear the screen; OSC: set the window title; a newline to forge a record
    maps = Maps(b"/usr/local/bin/evil", 1800001)
    maps.lib(evil + b"\x1b]0;owned\x07lib.so", 1800002, deleted=True)
    maps.lib(evil + b"new\\012line.so", 1800003, deleted=True)
    process(tree, 3001, b"evil\x1b[2J",
            cmdline(b"/usr/local/bin/evil\x1b[2J", b"--title=\x1b]0;pwned\x07",
                    b"line1\nline2"),
            base_libs(maps).data(), exe=b"/usr/local/bin/evil", uid=1000,
            starttime=60001)
    # U+202E (bidi override), a byte that is not UTF-8, U+009B (C1 CSI), DEL
    maps = Maps(b"/usr/local/bin/evil2", 1800010)
    maps.lib(evil + b"caf\xe9.so", 1800011, deleted=True)
    maps.lib(evil + b"\xe2\x80\xaeos.so", 1800012, deleted=True)
    maps.lib(evil + b"\xc2\x9bcsi.so", 1800013, deleted=True)
    process(tree, 3002, b"evil2",
            cmdline(b"/opt/evil/\xe2\x80\xaetxt.exe", b"caf\xe9", b"\xc2\x9b31m",
                    b"del\x7f"),
            base_libs(maps).data(), exe=b"/usr/local/bin/evil2", uid=1000,
            starttime=60002)
    # literal backslashes that spell an escape, a tab, and separators of -m
    maps = Maps(b"/usr/bin/dash", 1310800)
    maps.lib(evil + b"a,b;c.so", 1800021, deleted=True)
    process(tree, 3003, b"sh",
            cmdline(b"/bin/sh", b"-c", b"C:\\temp\\x1b", b"tab\there"),
            base_libs(maps).data(), exe=b"/usr/bin/dash", uid=1000, starttime=60003)


def proc_odd_entries(tree):
    machine_files(tree)
    # a PID entry that is not a directory
    write(os.path.join(tree, "700"), b"not a process directory\n")
    # a process whose maps is a directory: it cannot be read, the scan goes on
    process(tree, 701, b"odd", cmdline(b"/usr/bin/odd"), b"", exe=b"/usr/bin/odd")
    maps_dir = os.path.join(tree, "701", "maps")
    os.remove(maps_dir)
    write(os.path.join(maps_dir, "README"),
          b"maps is a directory here on purpose: a process whose maps cannot be read.\n")
    maps = Maps(b"/usr/sbin/rsyslogd", 1316500)
    maps.lib(LIBDIR + b"libsystemd.so.0.35.0", 1574600, deleted=True)
    process(tree, 702, b"rsyslogd", cmdline(b"/usr/sbin/rsyslogd", b"-n", b"-iNONE"),
            base_libs(maps).data(), exe=b"/usr/sbin/rsyslogd", starttime=880)


# ---- maps files for the parser ----------------------------------------------------------

# A concrete, real-world name for every FALSE_POSITIVES entry: (name, perms, dev, inode).
FALSE_POSITIVE_NAMES = (
    (b"/SYSV0052e2c1", b"rw-s", b"00:01", 32769),
    (b"/dev/zero", b"rw-s", b"00:01", 4102),
    (b"/memfd:wayland-cursor", b"rw-s", b"00:01", 5127),
    (b"/memfd:/.glD3fk2a", b"rw-s", b"00:01", 5128),          # NVIDIA's driver
    (b"/memfd:/.nvidia_drv.Xq81Lz", b"r-xs", b"00:01", 5129),
    (b"/[aio]", b"rw-s", b"00:12", 20571),
    (b"/drm", b"rw-s", b"00:04", 425984),
    (b"/drm mm object", b"rw-s", b"00:0d", 10244),
    (b"/i915", b"rw-s", b"00:0d", 10245),
    (b"/anon_hugepage", b"rw-s", b"00:0f", 8821),
    (b"/dev/shm/pulse-shm-2364583066", b"r--s", b"00:1a", 12),
    (b"/dev/shm/jack-1000/default/jack-shm-registry", b"rw-s", b"00:1a", 88),
    (b"/tmp/orcexec.Xd3kQ2", b"r-xs", b"00:22", 141),
    (b"/run/user/1000/orcexec.b8Zq1L", b"r-xs", b"00:2b", 77),
    (b"/home/ana/orcexec.p0Rt7c", b"r-xs", b"00:2c", 78),
    (b"/tmp/ffiOm2Gx1", b"r-xs", b"00:22", 152),
    (b"/tmp/jna--1968219957/jna5713984829126186522.tmp", b"r-xp", b"00:22", 160),
    (b"/var/run/nscd/dbWf3sZx", b"r--s", b"00:19", 1204),
    (b"/run/nscd/dbNq2fHs", b"r--s", b"00:19", 1205),
)

# Deleted files that look like the above but are not on the list: they must be reported.
NEAR_MISSES = (
    b"/tmp/libfoo.so",                  # /tmp as a whole is not ignored
    b"/var/tmp/ffi-bridge.so",          # libffi's prefix, but not in /tmp
    b"/dev/shmem-helper.so",            # not inside /dev/shm/
    b"/opt/app/SYSV/libipc.so",         # SYSV, but not at the root
    b"/run/nscd/libnss_cache.so",       # nscd's directory, but not a db* file
    b"/run/nscd/dbx/a.so",              # db + six characters, but one is a '/'
    b"/tmp/ffix/y.so",                  # ffi + six characters, one a '/'
    b"/tmp/orcexec.d/a.so",             # orcexec. + six characters, one a '/'
    b"/SYSV0052e2c1/libipc.so",         # a SysV-like name as a directory
    b"/opt/app/jna-1000/libjnidispatch.so",  # in a JNA-like directory, not jna<N>.tmp
    b"/drm/libdrm_amdgpu.so.1",         # below a directory named /drm
    LIBDIR + b"libssl.so.3",            # an ordinary upgraded library
)


def maps_files(top):
    maps = Maps(b"/usr/bin/gnome-shell", 1313001)
    for name, perms, dev, inode in FALSE_POSITIVE_NAMES:
        maps.one(perms, 0x21000, dev, inode, name + b" (deleted)")
    for inode, name in enumerate(NEAR_MISSES, 1900001):
        maps.lib(name, inode, deleted=True)
    write(os.path.join(top, "false-positives.maps"), base_libs(maps).data())

    maps = Maps(b"/opt/My App/bin/app", 1900100)
    maps.lib(b"/opt/My App/lib/libcore 2.so", 1900101, deleted=True)
    maps.lib(b"/opt/My App/lib/libkeep.so", 1900102)  # spaces, not deleted
    maps.lib(b"/opt/app/lib\tplugin.so", 1900103, deleted=True)
    maps.lib(b"/opt/app/new\\012line.so", 1900104, deleted=True)
    maps.lib(b"/opt/app/caf\xe9.so", 1900105, deleted=True)
    maps.lib(b"/opt/app/esc\x1b[2J.so", 1900106, deleted=True)
    maps.lib(b"/opt/app/trail.so ", 1900107, deleted=True)  # the name ends in a space
    write(os.path.join(top, "odd-names.maps"), base_libs(maps).data())

    # An OpenVZ 2.6.32 kernel put the marker in front of the path.
    maps = Maps(b"/usr/sbin/httpd", 393271)
    maps.lib(b"/usr/lib64/libssl.so.1.0.1e", 264019)
    maps.lines = [line.replace(b"/usr/lib64/libssl", b"(deleted)/usr/lib64/libssl")
                  for line in maps.lines]
    maps.lib(b"/usr/lib64/libcrypto.so.1.0.1e", 264017)
    maps.lines = [line.replace(b"/usr/lib64/libcrypto", b"(deleted)/usr/lib64/libcrypto")
                  for line in maps.lines]
    maps.lib(b"/lib64/libz.so.1.2.3", 130568)
    write(os.path.join(top, "openvz-prefix.maps"), maps.data())

    maps = Maps(b"/opt/app/bin/app", 1900200)
    maps.lib(b"/opt/(deleted)/libx.so", 1900201)
    maps.lib(b"/opt/x (deleted).so", 1900202)
    maps.lib(b"/opt/libx.so (deleted) ", 1900203)  # the real name ends "(deleted) "
    maps.lib(b"/opt/libw.so(deleted)", 1900204)
    maps.lib(b"/opt/(deleted)libz.so", 1900205)
    maps.lib(b"/opt/(deleted)/liby.so", 1900206, deleted=True)
    maps.lib(b"/opt/libv.so (deleted)", 1900207, deleted=True)  # named so, then deleted
    write(os.path.join(top, "deleted-in-name.maps"), base_libs(maps).data())


def main():
    for name in GENERATED:
        shutil.rmtree(os.path.join(HERE, name), ignore_errors=True)
    maps_files(os.path.join(HERE, "maps"))
    proc_basic(os.path.join(HERE, "proc-basic"))
    proc_clean(os.path.join(HERE, "proc-clean"))
    proc_grouping(os.path.join(HERE, "proc-grouping"))
    proc_hostile(os.path.join(HERE, "proc-hostile"))
    proc_odd_entries(os.path.join(HERE, "proc-odd-entries"))


if __name__ == "__main__":
    main()
