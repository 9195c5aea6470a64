"""Evaluation backends: where `Task.evaluate` runs. The loop sees only `submit(code) -> Future[Result]`.

`local` runs evaluations on a thread pool in this process: a task that sandboxes each candidate in its
own process (as the EPLB task does) needs nothing heavier. Other backends (Ray) plug in by name through
`BACKENDS`, or by an import string `module:factory`; each is constructed as `factory(BackendContext)`.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evolve.errors import UserError
from evolve.loading import load_object
from evolve.task import Result, Task

# name -> import string of a factory taking a BackendContext. Ray's lives in its own module (extra: ray).
BACKENDS: dict[str, str] = {
    "local": "evolve.backends:LocalBackend",
    "ray": "evolve.ray_backend:RayBackend",
}


@dataclass
class BackendContext:
    """What a backend may need: the task built here, and how to rebuild it elsewhere (remote workers)."""

    task: Task
    workers: int
    task_factory: str = ""
    task_options: dict[str, Any] = field(default_factory=dict)
    ray_address: str = ""  # the ray backend's cluster (campaign.ray_address); other backends ignore it


@runtime_checkable
class Backend(Protocol):
    def submit(self, program_code: str) -> "Future[Result]":
        """Start evaluating; the future holds the Result, or the exception the task raised (a task bug)."""
        ...

    def close(self) -> None:
        """Stop accepting work; evaluations not yet started are dropped."""
        ...


class LocalBackend:
    """A thread pool of `workers` threads, each calling `task.evaluate`."""

    def __init__(self, context: BackendContext) -> None:
        self.task = context.task
        self._pool = ThreadPoolExecutor(max_workers=context.workers, thread_name_prefix="evaluate")

    def submit(self, program_code: str) -> "Future[Result]":
        return self._pool.submit(self._evaluate, program_code)

    def _evaluate(self, program_code: str) -> Result:
        result = self.task.evaluate(program_code)
        if not isinstance(result, Result):
            raise TypeError(f"{type(self.task).__name__}.evaluate returned {type(result).__name__}, not a Result")
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_backend(name: str, context: BackendContext) -> Backend:
    """The backend called `name` (a key of BACKENDS or an import string)."""
    spec = BACKENDS.get(name, name)
    try:
        factory = load_object(spec, what=f"backend '{name}'")
    except UserError as exc:
        if name == "ray":
            raise UserError(f"the ray backend is not available ({exc}); install the extra "
                            "(pip install -e '.[ray]') or use --backend local") from None
        raise
    return factory(context)
