"""``ftj validate``: manifest parsing, path resolution, printed report and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml

from finetune_api.exitcodes import ExitCode
from finetune_trainer.validate_cmd import main, validate_command


def write_manifest(directory: Path, spec: dict[str, Any], **top: Any) -> Path:
    manifest = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "demo"},
        "spec": spec,
        **top,
    }
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path


def base_spec(uri: str = "file://data/train.jsonl", **dataset: Any) -> dict[str, Any]:
    return {"task": "classification", "model": {"name": "m"}, "dataset": {"source": {"uri": uri}, **dataset}}


def write_data(directory: Path, records: list[Any]) -> None:
    (directory / "data").mkdir(exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    (directory / "data" / "train.jsonl").write_text(text, encoding="utf-8")


GOOD = [
    {"text": f"feedback message {i} about {'billing' if i % 2 else 'the app'}", "label": str(i % 2)}
    for i in range(20)
]


def run(path: Path, json_output: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = validate_command(str(path), json_output=json_output, out=out)
    return code, out.getvalue()


def test_valid_manifest_with_relative_file_uri(tmp_path: Path) -> None:
    write_data(tmp_path, [*GOOD, {"text": "mail me: x@example.com", "label": "1"}])
    code, text = run(write_manifest(tmp_path, base_spec()))
    assert code == ExitCode.SUCCEEDED
    assert "demo: the data is valid" in text
    assert "format: text-label (detected)" in text
    assert "redactions: email 1 (1 records)" in text
    assert "splits (stratified): train 17, validation 2, test 2" in text


def test_json_output_carries_the_report(tmp_path: Path) -> None:
    write_data(tmp_path, GOOD)
    code, text = run(
        write_manifest(tmp_path, base_spec(f"file://{tmp_path}/data/train.jsonl")), json_output=True
    )
    payload = json.loads(text)
    assert code == 0 and payload["valid"] is True
    assert payload["report"]["counts"]["read"] == 20


def test_bad_data_returns_the_data_exit_code(tmp_path: Path) -> None:
    write_data(tmp_path, [*GOOD, "{oops", {"text": "", "label": "1"}])
    path = write_manifest(tmp_path, base_spec())
    code, text = run(path)
    assert code == ExitCode.INVALID_DATA
    assert "line 21: not valid JSON" in text and 'line 22: field "text" is empty' in text
    code, text = run(path, json_output=True)
    payload = json.loads(text)
    assert (code, payload["reason"], payload["total"]) == (ExitCode.INVALID_DATA, "InvalidData", 2)


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    write_data(tmp_path, GOOD)
    path = write_manifest(tmp_path, base_spec(splits={"test": 1.5}, bogus=True))
    code, text = run(path)
    assert code == ExitCode.INVALID_CONFIG
    assert "spec.dataset.splits.test: Input should be less than 1" in text
    assert "spec.dataset.bogus: Extra inputs are not permitted" in text


def test_wrong_kind_missing_file_and_non_local_source(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, base_spec(), kind="Deployment")
    assert run(path)[0] == ExitCode.INVALID_CONFIG
    assert run(tmp_path / "absent.yaml")[0] == ExitCode.INVALID_CONFIG
    # s3://, gs://, az:// and hf:// are fetched (tests/trainer/test_storage_run.py); a PVC is cluster-only.
    spec = base_spec()
    spec["dataset"]["source"] = {"pvc": {"claimName": "data", "path": "train.jsonl"}}
    code, text = run(write_manifest(tmp_path, spec))
    assert code == ExitCode.INVALID_CONFIG and "file://" in text


def test_main_parses_arguments(tmp_path: Path, capsys: Any) -> None:
    write_data(tmp_path, GOOD)
    assert main([str(write_manifest(tmp_path, base_spec())), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_write_splits_gives_the_trainers_records_in_the_users_format(tmp_path: Path) -> None:
    from finetune_trainer.cli import main as ftj
    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.validate_cmd import load_manifest, resolve_paths

    chats = [
        {
            "conversation": [
                {"role": "user", "content": f"<p>Question {i}: mail me at user{i}@example.com</p>"},
                {"role": "assistant", "content": f"Answer {i}:\n\n    <code>step {i}</code>\n"},
            ],
            "id": i,
        }
        for i in range(30)
    ]
    write_data(tmp_path, [*chats, chats[0]])  # one exact duplicate
    spec = {
        "model": {"name": "m"},
        "dataset": {"source": {"uri": "file://data/train.jsonl"}, "columns": {"messages": "conversation"}},
    }
    manifest = write_manifest(tmp_path, spec)
    out_dir = tmp_path / "splits"
    assert ftj(["validate", str(manifest), "--write-splits", str(out_dir)]) == ExitCode.SUCCEEDED

    written = {
        name: [json.loads(line) for line in (out_dir / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    _, parsed = load_manifest(manifest)
    trainer_sees = prepare_data(parsed.training(), resolve_paths(parsed, manifest, str(tmp_path)))
    for name, rows in written.items():
        assert rows == [{"conversation": r["messages"]} for r in getattr(trainer_sees, name)], name
    assert sum(len(rows) for rows in written.values()) == 30  # the duplicate is gone
    first = next(row for rows in written.values() for row in rows)
    user, assistant = first["conversation"]
    assert "<p>" not in user["content"] and "[EMAIL]" in user["content"]  # cleaned input
    assert assistant["content"].endswith("</code>\n")  # the target as written
