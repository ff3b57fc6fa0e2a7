"""Runs whose model, data and output live on a real S3 server (versitygw): results uploaded and
verified before they are reported, checkpoints synced and resumed on an empty disk, and every storage
failure a clear exit code naming the URI and the field."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiny
import yaml
from runs import read_summary, trainer_env

from finetune_api.exitcodes import ExitCode
from finetune_api.summary import parse_summary
from finetune_trainer.runner import run_config_file

pytestmark = pytest.mark.trainer

SPEC: dict[str, Any] = {
    "model": {"name": "tiny-llama"},
    "dataset": {
        "source": {"uri": "file:///placeholder"},
        "leakage": "warn",
        "cleaning": {"dedup": {"near": False}},
    },
    "hyperparameters": {"maxSteps": 12, "batchSize": 8, "learningRate": 0.005, "maxSequenceLength": 64},
    "earlyStopping": {"enabled": False},
    "checkpointing": {"everySteps": 4, "keep": 2},
    "evaluation": {"maxNewTokens": 8, "maxTestSamples": 8, "compareBase": False, "generationMetrics": False},
}


def s3fs_for(env: dict[str, str]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def seed_bucket(fs: Any, bucket: str, llama_dir: Path, tmp: Path) -> None:
    """The tiny model and a training/validation pair, uploaded as a user would."""
    fs.put(str(llama_dir) + "/", f"{bucket}/models/tiny-llama/", recursive=True)
    records = tiny.prompt_completion_records(90)
    tiny.write_jsonl(tmp / "train.jsonl", records[:75])
    tiny.write_jsonl(tmp / "validation.jsonl", records[75:])
    fs.put_file(str(tmp / "train.jsonl"), f"{bucket}/data/train.jsonl")
    fs.put_file(str(tmp / "validation.jsonl"), f"{bucket}/data/validation.jsonl")


def write_config(root: Path, bucket: str, *, output: str | None = None, **spec_overrides: Any) -> Path:
    """A trainer config as the operator renders it for s3:// model, data and output."""
    spec = json.loads(json.dumps(SPEC))
    spec["model"]["source"] = {"uri": f"s3://{bucket}/models/tiny-llama"}
    spec["dataset"]["source"] = {"uri": f"s3://{bucket}/data/train.jsonl"}
    spec["dataset"]["splits"] = {"validationSource": {"uri": f"s3://{bucket}/data/validation.jsonl"}}
    spec["output"] = {"source": {"uri": output or f"s3://{bucket}/out"}}
    for key, value in spec_overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    paths = {
        "model": spec["model"]["source"]["uri"],
        "dataset": spec["dataset"]["source"]["uri"],
        "validation": spec["dataset"]["splits"]["validationSource"]["uri"],
        "output": str(root / "output"),
    }
    config = {
        "version": 1,
        "job": {"name": "s3-job", "namespace": "test", "run": 1},
        "spec": spec,
        "paths": paths,
        "metricsPort": 0,
        "terminationLog": str(root / "termination-log"),
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


def storage_env(store_env: dict[str, str], cache: Path) -> dict[str, str]:
    return {
        **trainer_env(),
        **store_env,
        "FTJ_STORAGE_CACHE": str(cache),
        "FTJ_STORAGE_ATTEMPTS": "2",
        "FTJ_STORAGE_BACKOFF_SECONDS": "0.1",
    }


def start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer", "--config", str(config)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def s3_run(objectstore: Any, llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``ftj run`` on a manifest whose model, dataset, validation file and output are all on S3."""
    root = tmp_path_factory.mktemp("s3-run")
    env = objectstore.env()
    fs = s3fs_for(env)
    bucket = f"ftj-run-{os.getpid()}"
    fs.mkdir(bucket)
    seed_bucket(fs, bucket, llama_dir, root)
    manifest = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "remote"},
        "spec": {
            **SPEC,
            "model": {"name": "tiny-llama", "source": {"uri": f"s3://{bucket}/models/tiny-llama"}},
            "dataset": {
                **SPEC["dataset"],
                "source": {"uri": f"s3://{bucket}/data/train.jsonl"},
                "splits": {"validationSource": {"uri": f"s3://{bucket}/data/validation.jsonl"}},
            },
            "output": {"source": {"uri": f"s3://{bucket}/results/remote"}, "mergeAdapter": True},
        },
    }
    (root / "job.yaml").write_text(yaml.safe_dump(manifest))
    log = root / "ftj.log"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_trainer.cli",
            "run",
            str(root / "job.yaml"),
            "--output",
            str(root / "local"),
        ],
        env=storage_env(env, root / "cache"),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        timeout=600,
    )
    return {"code": proc.returncode, "root": root, "fs": fs, "bucket": bucket, "log": log.read_text()}


