#!/usr/bin/env python3
"""Write the procfs fixtures for services, containers, reboot, Nagios and Prometheus
tests under testdata/svc-* (run once; the generated files are committed).

    python3 testdata/make_svc_fixtures.py

Every process directory holds what a scan with -S/--json reads: maps (one deleted
library, unless it is meant to be clean), cmdline, comm, stat, status, cgroup, a
dangling exe link, and ns/mnt and ns/pid links whose text is all that matters
(`mnt:[4026531841]`). A tree has no `self`: its PID 1, the host's init, defines the
namespaces lib_users calls its own.

Trees:
  svc-units/      one process per kind of placement: system services (cgroup v2 and a
                  v1 hybrid, names with '-' and '@', a sandboxed one with a mount
                  namespace of its own), held-back units (dbus, getty, user@, sessions),
                  a user service and a user scope, containers (docker, podman and its conmon, LXC,
                  nspawn, an unnamed PID namespace) and processes with no unit
  svc-reboot/     PID 1 maps a deleted library
  svc-clean/      nothing uses a deleted file
  svc-containers/ containers as the runtimes lay them out: podman with the cgroupfs
                  manager (the lines podman 4.3 writes on a cgroup v1 hybrid host) and
                  its conmon, Kubernetes containers under containerd, CRI-O and
                  kubelet's cgroupfs driver in each QoS class, an LXC container and its
                  monitor, and a process whose cgroup file cannot be read (a directory)
  svc-unreadable/ one process is found, one cannot be read (its maps is a directory)
  svc-odd/        unit names with a backslash (systemd's \\x2d) and a quote, and an
                  argv with '|', which Nagios would take for performance data
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
TREES = ("svc-units", "svc-containers", "svc-reboot", "svc-clean", "svc-unreadable",
         "svc-odd")

BTIME = 1763700000
HOST_MNT, HOST_PID = "mnt:[4026531841]", "pid:[4026531836]"
LIBDIR = b"/usr/lib/x86_64-linux-gnu/"

DOCKER_ID = "4f3c2a1b9e8d7c6b5a49382716f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3"
PODMAN_ID = "9a8b7c6d5e4f30211f2e3d4c5b6a79881a2b3c4d5e6f708192a3b4c5d6e7f809"
# svc-containers
LIBPOD_ID = "53807d4f4e361ef7488336dd14129d90a1ee4e9cebdadc72f1634cda70750af7"
LIBPOD2_ID = "c887a7dbb8502413564e0da3f87b2903a4f04721cf4be4d3f449c8edef7f737f"
CONTAINERD_ID = "e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e"
CONTAINERD2_ID = "0b1c2d3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
CRIO_ID = "7c6b5a4938271605f4e3d2c1b0a9f8e77e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
CRIO2_ID = "3a4b5c6d7e8f90a1b2c3d4e5f6a7b8c99c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f"
CRI_ID = "a0b1c2d3e4f5061728394a5b6c7d8e9ff9e8d7c6b5a4938271605f4e3d2c1b0a"
CRI2_ID = "5f4e3d2c1b0a99887766554433221100ffeeddccbbaa00112233445566778899"
POD_BURSTABLE = "3b5a1e8c-7d2f-4c1a-9e6b-0f4d2c8a7b91"
POD_GUARANTEED = "8f2e6d4c-1b3a-4e5f-a6b7-c8d9e0f1a2b3"
POD_BESTEFFORT = "c4d5e6f7-0a1b-4c2d-8e3f-9a0b1c2d3e4f"
POD_CGROUPFS = "6e7f8091-a2b3-4c4d-9e5f-061728394a5b"
POD_CGROUPFS_G = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
V1_CONTROLLERS = ("pids", "blkio", "freezer", "devices", "memory", "cpuset", "cpuacct", "cpu")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data if isinstance(data, bytes) else data.encode())


def maps_line(start, end, perms, inode, path):
    head = b"%012x-%012x %s 00000000 fe:01 %d " % (start, end, perms, inode)
    return head.ljust(72) + b" " + path + b"\n"


def maps(exe, deleted=None, inode=1443000):
    """The executable's text, libc, and one more library, deleted when given."""
    data = maps_line(0x55D0C8A00000, 0x55D0C8A1A000, b"r-xp", inode, exe)
    data += maps_line(0x7F3A1C400000, 0x7F3A1C555000, b"r-xp", 1575112,
                      LIBDIR + b"libc.so.6")
    if deleted is not None:
        data += maps_line(0x7F3A1C600000, 0x7F3A1C6F0000, b"r-xp", 1576001,
                          deleted + b" (deleted)")
    data += b"7ffd5e2a1000-7ffd5e2c2000 rw-p 00000000 00:00 0".ljust(72) + b" [stack]\n"
    return data


