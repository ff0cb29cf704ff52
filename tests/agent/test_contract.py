"""The contract between `validate` and the agent: whatever validates, the agent accepts.

Random valid desired states, with hostile-but-printable text wherever a user string
reaches an argv, an environment, a URL or an HTTP path, are planned with plan(); every
agent's rendered set then goes through the agent's own body parser and its spawn-time
environment check. Nothing that `validate` let through may be refused there (a refused
PUT blocks every later change to that agent).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.agent.wire import InstanceSet, parse_body, refused_environment
from reconciler.estimate.metadata import ModelMetadata, source_key
from reconciler.observe import GIB, load_snapshot
from reconciler.plan import Facts, plan
from reconciler.spec import Desired, Model, validate_paths
from tests.conftest import ROOT
from tests.spec.strategies import desired_documents

SNAPSHOTS = ROOT / "examples" / "snapshots"
OBSERVED = load_snapshot(SNAPSHOTS / "2x8xh100.yaml")
GGUF = load_snapshot(SNAPSHOTS / "cpu-only.yaml").workers[0].files[0].gguf
FRAGMENTS = ["..", "../", "/", "//", "@h", " ", "'", '"', "%0a", "\\", "{{ port }}", "$HOME", "=", "-", "*", "?"]
printable = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8) | st.sampled_from(FRAGMENTS),
    max_size=4,
).map("".join)


@st.composite
def hostile_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid-looking documents whose user strings are drawn from (nearly) all of Unicode."""
    documents = draw(desired_documents())
    for document in documents:
        if document["kind"] != "Model":
            continue
        spec = document["spec"]
        # Placeable: one replica, no selectors, a backend that can run the source.
        spec["replicas"] = 1
        spec.pop("scheduling", None)
        spec["backend"] = draw(st.sampled_from(["auto", "custom"]))
        spec.pop("extendedKVCache", None)
        spec.pop("distributedInference", None)
        if spec["backend"] == "custom":
            spec["custom"] = {"command": "serve {{ port }}"}
        else:
            spec.pop("custom", None)
        field = draw(st.sampled_from(["env", "params", "custom", "local", "hub", "none"]))
        if field == "env":
            spec["env"] = {"HF_HUB_OFFLINE": draw(printable), "OMP_NUM_THREADS": draw(printable)}
        elif field == "params":
            spec["backendParameters"] = draw(st.lists(printable | st.lists(printable, max_size=3), max_size=3))
        elif field == "custom":
            spec["backend"] = "custom"
            spec["custom"] = {"command": "serve {{ port }} " + draw(printable), "healthPath": "/" + draw(printable)}
        elif field == "local":
            spec["source"] = {"localPath": "/" + draw(printable) + draw(st.sampled_from(["", ".gguf"]))}
        elif field == "hub":
            hub = {"repo": "org/model", "file": draw(printable) + ".gguf", "revision": draw(printable)}
            spec["source"] = {draw(st.sampled_from(["huggingface", "modelscope"])): hub}
    return documents


def valid_desired(documents: list[dict[str, Any]]) -> Desired | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.yaml"
        yaml = YAML(typ="safe", pure=True)
        stream = io.StringIO()
        yaml.dump_all(documents, stream)
        path.write_text(stream.getvalue(), encoding="utf-8")
        report = validate_paths([path])
    return report.states[0] if report.valid and len(report.states) == 1 else None


def metadata(model: Model) -> ModelMetadata:
    """Small facts for any source, so that every replica is placed and rendered."""
    source = model.spec.source
    key = source_key(source)
    if source.is_gguf():
        hub = source.huggingface or source.modelscope
        file = (hub.file or "").replace("*", "x") if hub else ""
        return ModelMetadata(source=key, format="gguf", file=file, weight_bytes=GIB, gguf=GGUF)
    return ModelMetadata(
        source=key,
        format="safetensors",
        weight_bytes=GIB,
        architectures=["LlamaForCausalLM"],
        attention_heads=8,
        max_position_embeddings=8192,
    )


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
@given(hostile_specs())
def test_whatever_validates_the_agent_accepts(documents: list[dict[str, Any]]) -> None:
    desired = valid_desired(documents)
    assume(desired is not None and desired.models)
    assert desired is not None
    facts = Facts({source_key(m.spec.source): metadata(m) for m in desired.models})
    result = plan(desired, OBSERVED, {}, facts)
    for worker, specs in result.desired_sets().items():
        body = {"generation": 1, "instances": [s.model_dump(mode="json", by_alias=True) for s in specs]}
        accepted = parse_body(json.dumps(body).encode(), InstanceSet)  # raises BodyInvalid: a 422
        assert len({s.id for s in accepted.instances}) == len(accepted.instances), worker
        for spec in accepted.instances:
            assert refused_environment(spec.env) is None, spec.env
