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


class Finding(_Record):
    """A process that uses deleted files: `files` maps each path to its kind."""

    __slots__ = ("pid", "argv", "files")


class Scan(_Record):
    """The result of a scan: findings, and how many processes could not be read."""

    __slots__ = ("findings", "scanned", "unreadable")

    @property
    def complete(self):
        return self.unreadable == 0


def scan_process(dir_fd, table=FALSE_POSITIVES):
    """The Finding for the process whose /proc/PID directory is open as `dir_fd`, or
    None if it maps no deleted file. OSError if it cannot be read or is gone."""
    data = _read_at(dir_fd, "maps")
    if b"(deleted)" not in data:  # the common case: nothing more to read
        return None
    found = deleted_mappings(data, table)
    for path in [p for p, m in found.items() if _still_linked(dir_fd, m)]:
        del found[path]
    if not found:
        return None
    argv = parse_cmdline(_read_at(dir_fd, "cmdline"))
    if not argv:  # an empty argument list: show the command name like ps does
        comm = _read_at(dir_fd, "comm").rstrip(b"\n")
        argv = ["[%s]" % os.fsdecode(comm)]
    try:
        exe = _strip_deleted(os.fsdecode(_readlink_at(dir_fd, "exe")))
    except OSError:
        exe = None
    return Finding(None, argv, {path: file_kind(path, exe) for path in found})


def scan(proc=PROC, table=FALSE_POSITIVES, pids=None):
    """Scan every process (or those in `pids`) for deleted files in use.

    Processes that exit during the scan are skipped; those that cannot be read are
    counted. Kernel threads and zombies map nothing; lib_users itself is left out.
    """
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
            finding = scan_process(dir_fd, table)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited during the scan
        except OSError:  # EACCES/EPERM, and anything odd: not seen, so counted
            unreadable += 1
            continue
        finally:
            os.close(dir_fd)
        scanned += 1
        if finding is not None:
            finding.pid = pid
            findings.append(finding)
    return Scan(findings, scanned, unreadable)


# ---- report ----------------------------------------------------------------------------


class Group(_Record):
    """Processes with the same argument list and the deleted files they use."""

    __slots__ = ("argv", "pids", "files")


def group_by_argv(findings):
    """Group findings by their exact argument list, in a stable order."""
    groups = {}
    for finding in findings:
        group = groups.get(tuple(finding.argv))
        if group is None:
            group = groups[tuple(finding.argv)] = Group(list(finding.argv), [], {})
        group.pids.append(finding.pid)
        group.files.update(finding.files)
    result = []
    for group in groups.values():
        group.pids.sort()
        group.files = sorted(group.files)
        result.append(group)
    result.sort(key=lambda g: (g.argv, g.pids))
    return result


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


def render_text(groups, verbose=False, showlibs=False):
    """One line per group: `PIDS "ARGV"`, or `N processes "ARGV"` past five PIDs."""
    lines = []
    for group in groups:
        if len(group.pids) > 5 and not verbose:
            head = plural(len(group.pids), "process")
        else:
            head = ",".join(map(str, group.pids))
        line = '%s "%s"' % (head, format_argv(group.argv))
        if showlibs:
            line += " uses " + ",".join(escape(path) for path in group.files)
        lines.append(line)
    return "".join(line + "\n" for line in lines)


def _escape_field(text):
    """escape(), and also the separators of the machine-readable format."""
    return escape(text).replace(",", "\\x2c").replace(";", "\\x3b")


def render_machine(groups):
    """`PIDS;FILES;ARGV` per group, every PID listed (the format of lib_users 0.x)."""
    return "".join(
        "%s;%s;%s\n" % (",".join(map(str, g.pids)),
                        ",".join(_escape_field(p) for p in g.files),
                        format_argv(g.argv))
        for g in groups)


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
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, int) or value == value else "null"
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


def render_json(groups, scan_result):
    """One JSON document: the groups, and whether the scan saw every process."""
    doc = {
        "version": __version__,
        "complete": scan_result.complete,
        "unreadable": scan_result.unreadable,
        "groups": [{"argv": g.argv, "pids": g.pids, "files": g.files} for g in groups],
    }
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


def run(options):
    """Scan and print as `options` say; returns the exit status."""
    table = ignore_table(options.patterns, options.literals)
    try:
        result = scan(options.proc, table)
    except OSError as err:
        warn("cannot read %s: %s" % (escape(options.proc), err.strerror or err))
        return 1
    if result.scanned == 0 and result.unreadable == 0:
        warn("no processes found in %s; is procfs mounted there?" % escape(options.proc))
        return 1
    groups = group_by_argv(result.findings)
    if options.json:
        text = render_json(groups, result)
    elif options.machine:
        text = render_machine(groups)
    else:
        text = render_text(groups, options.verbose, options.showlibs)
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


if __name__ == "__main__":
    sys.exit(main())
