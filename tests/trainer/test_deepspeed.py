"""DeepSpeed full fine-tuning: the generated config, the launch helpers, and real runs on CPU.

The runs use tests/trainer/ds_worker.py (a tiny random Llama, HF Trainer + DeepSpeed) in subprocesses:
one process for ZeRO-2, two under torchrun (gloo) for ZeRO-2/3, so the process group and the
environment variables each test sets up never leak into the pytest process or other tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from finetune_api.training import TrainingSpec
from finetune_trainer.deepspeed_config import deepspeed_config
from finetune_trainer.distributed import WorldInfo, finishes_within, training_arguments_overrides, world_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "ds_worker.py"
# Each run takes 10-30 s on two shared cores; the deadline only catches a hang (e.g. a rank stuck in a
# collective after its peer died), and the output is shown either way.
RUN_TIMEOUT_S = 420


def _spec(
    stage: int = 2, *, offload_optimizer: bool = False, offload_parameters: bool = False, **hp: Any
) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {
            "method": "full",
            "model": {"name": "tiny"},
            "dataset": {"source": {"uri": "file:///data.jsonl"}},
            "hyperparameters": {"batchSize": 4, "gradientAccumulationSteps": 2, "maxGradNorm": 0.5, **hp},
            "distributed": {
                "deepspeed": {
                    "zeroStage": stage,
                    "offloadOptimizer": offload_optimizer,
                    "offloadParameters": offload_parameters,
                }
            },
        }
    )


# ---------------------------------------------------------------------------------------------------
# deepspeed_config(): pure


def test_config_takes_spec_values_and_leaves_runtime_values_auto() -> None:
    cfg = deepspeed_config(_spec(2))
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 0.5
    # Depends on the world size, known only inside the launched processes.
    assert cfg["train_batch_size"] == "auto"
    assert cfg["bf16"] == {"enabled": "auto"} and cfg["fp16"] == {"enabled": "auto"}
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 2 and zero["reduce_bucket_size"] == "auto"
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    # HF builds the optimizer and the spec's scheduler unless offload needs DeepSpeed's CPU Adam.
    assert "optimizer" not in cfg and "scheduler" not in cfg
    json.dumps(cfg)  # it travels as JSON


def test_config_stage3_gathers_weights_on_save_and_offloads() -> None:
    zero = deepspeed_config(_spec(3))["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["stage3_prefetch_bucket_size"] == "auto"
    assert zero["stage3_param_persistence_threshold"] == "auto"

    cfg = deepspeed_config(_spec(3, offload_optimizer=True, offload_parameters=True))
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["type"] == "AdamW"
    assert cfg["optimizer"]["params"]["lr"] == "auto"


def test_config_refuses_what_deepspeed_cannot_do() -> None:
    with pytest.raises(ValueError, match="offloadParameters needs zeroStage 3"):
        deepspeed_config(_spec(2, offload_parameters=True))
    with pytest.raises(ValueError, match="offloadOptimizer needs zeroStage"):
        deepspeed_config(_spec(0, offload_optimizer=True))
    no_ds = TrainingSpec.model_validate(
        {"method": "full", "model": {"name": "m"}, "dataset": {"source": {"uri": "file:///d.jsonl"}}}
    )
    with pytest.raises(ValueError, match="not set"):
        deepspeed_config(no_ds)


def test_config_stage0_and_forced_precision() -> None:
    cfg = deepspeed_config(_spec(0), precision="bf16")
    assert cfg["zero_optimization"] == {"stage": 0}
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"]["enabled"] is False
    fp16 = deepspeed_config(_spec(1), precision="fp16")["fp16"]
    assert fp16["enabled"] is True and fp16["loss_scale"] == 0  # dynamic loss scaling


# ---------------------------------------------------------------------------------------------------
# launch helpers: pure


def test_world_info_reads_torchrun_environment() -> None:
    assert world_info({}) == WorldInfo()
    env = {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
        "MASTER_ADDR": "job-0.job", "MASTER_PORT": "29500",
    }  # fmt: skip
    info = world_info(env)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.node_rank) == (
        5,
        8,
        1,
        4,
        1,
    )
    assert info.master_addr == "job-0.job" and info.master_port == 29500
    assert info.is_distributed and not info.is_main
    with pytest.raises(ValueError, match="RANK=2 WORLD_SIZE=2"):
        world_info({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        world_info({"WORLD_SIZE": "two"})


def test_finishes_within_tells_a_hang_from_a_return_and_passes_an_error_on() -> None:
    release = threading.Event()
    try:
        assert finishes_within(release.wait, timeout_s=0.2) is False
    finally:
        release.set()
    assert finishes_within(lambda: None, timeout_s=30) is True
    with pytest.raises(RuntimeError, match="gloo"):
        finishes_within(lambda: (_ for _ in ()).throw(RuntimeError("gloo")), timeout_s=30)


HANGING_TEARDOWN = """
import os, sys, threading
import torch.distributed as dist
from finetune_trainer import distributed, runner
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(distributed.free_port()))
dist.init_process_group("gloo", rank=0, world_size=1)
dist.destroy_process_group = threading.Event().wait  # a peer that never answers
distributed.LEAVE_TIMEOUT_S = 0.5
runner._leave_process_group(3)
print("returned")
"""


def test_a_rank_whose_group_hangs_at_teardown_still_ends_with_the_runs_code() -> None:
    """A real (world of one) gloo group whose destroy never returns: the rank exits with its run's code
    after the timeout, instead of hanging the pod or aborting in the interpreter's teardown."""
    from runs import trainer_env

    proc = subprocess.run(
        [sys.executable, "-c", HANGING_TEARDOWN],
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr[-4000:]
    assert "returned" not in proc.stdout
    assert "was not torn down in 0 s; exiting 3" in proc.stderr, proc.stderr[-4000:]


def test_training_arguments_overrides_count_cpu_processes() -> None:
    assert training_arguments_overrides(use_cuda=False) == {"use_cpu": True}
    assert training_arguments_overrides(use_cuda=True) == {}


# ---------------------------------------------------------------------------------------------------
# DeepSpeed accepts the config (after HF fills the "auto" values, as in a run)

deepspeed_cases = pytest.mark.parametrize(
    ("stage", "offload_optimizer", "offload_parameters"),
    [(2, False, False), (2, True, False), (3, False, False), (3, True, True)],
    ids=["zero2", "zero2-offload", "zero3", "zero3-offload"],
)


@pytest.mark.trainer
@deepspeed_cases
def test_deepspeed_accepts_config(
    stage: int,
    offload_optimizer: bool,
    offload_parameters: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DS_ACCELERATOR", os.environ.get("DS_ACCELERATOR", "cpu"))
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    spec = _spec(stage, offload_optimizer=offload_optimizer, offload_parameters=offload_parameters)
    try:
        args = TrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_grad_norm=0.5,
            report_to=[],
            deepspeed=deepspeed_config(spec),
            **training_arguments_overrides(use_cuda=False),  # type: ignore[arg-type]
        )
        hf = args.hf_deepspeed_config
        hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=32)), 10)
        assert "auto" not in json.dumps(hf.config), hf.config
        ds = DeepSpeedConfig(hf.config)
    finally:
        unset_hf_deepspeed_config()  # ZeRO-3 would otherwise stay "enabled" for model loads in later tests
    assert ds.zero_optimization_stage == stage
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (
        8,
        4,
        2,
    )
    assert ds.gradient_clipping == 0.5
    assert ds.zero_config.offload_optimizer is None or ds.zero_config.offload_optimizer.device == "cpu"
    assert (ds.zero_config.offload_optimizer is not None) == offload_optimizer
    assert (ds.zero_config.offload_param is not None) == offload_parameters
    if stage == 3:
        assert ds.zero_config.gather_16bit_weights_on_model_save is True


