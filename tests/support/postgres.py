"""A real PostgreSQL server for the tests: initdb into a temporary directory, started on a
loopback port, stopped at the end. Missing server binaries fail the run: `.ci/run` installs
Debian's `postgresql` package."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.apps import free_port


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: apt-get install postgresql (the CI script does)"
        )
    return Path(candidates[-1]).parent


@dataclass
class Postgres:
    port: int
    datadir: Path
    bindir: Path
    user: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/shop"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, text=True)

    @classmethod
    def start(cls) -> Postgres:
        bindir = _bindir()
        as_root = os.geteuid() == 0
        user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name
        datadir = Path(tempfile.mkdtemp(prefix="otel-perf-pg-"))
        if as_root:
            shutil.chown(datadir, user)
        server = cls(free_port(), datadir, bindir, user)
        server._run(
            str(bindir / "initdb"), "-D", str(datadir / "data"), "-U", user, "--auth=trust", "-E", "UTF8"
        )
        # jit=off: asyncpg's first query on a new connection introspects types (pg_sleep's void)
        # with a query PostgreSQL may JIT-compile, ~60 ms inside the app's query span; asyncpg's
        # documentation recommends it off.
        options = f"-p {server.port} -c listen_addresses=127.0.0.1 -k {datadir} -c fsync=off -c jit=off"
        server._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir / "data"),
            "-o",
            options,
            "-l",
            str(datadir / "log"),
            "-w",
            "start",
        )
        server._run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", user, "shop")
        return server

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", "immediate", "stop"
            )
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)
