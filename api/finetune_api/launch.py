"""The trainer pod's command line: what the operator renders and ``finetune_trainer.launch`` parses.

Every pod of a run runs the same command; its node rank is its Indexed Job completion index
(``JOB_COMPLETION_INDEX``, read by the launcher).
"""

from __future__ import annotations

from finetune_api.wellknown import RENDEZVOUS_PORT

MODULE = "finetune_trainer.launch"


def check_world(nodes: int, procs_per_node: int, rdzv_host: str, rdzv_port: int, node_rank: int = 0) -> None:
    """Refuse a world torchrun cannot start (ValueError naming the value)."""
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    if procs_per_node < 1:
        raise ValueError(f"procs_per_node must be at least 1, got {procs_per_node}")
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank must be in [0, {nodes}), got {node_rank}")
    if not 0 < rdzv_port < 65536:
        raise ValueError(f"rdzv_port must be a TCP port, got {rdzv_port}")
    if nodes > 1 and not rdzv_host:
        raise ValueError("rdzv_host is required for more than one node")


def launch_command(
    *,
    nodes: int,
    procs_per_node: int,
    config: str,
    rdzv_host: str = "",
    rdzv_port: int = RENDEZVOUS_PORT,
    python: str = "python",
) -> list[str]:
    """The container command for ``nodes`` pods x ``procs_per_node`` processes."""
    check_world(nodes, procs_per_node, rdzv_host, rdzv_port)
    cmd = [python, "-m", MODULE]
    if nodes > 1 or procs_per_node > 1:
        cmd += [f"--nnodes={nodes}", f"--nproc-per-node={procs_per_node}"]
    if nodes > 1:
        cmd += [f"--master-addr={rdzv_host}", f"--master-port={rdzv_port}"]
    return [*cmd, "--config", config]
