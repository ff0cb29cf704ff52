"""Messages about the shape of a manifest never name reconciler's internal classes."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("text", "field", "got"),
    [
        ("apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n", "spec", "nothing"),
        ("apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec: [1]\n", "spec", "a list"),
        (
            "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\n"
            "spec: {source: {localPath: /m.gguf}, scheduling: 3}\n",
            "spec.scheduling",
            "a number",
        ),
    ],
)
def test_a_mapping_expected(errors, text, field, got):
    [found] = errors(text)
    assert found.field == field
    assert found.message == f"expected a mapping of fields (key: value), got {got}"
    assert "Spec" not in found.message and "instance of" not in found.message
