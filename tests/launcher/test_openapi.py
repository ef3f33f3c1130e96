"""The OpenAPI generator (services/launcher/openapi.py) on the real protos, compiled here with their comments: the
document describes exactly the REST bindings, in the JSON the gateway prints. tests/e2e/test_rest.py validates the
served document and calls every path it lists."""

import re
from pathlib import Path
from typing import Any

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from services.launcher.gateway_config import OPENAPI_DOCUMENT
from services.launcher.openapi import openapi_document, render

PROTOS = Path(__file__).resolve().parents[2] / "protos"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("descriptor") / "api.binpb"
    sources = sorted(str(path.relative_to(PROTOS)) for path in (PROTOS / "agentplatform").rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main([
        "protoc", f"-I{PROTOS}", f"-I{well_known}", "--include_imports", "--include_source_info",
        f"--descriptor_set_out={out}", *sources,
    ])
    assert code == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def document(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    return openapi_document(files)


def test_every_binding_of_the_public_services_is_an_operation_and_nothing_else(
    files: descriptor_pb2.FileDescriptorSet, document: dict[str, Any]
) -> None:
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    public = {
        f"{service.name}_{method.name}"
        for file in files.file if file.package.startswith("agentplatform.") and ".internal." not in file.package
        for service in file.service for method in service.method
    }
    assert operations == public
    assert not any("internal" in name for name in document["components"]["schemas"])
    assert document["paths"]["/api/runs/{run_id}:cancel"]["post"]["operationId"] == "RunService_CancelRun"


def test_schemas_are_the_proto3_json_the_gateway_prints(document: dict[str, Any]) -> None:
    run = document["components"]["schemas"]["agentplatform.runs.v1.Run"]["properties"]
    assert run["stepCount"]["type"] == "string" and run["stepCount"]["format"] == "int64"
    assert run["createTime"] == {**run["createTime"], "type": "string", "format": "date-time"}
    assert run["metadata"]["additionalProperties"] == {"type": "string"}
    assert run["state"]["$ref"] == "#/components/schemas/agentplatform.runs.v1.RunState"
    assert run["steps"]["type"] == "array"
    assert "step_count" not in run
    state = document["components"]["schemas"]["agentplatform.runs.v1.RunState"]
    assert state["type"] == "string" and "RUN_STATE_COMPLETED" in state["enum"]
    # The proto comments are the descriptions.
    get_run = document["paths"]["/api/runs/{run_id}"]["get"]
    assert get_run["summary"] == "Returns one run with all of its steps in sequence order."
    assert run["stepCount"]["description"].startswith("How many steps")


def test_parameters_and_bodies_follow_the_bindings(document: dict[str, Any]) -> None:
    update = document["paths"]["/api/tools/{tool.id}"]["patch"]
    assert [(p["name"], p["in"]) for p in update["parameters"]] == [("tool.id", "path"), ("updateMask", "query")]
    assert update["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/agentplatform.tools.v1.Tool"
    }
    cancel = document["paths"]["/api/runs/{run_id}:cancel"]["post"]
    body = cancel["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(body) == {"reason"}, "a field the path binds is not in the body"
    listing = document["paths"]["/api/runs"]["get"]
    assert {"pageSize", "pageToken", "state", "allUsers"} <= {p["name"] for p in listing["parameters"]}
    assert "requestBody" not in listing
    assert "404" in cancel["responses"] and "404" not in listing["responses"]
    chat = document["paths"]["/api/chat"]["post"]["responses"]["200"]["content"]
    assert chat == {"text/event-stream": {"schema": {"$ref": "#/components/schemas/agentplatform.runs.v1.RunEvent"}}}


def test_two_methods_on_one_path_and_verb_are_refused(files: descriptor_pb2.FileDescriptorSet) -> None:
    clashing = descriptor_pb2.FileDescriptorSet()
    clashing.CopyFrom(files)
    runs = next(file for file in clashing.file if file.package == "agentplatform.runs.v1")
    service = runs.service[0]
    service.method.append(service.method[0])
    with pytest.raises(ValueError, match=re.escape("two methods bind GET /api/runs/{run_id}")):
        openapi_document(clashing)


def test_the_checked_in_document_is_what_the_protos_generate(files: descriptor_pb2.FileDescriptorSet) -> None:
    assert render(files) == OPENAPI_DOCUMENT.read_text(), "gateway/openapi.json is stale: run 'make openapi'"