def process(tree, pid, argv, cgroup, exe, deleted=LIBDIR + b"libssl.so.3", uid=0,
            ns=(HOST_MNT, HOST_PID), starttime=1500, ppid=1, session=None, exe_link=None):
    """One process directory; its session is its own PID unless given, and `exe_link`
    is the text of its exe link where that is not `exe` (a replaced binary)."""
    base = os.path.join(HERE, tree, str(pid))
    session = pid if session is None else session
    comm = os.path.basename(exe)[:15]
    write(os.path.join(base, "cmdline"), b"".join(a.encode() + b"\0" for a in argv))
    write(os.path.join(base, "comm"), comm + b"\n")
    write(os.path.join(base, "maps"), maps(exe, deleted))
    write(os.path.join(base, "cgroup"), cgroup + "\n")
    write(os.path.join(base, "stat"),
          b"%d (%s) S %d %d %d 0 -1 4194560 1520 0 3 0 12 7 0 0 20 0 1 0 %d 11866112 "
          b"1423\n" % (pid, comm, ppid, pid, session, starttime))
    write(os.path.join(base, "status"),
          b"Name:\t%s\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\nPPid:\t%d\n"
          b"Uid:\t%d\t%d\t%d\t%d\nNSpid:\t%d\n" % (comm, pid, pid, ppid, uid, uid, uid, uid,
                                                   pid))
    # dangling: only the text matters
    os.symlink(exe_link or exe, os.path.join(base, "exe"))
    os.makedirs(os.path.join(base, "ns"))
    os.symlink(ns[0], os.path.join(base, "ns", "mnt"))
    os.symlink(ns[1], os.path.join(base, "ns", "pid"))


def init(tree, deleted=None):
    process(tree, 1, ["/sbin/init"], "0::/init.scope", b"/usr/lib/systemd/systemd",
            deleted=deleted, starttime=2)


def machine(tree):
    write(os.path.join(HERE, tree, "stat"), "cpu  1 0 1 1 0 0 0 0 0 0\nbtime %d\n" % BTIME)


