"""The docs stay true: manifests validate, data examples pass the trainer's checks, commands are tested.

Fast and cluster-free. What it checks in docs/*.md:

- every ```yaml block holding a FineTuneJob parses with the spec models and satisfies the CRD's CEL
  rules (evaluated by the Python translations below; a new rule in the CRD fails
  ``test_every_cel_rule_has_a_translation`` until it is translated here);
- every ```jsonl block in preparing-data.md passes the trainer's data stage (``prepare_data``);
- every kubectl / ftj / make / helm command in a ```bash block matches ALLOWED_COMMANDS, each entry
  naming the test that runs that command (or the same operation through the API);
- links between pages (and their #anchors) resolve.

E2E-ONLY (not here): that the API server itself accepts the doc manifests needs a control plane;
the CEL translations below stand in for it, and the e2e/chart tests apply the examples/ manifests.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from finetune_api.inputs import Columns
from finetune_api.spec import FineTuneJobSpec, Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data.formats import FORMATS, candidate_formats, common_keys
from finetune_trainer.data.pipeline import prepare_data

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Fenced code blocks, dedented by their fence's indentation (fences inside list items)."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        indent, body = len(start["indent"]), []
        j = i + 1
        while j < len(lines) and not re.match(r"^[ \t]*```[ \t]*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append(Block(page, i + 1, start["lang"], "\n".join(body) + "\n"))
        i = j + 1
    return out


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


def test_docs_exist():
    names = {p.name for p in PAGES}
    expected = {
        "README.md",
        "api-reference.md",
        "concepts.md",
        "choosing-a-method.md",
        "preparing-data.md",
        "hyperparameters.md",
        "monitoring.md",
        "troubleshooting.md",
        "security.md",
    }
    assert expected <= names


# -- FineTuneJob manifests ------------------------------------------------------------------------


def check_manifest(doc: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this FineTuneJob: the spec models evaluate the CRD's own CEL rules."""
    if doc.get("apiVersion") != "finetuning.io/v1alpha1":
        return [f"apiVersion must be finetuning.io/v1alpha1, got {doc.get('apiVersion')!r}"]
    if not (doc.get("metadata") or {}).get("name"):
        return ["metadata.name is missing"]
    try:
        FineTuneJobSpec.model_validate(doc.get("spec"))
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return []


