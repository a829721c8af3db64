"""The chart's topic list (deploy/helm/mailintake/files/topics.yaml) is generated from
schemas/*.yaml by scripts/render-kafka-topics and must never drift from them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "render-kafka-topics"
TOPICS_FILE = REPO_ROOT / "deploy" / "helm" / "mailintake" / "files" / "topics.yaml"


def render_module():
    # The script has no .py suffix (it is a command), so it is loaded by path.
    loader = importlib.machinery.SourceFileLoader("render_kafka_topics", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_topics_file_is_current_with_the_contracts() -> None:
    result = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stderr.strip()} (then commit {TOPICS_FILE.relative_to(REPO_ROOT)})"


def test_a_changed_contract_makes_the_file_stale(tmp_path: Path) -> None:
    # The check above can only catch drift if a change in schemas/ changes the rendering.
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", schemas)
    contract = schemas / "mail.raw.yaml"
    data = yaml.safe_load(contract.read_text(encoding="utf-8"))
    data["partitions"] += 1
    data["config"]["max.message.bytes"] = 4194304
    contract.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    rendering = yaml.safe_load(render_module().render(schemas))
    (raw,) = [t for t in rendering["topics"] if t["name"] == "mail.raw"]
    assert raw["partitions"] == data["partitions"]
    assert raw["config"]["max.message.bytes"] == "4194304"
    assert render_module().render(schemas) != TOPICS_FILE.read_text(encoding="utf-8")


def test_the_file_carries_every_contract_with_its_kafka_configs() -> None:
    from mailintake.contracts.topics import load_topics

    entries = {t["name"]: t for t in yaml.safe_load(TOPICS_FILE.read_text(encoding="utf-8"))["topics"]}
    for name, topic in load_topics(REPO_ROOT / "schemas").items():
        assert entries[name]["partitions"] == topic.partitions
        assert entries[name]["config"] == topic.kafka_config()
        assert entries[name]["consumers"] == list(topic.consumers)