def svc_units(t):
    machine(t)
    init(t)
    # System services that are safe to restart.
    process(t, 300, ["/lib/systemd/systemd-journald"],
            "0::/system.slice/systemd-journald.service", b"/usr/lib/systemd/systemd-journald")
    process(t, 612, ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"],
            "0::/system.slice/ssh.service", b"/usr/sbin/sshd")
    process(t, 640, ["/usr/sbin/cron", "-f"],
            "12:pids:/system.slice/cron.service\n"
            "4:memory:/system.slice/cron.service\n"
            "1:name=systemd:/system.slice/cron.service\n"
            "0::/", b"/usr/sbin/cron")
    process(t, 655, ["/usr/sbin/openvpn", "--daemon", "ovpn-office", "--config",
                     "/etc/openvpn/office.conf"],
            "0::/system.slice/system-openvpn.slice/openvpn@office.service",
            b"/usr/sbin/openvpn")
    process(t, 660, ["/lib/systemd/systemd-timesyncd"],  # sandboxed: own mount namespace
            "0::/system.slice/systemd-timesyncd.service", b"/usr/lib/systemd/systemd-timesyncd",
            ns=("mnt:[4026532301]", HOST_PID))
    # Held back.
    process(t, 700, ["/usr/bin/dbus-daemon", "--system", "--address=systemd:", "--nofork",
                     "--nopidfile", "--systemd-activation", "--syslog-only"],
            "0::/system.slice/dbus.service", b"/usr/bin/dbus-daemon")
    process(t, 710, ["/sbin/agetty", "-o", "-p -- \\u", "--noclear", "-", "linux"],
            "0::/system.slice/system-getty.slice/getty@tty1.service", b"/usr/sbin/agetty")
    process(t, 1001, ["sshd: root@pts/0"],
            "0::/user.slice/user-0.slice/session-3.scope", b"/usr/sbin/sshd")
    process(t, 1005, ["-bash"], "0::/user.slice/user-0.slice/session-3.scope",
            b"/usr/bin/bash")
    process(t, 1100, ["/lib/systemd/systemd", "--user"],
            "0::/user.slice/user-1000.slice/user@1000.service/init.scope",
            b"/usr/lib/systemd/systemd", uid=1000)
    process(t, 1150, ["/usr/bin/pipewire"],
            "0::/user.slice/user-1000.slice/user@1000.service/session.slice/pipewire.service",
            b"/usr/bin/pipewire", uid=1000)
    process(t, 1160, ["/usr/lib/firefox-esr/firefox-esr"],  # a scope: cannot be restarted
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
            "app-firefox\\x2desr-4242.scope", b"/usr/lib/firefox-esr/firefox-esr", uid=1000)
    process(t, 1200, ["sshd: cloud@pts/1"],
            "0::/user.slice/user-1000.slice/session-7.scope", b"/usr/sbin/sshd", uid=1000)
    # Containers: each has PID and mount namespaces of its own.
    process(t, 2100, ["nginx: master process nginx -g daemon off;"],
            "0::/system.slice/docker-%s.scope" % DOCKER_ID, b"/usr/sbin/nginx",
            ns=("mnt:[4026532401]", "pid:[4026532402]"))
    process(t, 2190, ["/usr/bin/conmon", "--api-version", "1", "-c", PODMAN_ID],
            "0::/machine.slice/libpod-conmon-%s.scope" % PODMAN_ID, b"/usr/bin/conmon")
    process(t, 2200, ["redis-server *:6379"],
            "0::/machine.slice/libpod-%s.scope/container" % PODMAN_ID,
            b"/usr/bin/redis-server", ns=("mnt:[4026532501]", "pid:[4026532502]"))
    process(t, 2300, ["/usr/sbin/apache2", "-k", "start"],
            "0::/lxc.payload.web1/system.slice/apache2.service", b"/usr/sbin/apache2",
            ns=("mnt:[4026532601]", "pid:[4026532602]"))
    process(t, 2400, ["/usr/sbin/cron", "-f"],
            "0::/machine.slice/machine-debian\\x2dtest.scope/payload/system.slice/cron.service",
            b"/usr/sbin/cron", ns=("mnt:[4026532701]", "pid:[4026532702]"))
    process(t, 2500, ["/usr/bin/python3", "/srv/app/worker.py"], "0::/", b"/usr/bin/python3.11",
            ns=("mnt:[4026532801]", "pid:[4026532802]"))
    # No unit at all.
    process(t, 2600, ["/opt/agent/bin/agent", "--foreground"], "0::/", b"/opt/agent/bin/agent")
    process(t, 2601, ["/opt/agent/bin/agent", "--foreground"], "0::/", b"/opt/agent/bin/agent")
    # Not reported: nothing deleted.
    process(t, 2700, ["/usr/sbin/rsyslogd", "-n", "-iNONE"],
            "0::/system.slice/rsyslog.service", b"/usr/sbin/rsyslogd", deleted=None)


