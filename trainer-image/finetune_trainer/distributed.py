"""Process-group setup for multi-process training, and rank-0-only work shared with the other ranks.

Several processes are started by torchrun inside ``finetune_trainer.launch``; torchrun exports RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK and MASTER_ADDR/PORT to each worker, and
:func:`world_info` reads them back.

Why :func:`init_distributed` exists (see docs/distributed-training.md): with DeepSpeed on a CPU,
``transformers`` + ``accelerate`` get the world size wrong unless the process group is created through
``deepspeed.comm`` *before* ``TrainingArguments`` and the model are built, and ``TrainingArguments`` is
given ``use_cpu=True`` (:func:`training_arguments_overrides`). Otherwise DeepSpeed's batch-size check
fails (``train_batch_size != micro * accumulation * world_size``) with one side seeing a world of 1.

Import-light: torch and deepspeed are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

# How long a rank waits for its process group to be torn down at the end of a run before it exits without
# the interpreter's teardown (NCCL can wait on a peer that is already gone).
LEAVE_TIMEOUT_S = 60.0

# Long enough for a slow checkpoint load on one rank while the others wait in a collective; a hung
# peer still ends the run (exit code 75, retriable) instead of holding GPUs forever.
DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class WorldInfo:
    """Where this process sits in the run, as the launcher (torchrun) described it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes outputs, the termination summary and serves the metrics the operator reads."""
        return self.rank == 0


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def world_info(env: Mapping[str, str] | None = None) -> WorldInfo:
    """The world as torchrun's environment variables describe it; a plain process is a world of one.

    GROUP_RANK is torchrun's node rank (NODE_RANK is accepted for other launchers); the local world size
    falls back to the world size, which is right for a single node.
    """
    env = os.environ if env is None else env
    world_size = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local_rank = _int(env, "LOCAL_RANK", 0)
    local_world_size = _int(env, "LOCAL_WORLD_SIZE", world_size)
    node_rank = _int(env, "GROUP_RANK", _int(env, "NODE_RANK", rank // max(local_world_size, 1)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={world_size}")
    if not 0 <= local_rank < max(local_world_size, 1):
        raise ValueError(
            f"inconsistent launcher environment: LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world_size}"
        )
    port = env.get("MASTER_PORT")
    return WorldInfo(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        node_rank=node_rank,
        master_addr=env.get("MASTER_ADDR") or None,
        master_port=int(port) if port else None,
    )


def cuda_available() -> bool:
    """Whether this process trains on GPUs (imports torch)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)


def backend_name(use_cuda: bool) -> str:
    """nccl between GPUs; gloo on CPUs (the one CPU backend every torch build has: no MPI, no oneCCL)."""
    return "nccl" if use_cuda else "gloo"


def select_deepspeed_accelerator(use_cuda: bool, env: MutableMapping[str, str] | None = None) -> str:
    """Pin DeepSpeed's accelerator before ``deepspeed`` is first imported; returns the name in force.

    DeepSpeed picks its accelerator once, at import, by probing for xpu/npu/mps/hpu/... packages and then
    CUDA, and logs a warning when it falls back to CPU. Setting DS_ACCELERATOR=cpu on a machine without
    GPUs makes that choice explicit (no probing, no warning), so the communication backend it reports is
    gloo and matches the process group created here. A value already set by the user is kept.
    """
    env = os.environ if env is None else env
    wanted = "cuda" if use_cuda else "cpu"
    return env.setdefault("DS_ACCELERATOR", wanted)


def training_arguments_overrides(use_cuda: bool) -> dict[str, object]:
    """Keyword arguments the trainer adds to ``TrainingArguments`` (after :func:`init_distributed`).

    On CPU, ``use_cpu=True`` is what makes accelerate count the processes: without it accelerate finds no
    device backend, reports one process, and HF computes ``train_batch_size`` for a world of 1 while
    DeepSpeed sees 2. ``use_cpu`` does not switch DeepSpeed off: the Trainer's Accelerator still runs the
    DeepSpeed engine because a DeepSpeed plugin is given (ACCELERATE_USE_CPU must stay unset: that one
    would). No ``ddp_backend``: the group already exists, and naming a backend without one makes
    accelerate ask a missing group for its size.
    """
    return {} if use_cuda else {"use_cpu": True}


