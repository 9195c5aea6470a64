"""Evaluations on a Ray cluster: warm actors, each building the task once and evaluating one program at a time.

Why actors: building a task (loading a trace, warming a sandbox) costs seconds; an actor pays it once and then
evaluates many programs. An actor never receives a task object from here, only the task's factory and options,
so it builds the task, and holds its data, on its own node; `task.evaluate` runs there exactly as it does
locally (the EPLB task forks a fresh sandboxed process per program: same limits, timeouts and audit hook).

Worker loss (an actor crashes, its node dies, Ray kills it) puts the evaluation back at the head of the queue
once and replaces the actor; a second loss of the same evaluation gives `Result(correct=False)` naming the
loss, and the campaign goes on. Results come back as futures; the loop applies them in proposal order, so a
seeded campaign builds the same archive here as on the local backend.

One dispatcher thread owns all scheduling state. Ray reports each finished call through a future callback
that only posts an event, so nothing polls and no Ray call runs on Ray's own callback thread.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.exceptions as rex

from evolve.backends import BackendContext
from evolve.errors import UserError
from evolve.loading import load_object
from evolve.paths import REPO_ROOT
from evolve.task import Result

REQUEUES = 1  # a lost evaluation runs again this many times before it is recorded as a failure
READY_TIMEOUT_S = 180.0  # how long the actors may take to be placed and build their task
MAX_RESPAWNS = 5  # replacement actors that may fail in a row before the backend gives up
# What a remote cluster does not need from a checkout (Ray uploads the rest as the job's working dir).
SHIP_EXCLUDES = [".git", ".venv", "results", ".cache", ".pytest_cache", ".hypothesis", "build", "dist",
                 "**/__pycache__", "*.egg-info", "*.npz"]
# Errors meaning the worker, not the program, went away: the evaluation is re-queued.
LOSS_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(rex, name) for name in ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
                                    "OutOfMemoryError", "LocalRayletDiedError") if hasattr(rex, name))


class Evaluator:
    """The actor: builds the task from its factory on its own node, then evaluates programs one at a time."""

    def __init__(self, task_factory: str, task_options: dict[str, Any]) -> None:
        self.task: Any = None
        self.error = ""
        options = dict(task_options)
        if str(options.get("device", "")).startswith("cuda:"):
            options["device"] = "cuda"  # Ray shows the actor only the GPU it was given, as device 0
        try:
            self.task = load_object(task_factory, what="task.factory")(options)
        except Exception as exc:  # reported by ready(), so startup names the cause in one line
            self.error = str(exc).strip().splitlines()[0] if isinstance(exc, UserError) else _one_line(exc)

    def ready(self) -> str:
        """The error that stopped the task from being built, or "": startup waits on this."""
        return self.error

    def evaluate(self, program_code: str) -> Result:
        result = self.task.evaluate(program_code)
        if not isinstance(result, Result):
            raise TypeError(f"{type(self.task).__name__}.evaluate returned {type(result).__name__}, not a Result")
        return result


@dataclass
class _Job:
    code: str
    future: "Future[Result]"
    losses: list[str] = field(default_factory=list)


class RayBackend:
    """`workers` warm Evaluator actors on a Ray cluster (started locally when no address is given)."""

    def __init__(self, context: BackendContext) -> None:
        if not context.task_factory:
            raise UserError("the ray backend rebuilds the task on each worker and needs task.factory (an import "
                            "string); set it in the config or use --backend local")
        self.workers = context.workers
        stamp = context.task.stamp()
        self._stamp = {k: v for k, v in stamp.items() if k in Result.__dataclass_fields__}
        self._owns_connection = connect(context.ray_address, context.workers)
        self._factory = _portable_factory(context.task_factory, _SHIPPED[0])
        self._options = dict(context.task_options)
        resources = actor_resources(self._options)
        self._actor_class = ray.remote(Evaluator).options(**resources, max_restarts=0, max_task_retries=0)
        self._need = f"1 CPU{' and 1 GPU' if resources['num_gpus'] else ''} each"
        self.losses = 0  # worker losses seen (each re-queued or recorded as a failure)
        self._events: queue.Queue = queue.Queue()
        self._queue: collections.deque[_Job] = collections.deque()
        self._idle: list[Any] = []
        self._busy: dict[int, tuple[Any, _Job]] = {}  # id(actor) -> (actor, job)
        self._starting = 0
        self._respawn_failures = 0
        self._closed = False
        self._failure: Exception | None = None  # set when the dispatcher itself broke
        try:
            self._idle = self._start_actors(context.workers)
        except BaseException:
            self._disconnect()
            raise
        self._thread = threading.Thread(target=self._dispatch_loop, name="ray-dispatch", daemon=True)
        self._thread.start()

    # ---- the Backend interface ----------------------------------------------------------------------
    def submit(self, program_code: str) -> "Future[Result]":
        future: Future[Result] = Future()
        if self._failure is not None:
            future.set_exception(self._failure)
            return future
        if self._closed:
            future.cancel()
            return future
        self._events.put(("submit", _Job(program_code, future)))
        return future

    def close(self) -> None:
        """Drop queued work, stop the actors and, when this backend connected to Ray, disconnect."""
        if self._closed:
            return
        self._closed = True
        self._events.put(("close",))
        self._thread.join(timeout=10)
        if self._failure is not None:  # the dispatcher is gone: stop its actors from here
            self._shutdown()
        self._disconnect()

    def busy_actors(self) -> list[Any]:
        """Handles of the actors evaluating right now (for tests and operators)."""
        return [actor for actor, _ in list(self._busy.values())]

    # ---- startup -------------------------------------------------------------------------------------
    def _start_actors(self, count: int) -> list[Any]:
        actors = [self._actor_class.remote(self._factory, self._options) for _ in range(count)]
        pending = {actor.ready.remote(): actor for actor in actors}
        ready, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=READY_TIMEOUT_S)
        if waiting:
            for actor in actors:
                _kill(actor)
            raise UserError(f"Ray placed {len(ready)} of {count} evaluation workers ({self._need}) within "
                            f"{READY_TIMEOUT_S:.0f} s; the cluster has {_resources()}: lower --workers or add nodes")
        for ref in ready:
            try:
                error = ray.get(ref)
            except LOSS_ERRORS as exc:
                error = _one_line(exc)
            if error:
                for actor in actors:
                    _kill(actor)
                raise UserError(f"a Ray worker could not build the task: {error}")
        return actors

    def _spawn(self) -> None:
        """Start a replacement actor; it joins the idle pool once its task is built."""
        actor = self._actor_class.remote(self._factory, self._options)
        self._starting += 1
        self._watch(actor.ready.remote(), ("ready", actor))

    def _watch(self, ref: Any, tag: tuple) -> None:
        ref.future().add_done_callback(lambda done: self._events.put((*tag, done)))

    # ---- the dispatcher thread ------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            event = self._events.get()
            kind = event[0]
            try:
                if kind == "close":
                    self._shutdown()
                    return
                if kind == "submit":
                    self._queue.append(event[1])
                elif kind == "done":
                    self._finished(event[1], event[2], event[3])
                elif kind == "ready":
                    self._replacement_ready(event[1], event[2])
                self._dispatch()
            except Exception as exc:  # a bug here must not leave the campaign waiting forever
                self._fail_everything(exc)
                return

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            actor, job = self._idle.pop(0), self._queue.popleft()
            if job.future.cancelled():
                self._idle.insert(0, actor)
                continue
            self._busy[id(actor)] = (actor, job)
            self._watch(actor.evaluate.remote(job.code), ("done", actor, job))
        if self._queue and not self._idle and not self._busy and not self._starting:
            self._fail_queue("no Ray evaluation worker is left (replacements kept failing); check the cluster, "
                             "then continue with --resume")

    def _finished(self, actor: Any, job: _Job, done: Future) -> None:
        self._busy.pop(id(actor), None)
        try:
            result = done.result()
        except LOSS_ERRORS as exc:
            self._lost(actor, job, exc)
            return
        except Exception as exc:  # the task itself raised: a task bug, passed on as the local backend does
            cause = exc.as_instanceof_cause() if isinstance(exc, rex.RayTaskError) else exc
            _settle(job.future, exception=cause)
        else:
            _settle(job.future, result=result)
        self._idle.append(actor)

    def _lost(self, actor: Any, job: _Job, exc: BaseException) -> None:
        """The actor is gone: replace it; run the evaluation again once, then record the loss."""
        self.losses += 1
        _kill(actor)
        self._spawn()
        job.losses.append(_one_line(exc))
        if len(job.losses) <= REQUEUES:
            self._queue.appendleft(job)
            return
        _settle(job.future, result=Result.failure(
            f"evaluation lost {len(job.losses)} times with its Ray worker (last: {job.losses[-1]}); not scored",
            **self._stamp))

    def _replacement_ready(self, actor: Any, done: Future) -> None:
        self._starting -= 1
        try:
            error = done.result()
        except LOSS_ERRORS as exc:
            error = _one_line(exc)
        if not error:
            self._respawn_failures = 0
            self._idle.append(actor)
            return
        _kill(actor)
        self._respawn_failures += 1
        if self._respawn_failures < MAX_RESPAWNS:
            self._spawn()

    def _fail_everything(self, exc: Exception) -> None:
        self._failure = exc
        jobs = list(self._queue) + [job for _, job in self._busy.values()]
        for job in jobs:
            _settle(job.future, exception=exc)
        for _ in range(self._events.qsize()):  # submissions that raced with the failure
            event = self._events.get_nowait()
            if event[0] == "submit":
                _settle(event[1].future, exception=exc)

    def _fail_queue(self, message: str) -> None:
        while self._queue:
            _settle(self._queue.popleft().future, exception=UserError(message))

    def _shutdown(self) -> None:
        for job in self._queue:
            job.future.cancel()
        self._queue.clear()
        for actor, job in list(self._busy.values()):
            job.future.cancel()
            _kill(actor)
        for actor in self._idle:
            _kill(actor)
        self._busy.clear()
        self._idle.clear()

    def _disconnect(self) -> None:
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()
            _SHIPPED[0] = False


def actor_resources(task_options: dict[str, Any]) -> dict[str, int]:
    """What one actor asks Ray for: a CPU for its sandboxed processes, and a GPU when the task runs on cuda."""
    return {"num_cpus": 1, "num_gpus": 1 if str(task_options.get("device", "cpu")).startswith("cuda") else 0}


# ---- connecting -----------------------------------------------------------------------------------------
_SHIPPED = [False]  # whether this process's Ray job carries the checkout as its working dir


def connect(address: str = "", workers: int = 1) -> bool:
    """Join the cluster at `address` ($RAY_ADDRESS when empty), or start a private local instance.

    Returns whether this call made the connection (and so should end it). A connection this process
    already has (`ray.init` called before, as tests do) is used as it is. Joining a cluster ships this
    checkout as the job's working dir, so every node runs the same evaluator code as the driver.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    if not address:
        # loopback only; workers beyond the cores share them, as the local backend's threads would
        # "local": a new instance even when another runs on this machine
        cpus = max(os.cpu_count() or 1, workers)
        ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", **quiet)
        return True
    _check_reachable(address)
    ship = (REPO_ROOT / "pyproject.toml").is_file()  # a checkout, not an installed package
    runtime_env = {"working_dir": str(REPO_ROOT), "excludes": SHIP_EXCLUDES} if ship else None
    # Ray warns that it now skips .venv by default, which is what we want: keep the console to our own lines
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)
    try:
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        auth = "" if os.environ.get("RAY_AUTH_MODE") else "; a cluster with token auth needs RAY_AUTH_MODE=token"
        raise UserError(f"cannot join the Ray cluster at '{address}' ({_one_line(exc)}); check --ray-address "
                        f"(`ray status` on the head prints it){auth}") from None
    _SHIPPED[0] = ship
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nothing listens on (Ray itself would retry for minutes)."""
    if address in ("auto", "local"):
        return  # found or started by Ray itself
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--ray-address '{address}' is not auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc}); check --ray-address "
                        "and that the head node runs (`ray start --head` prints its address)") from None


def _portable_factory(spec: str, shipped: bool) -> str:
    """A `file.py:name` factory as the actors will find it: relative to the shipped checkout, else absolute."""
    module, sep, attr = spec.rpartition(":")
    if not sep or not module.endswith(".py"):
        return spec
    path = Path(module).resolve()
    if shipped and path.is_relative_to(REPO_ROOT):
        return f"{path.relative_to(REPO_ROOT)}:{attr}"
    return f"{path}:{attr}"


# ---- small helpers --------------------------------------------------------------------------------------
def _kill(actor: Any) -> None:
    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already dead, or the cluster is gone: nothing left to stop
        pass


def _settle(future: Future, result: Result | None = None, exception: BaseException | None = None) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by the caller meanwhile: nobody waits for it
        pass


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:160] if lines else 'no detail'}"


def _resources() -> str:
    total = ray.cluster_resources()
    return ", ".join(f"{total.get(k, 0):g} {k}" for k in ("CPU", "GPU")) or "no resources"
