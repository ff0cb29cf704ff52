"""The hub client against hostile hosts: a total deadline, a size cap, tokens only where this machine says."""

from __future__ import annotations

import pytest

from reconciler.errors import SourceUnavailable
from reconciler.estimate import Fetcher, HttpRangeSource, HubConfig
from tests.hostile_http import hostile


@pytest.mark.parametrize("behaviour", ["trickle-headers", "trickle-body"])
def test_a_trickling_host_ends_at_the_deadline(behaviour: str) -> None:
    late = r"^http://127\.0\.0\.1:\d+: no complete answer within 2 s$"
    with hostile(behaviour) as (url, _), Fetcher(deadline=2) as fetcher, pytest.raises(SourceUnavailable, match=late):
        fetcher.get(f"{url}/api/models/org/x/revision/main")


def test_an_endless_answer_stops_at_the_size_cap() -> None:
    big = "an answer over 1048576 bytes"
    with (
        hostile("endless") as (url, _),
        Fetcher(max_body=1024**2) as fetcher,
        pytest.raises(SourceUnavailable, match=big),
    ):
        fetcher.get(url)


def test_a_declared_length_over_the_cap_is_refused_before_the_body() -> None:
    with (
        hostile("record", body=b"x" * 4096) as (url, _),
        Fetcher(max_body=1000) as fetcher,
        pytest.raises(SourceUnavailable, match="an answer of 4096 bytes"),
    ):
        fetcher.get(url)


def test_the_token_goes_only_to_the_endpoint_of_this_machine() -> None:
    listing = b'{"siblings": [{"rfilename": "config.json", "size": 2}]}'
    with hostile("record", listing) as (mine, at_mine), hostile("record", listing) as (theirs, at_theirs):
        hubs = HubConfig.from_env({"HF_ENDPOINT": mine, "HF_TOKEN": "s3cret"})
        with Fetcher() as fetcher:
            assert hubs.huggingface(fetcher, theirs).files("org/x", "main") == {"config.json": 2}
            assert hubs.huggingface(fetcher).files("org/x", "main") == {"config.json": 2}
            assert hubs.huggingface(fetcher, mine + "/").files("org/x", "main") == {"config.json": 2}
    assert at_theirs.authorization() == []
    assert at_mine.authorization() == ["Authorization: Bearer s3cret"] * 2


def test_modelscope_endpoint_and_token_come_from_the_environment() -> None:
    hubs = HubConfig.from_env({"MODELSCOPE_ENDPOINT": "http://ms.local/", "MODELSCOPE_TOKEN": "t"})
    with Fetcher() as fetcher:
        hub = hubs.modelscope(fetcher)
    assert hub.endpoint == "http://ms.local" and hub.headers == {"Authorization": "Bearer t"}
    assert HubConfig.from_env({}).hf_endpoint == "https://huggingface.co"


def test_a_host_that_ignores_range_is_read_all_the_same() -> None:
    data = bytes(range(256)) * 40
    with hostile("whole", data) as (url, _), Fetcher() as fetcher:
        hub = HubConfig.from_env({"HF_ENDPOINT": url}).huggingface(fetcher)
        source = HttpRangeSource(hub.range(hub.url("org/x", "main", "f.gguf")), block=1000)
        assert source.read(1500, 600) == data[1500:2100]
