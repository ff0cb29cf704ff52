"""The CI examples in examples/ci/ parse, validate and plan the way docs/ci.md says."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

CI = Path(__file__).resolve().parent.parent / "examples" / "ci"


def scripts(node: object) -> str:
    """Every string in the document, joined: the shell and JavaScript it runs."""
    if isinstance(node, dict):
        return "\n".join(scripts(v) for v in node.values())
    if isinstance(node, list):
        return "\n".join(scripts(v) for v in node)
    return str(node)


def test_github_actions_validates_plans_and_keeps_one_comment() -> None:
    workflow = YAML(typ="safe").load((CI / "github-actions.yml").read_text(encoding="utf-8"))
    assert "pull_request" in workflow["on"] and workflow["permissions"]["pull-requests"] == "write"
    text = scripts(workflow["jobs"]["plan"]["steps"])
    assert "reconcile validate manifests/" in text
    assert '--server "$SERVER" -o markdown --detailed-exitcode' in text
    assert "RECONCILER_SERVER_TOKEN" in scripts(workflow) and "RECONCILER_TOKEN:" not in scripts(workflow)
    assert "updateComment" in text and "createComment" in text and "<!-- reconcile-plan -->" in text


def test_gitlab_ci_validates_plans_and_keeps_one_note() -> None:
    pipeline = YAML(typ="safe").load((CI / "gitlab-ci.yml").read_text(encoding="utf-8"))
    assert pipeline["reconcile-validate"]["artifacts"]["reports"]["codequality"] == "gl-code-quality-report.json"
    text = scripts(pipeline["reconcile-plan"])
    assert '--server "$RECONCILER_SERVER_URL" -o markdown --detailed-exitcode' in text
    assert '"PUT"' in text and '"POST"' in text and "<!-- reconcile-plan -->" in text
