"""Child processes of the test bed and the bench: the one place that starts, waits for and
stops them.

Why one module: "no process outlives the run" must hold for every JVM, tool and server the
tests or the bench start, so each one is started the same way: in its own session (process
group), with stdin from /dev/null, stdout to a file, SIGKILL from the kernel if the starting
thread dies (even by SIGKILL), and registered so that exit, SIGTERM and SIGHUP stop it
(SIGTERM to its group, then SIGKILL). Nothing here knows about Kafka.

    p = Process("s3", [binary, "--port", str(port)], stdout_file=d / "s3.log")
    p.start_and_wait(lambda: port_accepts(port), timeout=30, what=f"S3 server on {port}")
    ...
    p.stop()
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union


class TestbedError(RuntimeError):
    """A test-bed step failed; the message says which and where its log is."""

    __test__ = False  # not a pytest test class despite the name


# --------------------------------------------------------------------------------------------
# Waiting, ports, logs


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `pred` until it returns something truthy; raise TestbedError naming `what`.
    TestbedError and AssertionError from `pred` mean "this will never succeed" (a process
    died, a task FAILED, a duplicate showed up) and propagate at once; other errors are
    retried until the timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except (TestbedError, AssertionError):
            raise
        except Exception as e:  # noqa: BLE001 - polled conditions fail until they succeed
            last_exc = e
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port (a readiness check)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def file_contains(path: Path, text: str) -> bool:
    """True if the file exists and holds `text` (a readiness check on a log line)."""
    try:
        return text in Path(path).read_text(errors="replace")
    except OSError:
        return False


def tail(path: Optional[Path], lines: int = 60) -> str:
    """Last lines of a log file ('' if it does not exist)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def log_errors(path: Optional[Path], limit: int = 20) -> str:
    """The first ERROR/FATAL lines of a log: why a process died is rarely in its shutdown tail."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if " ERROR " in ln or " FATAL " in ln]
    return "\n".join(lines[:limit])


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    """The command line of a process, arguments joined by spaces ('' if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# The registry: every child is stopped at exit and on SIGTERM/SIGHUP.

_REGISTRY_LOCK = threading.Lock()
_REGISTRY: list["Process"] = []
_STARTED: list["Process"] = []  # every process ever started here, for leak checks
_ATEXIT_INSTALLED = False
_SIGNALS_INSTALLED = False


def stop_all() -> None:
    """Stops every registered process, the last started first (best effort)."""
    with _REGISTRY_LOCK:
        procs = list(_REGISTRY)
    for p in reversed(procs):
        try:
            p.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _install_handlers() -> None:
    global _ATEXIT_INSTALLED, _SIGNALS_INSTALLED
    with _REGISTRY_LOCK:
        if not _ATEXIT_INSTALLED:
            _ATEXIT_INSTALLED = True
            atexit.register(stop_all)
    # signal handlers can only be set from the main thread: a child started from another
    # thread first leaves them to the next start from the main thread
    if _SIGNALS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    _SIGNALS_INSTALLED = True
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, _previous=previous):
            stop_all()
            if callable(_previous):
                _previous(signum, frame)
            else:
                # like Ctrl-C: pytest stops the session and runs teardown (which removes dirs)
                raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(sig, handler)
    # SIGINT stays Python's KeyboardInterrupt: pytest then runs fixture teardown and atexit.


