"""The one owner of local server processes: tier servers, routers, benchmark relays.

    server = ServerProcess("tier bf16", tier_command(spec), spec.address, log=Path("bf16.log")).start()
    server.wait_serving(timeout=300)
    ...
    server.stop()            # SIGTERM, the server drains; then SIGKILL whatever is left of its group

Each server runs in its own session and process group, so a terminal's Ctrl-C
reaches only the process that started it (which then drains the server), and
the server's own children (vLLM's EngineCore and workers) can always be found
and killed through the group. Every way a server ends goes through `_reap`,
which kills the rest of the group before the leader is reaped: no engine
process outlives its tier, whether the tier was stopped, crashed or was
killed with -9. PR_SET_PDEATHSIG sends the server SIGTERM if whoever started
it dies, even by SIGKILL, so it drains and stops its engine then. It is set by
util-linux's `setpriv --pdeathsig` in front of the server's command (the flag
survives exec), not by a preexec_fn: Python runs a preexec_fn after a full
fork(), and a child forked from a process whose gRPC threads are busy crashes
there about one time in three (SIGSEGV before exec).
"""

from __future__ import annotations

import contextlib
import shutil
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import ClientTLS
from mesh.tls import open_channel

REPO = Path(__file__).resolve().parent.parent
# Every server started through `local_env` carries the pid of the process that started the mesh
# (the launcher, a benchmark, pytest), so leftovers can be found even after they lost their parent.
OWNER_ENV = "QARR_STARTED_BY"
# Time a server gets after its drain (notice + grace) to stop its engine and exit before its group is
# killed. By then every stream has ended, so a kill loses nothing; vLLM CPU's own engine shutdown takes
# 1-4 s. With the default 1 s notice the group is killed at grace + 2 s, which leaves 3 s of the
# launcher's grace + 5 s for the kill to take effect (1.5-2.5 s for a vLLM tier on a loaded 2-core machine).
SHUTDOWN_MARGIN_S = 1.0

SERVING = health_pb2.HealthCheckResponse.SERVING
SETPRIV = shutil.which("setpriv")  # util-linux; absent: servers do not die with their starter


class ServerExited(RuntimeError):
    """The server process ended before it said SERVING."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_env(**extra: str) -> dict[str, str]:
    """Environment for servers started from this checkout: its code first, offline, no CPU pinning,
    vLLM caches inside the project (see ENGINE_NOTES.md), and the owner marker."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "protos"), os.environ.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache/vllm"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache/inductor"))
    env.setdefault(OWNER_ENV, str(os.getpid()))
    env.update(extra)
    return env


def with_pdeathsig(argv: Sequence[str]) -> list[str]:
    """`argv` run so that it gets SIGTERM when the thread that starts it dies (PR_SET_PDEATHSIG)."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv] if SETPRIV else list(argv)


def is_serving(address: str, timeout: float = 1.0, service: str = "", tls: ClientTLS | None = None) -> bool:
    """One grpc.health.v1 Check: True when the server at `address` answers SERVING (over TLS with `tls`)."""
    with open_channel(address, tls, aio=False) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return resp.status == SERVING


def describe_exit(code: int) -> str:
    """'code 1', or 'SIGKILL' for a process ended by a signal."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"code {code}"


