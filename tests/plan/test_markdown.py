"""`plan -o markdown` is a pull-request comment: what a manifest or an agent chose stays data."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from reconciler.observe import ObservedInstance, ObservedState
from reconciler.plan import to_markdown
from reconciler.plan.markdown import code, fenced
from tests.plan.helpers import desired, step, worker

HOSTILE = [
    "```\n# Injected heading\n",
    "@octocat please merge",
    "[click](https://evil.example/x)",
    "![pixel](https://evil.example/p.png)",
    "</details><h1>Injected</h1>",
    "| injected | cells |",
    "`` ````` `",
]
MODEL = """
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: 2
  custom: {{command: "serve --port {{{{ port }}}}", healthPath: /}}
  backendParameters: {params}
"""


def html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def outside_code(rendered: str) -> str:
    return re.sub(r"<pre>.*?</pre>|<code>.*?</code>", "", rendered, flags=re.DOTALL)


def test_a_code_span_holds_any_value_literally() -> None:
    for value in HOSTILE:
        rendered = html(f"| a |\n|---|\n| {code(value)} |\n")
        assert "<td><code>" in rendered and rendered.count("<td>") == 1, rendered
        assert not re.search(r"<(h\d|a|img)\b", outside_code(rendered)), rendered
        block = html("\n".join(fenced(value.splitlines())) + "\n")
        assert not re.search(r"<(h\d|a|img)\b", outside_code(block)) and block.count("<pre>") == 1, block


def test_hostile_parameters_and_agent_messages_stay_data() -> None:
    d = desired(MODEL.format(params='["--a=```", "--b=\'# Injected heading\'", "--c=@octocat"]'))
    failing = ObservedInstance.model_validate(
        {"id": "web-0", "model": "web", "modelHash": "old", "port": 40000, "state": "Running"}
    )
    observed = ObservedState.of(
        [worker("a", instances=[failing.model_copy(update={"message": HOSTILE[0]}).model_dump(by_alias=True)])]
    )
    markdown = to_markdown(step(d, observed))
    rendered = html(markdown)
    assert "Injected" in markdown and "@octocat" in markdown
    visible = outside_code(rendered)
    assert "Injected" not in visible and "octocat" not in visible, visible
    assert re.findall(r"<h\d>", rendered) == ["<h3>"] and "<a " not in rendered and "<img" not in rendered