def hybrid(path, systemd=None, v2=False):
    """A cgroup file of a cgroup v1 hybrid host, as on this project's test machine: the
    named systemd hierarchy, eight controllers and the v2 line (which podman leaves at
    the root and LXC does not)."""
    lines = ["9:name=systemd:%s" % (path if systemd is None else systemd)]
    lines += ["%d:%s:%s" % (8 - i, name, path) for i, name in enumerate(V1_CONTROLLERS)]
    return "\n".join(lines + ["0::%s" % (path if v2 else "/")])


def kube_slice(qos, pod):
    """kubelet's systemd driver: the slice of a pod (its UID with '_' for '-')."""
    pod = pod.replace("-", "_")
    if qos is None:
        return "/kubepods.slice/kubepods-pod%s.slice" % pod
    return "/kubepods.slice/kubepods-%s.slice/kubepods-%s-pod%s.slice" % (qos, qos, pod)


def svc_containers(t):
    machine(t)
    init(t)
    own = lambda n: ("mnt:[40265330%02d]" % n, "pid:[40265331%02d]" % n)  # noqa: E731
    # podman 4.3.1, cgroupfs manager, cgroup v1 hybrid: these are the lines it wrote
    # (test_svc_podman_live checks them again). conmon has no name=systemd cgroup.
    process(t, 3090, ["/usr/bin/conmon", "--api-version", "1", "-c", LIBPOD_ID, "-u",
                      LIBPOD_ID, "-r", "/usr/bin/crun"],
            hybrid("/libpod_parent/conmon", systemd="/"), b"/usr/bin/conmon",
            ns=("mnt:[4026532174]", HOST_PID))
    process(t, 3100, ["/usr/bin/python3", "-c", "import ctypes, time; time.sleep(300)"],
            hybrid("/libpod_parent/libpod-%s" % LIBPOD_ID), b"/usr/bin/python3.11",
            ns=("mnt:[4026532243]", "pid:[4026532246]"))
    process(t, 3110, ["/usr/sbin/nginx", "-g", "daemon off;"],  # the same on cgroup v2
            "0::/libpod_parent/libpod-%s" % LIBPOD2_ID, b"/usr/sbin/nginx", ns=own(1))
    # Kubernetes: containerd and CRI-O with kubelet's systemd driver.
    process(t, 3200, ["/usr/local/bin/app", "--port", "8080"],
            "0::%s/cri-containerd-%s.scope" % (kube_slice("burstable", POD_BURSTABLE),
                                               CONTAINERD_ID),
            b"/usr/local/bin/app", ns=own(2))
    process(t, 3210, ["/pause"],
            hybrid("%s/cri-containerd-%s.scope" % (kube_slice(None, POD_GUARANTEED),
                                                   CONTAINERD2_ID)),
            b"/pause", ns=own(3))
    process(t, 3290, ["/usr/bin/conmon", "-b", "/run/containers/storage/overlay-containers/"
                      "%s/userdata" % CRIO_ID, "-c", CRIO_ID],
            "0::%s/crio-conmon-%s.scope" % (kube_slice("besteffort", POD_BESTEFFORT),
                                            CRIO_ID), b"/usr/bin/conmon")
    process(t, 3300, ["/usr/bin/redis-server", "*:6379"],
            "0::%s/crio-%s.scope" % (kube_slice("besteffort", POD_BESTEFFORT), CRIO_ID),
            b"/usr/bin/redis-server", ns=own(4))
    # kubelet's cgroupfs driver: CRI-O names its cgroups, containerd does not.
    process(t, 3310, ["/usr/sbin/haproxy", "-f", "/etc/haproxy/haproxy.cfg"],
            "0::/kubepods/besteffort/pod%s/crio-%s" % (POD_BESTEFFORT, CRIO2_ID),
            b"/usr/sbin/haproxy", ns=own(5))
    process(t, 3400, ["/usr/bin/memcached", "-m", "64"],
            hybrid("/kubepods/burstable/pod%s/%s" % (POD_CGROUPFS, CRI_ID)),
            b"/usr/bin/memcached", ns=own(6))
    process(t, 3410, ["/usr/sbin/unbound", "-d"],  # guaranteed: no QoS level
            "0::/kubepods/pod%s/%s" % (POD_CGROUPFS_G, CRI2_ID), b"/usr/sbin/unbound",
            ns=own(7))
    # LXC 5.0 (classic LXC, LXD and Incus alike), cgroup v1 hybrid: the lines it wrote
    # (test_svc_lxc_live checks them again), the v2 line included. Its monitor, which
    # maps liblxc, is beside the container.
    process(t, 3490, ["[lxc monitor] /var/lib/lxc db1"], hybrid("/lxc.monitor.db1", v2=True),
            b"/usr/bin/lxc-start", deleted=LIBDIR + b"liblxc.so.1.7.0")
    process(t, 3500, ["/usr/sbin/mariadbd"], hybrid("/lxc.payload.db1", v2=True),
            b"/usr/sbin/mariadbd", ns=own(8))
    # A cgroup file that cannot be read: read() gives EISDIR, as EACCES would fail.
    process(t, 3600, ["/opt/tool/bin/tool", "--serve"], "0::/", b"/opt/tool/bin/tool")
    cgroup = os.path.join(HERE, t, "3600", "cgroup")
    os.remove(cgroup)
    os.mkdir(cgroup)
    write(os.path.join(cgroup, "README"), "cgroup is a directory on purpose\n")


