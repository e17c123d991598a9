"""What a real node changes on this host, recorded before it starts and put back after.

A kubelet, kube-proxy, containerd and the CNI bridge change the machine they run on:
sysctls (``vm.overcommit_memory``, ``kernel.panic``, ``net.ipv4.ip_forward``...),
iptables chains in several tables, cgroups in every hierarchy, mounts (container root
filesystems, network namespaces, tmpfs volumes), a bridge and veth interfaces, and state
directories outside their own (``/run/containerd``, ``/var/lib/cni``...).

:class:`HostRecord` is written to a fixed file *before* the first change, so that whoever
comes next — the same session's teardown, its ``atexit`` hook, or the next session after a
``kill -9`` — can put the host back with :func:`restore`. The restore is idempotent and
never raises: each step says what it could not undo instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/retune-node")
RECORD_FILE = STATE_DIR / "host-record.json"

# The settings the kubelet (vm.*, kernel.*), the bridge plugin (ip_forward) and kube-proxy
# (route_localnet, bridge-nf, conntrack) may write.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.ipv6.conf.default.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
)
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
# Directories outside the node's work directory that its components create; removed
# after the node stops if they were not there before it started.
HOST_PATHS = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/run/netns",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# How long a restore waits for killed processes to exit and their cgroups to empty.
KILL_SECONDS = 30.0
KUBEPODS = "kubepods"


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _iptables_dump(command: str) -> dict[str, str]:
    """Each table's rules as ``iptables-save`` prints them ("" for an absent table)."""
    dumps = {}
    for table in IPTABLES_TABLES:
        result = _run([f"{command}-save", "-t", table])
        dumps[table] = result.stdout if result.returncode == 0 else ""
    return dumps