def _set_pdeathsig() -> None:
    """In the child: get SIGKILL when the thread that started it dies, even by SIGKILL, so a
    killed run leaves nothing behind (start clusters from a thread that outlives them).
    SIGKILL, not SIGTERM: nobody is left to escalate if a JVM hangs in its shutdown hooks."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: atexit still covers normal exits
        pass


def leaked_processes() -> list["Process"]:
    """Processes started by this Python process that are still running (should be [] at the
    end of a run)."""
    with _REGISTRY_LOCK:
        return [p for p in _STARTED if p.running()]


def stop_pid_group(pid: int, must_contain: str, timeout: float = 30) -> None:
    """Stops the process group led by `pid` (SIGTERM, then SIGKILL after `timeout`), only if
    the process's command line still holds `must_contain`: a pid read from a file may have
    been reused by a process we did not start."""
    if not pid_alive(pid) or must_contain not in cmdline(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


Output = Union[int, IO[Any], None]


class Process:
    """One child in its own session/process group, registered until it is stopped.

    `stdout_file` gets its stdout and stderr (appended); `log_file` is where it logs (error
    reports quote both; default: `stdout_file`). `die_with_parent=False` only for processes
    meant to outlive us (`python -m testbed up --detach`)."""

    def __init__(self, name: str, argv: list[str], stdout_file: Optional[Path] = None,
                 log_file: Optional[Path] = None, cwd: Optional[Path] = None,
                 env: Optional[dict[str, str]] = None, die_with_parent: bool = True):
        self.name = name
        self.argv = argv
        self.stdout_file = stdout_file
        self.log_file = log_file or stdout_file
        self.cwd = cwd or (stdout_file.parent if stdout_file else None)
        self.env = env
        self.die_with_parent = die_with_parent
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, stdout: Output = None, stderr: Output = subprocess.STDOUT,
              stdin: Output = subprocess.DEVNULL, text: bool = False) -> None:
        """Starts the process. `stdin`/`stdout`/`stderr` as for Popen (a file object,
        subprocess.PIPE, DEVNULL); by default both outputs are appended to `stdout_file`."""
        _install_handlers()
        out = None
        if stdout is None:
            out = open(self.stdout_file, "ab") if self.stdout_file else subprocess.DEVNULL
            stdout = out
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                text=text,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if self.die_with_parent else None,
                cwd=str(self.cwd) if self.cwd else None,
                env=self.env,
            )
        finally:
            if out is not None and out is not subprocess.DEVNULL:
                out.close()
        with _REGISTRY_LOCK:
            _REGISTRY.append(self)
            _STARTED.append(self)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start_and_wait(self, ready: Callable[[], Any], timeout: float, what: str) -> None:
        """Starts the process and waits until `ready()` is true; raises at once if it exits
        meanwhile; a timeout names `what` and shows the tails of its log and stdout."""
        self.start()

        def alive_and_ready() -> Any:
            self.check_alive()
            return ready()

        try:
            wait_until(alive_and_ready, timeout, what, interval=0.5)
        except TestbedError as e:
            raise TestbedError(f"{e}\n--- {self.log_file} ---\n{tail(self.log_file)}\n"
                               f"--- stdout ---\n{tail(self.stdout_file)}") from None

    def check_alive(self) -> None:
        """Raises at once, with the errors it logged, if the process has exited."""
        if not self.running():
            code = self.proc.returncode if self.proc else None
            raise TestbedError(
                f"{self.name} exited with {code}; errors logged:\n{log_errors(self.log_file)}\n"
                f"log tail:\n{tail(self.log_file)}\nstdout:\n{tail(self.stdout_file)}")

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: Optional[float] = None) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except ChildProcessError:
            pass  # already reaped by someone's os.wait4 (the bench measures that way)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (crash simulation, or a timed-out command)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._reap()
        self.forget()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._reap(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._reap()
        # the leader is gone; anything else left in its group gets SIGKILL
        self._signal_group(signal.SIGKILL)
        self.forget()

    def forget(self) -> None:
        """Drops it from the registry: exit and signals no longer stop it (it was stopped, or
        it must outlive us)."""
        with _REGISTRY_LOCK:
            if self in _REGISTRY:
                _REGISTRY.remove(self)


def run(argv: list[str], timeout: Optional[float] = None, input: Optional[str] = None,
        stderr: Output = subprocess.PIPE, name: Optional[str] = None,
        cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None,
        ) -> subprocess.CompletedProcess:
    """Like subprocess.run(text=True, stdout=PIPE), but the command is a registered Process:
    its own process group, dead with us, and its whole group killed on a timeout
    (subprocess.TimeoutExpired), Ctrl-C or SIGTERM."""
    p = Process(name or Path(argv[0]).name, argv, cwd=cwd, env=env)
    p.start(stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert p.proc is not None
    try:
        out, err = p.proc.communicate(input, timeout=timeout)
    except BaseException:
        p.kill()
        raise
    p.stop()  # it exited; SIGKILL for anything it left in its group
    return subprocess.CompletedProcess(argv, p.proc.returncode, out, err)