def svc_reboot(t):
    machine(t)
    init(t, deleted=LIBDIR + b"systemd/libsystemd-shared-252.so")
    process(t, 612, ["/usr/sbin/sshd", "-D"], "0::/system.slice/ssh.service",
            b"/usr/sbin/sshd")


def svc_clean(t):
    machine(t)
    init(t)
    process(t, 612, ["/usr/sbin/sshd", "-D"], "0::/system.slice/ssh.service",
            b"/usr/sbin/sshd", deleted=None)
    process(t, 1005, ["-bash"], "0::/user.slice/user-0.slice/session-3.scope",
            b"/usr/bin/bash", deleted=None)


def svc_unreadable(t):
    svc_clean(t)
    process(t, 640, ["/usr/sbin/cron", "-f"], "0::/system.slice/cron.service",
            b"/usr/sbin/cron")
    process(t, 650, ["/usr/sbin/atd", "-f"], "0::/system.slice/atd.service", b"/usr/sbin/atd")
    maps_file = os.path.join(HERE, t, "650", "maps")
    os.remove(maps_file)
    os.mkdir(maps_file)  # read() gives EISDIR: an OSError that is not "gone"
    write(os.path.join(maps_file, "README"), "maps is a directory on purpose\n")


def svc_odd(t):
    machine(t)
    init(t)
    process(t, 500, ["/usr/sbin/openvpn", "--config", "/etc/openvpn/client/my-vpn.conf"],
            "0::/system.slice/system-openvpn\\x2dclient.slice/openvpn-client@my\\x2dvpn.service",
            b"/usr/sbin/openvpn")
    process(t, 510, ["/usr/local/bin/odd"], '0::/system.slice/odd"name.service',
            b"/usr/local/bin/odd")
    process(t, 520, ["/bin/sh", "-c", "tail -F /var/log/syslog | logger -t relay"],
            "0::/system.slice/relay.service", b"/usr/bin/dash")


def main():
    for tree in TREES:
        shutil.rmtree(os.path.join(HERE, tree), ignore_errors=True)
        os.makedirs(os.path.join(HERE, tree))
    svc_units("svc-units")
    svc_containers("svc-containers")
    svc_reboot("svc-reboot")
    svc_clean("svc-clean")
    svc_unreadable("svc-unreadable")
    svc_odd("svc-odd")


if __name__ == "__main__":
    main()
