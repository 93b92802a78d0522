"""Deployment with real Flower processes: one SuperLink, one SuperNode per site, ``flwr run``.

Across hospitals (one SuperLink reachable by every site; each site runs a SuperNode next to its
data; the spec's JSON file at the same path wherever the ServerApp runs)::

    # server machine (TLS: the CA certificate, and the server's certificate and key)
    flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key \\
        --port 9093
    # each site's machine, pointing at its own data
    flower-supernode --root-certificates ca.crt --superlink SERVER:9093 \\
        --node-config "site='site-1' data-root='/data/site-1' split-file='/data/site-1/split.json'"
    # anywhere with the SuperLink connection in $FLWR_HOME/config.toml:
    #   [superlink] default = "hospitals"
    #   [superlink.hospitals] address = "SERVER:9093"  root-certificates = "ca.crt"
    flwr run APP_DIR --run-config "spec='/shared/spec.json'" --stream

``APP_DIR`` is the folder :func:`write_app` writes (a ``pyproject.toml`` naming
:data:`cogimg.paradigms.federated.app.server_app` / ``client_app``; cogimg must be installed
where the apps run). ``--insecure`` in place of the certificate options turns TLS off, as
:class:`LocalFederation` does on 127.0.0.1 (tests, demos). Flower's SuperNode authentication
(``--enable-supernode-auth`` and key pairs) restricts which sites may join.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from cogimg.paradigms.federated.app import write_spec

APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "cogimg-federated"
version = "1.0.0"
description = "cogimg federated training (FedAvg, FedProx, FedBN, SiloBN) on Flower"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "cogimg"

[tool.flwr.app.components]
serverapp = "cogimg.paradigms.federated.app:server_app"
clientapp = "cogimg.paradigms.federated.app:client_app"

[tool.flwr.app.config]
spec = ""
"""


def write_app(folder: str | os.PathLike) -> Path:
    """Write the Flower app (its ``pyproject.toml``) into ``folder``; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_TOML, encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text(encoding='utf-8', errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s") from None
            time.sleep(0.2)


class LocalFederation:
    """SuperLink + one SuperNode per site as subprocesses on 127.0.0.1, without TLS.

    Use as a context manager; :meth:`run` submits a spec with ``flwr run`` and waits for it.
    Logs are in ``workdir/<process>.log``.

    Args:
        sites: node configs by site (``{"site-1": {}, …}``; ``data-root``/``split-file`` optional).
        workdir: folder for logs, the app, the spec and ``FLWR_HOME`` (a temporary one if ``None``).
        timeout_s: longest wait for a process to start and for a run to finish.
    """

    def __init__(self, sites: Mapping[str, Mapping[str, str]], workdir: str | os.PathLike | None = None,
                 timeout_s: float = 600.0) -> None:
        self.sites = {str(s): dict(c) for s, c in sites.items()}
        self._tmp = None if workdir else tempfile.mkdtemp(prefix="cogimg-flower-")
        self.workdir = Path(workdir or self._tmp)
        self.timeout_s = float(timeout_s)
        self.processes: list[subprocess.Popen] = []
        self.port = 0
        self.bin = Path(sys.executable).parent
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr-home"),
                    "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _start(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(self.bin / args[0]), *args[1:]], stdout=out,
                                       stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        self.processes.append(process)
        return process

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{self.port}"\n'
            "insecure = true\n", encoding="utf-8")
        try:
            link = self._start("superlink", ["flower-superlink", "--insecure", "--port", str(self.port),
                                             "--database", ":flwr-in-memory:"])
            _wait_for_port(self.port, self.timeout_s, link, self.workdir / "superlink.log")
            for site, config in self.sites.items():
                node_config = " ".join(f"{k}={v!r}" for k, v in {"site": site, **config}.items())
                self._start(f"supernode-{site}", [
                    "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                    "--port", str(free_port()), "--node-config", node_config])
        except BaseException:
            self.close()
            raise
        return self

    def run(self, spec: Mapping) -> subprocess.CompletedProcess:
        """Submit ``spec`` (its ``sites`` must be this federation's) and wait until it ends."""
        if set(spec["sites"]) != set(self.sites):
            raise ValueError(f"spec sites {sorted(spec['sites'])} ≠ federation sites {sorted(self.sites)}")
        path = write_spec(spec, self.workdir / "spec.json")
        app = write_app(self.workdir / "app")
        done = subprocess.run([str(self.bin / "flwr"), "run", str(app), "local", "--stream",
                               "--run-config", f"spec={str(path)!r}"], env=self.env, cwd=self.workdir,
                              check=False, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=self.timeout_s)
        (self.workdir / "flwr-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            raise RuntimeError(f"flwr run failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        return done

    def close(self) -> None:
        """Stop every process this federation started (SuperNodes first)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()
