"""Schema errors, YAML errors and file handling, each located at file:line:col."""

from __future__ import annotations

from reconciler.spec import validate_paths
from reconciler.spec.loader import format_loc


def diags(path):
    return [str(d) for d in validate_paths([path]).diagnostics]


def test_unknown_key_suggests_the_right_one(write):
    path = write("""
        apiVersion: reconciler/v1
        kind: Model
        metadata: {name: m}
        spec:
          source: {localPath: /m.gguf}
          replcas: 2
    """)
    [line] = diags(path)
    assert line.startswith(f"{path}:6:3: Model/m: spec.replcas: unknown field; did you mean 'replicas'?")


def test_wrong_type_is_located_at_the_value(write):
    path = write("""
        apiVersion: reconciler/v1
        kind: Model
        metadata: {name: m}
        spec:
          source: {localPath: /m.gguf}
          replicas: "2"
    """)
    assert diags(path) == [f"{path}:6:13: Model/m: spec.replicas: input should be a valid integer"]


def test_union_failure_is_one_line(write):
    path = write("""
        apiVersion: reconciler/v1
        kind: Model
        metadata: {name: m}
        spec:
          source: {localPath: /m.gguf}
          scheduling: {gpusPerReplica: many}
    """)
    [line] = diags(path)
    assert line.startswith(f"{path}:6:32: Model/m: spec.scheduling.gpusPerReplica: input should be 'auto' or")


def test_missing_required_fields(write):
    path = write("""
        apiVersion: reconciler/v1
        kind: Model
        metadata: {name: m}
    """)
    assert diags(path) == [f"{path}:1:1: Model/m: spec: required field is missing"]


def test_bad_name(write):
    path = write("apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: Prod_1}\n")
    [line] = diags(path)
    assert line.startswith(f"{path}:3:18: Cluster/Prod_1: metadata.name: must be a DNS-1123 label")


def test_kind_and_api_version_checked(write):
    path = write("apiVersion: v2\nkind: Deployment\nmetadata: {name: m}\n")
    assert diags(path) == [
        f"{path}:1:13: document/m: apiVersion: must be 'reconciler/v1'",
        f"{path}:2:7: document/m: kind: unknown kind (one of: Model, WorkerSelector, Cluster, ModelRoute)",
    ]


def test_document_must_be_a_mapping(write):
    path = write("- a\n- b\n")
    assert diags(path) == [
        f"{path}:1:1: document/#1: -: a manifest must be a mapping with apiVersion, kind, metadata and spec"
    ]


def test_broken_yaml(write):
    path = write("apiVersion: reconciler/v1\nkind: [Model\n")
    [line] = diags(path)
    assert line.startswith(f"{path}:3:1: invalid YAML:")


def test_duplicate_keys(write):
    path = write("apiVersion: reconciler/v1\nkind: Model\nkind: Cluster\n")
    [line] = diags(path)
    assert line.startswith(f"{path}:3:1: invalid YAML:") and 'duplicate key "kind"' in line


def test_non_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"apiVersion: reconciler/v1\nkind: Mo\xe9del\n")
    assert diags(path) == [f"{path}:2:9: not UTF-8: byte 0xe9 cannot be decoded"]


def test_empty_file_and_empty_documents_are_valid(write):
    assert validate_paths([write("")]).valid
    assert validate_paths([write("---\n---\n# only a comment\n", "b.yaml")]).valid


def test_missing_path():
    assert [str(d) for d in validate_paths(["/no/such/dir"]).diagnostics] == [
        "/no/such/dir:1:1: no such file or directory"
    ]


def test_many_documents_and_recursive_directories(write, tmp_path):
    write("apiVersion: reconciler/v1\nkind: WorkerSelector\nmetadata: {name: s}\n", "sel/a.yml")
    write(
        "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: a}\nspec: {source: {localPath: /a}}\n"
        "---\napiVersion: reconciler/v1\nkind: Model\nmetadata: {name: b}\nspec: {source: {localPath: /b}}\n",
        "models/deep/m.yaml",
    )
    write("not: a manifest", "notes.txt")
    write("kind: Broken", ".hidden/x.yaml")
    report = validate_paths([tmp_path])
    assert report.valid, report.diagnostics
    assert (report.files, report.documents) == (2, 3)
    [state] = report.states
    assert [m.metadata.name for m in state.models] == ["a", "b"]
    assert state.selector("s") is not None


def test_each_cluster_folder_is_its_own_desired_state(write, tmp_path):
    cluster = "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: %s}\n"
    model = "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: same}\nspec: {source: {localPath: /m}}\n"
    for setup in ("one", "two"):
        write(cluster % setup, f"{setup}/cluster.yaml")
        write(model, f"{setup}/models/m.yaml")
    report = validate_paths([tmp_path])
    assert report.valid, report.diagnostics
    assert sorted(s.cluster.metadata.name for s in report.states) == ["one", "two"]


def test_format_loc():
    assert format_loc(["spec", "gpuSelector", 2, "x"]) == "spec.gpuSelector[2].x"