class ServerProcess:
    """One server process (and its process group).

    `log`: a file the server's stdout and stderr are appended to, or None to inherit ours.
    `stop_timeout_s`: how long `stop` waits after SIGTERM before it kills the group
    (the server's drain grace plus its notice, plus a margin to stop its engine).
    `health_address` and `tls`: where and how its health is checked (default: `address`, plaintext).
    Start it from a thread that outlives it: PR_SET_PDEATHSIG follows the starting thread.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        address: str = "",
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
        stop_timeout_s: float = 10.0 + SHUTDOWN_MARGIN_S,
        health_address: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.name = name
        self.health_address = health_address
        self.tls = tls
        self.argv = list(argv)
        self.address = address
        self.log = Path(log) if log else None
        self.env = env
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.started_at = 0.0
        self.starts = 0

    def __repr__(self) -> str:
        return f"ServerProcess({self.name!r}, pid={self.pid}, address={self.address!r})"

    # ---------------------------------------------------------------- start

    def start(self) -> ServerProcess:
        """Start (or start again, after it ended) in a new session; returns self."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab") if self.log else None
        try:
            self.proc = subprocess.Popen(
                with_pdeathsig(self.argv),
                env=self.env if self.env is not None else local_env(),
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out:
                out.close()
        self.returncode = None
        self.started_at = time.monotonic()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        """Started and not yet ended (an ended process is reaped, and its group killed, here)."""
        return self.proc is not None and self.exit_code() is None

    # ---------------------------------------------------------------- state

    def exit_code(self) -> int | None:
        """The exit code (negative: the signal) once the process ended, else None.
        When the process has ended, whatever is left of its group is killed first."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        try:
            ended = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            ended = True
        if ended is None:
            return None
        return self._reap()

    def _reap(self) -> int:
        """The leader has ended: kill the rest of its group while the unreaped leader still holds
        the group's id (so it cannot name another group), then reap the leader."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.wait()
        return self.returncode

    def is_serving(self, timeout: float = 1.0) -> bool:
        address = self.health_address or self.address
        return bool(address) and is_serving(address, timeout, tls=None if self.health_address else self.tls)

    def wait_serving(self, timeout: float = 60.0, poll_s: float = 0.25) -> ServerProcess:
        """Wait for grpc.health.v1 SERVING. ServerExited if the process ends first; TimeoutError after
        `timeout`, having stopped the server (a server that never came up is not left running)."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise ServerExited(f"{self.name} exited with {describe_exit(code)} before SERVING{self._log_hint()}")
            if self.is_serving(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not SERVING at {self.address} after {timeout:.0f} s{self._log_hint()}")
            time.sleep(poll_s)

    def wait_exit(self, timeout: float | None = None, poll_s: float = 0.05) -> int | None:
        """Wait for the process to end (its group is killed then); the exit code, or None at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.exit_code()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll_s)
        return code

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def _log_hint(self) -> str:
        tail = self.log_tail()
        return f"; log {self.log}:\n{tail}" if tail else ""

    # ---------------------------------------------------------------- stop

    def terminate(self) -> None:
        """Ask the server to drain and exit (SIGTERM to the leader only: it stops its own children)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to every process of the group (while the leader is unreaped, the group id is its own)."""
        if self.proc is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> int | None:
        """SIGKILL the whole group now; the exit code."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        self.signal_group(signal.SIGKILL)
        return self._reap()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to `timeout` (default stop_timeout_s) for the server to drain and exit,
        then SIGKILL its whole group. Returns the exit code (None if it was never started)."""
        if self.proc is None:
            return None
        self.terminate()
        code = self.wait_exit(self.stop_timeout_s if timeout is None else timeout)
        return code if code is not None else self.kill()

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all(servers: Iterable[ServerProcess | None], timeout: float | None = None,
             say: Callable[[str], None] | None = None, poll_s: float = 0.05) -> None:
    """Stop several servers at once: SIGTERM to all (their drains overlap); each one still running
    at its own stop timeout has its whole group killed then, without waiting for the others.
    `say` hears how each server that was running ended, and when."""
    servers = [s for s in servers if s is not None and s.proc is not None]
    pending = [s for s in servers if s.running]
    for s in pending:
        s.terminate()
    t0 = time.monotonic()
    deadline = {id(s): t0 + (s.stop_timeout_s if timeout is None else timeout) for s in pending}
    killed: set[int] = set()
    while pending:
        for s in list(pending):
            code = s.exit_code()
            if code is not None:
                pending.remove(s)
                if say:
                    how = f"killed ({describe_exit(code)})" if id(s) in killed else f"exited with {describe_exit(code)}"
                    say(f"{s.name} {how} {time.monotonic() - t0:.1f} s after SIGTERM")
            elif id(s) not in killed and time.monotonic() >= deadline[id(s)]:
                s.signal_group(signal.SIGKILL)
                killed.add(id(s))
        if pending:
            time.sleep(poll_s)


# ---------------------------------------------------------------- the mesh's servers

def tier_process(spec, log: Path | None = None, env: dict[str, str] | None = None, tls: ClientTLS | None = None,
                 *, replica: int = 0) -> ServerProcess:
    """A tier server for one replica of a tier of the mesh file (`mesh.config.TierSpec`), not started yet: the
    replica at `spec.static_addresses[replica]`. `tls`: the credentials its health is checked with when it
    serves TLS (the mesh's upstream_tls, as the router's)."""
    from mesh.config import split_address
    from tier_server.config import tier_argv

    serve = spec.serve
    address = spec.static_addresses[replica]
    name = f"tier {spec.name}" if len(spec.static_addresses) == 1 else f"tier {spec.name}#{replica}"
    # A fixed health port is shifted by the replica's index, as tier_argv does, so replicas on one host differ.
    health = f"{split_address(address)[0]}:{serve.health_port + replica}" if serve.health_port else None
    return ServerProcess(
        name, [sys.executable, "-m", "tier_server", *tier_argv(spec, address, replica)], address, log=log, env=env,
        stop_timeout_s=serve.grace_seconds + serve.drain_notice_seconds + SHUTDOWN_MARGIN_S,
        health_address=health, tls=(tls or ClientTLS()) if serve.tls else None,
    )


def tier_processes(spec, log: Callable[[str], Path | None] = lambda name: None,
                   env: dict[str, str] | None = None, tls: ClientTLS | None = None) -> list[ServerProcess]:
    """One tier server per listed replica of a tier (none for a dns tier: its replicas run elsewhere).
    `log(name)`: the log file for a replica named tier-NAME or tier-NAME-I."""
    n = len(spec.static_addresses)
    return [
        tier_process(spec, log(f"tier-{spec.name}" if n == 1 else f"tier-{spec.name}-{i}"), env, tls, replica=i)
        for i in range(n)
    ]


def router_process(config_path: Path | str, config, *, listen: str | None = None, args: Sequence[str] = (),
                   log: Path | None = None, env: dict[str, str] | None = None) -> ServerProcess:
    """`python -m router --config FILE [--listen HOST:PORT] ARGS` for a loaded mesh (`mesh.config.MeshConfig`),
    not started yet."""
    argv = [sys.executable, "-m", "router", "--config", str(config_path), *(["--listen", listen] if listen else []), *args]
    return ServerProcess(
        "router", argv, listen or config.listen, log=log, env=env,
        stop_timeout_s=config.grace_seconds + config.drain_notice_seconds + SHUTDOWN_MARGIN_S,
        health_address=config.health_listen, tls=router_probe_tls(config),
    )


def router_probe_tls(config) -> ClientTLS | None:
    """How a local tool checks a TLS router's health: trusting the CA the router trusts for its tiers
    (one CA signs both in a local mesh). A router that requires client certificates needs health_listen."""
    if config.tls is None:
        return None
    if config.tls.require_client_cert and not config.health_listen:
        raise ValueError("the router requires client certificates, so its health cannot be checked here: "
                         "set health_listen (a plaintext health-only listener) in the mesh file")
    return ClientTLS(ca=config.upstream_tls.ca if config.upstream_tls else None)