def finetunejobs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in ALL_BLOCKS:
        if block.lang != "yaml":
            continue
        for doc in yaml.safe_load_all(block.text):
            if isinstance(doc, dict) and doc.get("kind") == "FineTuneJob":
                found.append((block.where, doc))
    return found


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantization": {}}, "quantization is only valid with method qlora"),
        ({"method": "full", "lora": {"r": 8}}, "lora settings are not used with method full"),
        ({"distributed": {"nodes": 2}}, "distributed.nodes > 1 needs method full"),
        ({"method": "qlora", "distributed": {"gpusPerNode": 2}}, "qlora runs on a single GPU"),
        ({"objective": "dpo", "task": "classification"}, "objective dpo needs task causal-lm"),
        ({"dataset": {"source": {}}}, "exactly one of uri, pvc or configMap"),
        ({"dataset": {"source": {"uri": "s3://b/k"}, "splits": {"validation": 0.5, "test": 0.5}}}, "below 1"),
        (
            {"method": "full", "distributed": {"deepspeed": {"zeroStage": 2, "offloadParameters": True}}},
            "offloadParameters needs zeroStage 3",
        ),
        ({"evaluation": {"qualityGate": {"metric": "loss"}}}, "a quality gate needs min or max"),
        (
            {"method": "full", "distributed": {"deepspeed": {"zeroStage": 0, "offloadOptimizer": True}}},
            "offloadOptimizer needs zeroStage 1 or higher",
        ),
        (
            {"output": {"source": {"configMap": {"name": "c", "key": "k"}}}},
            "output.source must be a pvc or a uri",
        ),
    ],
)
def test_models_refuse_what_the_api_server_refuses(overrides: dict[str, Any], message: str):
    spec = {"model": {"name": "org/m"}, "dataset": {"source": {"uri": "s3://b/k"}}, **overrides}
    doc = {"apiVersion": "finetuning.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "x"}}
    problems = check_manifest({**doc, "spec": spec})
    assert any(message in p for p in problems), problems


def test_docs_show_finetunejobs():
    assert len(finetunejobs()) >= 6


@pytest.mark.parametrize(("where", "doc"), finetunejobs(), ids=[w for w, _ in finetunejobs()])
def test_doc_manifest_is_a_valid_finetunejob(where: str, doc: dict[str, Any]):
    assert check_manifest(doc) == [], where


# -- data examples ----------------------------------------------------------------------------------


def jsonl_blocks() -> list[Block]:
    return [b for b in ALL_BLOCKS if b.lang == "jsonl"]


def task_for(fmt: str) -> dict[str, str]:
    if fmt == "text-label":
        return {"task": "classification"}
    if fmt == "preference":
        return {"objective": "dpo"}
    return {}


def detected_format(text: str) -> str:
    import json

    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return candidate_formats(common_keys(records), Columns())[0]


def test_preparing_data_shows_every_format():
    shown = {detected_format(b.text) for b in jsonl_blocks() if b.page.name == "preparing-data.md"}
    assert shown == set(FORMATS)


@pytest.mark.parametrize("block", jsonl_blocks(), ids=[b.where for b in jsonl_blocks()])
def test_data_example_passes_the_trainers_checks(block: Block, tmp_path: Path):
    data = tmp_path / "train.jsonl"
    data.write_text(block.text, encoding="utf-8")
    fmt = detected_format(block.text)
    spec = TrainingSpec.model_validate(
        {
            "model": {"name": "m"},
            "dataset": {"source": {"uri": f"file://{data}"}, "splits": {"validation": 0, "test": 0}},
            **task_for(fmt),
        }
    )
    prepared = prepare_data(spec, Paths(model="m", dataset=str(data), output=str(tmp_path / "out")))
    counts = prepared.report["counts"]
    assert prepared.format == fmt
    assert counts["invalid"] == 0
    assert counts["after_cleaning"] == counts["read"], "examples should be distinct (dedup removed some)"


# -- commands -------------------------------------------------------------------------------------

# Every command a docs page shows, as a pattern, with the test that runs it (or runs the same
# operation through the API). A new command in the docs needs a test first, then an entry here.
ALLOWED_COMMANDS: list[tuple[str, str]] = [
    (
        r"kubectl get (ftj|finetunejobs?)( [a-z0-9-]+)?( -n [a-z0-9-]+| -A)?( -w| -o (yaml|json|wide))?",
        "tests/e2e/test_operator.py::test_success_fills_status_from_the_termination_message "
        "(kubectl get ftj); hack/demo.py (make demo) streams `kubectl get ftj -w` and reads `-o json`",
    ),
    (
        r"kubectl wait --for=condition=(Succeeded|Failed) (ftj|finetunejob)/[a-z0-9-]+( -n [a-z0-9-]+)?"
        r" --timeout=\w+",
        "tests/e2e/test_operator.py::test_success_fills_status_from_the_termination_message",
    ),
    (
        r'kubectl annotate (ftj|finetunejob) [a-z0-9-]+ finetuning\.io/rerun=("[^"]*"|\S+) --overwrite',
        "tests/e2e/test_operator.py::test_rerun_annotation_starts_a_new_run_after_success "
        "(sets the same annotation through the API)",
    ),
    (
        r"kubectl apply( -n [a-z0-9-]+)? -f \S+\.yaml",
        "hack/demo.py (make demo) applies examples/quickstart.yaml this way",
    ),
    (
        r"ftj validate \S+\.yaml( --json)?",
        "tests/trainer/test_data_validate.py::test_main_parses_arguments and "
        "::test_json_output_carries_the_report",
    ),
    (
        r"ftj validate \S+\.yaml --write-splits \S+",
        "tests/trainer/test_data_validate.py::test_write_splits_gives_the_trainers_records_in_the_users_format",
    ),
    (
        r"helm install [a-z0-9-]+ charts/finetune-operator (--namespace|-n) [a-z0-9-]+( --create-namespace)?"
        r"( --set [\w.]+=\S+)*",
        "tests/chart/test_chart_cluster.py::test_install_upgrade_uninstall installs the chart with "
        "ci/monitoring-values.yaml (the same monitoring values); --set keys are checked against values.yaml",
    ),
    (r"make (test|demo)", "make test is what .ci/run calls; make demo is run end to end by the demo test"),
]

# Commands on pages owned elsewhere that no test runs yet; listed so the gap stays visible.
NOT_YET_EXERCISED: dict[str, str] = {
    "kubectl -n argocd patch configmap argocd-cm": "docs/gitops.md: needs an Argo CD installation",
}

CHECKED_TOOLS = ("kubectl", "ftj", "make", "helm")


def commands(block: Block) -> list[str]:
    """Command lines of a bash block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(re.sub(r"\s+", " ", line))
    return out


def shown_commands() -> list[tuple[str, str]]:
    return [
        (b.where, cmd)
        for b in ALL_BLOCKS
        if b.lang in ("bash", "sh", "shell", "console")
        for cmd in commands(b)
    ]


def test_every_shown_command_is_exercised_by_a_test():
    unknown = []
    for where, cmd in shown_commands():
        if cmd.split(" ", 1)[0] not in CHECKED_TOOLS:
            unknown.append(f"{where}: {cmd} (only {', '.join(CHECKED_TOOLS)} commands are shown)")
            continue
        if any(cmd.startswith(gap) for gap in NOT_YET_EXERCISED):
            continue
        if not any(re.fullmatch(pattern, cmd) for pattern, _ in ALLOWED_COMMANDS):
            unknown.append(f"{where}: {cmd}")
    assert unknown == [], "add a test for these commands, then an ALLOWED_COMMANDS entry"


def test_not_yet_exercised_list_is_still_needed():
    shown = [cmd for _, cmd in shown_commands()]
    for gap in NOT_YET_EXERCISED:
        assert any(cmd.startswith(gap) for cmd in shown), f"{gap!r} is no longer shown; drop it"


def test_helm_set_keys_exist_in_the_charts_values():
    values = yaml.safe_load((REPO / "charts" / "finetune-operator" / "values.yaml").read_text())
    for where, cmd in shown_commands():
        if not cmd.startswith("helm "):
            continue
        words = shlex.split(cmd)
        for flag, arg in itertools.pairwise(words):
            if flag != "--set":
                continue
            node: Any = values
            for key in arg.split("=", 1)[0].split("."):
                if node == {}:
                    break  # a free-form map value (labels): any key is valid
                assert isinstance(node, dict) and key in node, f"{where}: {arg} is not a chart value"
                node = node[key]


# -- links ----------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose(page: Path) -> str:
    """The page without its fenced blocks and inline code (links there are examples, not links)."""
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in prose(page).splitlines() + re.findall(r"^#+ .*$", page.read_text(), flags=re.M):
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            title = heading.group(1).strip().lower().replace("`", "")
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES if p.name != "README.md" and f"]({p.name})" not in index]
    assert missing == []