@dataclass
class HostRecord:
    """The host as it was before a node started, and what that node owns."""

    workdir: str
    sysctls: dict[str, str | None] = field(default_factory=dict)
    iptables: dict[str, dict[str, str]] = field(default_factory=dict)
    existing_paths: list[str] = field(default_factory=list)
    existing_cgroups: list[str] = field(default_factory=list)
    existing_links: list[str] = field(default_factory=list)
    existing_netns: list[str] = field(default_factory=list)
    existing_mounts: list[str] = field(default_factory=list)
    bridge: str = "cni0"
    containerd_socket: str = ""
    pid: int = 0

    @classmethod
    def take(cls, workdir: Path, bridge: str, containerd_socket: Path) -> HostRecord:
        """Read everything a node may change."""
        return cls(
            workdir=str(workdir),
            sysctls={key: _read(_sysctl_path(key)) for key in SYSCTLS},
            iptables={cmd: _iptables_dump(cmd) for cmd in ("iptables", "ip6tables")},
            existing_paths=[path for path in HOST_PATHS if os.path.lexists(path)],
            existing_cgroups=[str(path) for path in _kubepods_cgroups()],
            existing_links=_links(),
            existing_netns=_netns(),
            existing_mounts=_mount_points(),
            bridge=bridge,
            containerd_socket=str(containerd_socket),
            pid=os.getpid(),
        )

    def save(self) -> None:
        """Written before the node changes anything: a crash after this can be undone."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        temporary = RECORD_FILE.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, RECORD_FILE)

    @classmethod
    def load(cls) -> HostRecord | None:
        try:
            return cls(**json.loads(RECORD_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _kubepods_cgroups() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        candidate = hierarchy / KUBEPODS
        if candidate.is_dir():
            found.append(candidate)
    return found


def _links() -> list[str]:
    return sorted(path.name for path in Path("/sys/class/net").iterdir())


def _netns() -> list[str]:
    """Named network namespaces, each once: ``/var/run`` is usually a link to ``/run``."""
    found = {}
    for directory in ("/run/netns", "/var/run/netns"):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                found.setdefault(os.path.realpath(path), path)
    return sorted(found.values())


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        # mountinfo escapes spaces and the like as octal
        points.append(fields[4].encode().decode("unicode_escape"))
    return points


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (the node's own shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_tree(root: Path) -> list[Path]:
    """Every cgroup under ``root``, deepest first."""
    tree = [Path(dirpath) for dirpath, _, _ in os.walk(root)]
    return sorted(tree, key=lambda path: len(path.parts), reverse=True)


def _node_processes(record: HostRecord, cgroups: list[Path]) -> list[int]:
    """Pids of the node still alive: in its kubepods cgroups, or naming its directories."""
    pids = set()
    for cgroup in cgroups:
        for path in _cgroup_tree(cgroup):
            pids.update(int(pid) for pid in (_read(path / "cgroup.procs") or "").split())
    pids.update(_processes_with(record.workdir))
    if record.containerd_socket:
        pids.update(_processes_with(record.containerd_socket))
    pids.discard(os.getpid())
    return sorted(pid for pid in pids if not _is_zombie(pid))


def _is_zombie(pid: int) -> bool:
    """A zombie holds no cgroup and no mount: only its parent can reap it."""
    status = _read(Path(f"/proc/{pid}/stat")) or ""
    return status.rpartition(")")[2].split()[:1] == ["Z"]


def _remove_cgroup_tree(root: Path) -> str:
    """Remove ``root`` and its children, deepest first; a cgroup stays busy for a moment
    after its last process exits. Returns what could not be removed ("" when done)."""
    deadline = time.monotonic() + KILL_SECONDS
    while True:
        failure = ""
        for path in _cgroup_tree(root):
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError as error:
                failure = f"could not remove cgroup {path}: {error}"
                break
        if not failure or time.monotonic() > deadline:
            return failure
        time.sleep(0.2)


def restore(record: HostRecord) -> list[str]:
    """Put the host back as ``record`` found it. Returns what could not be undone."""
    problems: list[str] = []
    workdir = record.workdir

    # 1. Nothing of the node may keep running: its containers (in the kubepods cgroups),
    #    their shims, and the node's own daemons (their command lines name the workdir).
    #    A killed process leaves its cgroup and its mounts only once it has exited, which
    #    takes a moment after SIGKILL (longer on a loaded machine, and right after the
    #    session that owned them was killed, its daemons are still shutting down): kill
    #    until nothing is left, for up to KILL_SECONDS.
    new_cgroups = [p for p in _kubepods_cgroups() if str(p) not in record.existing_cgroups]
    deadline = time.monotonic() + KILL_SECONDS
    while True:
        alive = _node_processes(record, new_cgroups)
        if not alive:
            break
        if time.monotonic() > deadline:
            problems.append(f"processes of the node still running after SIGKILL: {alive[:10]}")
            break
        _kill(alive)
        time.sleep(0.2)

    # 2. Mounts under the node's directories, deepest first (lazily: a busy one goes when
    #    its last user does).
    owned = [workdir, "/run/containerd", "/var/lib/kubelet", "/var/run/netns", "/run/netns"]
    for point in sorted(_mount_points(), key=len, reverse=True):
        inside = any(point == root or point.startswith(root + "/") for root in owned)
        if inside and point not in record.existing_mounts:
            result = _run(["umount", "-l", point])
            if result.returncode != 0 and os.path.ismount(point):
                problems.append(f"could not unmount {point}: {result.stderr.strip()}")

    # 3. Network: the bridge and every veth the node made, its network namespaces.
    for name in _links():
        if name not in record.existing_links:
            _run(["ip", "link", "delete", name])
    for path in _netns():
        if path not in record.existing_netns:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue  # gone with its namespace's last user
            except OSError as error:
                problems.append(f"could not remove {path}: {error}")

    # 4. iptables: tables as they were; a table that was empty is emptied.
    for command, tables in record.iptables.items():
        for table, dump in tables.items():
            if dump.strip():
                result = _run([f"{command}-restore", "-w"], stdin=dump)
                if result.returncode != 0:
                    problems.append(f"{command}-restore of {table}: {result.stderr.strip()}")
            else:  # it was not there: its chains and rules go, then the table itself
                _run([command, "-w", "-t", table, "-F"])
                _run([command, "-w", "-t", table, "-X"])
                if shutil.which("nft"):
                    family = "ip" if command == "iptables" else "ip6"
                    _run(["nft", "delete", "table", family, table])

    # 5. sysctls.
    for key, value in record.sysctls.items():
        if value is None:
            continue
        path = _sysctl_path(key)
        if _read(path) != value:
            try:
                path.write_text(value)
            except OSError as error:
                problems.append(f"could not restore {key}={value}: {error}")

    # 6. cgroups the node created (empty now), deepest first.
    for cgroup in new_cgroups:
        problem = _remove_cgroup_tree(cgroup)
        if problem:
            problems.append(problem)

    # 7. Directories: the node's own, and those it created on the host.
    for path in HOST_PATHS:
        if path not in record.existing_paths and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return problems


def restore_recorded() -> list[str]:
    """Undo what a previous node left behind (after a crash), if it left a record."""
    record = HostRecord.load()
    if record is None:
        return []
    problems = restore(record)
    if not problems:
        RECORD_FILE.unlink(missing_ok=True)
    return problems