def test_ftj_run_with_everything_on_s3_uploads_every_result(s3_run: dict[str, Any]) -> None:
    assert s3_run["code"] == ExitCode.SUCCEEDED, s3_run["log"][-3000:]
    local: Path = s3_run["root"] / "local"
    fs, bucket = s3_run["fs"], s3_run["bucket"]
    summary = parse_summary((local / "termination-log").read_text())
    uri = f"s3://{bucket}/results/remote"
    assert summary["phase"] == "Succeeded"
    assert summary["output"]["uri"] == uri
    assert f"output: {uri}" in s3_run["log"]
    results = [p for p in local.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
    results = [p for p in results if p.name != "termination-log"]
    names = {p.relative_to(local).as_posix() for p in results}
    assert {"adapter/adapter_model.safetensors", "merged/model.safetensors", "README.md"} <= names
    assert any(n.startswith("tensorboard/") for n in names)
    for path in results:
        key = f"{bucket}/results/remote/{path.relative_to(local).as_posix()}"
        assert fs.info(key)["size"] == path.stat().st_size, key
    # The last checkpoint is reported where it really is: on S3, complete.
    checkpoint = summary["checkpoint"]
    assert checkpoint["step"] == 12
    assert re.fullmatch(
        rf"s3://{bucket}/results/remote/checkpoints/run-1-[0-9a-f]{{10}}/checkpoint-12", checkpoint["uri"]
    )
    assert fs.exists(checkpoint["uri"].removeprefix("s3://") + "/ftj-complete.json")
    # checkpointing.keep (2) holds remotely as well.
    steps = sorted(
        p.rsplit("-", 1)[1] for p in fs.ls(checkpoint["uri"].removeprefix("s3://").rsplit("/", 1)[0])
    )
    assert steps == ["12", "8"]


def test_data_errors_from_s3_keep_line_numbers(s3_bucket: str, llama_dir: Path, tmp_path: Path) -> None:
    fs = s3fs_for(dict(os.environ))
    seed_bucket(fs, s3_bucket, llama_dir, tmp_path)
    fs.pipe(f"{s3_bucket}/data/train.jsonl", b'{"prompt": "a", "completion": "b"}\n{not json\n' * 40)
    config = write_config(tmp_path / "run", s3_bucket)
    assert run_config_file(config) == ExitCode.INVALID_DATA
    assert "; line 2: not valid JSON" in read_summary(config)["message"]


@pytest.mark.parametrize(
    ("case", "code", "field"),
    [
        ("missing-key", ExitCode.DATASET_NOT_FOUND, "spec.dataset.source.uri"),
        ("missing-bucket", ExitCode.DATASET_NOT_FOUND, "spec.dataset.source.uri"),
        ("missing-model", ExitCode.MODEL_NOT_FOUND, "spec.model.source.uri"),
        ("missing-validation", ExitCode.DATASET_NOT_FOUND, "spec.dataset.splits.validationSource.uri"),
        ("missing-output-bucket", ExitCode.OUTPUT_LOCATION_NOT_FOUND, "spec.output.source.uri"),
        ("bad-credentials", ExitCode.STORAGE_ACCESS_DENIED, "spec.dataset.source.uri"),
    ],
)
def test_storage_failures_are_permanent_and_name_the_field(
    case: str,
    code: ExitCode,
    field: str,
    s3_bucket: str,
    llama_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs = s3fs_for(dict(os.environ))
    seed_bucket(fs, s3_bucket, llama_dir, tmp_path)
    config = write_config(tmp_path / "run", s3_bucket)
    raw = json.loads(config.read_text())
    missing = f"no-such-bucket-{os.getpid()}"
    if case == "missing-key":
        raw["paths"]["dataset"] = raw["spec"]["dataset"]["source"]["uri"] = (
            f"s3://{s3_bucket}/data/nope.jsonl"
        )
    elif case == "missing-bucket":
        raw["paths"]["dataset"] = raw["spec"]["dataset"]["source"]["uri"] = f"s3://{missing}/train.jsonl"
    elif case == "missing-model":
        raw["paths"]["model"] = raw["spec"]["model"]["source"]["uri"] = f"s3://{s3_bucket}/models/nope"
    elif case == "missing-validation":
        uri = f"s3://{s3_bucket}/data/val-nope.jsonl"
        raw["paths"]["validation"] = raw["spec"]["dataset"]["splits"]["validationSource"]["uri"] = uri
    elif case == "missing-output-bucket":
        raw["spec"]["output"]["source"]["uri"] = f"s3://{missing}/out"
    else:
        # The output check runs first, so the key is refused there; use a local output to reach the data.
        raw["spec"]["output"] = {}
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    config.write_text(json.dumps(raw))
    assert run_config_file(config) == code
    summary = read_summary(config)
    assert (
        summary["reason"]
        == {
            ExitCode.DATASET_NOT_FOUND: "DatasetNotFound",
            ExitCode.MODEL_NOT_FOUND: "ModelNotFound",
            ExitCode.OUTPUT_LOCATION_NOT_FOUND: "OutputLocationNotFound",
            ExitCode.STORAGE_ACCESS_DENIED: "StorageAccessDenied",
        }[code]
    )
    assert summary["message"].startswith(field + ": s3://"), summary["message"]
    assert "not-the-secret" not in json.dumps(summary)
    assert "output" not in summary or not summary["output"]["uri"].startswith("s3://")


def test_upload_failure_is_retriable_output_upload_failed_and_keeps_the_local_copy(
    llama_dir: Path, tmp_path: Path
) -> None:
    """The store goes away mid-run: not Succeeded, reason OutputUploadFailed, no remote output named."""
    from helpers import load_hack

    store_mod = load_hack("objectstore")
    name = f"fail-{os.getpid()}"
    store = store_mod.up(name)
    try:
        fs = s3fs_for(store.env())
        fs.mkdir("bucket")
        seed_bucket(fs, "bucket", llama_dir, tmp_path)
        config = write_config(tmp_path / "run", "bucket", hyperparameters={"maxSteps": 16})
        proc = start(config, storage_env(store.env(), tmp_path / "cache"), tmp_path / "trainer.log")
        output = tmp_path / "run" / "output"

        def checkpoint_written() -> bool:
            return any(output.glob("checkpoints/run-*/checkpoint-4/trainer_state.json"))

        from helpers import wait_for

        wait_for(lambda: checkpoint_written() or proc.poll() is not None, 300, "the first checkpoint")
        store_mod.down(name)  # the server stops while the trainer still has 12 steps to go
        code = proc.wait(timeout=300)
    finally:
        store_mod.down(name)
    log = (tmp_path / "trainer.log").read_text()
    assert code == ExitCode.OUTPUT_UPLOAD_FAILED, log[-3000:]
    summary = read_summary(config)
    assert summary["phase"] == "Failed" and summary["reason"] == "OutputUploadFailed"
    assert "s3://bucket/out" in summary["message"]
    assert "output" not in summary  # nothing remote is claimed
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    assert summary["checkpoint"]["uri"].startswith("file://")
    assert Path(summary["checkpoint"]["uri"].removeprefix("file://")).is_dir()


def test_resume_from_the_remote_checkpoint_on_an_empty_disk(
    objectstore: Any, s3_bucket: str, llama_dir: Path, tmp_path: Path
) -> None:
    fs = s3fs_for(objectstore.env())
    seed_bucket(fs, s3_bucket, llama_dir, tmp_path)
    overrides = {"hyperparameters": {"maxSteps": 24, "loggingSteps": 1}}
    first = write_config(tmp_path / "first", s3_bucket, **overrides)
    env = storage_env(objectstore.env(), tmp_path / "cache-first")
    proc = start(first, env, tmp_path / "first.log")
    from helpers import wait_for

    def synced_step() -> int:
        done = fs.glob(f"{s3_bucket}/out/checkpoints/run-1-*/checkpoint-*/ftj-complete.json")
        return max((int(p.split("/")[-2].rsplit("-", 1)[1]) for p in done), default=0)

    wait_for(lambda: synced_step() >= 8 or proc.poll() is not None, 300, "a synced checkpoint")
    proc.kill()
    proc.wait()
    step = synced_step()
    assert step >= 8, (tmp_path / "first.log").read_text()[-3000:]

    # A new pod on a new node: empty output directory and empty cache.
    second = write_config(tmp_path / "second", s3_bucket, **overrides)
    code = start(
        second, storage_env(objectstore.env(), tmp_path / "cache-second"), tmp_path / "second.log"
    ).wait(timeout=600)
    log = (tmp_path / "second.log").read_text()
    assert code == ExitCode.SUCCEEDED, log[-3000:]
    restored = re.findall(r"restored checkpoint checkpoint-(\d+)", log)
    assert restored and int(restored[0]) >= step
    state = json.loads(
        next(
            (tmp_path / "second" / "output").glob("checkpoints/run-*/checkpoint-24/trainer_state.json")
        ).read_text()
    )
    first_logged = min(e["step"] for e in state["log_history"] if "loss" in e and e["step"] > 0)
    assert first_logged == 1  # the history came along with the checkpoint

    # A changed spec is another run: it starts at step 0 even though the same output holds checkpoints.
    third = write_config(
        tmp_path / "third", s3_bucket, hyperparameters={"maxSteps": 24, "learningRate": 0.004}
    )
    code = start(
        third, storage_env(objectstore.env(), tmp_path / "cache-third"), tmp_path / "third.log"
    ).wait(timeout=600)
    log = (tmp_path / "third.log").read_text()
    assert code == ExitCode.SUCCEEDED, log[-3000:]
    assert "restored checkpoint" not in log and "resuming from" not in log
    runs = {p.split("/")[-1] for p in fs.ls(f"{s3_bucket}/out/checkpoints")}
    assert len(runs) == 2


def test_ftj_validate_reads_data_from_s3_and_names_a_missing_file(
    s3_bucket: str, llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from finetune_trainer.cli import main

    fs = s3fs_for(dict(os.environ))
    seed_bucket(fs, s3_bucket, llama_dir, tmp_path)
    manifest = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "check"},
        "spec": {
            "model": {"name": "org/base"},
            "dataset": {"source": {"uri": f"s3://{s3_bucket}/data/train.jsonl"}},
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert main(["validate", str(path)]) == ExitCode.SUCCEEDED
    assert "the data is valid" in capsys.readouterr().out
    manifest["spec"]["dataset"]["source"]["uri"] = f"s3://{s3_bucket}/data/missing.jsonl"
    path.write_text(yaml.safe_dump(manifest))
    assert main(["validate", str(path)]) == ExitCode.DATASET_NOT_FOUND
    assert (
        f"spec.dataset.source.uri: s3://{s3_bucket}/data/missing.jsonl: not found" in capsys.readouterr().out
    )


def test_an_unreachable_store_is_retried_then_retriable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Network errors are not the user's fault: backoff inside the pod, then exit 75 naming the URI."""
    from runs import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("FTJ_STORAGE_ATTEMPTS", "3")
    monkeypatch.setenv("FTJ_STORAGE_BACKOFF_SECONDS", "0.05")
    config = write_config(tmp_path / "run", "bucket")
    raw = json.loads(config.read_text())
    raw["spec"]["output"] = {}
    config.write_text(json.dumps(raw))
    assert run_config_file(config) == ExitCode.RETRIABLE
    summary = read_summary(config)
    assert summary["reason"] == "InfrastructureError"
    assert summary["message"].startswith("spec.dataset.source.uri: s3://bucket/data/train.jsonl: unreachable")
    assert "after 3 attempts" in summary["message"]
