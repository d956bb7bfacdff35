#!/usr/bin/env python3
"""Write the fixtures for services without systemd (init scripts) under testdata/initd-*
(run once; the generated files are committed).

    python3 testdata/make_initd_fixtures.py

Trees:
  initd-proc/        a procfs tree (--proc) of a machine that systemd does not run: its
                     cgroup lines are "0::/", and each process's stat gives its parent
                     and session. Every process but PID 1 maps a deleted libssl:
                     daemons that pid files name (the process itself, or the master of
                     workers), daemons known by their package, a login under sshd and a
                     program started in its shell (neither is the ssh service), daemons
                     with no script, one in a container and one in a systemd unit
                     (which wins), and a console login
  initd-root/        that machine's own files (--root) as Debian with sysvinit has them:
                     usr/sbin/invoke-rc.d, etc/init.d scripts (and a README and
                     skeleton, which are not scripts), pid files in run/, a small
                     dpkg database
  initd-openrc-root/ the same machine's files as OpenRC (Alpine) has them: sbin/openrc-run,
                     openrc-run scripts, an agetty.tty1 link to agetty, var/run a link
                     to ../run, no package database

What git cannot keep (a world-writable /run/lock, names with control characters), and
what must not be in the checkout (var/run as a link to the absolute /run, as Debian has
it: pytest, looking for tests, would follow it into the machine's own /run), the tests
make in copies of these trees.
"""

import os
import shutil

import make_svc_fixtures
from make_svc_fixtures import BTIME, HOST_MNT, HOST_PID, LIBDIR, write

HERE = os.path.dirname(os.path.abspath(__file__))
PROC, ROOT, OPENRC = "initd-proc", "initd-root", "initd-openrc-root"
LIBSSL = LIBDIR + b"libssl.so.3"
DOCKER_ID = "0c1d2e3f4a5b69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def process(pid, argv, exe, ppid, session, cgroup="0::/", deleted=LIBSSL, exe_link=None,
            pid_ns=HOST_PID):
    """One process of initd-proc, with its parent and session."""
    make_svc_fixtures.process(PROC, pid, argv, cgroup, exe, deleted, ns=(HOST_MNT, pid_ns),
                              ppid=ppid, session=session, exe_link=exe_link)


def initd_proc():
    write(os.path.join(HERE, PROC, "stat"), "cpu  1 0 1 1 0 0 0 0 0 0\nbtime %d\n" % BTIME)
    process(1, ["/sbin/init"], b"/sbin/init", 0, 1, deleted=None)
    # Named by pid files: the daemon itself (as /run/... and as /var/run/... in its
    # script), or the master of its workers (by the file's name, or its directory's).
    process(612, ["/usr/sbin/sshd"], b"/usr/sbin/sshd", 1, 612)
    process(640, ["/usr/sbin/cron"], b"/usr/sbin/cron", 1, 640)
    process(2000, ["nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"],
            b"/usr/sbin/nginx", 1, 2000)
    for pid in (2001, 2002):
        process(pid, ["nginx: worker process"], b"/usr/sbin/nginx", 2000, 2000)
    process(2100, ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main",
                   "-c", "config_file=/etc/postgresql/15/main/postgresql.conf"],
            b"/usr/lib/postgresql/15/bin/postgres", 1, 2100)
    process(2101, ["postgres: 15/main: checkpointer "], b"/usr/lib/postgresql/15/bin/postgres",
            2100, 2100)
    process(740, ["/usr/sbin/NetworkManager"], b"/usr/sbin/NetworkManager", 1, 740)
    # Known by their package: the one script it ships, or the one named as the
    # executable; rsyslogd was replaced (its exe link says so); lxc ships two scripts,
    # neither named lxc-start.
    process(700, ["/usr/bin/dbus-daemon", "--system"], b"/usr/bin/dbus-daemon", 1, 700)
    process(710, ["/usr/sbin/rsyslogd"], b"/usr/sbin/rsyslogd", 1, 710,
            exe_link=b"/usr/sbin/rsyslogd (deleted)")
    process(720, ["/usr/sbin/smbd", "--foreground", "--no-process-group"], b"/usr/sbin/smbd",
            1, 720)
    process(730, ["[lxc monitor] /var/lib/lxc web1"], b"/usr/bin/lxc-start", 1, 730)
    # A login under sshd starts sessions of its own, and so does the shell in it: none of
    # these is the ssh service, nor is the smbd that root started from that shell.
    process(1000, ["sshd: root [priv]"], b"/usr/sbin/sshd", 612, 1000)
    process(1001, ["sshd: root@pts/0"], b"/usr/sbin/sshd", 1000, 1000)
    process(1002, ["-bash"], b"/usr/bin/bash", 1001, 1002)
    process(1010, ["/usr/sbin/smbd", "--foreground", "--debug-stdout"], b"/usr/sbin/smbd",
            1002, 1002)
    # No script: not packaged, no pid file.
    process(2600, ["/opt/agent/bin/agent", "--foreground"], b"/opt/agent/bin/agent", 1, 2600)
    # A pid file names it, but it runs in a container; another is in a systemd unit.
    process(3000, ["redis-server *:6379"], b"/usr/bin/redis-server", 2990, 3000,
            cgroup="0::/docker/%s" % DOCKER_ID, pid_ns="pid:[4026532400]")
    process(3100, ["/usr/sbin/unbound", "-d"], b"/usr/sbin/unbound", 1, 3100,
            cgroup="0::/system.slice/unbound.service")
    # A console login, which OpenRC starts from agetty.tty1.
    process(750, ["/sbin/agetty", "38400", "tty1", "linux"], b"/sbin/agetty", 1, 750)


