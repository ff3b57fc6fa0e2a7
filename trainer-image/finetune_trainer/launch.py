"""``python -m finetune_trainer.launch``: the one command every trainer pod runs.

One process: the trainer runs in this process. Several (GPUs per node > 1, or nodes > 1): torchrun's
agent runs in this process and starts the workers. Either way the pod ends with the trainer's own exit
code, which torchrun alone loses: it exits 1 whenever a worker fails, so a bad dataset (3) would be
retried like a crash instead of failing the Job through its podFailurePolicy.

SIGTERM (preemption, eviction, node drain) reaches this process, PID 1 of the container. torchrun
forwards it to the workers, which agree on a step, save one checkpoint and exit 75 (see
``callbacks.GracefulStop``). torchrun would kill them 30 seconds later; here it waits for as long as the
pod's ``terminationGracePeriodSeconds`` lets it (the kubelet kills the container at its end), because a
checkpoint of a large model takes longer than 30 seconds to write.

The command line itself (what the operator renders) is ``finetune_api.launch``; torch is imported only
to launch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from finetune_api import wellknown
from finetune_api.exitcodes import NON_RETRIABLE_EXIT_CODES, ExitCode
from finetune_api.launch import MODULE, check_world

# The pod's grace period is the real limit (the kubelet SIGKILLs at its end); outside a pod a day is
# long enough for any checkpoint and still ends a hung worker eventually.
DEFAULT_SHUTDOWN_TIMEOUT_S = 24 * 3600


def torchrun_args(
    nodes: int,
    procs_per_node: int,
    rdzv_host: str,
    rdzv_port: int = wellknown.RENDEZVOUS_PORT,
    node_rank: int = 0,
    shutdown_timeout_s: int = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> list[str]:
    """torchrun's options (the caller appends the module and its arguments).

    One node: ``--standalone`` (rendezvous on localhost, a free port). Several: static rendezvous on the
    index-0 pod (``rdzv_host``, its stable headless-Service name) with this pod's index as node rank.
    Static, not c10d, because c10d hands out node ranks in arrival order, while the operator reads
    progress from rank 0 and expects it on the index-0 pod. No torchrun restarts: a failed worker ends
    the pod, and the Job's podFailurePolicy decides whether to retry.
    """
    check_world(nodes, procs_per_node, rdzv_host, rdzv_port, node_rank)
    common = [
        "--nproc-per-node",
        str(procs_per_node),
        "--max-restarts",
        "0",
        "--shutdown-timeout",
        str(shutdown_timeout_s),
    ]
    if nodes == 1:
        return ["--standalone", "--nnodes", "1", *common]
    return [
        "--nnodes",
        str(nodes),
        *common,
        "--node-rank",
        str(node_rank),
        "--master-addr",
        rdzv_host,
        "--master-port",
        str(rdzv_port),
    ]


def exit_code_of(failures: Mapping[int, int], first: int | None = None) -> int:
    """The pod's exit code from the failed workers' exit codes (global rank -> code; negative = signal).

    A contract code that fails the Job (2-6, 137) wins over a retriable one, because the other ranks often
    end with a consequence of the root cause (killed by torchrun, or a collective that lost its peer);
    among several, the first to fail (``first``) or else the lowest rank. Then 75 (retriable). A worker
    killed by a signal ends as 128 + the signal, as a shell reports it (SIGKILL: 137, the kernel's
    out-of-memory kill). Anything else is a crash the Job may retry: 75.
    """
    if not failures:
        return int(ExitCode.SUCCEEDED)
    order = sorted(failures, key=lambda rank: (rank != first, rank))
    codes = [failures[rank] for rank in order]
    for code in codes:
        if code in NON_RETRIABLE_EXIT_CODES:
            return code
    if ExitCode.RETRIABLE in codes:
        return int(ExitCode.RETRIABLE)
    for code in codes:
        if code < 0:
            return 128 - code
    return int(ExitCode.RETRIABLE)


def _node_rank(env: Mapping[str, str]) -> int:
    value = env.get("JOB_COMPLETION_INDEX", "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"JOB_COMPLETION_INDEX={value!r} is not an integer") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="trainer config JSON")
    parser.add_argument("--nnodes", type=int, default=1, help="pods in the run (default %(default)s)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes per pod: its GPUs")
    parser.add_argument(
        "--node-rank", type=int, default=None, help="this pod's index (default: $JOB_COMPLETION_INDEX or 0)"
    )
    parser.add_argument("--master-addr", default="", help="the index-0 pod's DNS name (several nodes)")
    parser.add_argument("--master-port", type=int, default=wellknown.RENDEZVOUS_PORT)
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        help="seconds the workers get to save a checkpoint after SIGTERM (the pod's grace period governs)",
    )
    return parser


def parse_command(argv: Sequence[str]) -> argparse.Namespace:
    """The pod command's arguments, as ``finetune_api.launch.launch_command`` renders them."""
    return _parser().parse_args(argv)


def torchrun_command(args: argparse.Namespace, env: Mapping[str, str]) -> list[str] | None:
    """torchrun's command line for this pod (its node rank from ``env``), or None when a single process
    runs the trainer itself. Raises ValueError for a world torchrun cannot start."""
    if args.nnodes == 1 and args.nproc_per_node == 1:
        return None
    node_rank = _node_rank(env) if args.node_rank is None else args.node_rank
    options = torchrun_args(
        args.nnodes, args.nproc_per_node, args.master_addr, args.master_port, node_rank, args.shutdown_timeout
    )
    return [*options, "-m", "finetune_trainer", "--config", args.config]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_command(sys.argv[1:] if argv is None else argv)
    try:
        command = torchrun_command(args, os.environ)
    except ValueError as exc:
        print(f"{MODULE}: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    if command is None:
        from finetune_trainer.__main__ import main as trainer_main

        return trainer_main(["--config", args.config])
    return run_torchrun(command)


def run_torchrun(argv: list[str]) -> int:
    """torchrun's agent in this process; returns the exit code the pod should end with."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        first, _ = exc.get_first_failure()
        code = exit_code_of({rank: failure.exitcode for rank, failure in exc.failures.items()}, first)
        print(f"{MODULE}: workers failed ({_describe(exc)}); exit {code}", file=sys.stderr, flush=True)
        return code
    except SignalException as exc:
        # The workers had the whole shutdown timeout to agree on a step and save a checkpoint.
        print(f"{MODULE}: {signal.Signals(exc.sigval).name}; workers stopped; exit 75", file=sys.stderr)
        return int(ExitCode.RETRIABLE)
    return int(ExitCode.SUCCEEDED)


def _describe(exc: object) -> str:
    failures = getattr(exc, "failures", {})
    return ", ".join(f"rank {rank}: {failure.exitcode}" for rank, failure in sorted(failures.items()))


if __name__ == "__main__":
    sys.exit(main())
