"""What the agent accepts over the wire: strict JSON, strictly checked instance specs.

A token holder is trusted to say what runs, not to crash the agent or reach outside its
data dir: every field that becomes a file name, a URL, an argv or an environment is
checked here, before anything is stored, and a bad body is a 422 naming the field.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from reconciler.observe import InstanceSpec
from reconciler.spec.env_names import refused_env
from reconciler.spec.models import HEALTH_PATH
from reconciler.spec.models import REPO as REPO_PATTERN

# DNS-1123 label characters; longer than a label because the planner appends
# "-<replica>-rpc-server-<n>" to a 63-character model name. It is a file name
# ("<id>.log.1"), so no "/", "." or NUL can get in.
INSTANCE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,198}[a-z0-9])?$")
# The same rules as ``validate`` (spec.models), so what validates is accepted here.
REPO = re.compile(REPO_PATTERN)


class BodyInvalid(ValueError):
    """A request body the agent refuses; ``problems`` are "field: message" lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _no_nul(value: str, what: str) -> None:
    if "\0" in value:
        raise ValueError(f"{what} holds a NUL character")


def check_spec(spec: InstanceSpec) -> InstanceSpec:
    """Refuse what cannot be run safely (the supervisor computes the spec hash itself)."""
    if not INSTANCE_ID.match(spec.id):
        raise ValueError(
            f"id {spec.id!r} must be lowercase letters, digits and '-', starting and ending alphanumeric "
            "(at most 200 characters)"
        )
    if not 1 <= spec.port <= 65535:
        raise ValueError(f"port {spec.port} is outside 1-65535")
    if spec.health_path and not HEALTH_PATH.fullmatch(spec.health_path):
        raise ValueError(f"healthPath {spec.health_path!r} must be a path such as /v1/models")
    if not spec.argv or not spec.argv[0]:
        raise ValueError("argv is empty")
    for index, token in enumerate(spec.argv):
        _no_nul(token, f"argv[{index}]")
    for name, value in spec.env.items():
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"env name {name!r} is empty or holds '=' or NUL")
        _no_nul(value, f"env {name}")
    if any(gpu < 0 for gpu in spec.gpus):
        raise ValueError("gpus must be indexes >= 0")
    for ref in spec.files:
        _no_nul(ref.path, "files[].path")
        if not ref.path:
            raise ValueError("files[].path is empty")
        # A repo and file become folders under the cache dir: no way out of it.
        if ref.repo and not REPO.match(ref.repo):
            raise ValueError(f"files[].repo {ref.repo!r} must be owner/name")
        if ref.file and (ref.file.startswith("/") or "\0" in ref.file or ".." in ref.file.split("/")):
            raise ValueError(f"files[].file {ref.file!r} must be a relative path inside the repo")
    return spec


MAX_GENERATION = 2**63 - 1
# Reconcilers use nanosecond timestamps as generations; one far ahead of the clock would
# lock every later reconciler out, so it is refused (the margin covers clock skew).
GENERATION_MARGIN_NS = 3600 * 10**9


def generation_ceiling() -> int:
    """The highest generation this agent accepts now."""
    return min(MAX_GENERATION, time.time_ns() + GENERATION_MARGIN_NS)


def _not_ahead(generation: int) -> int:
    if generation > generation_ceiling():
        raise ValueError(
            f"generation {generation} is more than {GENERATION_MARGIN_NS // 10**9} s ahead of this agent's clock "
            f"(nanoseconds since the epoch, now {time.time_ns()}); it would lock out every later set"
        )
    return generation


def refused_environment(env: dict[str, str]) -> str | None:
    """Why the agent will not start a process with this environment (the spawn-time check)."""
    for name in env:
        refusal = refused_env(name)
        if refusal is not None:
            return f"env {refusal}"
    return None


class InstanceSet(BaseModel):
    """Body of ``PUT /v1/instances``: the full desired set, its generation, and the epoch of
    the leader that sends it (0 from a server without a lease, or ``reconcile apply``)."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(default=0, ge=0, le=MAX_GENERATION)
    generation: Annotated[int, Field(ge=0, le=MAX_GENERATION), AfterValidator(_not_ahead)]
    instances: list[Annotated[InstanceSpec, AfterValidator(check_spec)]]


class LogLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: str


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


M = TypeVar("M", bound=BaseModel)


def parse_body(raw: bytes, model: type[M]) -> M:
    """Strict JSON (no NaN or Infinity) validated into ``model``; raises BodyInvalid."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BodyInvalid([f"body: not valid JSON: {exc}"]) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Messages only: the input may hold values JSON cannot encode back.
        raise BodyInvalid(
            [f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()]
        ) from exc