# ---------------------------------------------------------------------------------------------------
# real runs


def _worker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ftj_ds_worker", WORKER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ds-tiny-llama")
    _worker_module().build(directory)
    return directory


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "api"), str(REPO / "trainer-image"), env.get("PYTHONPATH", "")) if p
    )
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared 2-core machine: no oversubscription
    env.pop("ACCELERATE_USE_CPU", None)  # it would switch DeepSpeed off inside accelerate
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _run(cmd: list[str], out: Path) -> tuple[list[dict[str, Any]], str, float]:
    """Run to completion under a deadline; return the per-rank reports, the output and the seconds."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{' '.join(cmd)} did not finish in {RUN_TIMEOUT_S}s; output:\n{output[-8000:]}")
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    errors = [r for r in reports if "error" in r]
    assert proc.returncode == 0 and not errors, (
        f"exit {proc.returncode}; errors: {[r.get('error') for r in errors]}\noutput:\n{output[-8000:]}"
    )
    return reports, output, elapsed


def _torchrun(nproc: int, *worker_args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(WORKER), "train", *worker_args]  # fmt: skip


@pytest.mark.trainer
def test_zero2_trains_in_one_process(tiny_model: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(WORKER),
        "train",
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path),
        "--stage",
        "2",
    ]
    (report,), output, elapsed = _run(cmd, tmp_path)
    print(f"ZeRO-2, 1 process: {elapsed:.1f}s, losses {report['losses']}")
    assert report["zero_stage"] == 2
    assert report["deepspeed_world_size"] == report["args_world_size"] == 1
    assert report["global_step"] == 6
    losses = report["losses"]
    assert losses[-1] < losses[0] * 0.95, output[-4000:]


@pytest.mark.trainer
@pytest.mark.parametrize("stage", [3, 2], ids=["zero3", "zero2"])
def test_trains_in_two_processes_under_torchrun(stage: int, tiny_model: Path, tmp_path: Path) -> None:
    cmd = _torchrun(2, "--model", str(tiny_model), "--out", str(tmp_path), "--stage", str(stage))
    reports, output, elapsed = _run(cmd, tmp_path)
    print(f"ZeRO-{stage}, 2 processes: {elapsed:.1f}s, losses {reports[0]['losses']}")
    assert [r["rank"] for r in reports] == [0, 1], output[-4000:]
    for r in reports:
        seen = {k: r[k] for k in r if k.endswith("world_size")}
        assert set(seen.values()) == {2}, f"rank {r['rank']} saw {seen}"
        assert r["zero_stage"] == stage
        assert r["train_batch_size"] == 2 * 4  # world x micro-batch x accumulation (1)
        assert r["global_step"] == 6
        assert r["losses"][-1] < r["losses"][0] * 0.95, r["losses"]
        if stage == 3:
            # Really sharded: each rank holds half of every parameter.
            assert all(s["local"] * 2 == s["full"] for s in r["shards"]), r["shards"]
    assert reports[0]["checksum"] == reports[1]["checksum"], "ranks finished with different parameters"


@pytest.mark.trainer
def test_without_the_workaround_deepspeed_sees_a_world_of_one(tiny_model: Path, tmp_path: Path) -> None:
    """The bug docs/distributed-training.md describes: if this starts passing, upstream fixed it."""
    cmd = _torchrun(
        2, "--model", str(tiny_model), "--out", str(tmp_path), "--stage", "3", "--no-fix", "use-cpu"
    )
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    errors = [r.get("error", "") for r in reports]
    assert proc.returncode != 0 and errors, (
        "ZeRO-3 under torchrun now works without finetune_trainer.distributed.init_distributed(): "
        "the upstream world-size bug is fixed; revisit docs/distributed-training.md"
    )
    assert any("8 != 4 * 1 * 1" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------------
# the trainer itself: python -m finetune_trainer under torchrun, method full + ZeRO-3


@pytest.mark.trainer
def test_runner_full_zero3_two_processes(make_config: Any, tmp_path: Path) -> None:
    from runs import output_of, read_summary, trainer_env

    from finetune_trainer.runner import run_config_file

    path = make_config(
        "prompt-completion",
        name="full-zero3",
        method="full",
        hyperparameters={"maxSteps": 6, "batchSize": 4, "learningRate": 0.002},
        distributed={"gpusPerNode": 0, "deepspeed": {"zeroStage": 3}},
    )
    cmd = [sys.executable, "-m", "finetune_trainer.launch", "--nproc-per-node=2", "--config", str(path)]
    env = trainer_env()
    env["OMP_NUM_THREADS"] = "1"
    env.pop("ACCELERATE_USE_CPU", None)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"torchrun did not finish in {RUN_TIMEOUT_S}s; output:\n{out[-8000:]}")
    output = proc.stdout + proc.stderr
    print(f"runner, full + ZeRO-3, 2 processes: {time.monotonic() - start:.1f}s")
    assert proc.returncode == 0, output[-8000:]
    summary = read_summary(path)
    assert summary["phase"] == "Succeeded", (summary, output[-8000:])
    metrics = summary["metrics"]
    assert metrics["step"] == 6
    assert metrics["train_loss"] < metrics["first_train_loss"], metrics
    # every rank destroyed its group before exit (a group left to teardown could abort a finished run)
    assert sorted(re.findall(r"\[rank (\d)\] .*left the process group", output)) == ["0", "1"], output[-8000:]

    # ZeRO-3 partitioned the model while loading it: each rank held about half, never the whole model.
    held = {
        int(rank): (int(part), int(whole))
        for rank, part, whole in re.findall(r"rank (\d) holds (\d+) of the model's (\d+) parameters", output)
    }
    assert set(held) == {0, 1}, output
    for part, whole in held.values():
        assert 0.45 * whole <= part <= 0.55 * whole, held

    # The base is measured under ZeRO-3 too (it was skipped), through the same sharded engine as the
    # tuned model, and agrees with the base measured without DeepSpeed in one process.
    evaluated = summary["evaluation"]
    assert set(evaluated) >= {"test", "base", "delta"}, evaluated
    assert evaluated["review"]["with_base"] is True, evaluated
    reference = make_config(
        "prompt-completion", name="full-plain", method="full", hyperparameters={"maxSteps": 1, "batchSize": 4}
    )
    run_config_file(reference)
    plain = read_summary(reference)
    assert plain["phase"] == "Succeeded", plain
    for key in ("loss", "perplexity"):
        assert evaluated["base"][key] == pytest.approx(plain["evaluation"]["base"][key], rel=1e-4), key
    assert evaluated["test"]["loss"] < evaluated["base"]["loss"], evaluated

    # ZeRO-3 gathered the shards on save: a normal checkpoint with full-size weights.
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = output_of(path) / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    assert model.get_input_embeddings().weight.shape == (config.vocab_size, config.hidden_size)


def test_offload_optimizer_without_cpu_adam_is_a_clear_config_error(tmp_path: Path) -> None:
    """No prebuilt CPU Adam and no compiler: refused at setup with a message, not a compiler error."""
    from deepspeed.git_version_info import installed_ops

    from finetune_trainer.deepspeed_config import cpu_adam_problem

    empty = tmp_path / "bin"
    empty.mkdir()
    if installed_ops.get("cpu_adam"):
        assert cpu_adam_problem(path=str(empty)) is None  # prebuilt: nothing to compile
    else:
        problem = cpu_adam_problem(path=str(empty))
        assert problem is not None and "DS_BUILD_CPU_ADAM=1" in problem and "offloadOptimizer" in problem
    assert cpu_adam_problem(path=os.environ.get("PATH")) is None  # this machine has c++ and ninja