def script(root, name, text, mode=0o755):
    path = os.path.join(HERE, root, "etc", "init.d", name)
    write(path, text)
    os.chmod(path, mode)


def debian_script(name, lines):
    return "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          %s\n### END INIT INFO\n%s" % (
        name, "".join(line + "\n" for line in lines))


# (package, version, files): what dpkg's info/PACKAGE.list would list, directories and all.
PACKAGES = (
    ("openssh-server", "1:9.2p1-2+deb12u3", ["/usr/sbin/sshd", "/etc/init.d/ssh"]),
    ("cron", "3.0pl1-162", ["/usr/sbin/cron", "/etc/init.d/cron"]),
    ("nginx", "1.22.1-9", ["/usr/sbin/nginx"]),
    ("nginx-common", "1.22.1-9", ["/etc/init.d/nginx"]),
    ("postgresql-15", "15.8-0+deb12u1", ["/usr/lib/postgresql/15/bin/postgres"]),
    ("postgresql-common", "248", ["/etc/init.d/postgresql"]),
    ("dbus", "1.12.28-0+deb11u1", ["/usr/bin/dbus-daemon", "/etc/init.d/dbus"]),
    ("rsyslog", "8.2302.0-1", ["/usr/sbin/rsyslogd", "/etc/init.d/rsyslog"]),
    ("samba", "2:4.17.12+dfsg-0+deb12u1", ["/usr/sbin/smbd", "/usr/sbin/nmbd",
                                           "/etc/init.d/smbd", "/etc/init.d/nmbd",
                                           "/etc/init.d/samba-ad-dc"]),
    ("lxc", "1:5.0.2-1+deb12u2", ["/usr/bin/lxc-start", "/etc/init.d/lxc",
                                  "/etc/init.d/lxc-net"]),
    ("network-manager", "1.42.4-1", ["/usr/sbin/NetworkManager",
                                     "/etc/init.d/network-manager"]),
    ("bash", "5.2.15-2+b7", ["/usr/bin/bash"]),
    ("libssl3:amd64", "3.0.15-1~deb12u1", [LIBSSL.decode()]),
)


def dpkg(root):
    status = []
    for package, version, files in PACKAGES:
        name, _, arch = package.partition(":")
        dirs = sorted({"/".join(f.split("/")[:i]) for f in files
                       for i in range(2, f.count("/") + 1)})  # /usr, /usr/sbin, ...
        write(os.path.join(HERE, root, "var", "lib", "dpkg", "info", package + ".list"),
              "".join(line + "\n" for line in ["/."] + dirs + files))
        status.append("Package: %s\nStatus: install ok installed\nArchitecture: %s\n"
                      "Version: %s\n" % (name, arch or "all", version))
    write(os.path.join(HERE, root, "var", "lib", "dpkg", "status"), "\n".join(status))


