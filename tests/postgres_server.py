"""A real, private PostgreSQL server for the test session: initdb into a temp dir, a Unix socket only.

No system service, no TCP port (parallel test runs on one machine cannot collide), durability switched off
(the cluster is thrown away). As root, the server runs as the `postgres` user (PostgreSQL refuses root);
Debian's `postgresql` package creates that user, and `scripts/test` installs the package when missing.

Each test gets its own schema (`new_database_url`), so tests never see each other's rows and nothing has
to be cleaned between them.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PORT = 5432  # only names the socket file inside our private directory
INSTALL_HINT = "sudo apt-get install -y postgresql"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server programs are not installed here."""


def find_bindir() -> Path:
    """Where `initdb`, `pg_ctl` and `postgres` live: PATH first, then Debian's versioned folders (newest)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise PostgresUnavailable(f"PostgreSQL's initdb was not found: {INSTALL_HINT}")
    return Path(candidates[-1]).parent


class PostgresServer:
    """`start()` once, `stop()` once; `url` connects as the superuser over the socket."""

    def __init__(self, root: Path | None = None) -> None:
        self._bindir = find_bindir()
        self.root = Path(root or tempfile.mkdtemp(prefix="tutor-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log_file = self.root / "server.log"
        self._run_as: list[str] = []
        self._schemas = itertools.count(1)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={PORT}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root needs runuser(1) to start PostgreSQL as 'postgres'")
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = (f"-k {self.socket_dir} -p {PORT} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    async def new_database_url(self) -> str:
        """A fresh, empty schema, and the URL whose connections use it (search_path as a server setting)."""
        import asyncpg

        schema = f"test_{os.getpid()}_{next(self._schemas)}"
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
        finally:
            await conn.close()
        return f"{self.url}&search_path={schema}"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [*self._run_as, str(self._bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{log}")
