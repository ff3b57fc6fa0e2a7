"""The memory/cost plan: pure estimates, `ftj plan` on manifests, and the operator's admission."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from finetune_api.conditions import Reason
from finetune_api.planning import architecture, gpus, make_plan
from finetune_api.spec import FineTuneJobSpec
from finetune_api.summary import Summary
from finetune_operator.admission import admit
from finetune_operator.settings import OperatorSettings
from finetune_trainer.plan_cmd import plan_command
from summaries import trainer_summary

GIB = 1024**3


def spec(**over: Any) -> FineTuneJobSpec:
    base: dict[str, Any] = {
        "model": {"name": "org/base-7B"},
        "method": "lora",
        "dataset": {"source": {"uri": "s3://bucket/train.jsonl"}},
        "distributed": {"gpusPerNode": 1},
    }
    base.update(over)
    return FineTuneJobSpec.model_validate(base)


def write_manifest(tmp_path: Path, name: str, **over: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    body = {"apiVersion": "finetuning.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}}
    body["spec"] = spec(**over).wire()
    path.write_text(yaml.safe_dump(body))
    return path


def plan_json(
    manifest: Path, capsys: pytest.CaptureFixture[str], gpu: str | None = None, price: float | None = None
) -> dict[str, Any]:
    assert plan_command(str(manifest), True, gpu, price) == 0
    return dict(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", 70.0),
        ("Qwen/Qwen2.5-1.5B-Instruct", 1.5),
        ("EleutherAI/gpt-neo-2.7B", 2.7),
        ("mistralai/Mistral-7B-v0.3", 7.0),
    ],
)
def test_size_from_the_model_name(name: str, billions: float) -> None:
    arch = architecture.from_name(name)
    assert arch is not None and arch.source == "model name"
    assert arch.parameters == int(billions * 1e9)


@pytest.mark.parametrize("name", ["microsoft/Phi-3-mini-4k-instruct", "org/model-v2", "bert-base-uncased"])
def test_no_size_in_the_name_gives_no_shape(name: str) -> None:
    assert architecture.from_name(name) is None


def test_seventy_b_full_on_one_80gb_gpu_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(
        tmp_path, "big", model={"name": "meta-llama/Llama-3.1-70B"}, method="full", lora=None
    )
    plan = plan_json(manifest, capsys, "NVIDIA-A100-SXM4-80GB")
    assert plan["verdict"] == "DoesNotFit"
    assert plan["gpuMemoryGiB"] == 80.0
    # 16 bytes per parameter of model states alone: about 1 TiB.
    assert plan["perGpuMemoryGiB"] > 16 * 70e9 / GIB
    assert plan["dominantTerm"] == "optimizer"
    assert "suggestion" in plan


def test_seven_b_qlora_on_one_24gb_gpu_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(
        tmp_path,
        "small",
        model={"name": "mistralai/Mistral-7B-v0.3"},
        method="qlora",
        hyperparameters={"batchSize": 2, "maxSequenceLength": 1024, "gradientCheckpointing": True},
    )
    plan = plan_json(manifest, capsys, "NVIDIA-L4")
    assert plan["verdict"] == "Fits", plan
    assert plan["gpuMemoryGiB"] == 24.0
    # NF4 with double quantization (a little over half a byte per weight) for the blocks; the embeddings
    # and head (about 1B of 7B with a 128k vocabulary) in float32, as peft's k-bit preparation casts them.
    assert 5.5 < plan["memoryGiB"]["weights"] < 8.0


def test_every_example_gets_a_plan_or_a_clear_reason(capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    for manifest in sorted((repo / "examples").glob("*.yaml")):
        code = plan_command(str(manifest), True, "NVIDIA-A100-SXM4-80GB")
        out, err = capsys.readouterr()
        if code == 0:
            assert json.loads(out)["verdict"] in ("Fits", "Tight", "DoesNotFit", "Unknown")
        else:
            assert "no plan" in err and "unknown here" in err, (manifest, err)


def test_config_json_in_the_hub_cache_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hf" / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hf" / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 256,
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    plan = plan_json(write_manifest(tmp_path, "tiny", model={"name": "org/tiny"}), capsys)
    assert plan["shapeSource"] == "config.json"
    # embed 256*64, head 256*64, per layer q/o 64*64, k/v 64*32, mlp 3*64*128, norms 2*64; final norm.
    expected = 2 * 256 * 64 + 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 64
    assert plan["parameters"] == expected


def test_local_dataset_gives_tokens_steps_and_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": "p" * 200, "completion": "c" * 196}) + "\n" for _ in range(1000))
    )
    manifest = write_manifest(
        tmp_path,
        "costed",
        dataset={"source": {"uri": "file://train.jsonl"}},
        hyperparameters={"epochs": 2, "batchSize": 8},
    )
    plan = plan_json(manifest, capsys, "NVIDIA-H100-80GB-HBM3", 3.0)
    assert plan["steps"] == 2 * 100  # 800 training records (80%) / 8 per step, twice
    # A record's JSON line is about 430 characters: about 107 tokens at 4 characters per token.
    assert 800 * 2 * 100 < plan["tokens"] < 800 * 2 * 120
    assert plan["gpuHours"] > 0 and plan["estimatedCost"] == round(plan["gpuHours"] * 3.0, 2)


def test_price_gives_an_estimated_cost() -> None:
    s = spec(hyperparameters={"maxSteps": 1000})
    arch = architecture.from_name("org/base-7B")
    assert arch is not None
    plan = make_plan(s.training(), arch, gpu=gpus.lookup("NVIDIA-H100-80GB-HBM3"), price_per_gpu_hour=4.0)
    assert plan.steps == 1000 and plan.tokens == 1000 * 8 * 512
    assert plan.estimated_cost == round(plan.gpu_hours * 4.0, 2)  # type: ignore[operator]


def test_lookup_matches_label_prefixes_and_quantities_parse() -> None:
    product = gpus.lookup("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb")
    assert product is not None and product.name == "NVIDIA-A100-SXM4-80GB"
    assert gpus.lookup("Unknown-GPU") is None
    assert gpus.parse_quantity("80Gi") == 80 * GIB and gpus.parse_quantity("24G") == 24 * 10**9
    with pytest.raises(ValueError, match="not a memory quantity"):
        gpus.parse_quantity("lots")


def test_suggestion_names_a_change_that_fits() -> None:
    s = spec(
        model={"name": "org/base-8B"},
        hyperparameters={"batchSize": 16, "maxSequenceLength": 4096},
        resources={"gpuMemory": "80Gi"},
    )
    arch = architecture.from_name("org/base-8B")
    assert arch is not None
    plan = make_plan(s.training(), arch, gpu_memory=80 * GIB)
    assert plan.verdict == "DoesNotFit" and plan.memory.dominant() in ("activations", "logits")
    assert (
        plan.suggestion.startswith("set hyperparameters.gradientCheckpointing: true")
        or "batchSize" in plan.suggestion
    )


def test_admission_refuses_does_not_fit_only_when_asked() -> None:
    big = {"model": {"name": "org/base-70B"}, "method": "full", "resources": {"gpuMemory": "80Gi"}}
    settings = OperatorSettings()
    warned = admit(spec(**big), settings)
    assert warned.refusal is None and warned.plan is not None and warned.plan.verdict == "DoesNotFit"
    assert warned.warnings and "does not fit 80.0 GiB" in warned.warnings[0]
    refused = admit(spec(**big, admission={"memoryCheck": "fail"}), settings)
    assert refused.refusal is not None and refused.refusal[0] == Reason.PLAN_DOES_NOT_FIT
    assert "spec.admission.memoryCheck" in refused.refusal[1]
    off = admit(spec(**big, admission={"memoryCheck": "off"}), settings)
    assert off.refusal is None and not off.warnings


def test_admission_checks_the_licence() -> None:
    settings = OperatorSettings(allowed_licences=("apache-2.0", "mit"))
    refused = admit(spec(model={"name": "org/base-7B", "licence": "llama3.1"}), settings)
    assert refused.refusal is not None and refused.refusal[0] == Reason.LICENCE_NOT_ALLOWED
    assert "'llama3.1' (spec.model.licence)" in refused.refusal[1]
    assert admit(spec(model={"name": "org/base-7B", "licence": "Apache-2.0"}), settings).refusal is None
    unknown = admit(spec(), settings)
    assert unknown.refusal is None and "licence is unknown" in unknown.warnings[0]
    strict = OperatorSettings(allowed_licences=("apache-2.0",), unknown_licence="fail")
    assert admit(spec(), strict).refusal is not None
    assert admit(spec(), OperatorSettings()).warnings == []


def test_settings_read_prices_and_refuse_bad_ones() -> None:
    s = OperatorSettings.from_env(
        {"FTJ_GPU_PRICES": '{"NVIDIA-L4": 0.8}', "FTJ_ALLOWED_LICENCES": "MIT, apache-2.0"}
    )
    assert s.gpu_prices == {"NVIDIA-L4": 0.8} and s.allowed_licences == ("mit", "apache-2.0")
    with pytest.raises(ValueError, match="FTJ_GPU_PRICES"):
        OperatorSettings.from_env({"FTJ_GPU_PRICES": '{"NVIDIA-L4": -1}'})
    with pytest.raises(ValueError, match="FTJ_UNKNOWN_LICENCE"):
        OperatorSettings.from_env({"FTJ_UNKNOWN_LICENCE": "maybe"})


def test_measured_compares_the_gpu_peak_without_the_runtime_term() -> None:
    from finetune_api.planning.measured import BASIS_PEAK, compare

    estimated = dict(weights=40, gradients=20, optimizer=20, activations=10, logits=10, runtime=500)
    found = compare(estimated, {"peakAllocated": 80, "weights": 40, "gradients": 25, "optimizer": 20})
    assert found is not None and found.basis == BASIS_PEAK
    assert (found.estimated, found.measured, found.error_percent) == (100, 80, 25.0)
    assert found.term_errors == {"weights": 0.0, "gradients": -20.0, "optimizer": 0.0}


def test_measured_compares_model_states_when_there_is_no_gpu() -> None:
    from finetune_api.planning.measured import BASIS_STATES, compare

    estimated = dict(weights=40, gradients=20, optimizer=40, activations=10, logits=10, runtime=5)
    found = compare(estimated, {"weights": 40, "gradients": 20, "optimizer": 44})
    assert found is not None and found.basis == BASIS_STATES
    assert (found.estimated, found.measured, found.error_percent) == (100, 104, -3.85)
    # Nothing comparable: no peak, and the states only partly counted (DeepSpeed keeps its own buffers).
    assert compare(estimated, {"weights": 40}) is None
    assert compare(estimated, {}) is None


def trainer_plan(**over: Any) -> dict[str, Any]:
    """A summary's ``plan`` as the trainer writes it (finetune_api.planning.report)."""
    body: dict[str, Any] = {
        "shapeSource": "config.json",
        "parameters": 7_241_732_096,
        "trainableParameters": 41_943_040,
        "device": "NVIDIA H100 80GB HBM3",
        "gpus": 1,
        "verdict": "Fits",
        "gpuMemoryBytes": 80 * GIB,
        "estimatedBytes": {"weights": 14 * GIB, "gradients": GIB // 2, "optimizer": GIB,
                           "activations": 6 * GIB, "logits": GIB, "runtime": 3 * GIB // 2},
        "measuredBytes": {"weights": 14 * GIB, "gradients": GIB // 2, "optimizer": GIB,
                          "peakAllocated": 20 * GIB},
    }  # fmt: skip
    body.update(over)
    return body


def test_summary_plan_is_mirrored_next_to_the_admission_estimate() -> None:
    from finetune_api.status import FineTuneJobStatus
    from finetune_operator.status import apply_summary, read_summary

    admitted = admit(spec(model={"name": "org/base-7B"}, resources={"gpuMemory": "80Gi"}), OperatorSettings())
    status = FineTuneJobStatus(plan=admitted.plan)
    apply_summary(status, read_summary(trainer_summary(0, plan=trainer_plan())))
    assert status.plan is not None and status.plan.shape_source == "model name"  # admission's, kept
    measured = status.plan.measured
    assert measured is not None and measured.shape_source == "config.json"
    assert measured.parameters == 7_241_732_096 and measured.device == "NVIDIA H100 80GB HBM3"
    # GPU: the peak allocated against every term but runtime (22.5 GiB estimated, 20 measured).
    assert (measured.estimated_bytes, measured.measured_bytes) == (45 * GIB // 2, 20 * GIB)
    assert measured.error_percent == 12.5 and "max_memory_allocated" in (measured.basis or "")
    assert measured.term_error_percent is not None and measured.term_error_percent.weights == 0.0
    wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")["plan"]["measured"]
    assert wire["perGpuMemoryGiB"] == 24.0 and wire["errorPercent"] == 12.5


def test_trainer_plan_becomes_the_plan_when_the_name_gave_none() -> None:
    from finetune_api.status import FineTuneJobStatus
    from finetune_operator.status import apply_summary, read_summary

    status = FineTuneJobStatus()
    cpu = trainer_plan(device="cpu", verdict=None, gpuMemoryBytes=None, measuredBytes={
        "weights": 14 * GIB, "gradients": GIB // 2, "optimizer": GIB})  # fmt: skip
    apply_summary(
        status, read_summary(trainer_summary(0, plan={k: v for k, v in cpu.items() if v is not None}))
    )
    assert status.plan is not None and status.plan.verdict == "Unknown"
    assert status.plan.shape_source == "config.json" and status.plan.dominant_term == "weights"
    assert status.plan.measured is not None and status.plan.measured.error_percent == 0.0
    assert status.plan.gpu_memory_source == "the trainer's device (cpu)"


@pytest.mark.parametrize(
    "bad",
    [
        "not an object",
        trainer_plan(parameters=-1),
        trainer_plan(estimatedBytes={"weights": 1}),
        trainer_plan(measuredBytes={"peakAllocated": "lots"}),
        trainer_plan(shapeSource="guess"),
        trainer_plan(device="x" * 500),
    ],
)
def test_a_malformed_plan_from_a_pod_changes_nothing(bad: Any) -> None:
    from finetune_api.status import FineTuneJobStatus
    from finetune_operator.status import apply_summary

    admitted = admit(spec(model={"name": "org/base-7B"}), OperatorSettings())
    status = FineTuneJobStatus(plan=admitted.plan)
    apply_summary(status, Summary.from_wire({"version": 1, "phase": "Succeeded", "plan": bad}))  # a pod's
    assert status.plan == admitted.plan and status.plan is not None and status.plan.measured is None


def test_chart_gpu_products_extend_the_table() -> None:
    settings = OperatorSettings.from_env(
        {"FTJ_GPU_PRODUCTS": '{"NVIDIA-B200": {"memory": "180Gi", "bf16Tflops": 2250}}'}
    )
    job = spec(model={"name": "meta-llama/Llama-3.1-70B"}, method="full", lora=None,
               scheduling={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"}})  # fmt: skip
    plan = admit(job, settings).plan
    assert plan is not None and plan.gpu_product == "NVIDIA-B200" and plan.gpu_memory_gib == 180.0
    assert admit(job, OperatorSettings()).plan.gpu_memory_gib is None  # type: ignore[union-attr]
    for bad in ('{"X": {"memory": "lots", "bf16Tflops": 1}}', '{"X": {"memory": "80Gi"}}', "[1]",
                '{"X": {"memory": "80Gi", "bf16Tflops": -1}}'):  # fmt: skip
        with pytest.raises(ValueError, match="FTJ_GPU_PRODUCTS"):
            OperatorSettings.from_env({"FTJ_GPU_PRODUCTS": bad})
