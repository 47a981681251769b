"""A local ``chroma run`` server (the chromadb wheel's), for the demo, the benchmark and the tests:
started in about a second, offline, stopped gracefully or killed, and started again on the same
data and port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chroma_executable() -> str:
    """``chroma`` beside this Python (the virtual environment's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("chroma")
    return str(candidate) if candidate.exists() else "chroma"


class LocalChroma:
    """A ``chroma run`` process with its data in ``path`` and its output in a log file beside it."""

    def __init__(self, path: Path | str, port: int | None = None, executable: str | None = None):
        self.path = Path(path)
        self.port = port or free_port()
        self.executable = executable or chroma_executable()
        self.log_path = self.path.parent / f"chroma-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LocalChroma:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.executable, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.path.parent,  # 0.6.x writes chroma.log into its working directory
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.proc.returncode} (see {self.log_path})")
            try:
                with urllib.request.urlopen(self.url + "/api/v2/heartbeat", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop(signal.SIGKILL)
                    raise RuntimeError(f"chroma run did not answer its heartbeat (see {self.log_path})") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM shuts down gracefully (open keep-alive connections are served first); SIGKILL
        is a crash, cutting every connection at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> LocalChroma:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
