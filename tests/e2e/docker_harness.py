"""A hermetic Docker engine for the test suite.

Image registries are unreachable here, so the images the project's Dockerfile and compose file
name are made locally and tagged with the upstream names inside a private engine:

- ``python:3.11-slim``: Debian bookworm (Python 3.11) from ``debootstrap --variant=minbase``, with
  python3, venv, pip and the host's CA certificates and global pip configuration (without them pip
  cannot reach the package index from inside);
- ``postgres:16``: that base plus Debian's PostgreSQL (15), an entrypoint honouring POSTGRES_DB,
  POSTGRES_USER and POSTGRES_PASSWORD as the upstream image does;
- ``chromadb/chroma:1.5.9``: that base plus the chromadb wheel, running ``chroma run`` on /data.

The engine is Debian's ``dockerd`` with its own socket, data root and exec root in a temporary
directory, stopped by PID afterwards; the iptables rules and bridges it adds are removed again.
The base image and the stand-ins are built once and cached (``docker save``) in DOCKER_TEST_CACHE
(default ~/.cache/chroma-backup-docker), keyed by the content of their recipes.

Run alone: ``pytest -m system``; by hand: ``python tests/e2e/docker_harness.py shell`` prints a
DOCKER_HOST to use while it keeps an engine running.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "docker"  # the stand-in images
CACHE = Path(os.environ.get("DOCKER_TEST_CACHE", Path.home() / ".cache" / "chroma-backup-docker"))
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_TAG = "python:3.11-slim"
STANDINS = {"postgres:16": HERE / "postgres", "chromadb/chroma:1.5.9": HERE / "chroma"}
TOOLS = {
    "dockerd": "docker.io",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
    "docker-compose": "docker-compose",
}


def run(
    *args: str, check: bool = True, env: dict | None = None, timeout: float = 1800, **kw
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def install_tools() -> None:
    """Debian's docker.io, iptables, debootstrap and docker-compose, when missing (root only)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        run("apt-get", "update", "-qq")
        run(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            *missing,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )


class Engine:
    """A private dockerd; ``env`` points the docker CLI and docker-compose at it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dk", dir="/tmp"))  # short: the socket path must fit
        self.socket = self.root / "docker.sock"
        self.env = {"DOCKER_HOST": f"unix://{self.socket}"}
        self.proc: subprocess.Popen | None = None
        self._rules: dict[str, str] = {}
        self._bridges: set[str] = set()

    def __enter__(self) -> Engine:
        for tool in ("iptables", "ip6tables"):
            saved = subprocess.run([f"{tool}-save"], capture_output=True, text=True)
            if saved.returncode == 0:
                self._rules[tool] = saved.stdout
        self._bridges = _bridges()
        log = open(self.root / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "-H",
                f"unix://{self.socket}",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "--storage-driver=overlay2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dockerd did not start:\n" + (self.root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pid = (
                int((self.root / "dockerd.pid").read_text()) if (self.root / "dockerd.pid").exists() else self.proc.pid
            )
            for container in self.docker("ps", "-q", check=False).stdout.split():
                self.docker("kill", container, check=False)
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        for tool, rules in self._rules.items():  # exactly the rules there were before
            subprocess.run([f"{tool}-restore"], input=_with_empty_tables(rules), text=True, capture_output=True)
        for bridge in _bridges() - self._bridges:
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        for mount in _mounts_under(self.root):  # e.g. exec/netns/default, overlay mounts
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def docker(self, *args: str, check: bool = True, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
        return run("docker", *args, check=check, env=self.env, timeout=timeout, **kw)

    def compose(
        self, project_dir: Path, project: str, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        return run("docker-compose", "-p", project, *args, check=check, env=self.env, timeout=timeout, cwd=project_dir)

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    # -- images ---------------------------------------------------------------------------------

    def load_or_build(self) -> None:
        """The base image and the stand-ins, from the cache or built (then cached)."""
        CACHE.mkdir(parents=True, exist_ok=True)
        recipe = hashlib.sha256((inspect.getsource(_build_base) + MIRROR).encode()).hexdigest()[:12]
        base = CACHE / f"base-{recipe}.tar"
        if not base.exists():
            _build_base(base)
        self.docker("import", str(base), BASE_TAG, "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]')
        for tag, recipe in STANDINS.items():
            saved = CACHE / f"{tag.replace('/', '_').replace(':', '-')}-{_digest(recipe, base)}.tar"
            if saved.exists():
                self.docker("load", "-i", str(saved))
                continue
            self.docker("build", "--network", "host", "-t", tag, str(recipe))
            self.docker("save", "-o", str(saved), tag)
            for old in CACHE.glob(f"{tag.replace('/', '_').replace(':', '-')}-*.tar"):
                if old != saved:
                    old.unlink()


_EMPTY_TABLES = {
    "filter": ":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
    "nat": ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
}


def _with_empty_tables(saved: str) -> str:
    """``saved`` plus an empty block for each table dockerd writes that ``saved`` does not
    mention: iptables-restore only resets the tables its input names."""
    extra = "".join(
        f"*{table}\n{chains}COMMIT\n" for table, chains in _EMPTY_TABLES.items() if f"*{table}\n" not in saved
    )
    return saved + extra


def _mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root) + "/")]
    return sorted(points, key=len, reverse=True)


def _bridges() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            h.update(file.name.encode() + file.read_bytes() if file.suffix != ".tar" else file.name.encode())
    return h.hexdigest()[:12]


def _build_base(target: Path) -> None:
    """debootstrap bookworm + python3, venv, pip, CA certificates; saved as a rootfs tarball."""
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs", dir="/tmp"))
    try:
        run("debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR, timeout=900)
        certs = rootfs / "usr/local/share/ca-certificates"
        certs.mkdir(parents=True, exist_ok=True)
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(cert, certs / cert.name)
        if Path("/etc/pip.conf").exists():
            shutil.copy("/etc/pip.conf", rootfs / "etc/pip.conf")
        chroot = ["chroot", str(rootfs), "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive"]
        run(*chroot, "apt-get", "update", "-qq", timeout=600)
        run(
            *chroot,
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "python3",
            "python3-venv",
            "python3-pip",
            "ca-certificates",
            timeout=900,
        )
        run(*chroot, "update-ca-certificates")
        run(*chroot, "apt-get", "clean")
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for name, points_to in (("python", "python3"), ("pip", "pip3")):
            link = rootfs / "usr/local/bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(f"/usr/bin/{points_to}")
        for bulk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):  # as -slim does
            shutil.rmtree(rootfs / bulk, ignore_errors=True)
            (rootfs / bulk).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        run("tar", "-C", str(rootfs), "-cf", str(partial), ".")
        partial.rename(target)
        for old in target.parent.glob("base-*.tar"):
            if old != target:
                old.unlink()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


if __name__ == "__main__":
    install_tools()
    with Engine() as engine:
        engine.load_or_build()
        print(f"export DOCKER_HOST={engine.env['DOCKER_HOST']}   # Ctrl-C stops the engine and cleans up", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
