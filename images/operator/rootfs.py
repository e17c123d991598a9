"""Assemble the operator image's root filesystem: just enough to run ``retune operator``.

Run in the build stage of the repository's ``Dockerfile`` with the Python that owns the
venv (``python3 rootfs.py /opt/retune/venv /rootfs``); the final stage is ``FROM scratch``
with this directory as its only content. What goes in, at the same paths as in the build
stage (a venv and the interpreter find each other by path):

- the venv (retune and its dependencies; no pip, setuptools or wheel),
- the interpreter the venv points at, and its standard library minus what a server never
  imports (tests, ensurepip, idle, tkinter, the static libpython, site-packages),
- every shared library that ``ldd`` finds for the interpreter and each extension module,
  with the dynamic loader,
- /etc/passwd and /etc/group with the user 65532, the CA bundle, and an empty /tmp.

No shell, no package manager: nothing in the image can install or run anything but Python.
Bytecode is compiled ahead (unchecked-hash .pyc files), since the root filesystem is
read-only at run time. Works on Debian's python3 (/usr/bin, /usr/lib/python3.11) and on
the official python images (/usr/local), since every path is asked of the interpreter.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

USER = 65532
# Parts of the standard library an operator never imports; the test suite alone is ~30 MB.
STDLIB_SKIP = {
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip",
    "lib2to3", "site-packages", "dist-packages", "__phello__", "pydoc_data",
}  # fmt: skip
# pip and setuptools (pkg_resources is part of it) have no business at run time; test
# suites shipped in wheels are never imported.
VENV_SKIP = {"pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources", "tests"}
# The Kubernetes client's asyncio copy (kubernetes.aio, ~70 MB with bytecode): kopf talks to
# the API with aiohttp itself and retune uses the synchronous client; nothing imports it.
VENV_SKIP_PATHS = {"site-packages/kubernetes/aio"}
CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


class Tree:
    """A root filesystem being filled from the running system, path for path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def at(self, path: Path) -> Path:
        """Where ``path`` goes under the root: its parent's real path, so writes never
        follow a symlink that was already recreated there."""
        return self.root / Path(os.path.realpath(path.parent)).relative_to("/") / path.name

    def directory(self, path: Path) -> None:
        """Make ``path`` exist, recreating any symlink on the way (/lib -> usr/lib)."""
        if path == Path("/"):
            return
        self.directory(path.parent)
        target = self.at(path)
        if target.is_symlink() or target.exists():
            return
        if path.is_symlink():
            link = os.readlink(path)
            target.symlink_to(link)
            self.directory(Path(os.path.normpath(Path(os.path.realpath(path.parent)) / link)))
        else:
            target.mkdir()

    def copy(self, path: str | Path) -> None:
        """Copy ``path`` to the same place, a symlink as a symlink and its target too, so
        ``/usr/bin/python3 -> python3.11`` arrives whole."""
        source = Path(path)
        self.directory(source.parent)
        target = self.at(source)
        if target.is_symlink() or target.exists():
            return
        if source.is_symlink():
            link = os.readlink(source)
            target.symlink_to(link)
            self.copy(os.path.normpath(Path(os.path.realpath(source.parent)) / link))
        elif source.is_dir():
            shutil.copytree(source, target, symlinks=True)
            self.follow_links(target)
        else:
            shutil.copy2(source, target)

    def copy_tree(self, source: Path, skip: set[str]) -> Path:
        """Copy a directory tree, leaving out names in ``skip``; returns where it went."""

        def ignore(directory: str, names: list[str]) -> set[str]:
            return {
                n
                for n in names
                if n in skip
                or n.endswith((".a", ".exe"))
                or any(f"{directory}/{n}".endswith(path) for path in VENV_SKIP_PATHS)
            }

        source = Path(os.path.realpath(source))
        self.directory(source.parent)
        target = self.at(source)
        shutil.copytree(source, target, symlinks=True, ignore=ignore, dirs_exist_ok=True)
        self.follow_links(target)
        return target

    def follow_links(self, tree: Path) -> None:
        """Bring in what the symlinks in a copied tree point at (Debian's stdlib links
        sitecustomize.py into /etc/python3.11)."""
        for link in [p for p in tree.rglob("*") if p.is_symlink()]:
            original = Path("/") / link.relative_to(self.root)
            self.copy(os.path.normpath(original.parent / os.readlink(link)))


def shared_libraries(files: list[Path]) -> set[str]:
    """The libraries (and the loader) that ldd resolves for these ELF files."""
    found: set[str] = set()
    for path in files:
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        output = result.stdout + result.stderr
        if "not a dynamic executable" in output or "statically linked" in output:
            continue
        missing = [line.strip() for line in output.splitlines() if "not found" in line]
        if missing:
            sys.exit(f"rootfs.py: {path} needs libraries that are not installed: {missing}")
        found.update(match.group(1) for match in LDD_LINE.finditer(output))
    return found


def write_accounts(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"retune:x:{USER}:{USER}:retune:/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nretune:x:{USER}:\n")


def compile_bytecode(directory: Path, root: Path) -> None:
    """Compile every module ahead, recording the path it has in the image, not in ``root``."""
    compileall.compile_dir(
        directory,
        ddir=str(Path("/") / directory.relative_to(root)),
        quiet=1,
        force=True,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def main() -> None:
    venv, root = Path(sys.argv[1]), Path(sys.argv[2])
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tree = Tree(root)

    # The venv, then the interpreter through the venv's symlinks (bin/python3 ->
    # /usr/bin/python3 -> python3.11) and the standard library it finds by path.
    image_venv = tree.copy_tree(venv, VENV_SKIP | {"__pycache__"})
    for pattern in ("pip*", "setuptools*", "wheel*", "distutils-precedence.pth"):
        for leftover in image_venv.glob(f"lib/python*/site-packages/{pattern}"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    for script in (image_venv / "bin").iterdir():
        if script.name.startswith(("pip", "activate", "Activate", "wheel")):
            script.unlink()
    interpreter = Path(os.path.realpath(venv / "bin" / "python3"))
    tree.copy(interpreter)
    stdlib = tree.copy_tree(Path(sysconfig.get_paths()["stdlib"]), STDLIB_SKIP | {"__pycache__"})
    dynload = Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload"
    if dynload.is_dir() and not tree.at(dynload).exists():
        tree.copy_tree(dynload, set())

    elf = [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    originals = [interpreter, *(Path("/") / p.relative_to(root) for p in elf)]
    for library in sorted(shared_libraries(originals)):
        tree.copy(library)

    write_accounts(root)
    bundle = next((b for b in CA_BUNDLES if Path(b).is_file()), None)
    if bundle is None:
        sys.exit("rootfs.py: no CA bundle in the build stage (install ca-certificates)")
    tree.copy(bundle)
    tmp = root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)

    compile_bytecode(stdlib, root)
    compile_bytecode(image_venv, root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"rootfs.py: {root} holds {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
