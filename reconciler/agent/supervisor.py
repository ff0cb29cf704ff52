"""Converge this worker to the accepted set: fetch files, start, probe, restart, stop.

Each instance moves Pending -> Downloading -> Starting -> Running; an exit is Error
(exit code and the last log lines) and, with restartOnError, a new start: at once after
the first failure, then after 10, 20, 40 ... s, capped at 300 s (``backoff``). Failures
count since the instance last stayed Running for STABLE_RUNNING: a backend that fails at
every start, or dies each time right after it comes up, gets one immediate retry and then
waits, never restarting in a loop. A Starting instance is probed every 0.5 s, so a
restarted backend is Running about as soon as it answers; a Running one every 3 s.
Backends write straight to ``<data-dir>/log/serve/<id>.log`` (not through a pipe),
so they outlive the agent, which re-adopts them by pid and start time when it
comes back. Stopping the agent leaves its instances running, as a kubelet does.
An instance that leaves the set (deleted, replaced, scaled down) drains first: it is
Draining while client connections to its port remain, for at most its ``drainSeconds``
(the routers stop sending it new requests as soon as the server's table drops it), and only
then gets SIGTERM, the grace period, and SIGKILL. A drain is on disk with its wall-clock
deadline: an agent restarted mid-drain adopts the draining process and drains it for the
time left (none left: it stops at once), rather than kill it as an orphan.
An instance gets a clean environment (BASE_ENV and its spec's env), a port nobody
else holds, and counts as healthy only while its own process tree holds that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psutil

from reconciler.agent.changes import Changes
from reconciler.agent.files import ModelFiles, Progress
from reconciler.agent.procs import (
    Children,
    children_table,
    client_connections,
    describe,
    listeners,
    port_taken,
    tree,
    tree_listening,
    tree_rss,
)
from reconciler.agent.record import (
    AgentRecord,
    DrainRecord,
    ProcessRecord,
    RecordNotSaved,
    load_record,
    save_record,
)
from reconciler.agent.wire import generation_ceiling, refused_environment
from reconciler.observe import InstanceSpec, ObservedInstance
from reconciler.render import spec_hash

log = logging.getLogger("reconciler.agent")

PROBE_INTERVAL = 3.0
STARTING_PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0
# Running this long makes the next failure a first one again (retried at once).
STABLE_RUNNING = 10.0
IDLE_WAKE = 1.0
STOP_GRACE = 10.0
# Time for every router to learn that an instance left (the table reaches them within the
# server's pass plus 0.1 s) before its open connections are trusted to be the last ones. A late
# router's next request finds the port closed before any byte went out, and is retried elsewhere.
DRAIN_MIN = 1.0
DRAIN_POLL = 0.25
LOG_MAX_BYTES = 20 * 1024 * 1024
TAIL_LINES = 20
INSTANCE_ENV = "RECONCILER_INSTANCE"
DATA_DIR_ENV = "RECONCILER_DATA_DIR"
# All an instance inherits from the agent; the rest of its environment is what its spec sets.
# Never the agent's secrets (HF_TOKEN, the proxy credentials, ...).
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


def backoff(failures: int) -> float:
    """Seconds before the next start after ``failures`` failures in a row: none after the
    first (a killed backend is back as soon as it can listen), then 10, 20, 40 ... capped at 300."""
    return float(min(10 * 2 ** (failures - 2), 300)) if failures > 1 else 0.0


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file, reading backwards from its end."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            chunk = b""
            position = end
            while position > 0 and chunk.count(b"\n") <= lines:
                step = min(65536, position)
                position -= step
                handle.seek(position)
                chunk = handle.read(step) + chunk
    except FileNotFoundError:
        return []
    return chunk.decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def _alive(pid: int, create_time: float) -> bool:
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Instance:
    spec: InstanceSpec
    state: str = "Pending"
    popen: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    create_time: float | None = None
    failures: int = 0
    restarts: int = 0
    exit_code: int | None = None
    message: str = ""
    retry_at: float = 0.0
    next_probe: float = 0.0
    running_since: float = 0.0  # clock() when it last became Running
    drain_deadline: float = 0.0  # time.time() when its drain ends at the latest, while Draining
    fetch: asyncio.Task[None] | None = None
    drain: asyncio.Task[None] | None = None
    stopping: bool = False  # the drain is over: signals are on their way
    fetched: bool = False
    progress: Progress = field(default_factory=Progress)

    def processes(self, table: Children | None = None) -> list[psutil.Process]:
        """Its process tree, while its own process (pid and start time) still runs."""
        if self.pid is None or (self.create_time is not None and not _alive(self.pid, self.create_time)):
            return []
        return tree(self.pid, table)

    def observed(self, gpu_usage: dict[int, dict[int, int]], table: Children) -> ObservedInstance:
        processes = self.processes(table)
        vram: dict[int, int] = {}
        for process in processes:
            for gpu, used in gpu_usage.get(process.pid, {}).items():
                vram[gpu] = vram.get(gpu, 0) + used
        return ObservedInstance.model_validate(
            {
                **self.spec.model_dump(),
                "state": self.state,
                "pid": self.pid,
                "message": self.message,
                "restarts": self.restarts,
                "exit_code": self.exit_code,
                "progress": self.progress.fraction() if self.state == "Downloading" else None,
                "measured_ram": tree_rss(processes),
                "measured_vram": vram,
            }
        )


def fencing(accepted: tuple[int, int], offered: tuple[int, int], same: bool) -> Literal["newer", "unchanged", "stale"]:
    """The one rule for a set handed to the agent, by (leader epoch, generation).

    A set from an older epoch is stale whatever its generation: a paused or partitioned old
    leader cannot undo its successor's work. Within an epoch, an older generation is stale,
    and so is a different set under the accepted generation. Epoch 0 is a set from outside
    the leader lease (``reconcile apply``, ``down``): only its generation is compared.
    """
    if offered[0] == 0:
        accepted, offered = (0, accepted[1]), (0, offered[1])
    if offered < accepted or (offered == accepted and not same):
        return "stale"
    return "unchanged" if offered == accepted else "newer"


class Supervisor:
    def __init__(
        self,
        data_dir: Path,
        files: ModelFiles,
        clock: Callable[[], float] = time.monotonic,
        allow_exec: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.allow_exec = tuple(allow_exec)
        self.log_dir = data_dir / "log" / "serve"
        self.record_path = data_dir / "state.json"
        self.files = files
        self.clock = clock
        self.record: AgentRecord = load_record(self.record_path)
        if self.record.generation > generation_ceiling():  # written before generations were bounded
            log.warning("generation %s is far ahead of the clock; any next set is taken", self.record.generation)
            self.record = self.record.model_copy(update={"generation": 0})
        self.instances: dict[str, Instance] = {}
        self.draining: dict[str, Instance] = {}  # left the set; stopped once their clients are gone
        self.wake = asyncio.Event()
        self.changes = Changes()
        self.client = httpx.AsyncClient(timeout=PROBE_TIMEOUT)

    # --- the accepted set -------------------------------------------------------------

    def accept(
        self, generation: int, specs: list[InstanceSpec], epoch: int = 0
    ) -> Literal["accepted", "unchanged", "stale"]:
        """Take a new full set, unless ``fencing`` calls it stale.

        Spec hashes are computed here, never taken from the client: a changed argv or port
        under an unchanged hash must still replace the process. The new set is on disk before
        it is in force: raises RecordNotSaved (and keeps the set before) when it cannot be written.
        """
        specs = [spec.model_copy(update={"spec_hash": spec_hash(spec)}) for spec in specs]
        same = sorted((s.id, s.spec_hash) for s in specs) == sorted((s.id, s.spec_hash) for s in self.record.instances)
        verdict = fencing((self.record.epoch, self.record.generation), (epoch, generation), same)
        if verdict != "newer":
            return verdict
        # The highest epoch seen is kept (and persisted), so a restart does not forget it.
        update = {
            "epoch": max(epoch, self.record.epoch),
            "generation": generation,
            "instances": specs,
            "processes": self._processes(),
        }
        record = self.record.model_copy(update=update)
        try:
            save_record(self.record_path, record)
        except OSError as exc:
            raise RecordNotSaved(
                f"cannot write {self.record_path}: {exc.strerror or exc}; the set in force is unchanged"
            ) from exc
        self.record = record
        self.wake.set()
        return "unchanged" if same else "accepted"

    def _processes(self) -> dict[str, ProcessRecord]:
        return {
            i.spec.id: ProcessRecord(
                pid=i.pid, create_time=i.create_time, spec_hash=i.spec.spec_hash, restarts=i.restarts
            )
            for i in self.instances.values()
            if i.pid is not None and i.create_time is not None
        }

    def _drains(self) -> dict[str, DrainRecord]:
        return {
            i.spec.id: DrainRecord(
                spec=i.spec, pid=i.pid, create_time=i.create_time, deadline=i.drain_deadline, restarts=i.restarts
            )
            for i in self.draining.values()
            if i.pid is not None and i.create_time is not None
        }

    def _persist(self) -> None:
        self.record = self.record.model_copy(update={"processes": self._processes(), "draining": self._drains()})
        save_record(self.record_path, self.record)

    # --- start-up: adopt what still runs, kill what nobody wants -------------------------

    def adopt(self) -> None:
        """Take back what the record lists and still runs; called on the event loop (a drain
        resumes as a task)."""
        for key, drain in self.record.draining.items():
            if _alive(drain.pid, drain.create_time):
                instance = Instance(
                    drain.spec, pid=drain.pid, create_time=drain.create_time, restarts=drain.restarts, fetched=True
                )
                self._start_drain(instance, max(0.0, drain.deadline - time.time()))
                log.info("adopted %s (pid %s), draining", key, drain.pid)
        for spec in self.record.instances:
            kept = self.record.processes.get(spec.id)
            if kept and kept.spec_hash == spec.spec_hash and _alive(kept.pid, kept.create_time):
                instance = Instance(
                    spec, "Starting", pid=kept.pid, create_time=kept.create_time, restarts=kept.restarts, fetched=True
                )
                log.info("adopted %s (pid %s)", spec.id, kept.pid)
            else:  # or wanted back, unchanged, just before the agent stopped: its drain ends here
                instance = self._revive(spec) or Instance(spec)
            self.instances[spec.id] = instance
        # Whole trees: an instance's children carry its markers too, and share its process group.
        adopted = self.pids(children_table())
        for process in psutil.process_iter(["pid"]):
            try:
                environ = process.environ()
            except psutil.Error:
                continue
            if (
                environ.get(DATA_DIR_ENV) == str(self.data_dir)
                and INSTANCE_ENV in environ
                and process.pid not in adopted
                and process.pid != os.getpid()
            ):
                log.warning("stopping orphan %s (pid %s)", environ[INSTANCE_ENV], process.pid)
                self._signal_group(process.pid, signal.SIGKILL)
        self._persist()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # one bad step must not end supervision of everything else
                log.exception("supervisor step failed")
            self.changes.note(self.signature())
            # Woken more often only while an instance is Starting, so an idle agent stays cheap.
            starting = any(i.state == "Starting" for i in self.instances.values())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), STARTING_PROBE_INTERVAL if starting else IDLE_WAKE)
            self.wake.clear()

    async def step(self) -> None:
        desired = {spec.id: spec for spec in self.record.instances}
        for key, instance in list(self.instances.items()):
            if key not in desired or desired[key].spec_hash != instance.spec.spec_hash:
                del self.instances[key]
                await self.retire(instance)
        for key, spec in desired.items():
            if key not in self.instances:
                self.instances[key] = self._revive(spec) or Instance(spec)
            instance = self.instances[key]
            if key in self.draining:  # its old process still holds the port
                instance.message = f"waiting for the previous process to drain: {self.draining[key].message}"
                continue
            try:
                await self.advance(instance)
            except Exception as exc:  # whatever goes wrong with one instance ends in its Error, with the reason
                log.exception("%s: cannot advance", key)
                self._fail(instance, None, f"internal error: {type(exc).__name__}: {exc}")
        # Whatever changed the processes (a start, an exit, a drain begun, ended or cancelled), on disk.
        if (self._processes(), self._drains()) != (self.record.processes, self.record.draining):
            self._persist()

    async def advance(self, instance: Instance) -> None:
        """Move one instance along."""
        now = self.clock()
        if instance.state == "Pending":
            instance.state = "Downloading"
            instance.fetch = asyncio.create_task(self._fetch(instance))
        elif instance.state == "Downloading" and instance.fetch is not None and instance.fetch.done():
            problem = instance.fetch.exception()
            instance.fetch = None
            if problem is None:
                instance.fetched = True
                self.spawn(instance)
            else:
                self._fail(instance, None, f"cannot fetch the model: {problem}")
        elif instance.state in ("Starting", "Running"):
            code = self._exited(instance)
            if code is not False:
                self._on_exit(instance, code)
                return
            self._forget_failures_after_a_stable_run(instance)
            if now >= instance.next_probe:
                healthy = await self.probe(instance)
                if healthy and instance.state == "Starting":
                    instance.state, instance.message, instance.running_since = "Running", "", now
                    log.info("%s is Running", instance.spec.id)
                elif not healthy and instance.state == "Running":
                    instance.message = "health check failing"
                elif healthy:
                    instance.message = ""
                instance.next_probe = now + (PROBE_INTERVAL if instance.state == "Running" else STARTING_PROBE_INTERVAL)
            self._rotate(instance)
        elif instance.state == "Error" and instance.spec.restart_on_error and now >= instance.retry_at:
            instance.restarts += 1
            if instance.fetched:
                self.spawn(instance)
            else:
                instance.state = "Pending"

    async def _fetch(self, instance: Instance) -> None:
        try:
            for ref in instance.spec.files:
                await asyncio.to_thread(self.files.fetch, ref, instance.progress)
        finally:  # started at once, not at the next idle tick (a rollout step would wait 1 s)
            self.wake.set()

    def _fail(self, instance: Instance, code: int | None, message: str) -> None:
        instance.failures += 1
        instance.state, instance.exit_code, instance.message = "Error", code, message
        instance.retry_at = self.clock() + backoff(instance.failures)
        if instance.retry_at <= self.clock():  # retried at once: at the next step, not the next tick
            self.wake.set()
        log.warning("%s: %s", instance.spec.id, message.splitlines()[0] if message else "error")

    def _exited(self, instance: Instance) -> int | Literal[False] | None:
        """False while it runs; else its exit code (None when unknown, for an adopted process)."""
        if instance.popen is not None:
            code = instance.popen.poll()
            return False if code is None else code
        if instance.pid is not None and instance.create_time is not None and _alive(instance.pid, instance.create_time):
            return False
        return None

    def _forget_failures_after_a_stable_run(self, instance: Instance) -> None:
        if instance.state == "Running" and self.clock() - instance.running_since >= STABLE_RUNNING:
            instance.failures = 0

    def _on_exit(self, instance: Instance, code: int | None) -> None:
        self._forget_failures_after_a_stable_run(instance)  # whether a step saw the run end stable or not
        instance.popen, instance.pid, instance.create_time = None, None, None
        lines = "\n".join(tail(self.log_path(instance.spec.id), TAIL_LINES))
        how = f"exited with code {code}" if code is not None else "exited (exit code unknown: adopted process)"
        self._fail(instance, code, f"{how}; last log lines:\n{lines}")

    # --- processes -----------------------------------------------------------------------

    def log_path(self, instance_id: str) -> Path:
        return self.log_dir / f"{instance_id}.log"

    def environment(self, spec: InstanceSpec) -> dict[str, str]:
        """BASE_ENV from the agent, the spec's names (each on the allowlist), then the markers.

        Raises PermissionError naming a refused variable (``validate`` refuses it too).
        """
        refusal = refused_environment(spec.env)
        if refusal is not None:
            raise PermissionError(refusal)
        base = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        return {"PATH": os.defpath, **base, **spec.env, INSTANCE_ENV: spec.id, DATA_DIR_ENV: str(self.data_dir)}

    def executable(self, spec: InstanceSpec, env: dict[str, str]) -> str:
        """The file argv[0] names, as exec would find it; raises PermissionError outside --allow-exec."""
        program = spec.argv[0]
        if "/" in program:  # relative to the instance's working directory, the data dir
            found = os.path.normpath(os.path.join(self.data_dir, program))
            if not (os.path.isfile(found) and os.access(found, os.X_OK)):
                raise FileNotFoundError(f"{program} is not an executable file")
        else:
            which = shutil.which(program, path=env["PATH"])
            if which is None:
                raise FileNotFoundError(f"{program} is not on PATH ({env['PATH']})")
            found = os.path.abspath(which)
        cache = os.path.join(os.path.realpath(self.files.cache_dir), "")
        if os.path.realpath(found).startswith(cache):
            raise PermissionError(f"{found} is a downloaded file; downloads are never run")
        if self.allow_exec and not any(fnmatch.fnmatchcase(found, glob) for glob in self.allow_exec):
            raise PermissionError(f"{found} is outside --allow-exec ({', '.join(self.allow_exec)})")
        return found

    def spawn(self, instance: Instance) -> None:
        spec = instance.spec
        try:
            env = self.environment(spec)
            executable = self.executable(spec, env)
        except OSError as exc:
            self._fail(instance, None, f"cannot start: {exc}")
            return
        if port_taken(spec.port):
            holders = listeners().get(spec.port, set())
            self._fail(instance, None, f"cannot start: port {spec.port} is in use by {describe(holders)}")
            return
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.log_path(spec.id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as output:
            output.write(f"--- reconciler: starting {spec.id}: {' '.join(spec.argv)}\n".encode())
            output.flush()
            try:
                popen = subprocess.Popen(
                    spec.argv,
                    executable=executable,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.data_dir,
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self._fail(instance, None, f"cannot start {spec.argv[0]}: {exc}")
                return
        instance.popen, instance.pid = popen, popen.pid
        try:
            instance.create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            instance.create_time = None
        instance.state, instance.exit_code, instance.message = "Starting", None, ""
        instance.next_probe = self.clock() + STARTING_PROBE_INTERVAL
        log.info("started %s (pid %s)", spec.id, popen.pid)

    async def probe(self, instance: Instance) -> bool:
        """Healthy only when this instance's own process tree holds the port: a foreign
        listener answering there must not make it look Running."""
        port = instance.spec.port
        if port not in await asyncio.to_thread(lambda: tree_listening(instance.processes())):
            return False
        if not instance.spec.health_path:  # RPC servers and Ray nodes: the port accepts connections
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT)
            except (TimeoutError, OSError):
                return False
            writer.close()
            return True
        try:
            response = await self.client.get(f"http://127.0.0.1:{port}{instance.spec.health_path}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), sig)

    async def retire(self, instance: Instance) -> None:
        """Stop an instance that left the set: at once when it serves nothing, else after a drain."""
        serving = instance.state == "Running" and instance.spec.role == "main"  # only those get traffic
        if not serving or instance.spec.drain_seconds == 0 or instance.pid is None:
            await self.stop(instance)
            return
        self._start_drain(instance, instance.spec.drain_seconds)
        log.info("%s is Draining (at most %ss)", instance.spec.id, instance.spec.drain_seconds)

    def _start_drain(self, instance: Instance, seconds: float) -> None:
        instance.state, instance.message = "Draining", "draining: waiting for the routers to stop sending requests"
        instance.drain_deadline = time.time() + seconds
        self.draining[instance.spec.id] = instance
        instance.drain = asyncio.create_task(self._drain_then_stop(instance, seconds))

    def _revive(self, spec: InstanceSpec) -> Instance | None:
        """A draining instance wanted back unchanged (scale down, then up again) keeps running."""
        old = self.draining.get(spec.id)
        if old is None or old.stopping or old.spec.spec_hash != spec.spec_hash or old.drain is None:
            return None
        del self.draining[spec.id]
        old.drain.cancel()
        old.drain, old.spec, old.state, old.message = None, spec, "Starting", ""
        old.next_probe = self.clock()
        log.info("%s is wanted again: its drain is cancelled", spec.id)
        return old

    async def _drain_then_stop(self, instance: Instance, limit: float) -> None:
        deadline = self.clock() + limit
        try:
            # Resumed after an agent restart too: the routers may not have learned yet either.
            await asyncio.sleep(min(DRAIN_MIN, limit))
            while self.clock() < deadline:
                clients = await asyncio.to_thread(client_connections, instance.processes(), instance.spec.port)
                if clients == 0:
                    break
                left = max(0.0, deadline - self.clock())
                instance.message = f"draining: {clients} client connection(s) open, at most {left:.0f}s more"
                await asyncio.sleep(DRAIN_POLL)
            instance.stopping = True
            await self.stop(instance)
        finally:
            if self.draining.get(instance.spec.id) is instance:
                del self.draining[instance.spec.id]
            self.wake.set()

    async def stop(self, instance: Instance) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        if instance.fetch is not None:
            instance.fetch.cancel()
        pid, create_time = instance.pid, instance.create_time
        if pid is None:
            return
        if create_time is None or _alive(pid, create_time):
            self._signal_group(pid, signal.SIGTERM)
            deadline = self.clock() + STOP_GRACE
            while self.clock() < deadline and self._exited(instance) is False:
                await asyncio.sleep(0.1)
            if self._exited(instance) is False:
                self._signal_group(pid, signal.SIGKILL)
        if instance.popen is not None:
            await asyncio.to_thread(instance.popen.wait)
        instance.popen, instance.pid, instance.create_time = None, None, None
        log.info("stopped %s", instance.spec.id)

    def _rotate(self, instance: Instance) -> None:
        """Copy then truncate, so the backend keeps writing to the same (O_APPEND) file."""
        path = self.log_path(instance.spec.id)
        with contextlib.suppress(OSError):
            if path.stat().st_size > LOG_MAX_BYTES:
                rotated = path.with_suffix(".log.1")
                fd = os.open(rotated, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with path.open("rb") as source, os.fdopen(fd, "wb") as target:
                    target.write(source.read())
                with path.open("r+b") as handle:
                    handle.truncate(0)

    def observed(self, gpu_usage: dict[int, dict[int, int]], table: Children) -> list[ObservedInstance]:
        """Every instance; a draining one too, unless its replacement (same id) is listed."""
        shown = {**{k: v for k, v in self.draining.items() if k not in self.instances}, **self.instances}
        return [shown[key].observed(gpu_usage, table) for key in sorted(shown)]

    def pids(self, table: Children) -> set[int]:
        """Every process of every instance, draining ones included."""
        everyone = [*self.instances.values(), *self.draining.values()]
        return {p.pid for instance in everyone for p in instance.processes(table)}

    def signature(self) -> tuple[tuple[str, str, str, int | None], ...]:
        """What the server looks again at when it changes: each instance's spec, state and process."""
        everyone = [*self.instances.values(), *self.draining.values()]
        return tuple(sorted((i.spec.id, i.spec.spec_hash, i.state, i.pid) for i in everyone))

    def wants(self, instance_id: str) -> bool:
        return any(spec.id == instance_id for spec in self.record.instances)

    def files_in_use(self) -> set[str]:
        return {ref.path for spec in self.record.instances for ref in spec.files}

    async def close(self) -> None:
        """Stop supervising; draining processes keep running, as every instance does (the next
        agent on this data dir finishes their drains)."""
        for instance in self.draining.values():
            if instance.drain is not None:
                instance.drain.cancel()
        await self.client.aclose()


__all__ = ["Instance", "Supervisor", "backoff", "tail"]