def free_port() -> int:
    """A TCP port free on this host now (for a world of one; torchrun picks its own)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def single_process_environment(env: MutableMapping[str, str]) -> None:
    """torchrun's variables for a world of one on localhost; values already present are kept."""
    for name, value in (
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("LOCAL_WORLD_SIZE", "1"),
        ("GROUP_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
    ):
        env.setdefault(name, value)
    if "MASTER_PORT" not in env:
        env["MASTER_PORT"] = str(free_port())


def init_distributed(
    *, use_deepspeed: bool, use_cuda: bool | None = None, timeout: timedelta = DEFAULT_TIMEOUT
) -> WorldInfo:
    """Create the process group from torchrun's environment, before TrainingArguments and the model.

    For DeepSpeed the group is created through ``deepspeed.comm``: DeepSpeed reads the world size from
    its own communication layer, and ``zero.Init`` (used by ``from_pretrained`` under ZeRO-3) builds its
    config *before* it initialises that layer, silently falling back to a world of 1. Creating the group
    here first closes that gap. A plain process (no torchrun) with DeepSpeed becomes a world of one on
    localhost; without DeepSpeed it is left alone.

    Raises RuntimeError when the group that came up disagrees with the launcher's WORLD_SIZE.
    """
    if use_cuda is None:
        use_cuda = cuda_available()
    if use_deepspeed:
        select_deepspeed_accelerator(use_cuda)
        # DeepSpeed always needs a process group. Without torchrun's variables, deepspeed.initialize
        # would look for an MPI launcher (mpi4py) instead, so a plain process becomes a world of one.
        if "WORLD_SIZE" not in os.environ:
            single_process_environment(os.environ)
    info = world_info()
    if not info.is_distributed and not use_deepspeed:
        return info

    import torch
    import torch.distributed as dist

    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    backend = backend_name(use_cuda)
    if use_deepspeed:
        import deepspeed

        # Also wraps a group someone else already created, so deepspeed.comm sees the real world size.
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timeout)
    elif not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)

    actual = dist.get_world_size()
    if actual != info.world_size or dist.get_rank() != info.rank:
        raise RuntimeError(
            f"process group has rank {dist.get_rank()} of {actual}, "
            f"but the launcher set RANK={info.rank} WORLD_SIZE={info.world_size}"
        )
    return info


_CPU_GROUP: list[Any] = []


def cpu_group() -> Any:
    """A gloo group over every rank for small control messages: the default group when it is gloo.

    NCCL moves Python objects through GPU memory and makes the host wait for the GPU; control flags and
    the prepared dataset need neither. Created once, on first use, which every rank reaches in the same
    order (the data stage), as ``new_group`` requires.
    """
    import torch.distributed as dist

    if not _CPU_GROUP:
        _CPU_GROUP.append(None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))
    return _CPU_GROUP[0]


def is_multi_process() -> bool:
    """Whether a process group of more than one rank is up (imports torch)."""
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def broadcast_from_rank0(
    produce: Callable[[], T], failure_of: Callable[[BaseException], BaseException], world: WorldInfo
) -> T:
    """``produce()`` on rank 0 only; every rank returns its result, or raises when it failed.

    Rank 0 re-raises its own exception; the others raise ``failure_of(exception)`` (an exception object
    carrying the same exit code and message), so every rank ends the same way and none waits for a
    peer that has already gone. SIGTERM on rank 0 (a BaseException) is passed on as well.
    """
    if not world.is_distributed or not is_multi_process():
        return produce()
    import torch.distributed as dist

    box: list[Any] = [None]
    error: BaseException | None = None
    if world.rank == 0:
        try:
            box[0] = ("ok", produce())
        except BaseException as exc:
            error = exc
            box[0] = ("error", failure_of(exc))
    dist.broadcast_object_list(box, src=0, group=cpu_group())
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value  # type: ignore[no-any-return]


def gather_from_all(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` without a world.

    A collective: every rank must call it at the same point (callbacks that all ranks run, such as
    ``on_log`` and the end of training).
    """
    if not is_multi_process():
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value, group=cpu_group())
    return out


def leave_process_group(timeout_s: float = LEAVE_TIMEOUT_S) -> bool | None:
    """Destroy this rank's process group (and the gloo control group) at the end of a run.

    Left to the interpreter's teardown, a rank can abort after a finished run (SIGABRT, "terminate called
    without an active exception"): torchrun then exits non-zero and the Job fails, or retrains a run whose
    summary says Succeeded. Returns None when no group was up, True when it was destroyed, and False when
    destroying it did not finish within ``timeout_s`` (the caller then exits without the teardown).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    _CPU_GROUP.clear()
    return finishes_within(dist.destroy_process_group, timeout_s)


def finishes_within(work: Callable[[], object], timeout_s: float) -> bool:
    """Run ``work`` on a daemon thread; whether it finished within ``timeout_s``. An exception it raised
    in time is raised here."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="leave-process-group", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False
    if failed:
        raise failed[0]
    return True