def initd_root():
    r = ROOT
    script(r, "ssh", debian_script("sshd", [
        'case "$1" in start)',
        "  start-stop-daemon --start --quiet --oknodo --chuid 0:0 --pidfile /run/sshd.pid \\",
        "    --exec /usr/sbin/sshd -- $SSHD_OPTS ;;", "esac"]))
    script(r, "cron", debian_script("cron", ["PIDFILE=/var/run/crond.pid",
                                             "DAEMON=/usr/sbin/cron"]))
    # Its pid file by a variable only: found by the file's name.
    script(r, "nginx", debian_script("nginx", ["NAME=nginx", "PID=/run/$NAME.pid",
                                               "DAEMON=/usr/sbin/nginx"]))
    script(r, "postgresql", debian_script("postgresql", [
        'install -d -m 2775 -o postgres -g postgres /var/run/postgresql',
        'pg_ctlcluster "$@"']))
    script(r, "dbus", debian_script("dbus", ["PIDFILE=/run/dbus/pid",
                                             "DAEMON=/usr/bin/dbus-daemon"]))
    script(r, "rsyslog", debian_script("rsyslog", ["DAEMON=/usr/sbin/rsyslogd"]))
    for name in ("smbd", "nmbd", "samba-ad-dc"):
        script(r, name, debian_script(name, ["DAEMON=/usr/sbin/%s" % name]))
    for name in ("lxc", "lxc-net"):
        script(r, name, debian_script(name, ["# starts the autostart containers"]))
    script(r, "network-manager", debian_script("network-manager", [
        "PIDFILE=/var/run/NetworkManager/NetworkManager.pid"]))
    script(r, "redis-server", debian_script("redis-server", [
        "PIDFILE=/run/redis/redis-server.pid"]))
    script(r, "unbound", debian_script("unbound", ['PIDFILE="/run/unbound.pid"']))
    # Names of sshd's pid file that are not it: another path, another file.
    script(r, "sshguard", debian_script("sshguard", [
        "rm -f /run/sshd.pid.old /srv/run/sshd.pid"]))
    script(r, "rc", "#!/bin/sh\n# runs the scripts of a runlevel\n")
    script(r, "rcS", "#!/bin/sh\nexec /etc/init.d/rc S\n")
    # Not scripts (not executable), though they name pid files.
    script(r, "README", "Example: start-stop-daemon --pidfile /run/sshd.pid ...\n", 0o644)
    script(r, "skeleton", debian_script("skeleton", ["PIDFILE=/run/nginx.pid"]), 0o644)
    run = os.path.join(HERE, r, "run")
    write(os.path.join(run, "sshd.pid"), "612\n")
    write(os.path.join(run, "crond.pid"), "640\n")
    write(os.path.join(run, "nginx.pid"), "2000\n")
    # What PostgreSQL writes: the PID first, then more.
    write(os.path.join(run, "postgresql", "15-main.pid"),
          "2100\n/var/lib/postgresql/15/main\n1763701234\n5432\n/var/run/postgresql\n*\n"
          "  5432001         0\nready   \n")
    write(os.path.join(run, "dbus", "pid"), "700\n")  # not NAME.pid: not read
    write(os.path.join(run, "NetworkManager", "NetworkManager.pid"), "740\n")
    write(os.path.join(run, "redis", "redis-server.pid"), "3000\n")
    write(os.path.join(run, "unbound.pid"), "3100\n")
    write(os.path.join(run, "old-daemon.pid"), "99999\n")  # stale: no such process
    write(os.path.join(run, "garbage.pid"), "not a number 612\n")
    write(os.path.join(HERE, r, "usr", "sbin", "invoke-rc.d"), "#!/bin/sh\n")
    os.chmod(os.path.join(HERE, r, "usr", "sbin", "invoke-rc.d"), 0o755)
    dpkg(r)


def openrc_script(lines):
    return "#!/sbin/openrc-run\n" + "".join(line + "\n" for line in lines)


def initd_openrc_root():
    r = OPENRC
    script(r, "sshd", openrc_script(['command="/usr/sbin/sshd"',
                                     'pidfile="${RC_PREFIX%/}/run/$RC_SVCNAME.pid"']))
    script(r, "nginx", openrc_script(['command="/usr/sbin/nginx"',
                                      'pidfile="/run/nginx/nginx.pid"']))
    script(r, "postgresql", openrc_script(['command="/usr/bin/pg_ctl"']))
    script(r, "dbus", openrc_script(['command="/usr/bin/dbus-daemon"',
                                     'pidfile="/run/$RC_SVCNAME.pid"']))
    script(r, "agetty", openrc_script(['command="/sbin/agetty"']))
    os.symlink("agetty", os.path.join(HERE, r, "etc", "init.d", "agetty.tty1"))
    run = os.path.join(HERE, r, "run")
    write(os.path.join(run, "sshd.pid"), "612\n")
    write(os.path.join(run, "nginx", "nginx.pid"), "2000\n")
    write(os.path.join(run, "postgresql", "postmaster.pid"), "2100\n/var/lib/postgresql/15\n")
    write(os.path.join(run, "dbus.pid"), "700\n")
    write(os.path.join(run, "agetty.tty1.pid"), "750\n")
    os.makedirs(os.path.join(HERE, r, "var"))
    os.symlink("../run", os.path.join(HERE, r, "var", "run"))
    write(os.path.join(HERE, r, "sbin", "openrc-run"), "#!/bin/sh\n# stands for OpenRC's\n")
    os.chmod(os.path.join(HERE, r, "sbin", "openrc-run"), 0o755)


def main():
    for tree in (PROC, ROOT, OPENRC):
        shutil.rmtree(os.path.join(HERE, tree), ignore_errors=True)
        os.makedirs(os.path.join(HERE, tree))
    initd_proc()
    initd_root()
    initd_openrc_root()


if __name__ == "__main__":
    main()
