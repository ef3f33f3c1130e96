"""The OpenAPI 3.1 document of the REST paths, generated from the protos: their google.api.http bindings (the
paths Envoy's grpc_json_transcoder serves), their messages as JSON schemas in the proto3 JSON mapping the gateway
prints (lowerCamelCase names, int64 as strings, enums by name, well-known types as their JSON forms) and their
comments as descriptions.

`make openapi` runs it on a descriptor set with source info and writes gateway/openapi.json, which the gateway
serves at GET /api/openapi.json (services/launcher/gateway_config.py) and `make openapi-check` keeps in step with
protos/. Written here rather than with a protoc plugin: the maintained OpenAPI generators for protos
(protoc-gen-openapi, protoc-gen-openapiv2, protoc-gen-connect-openapi) are Go binaries that no Python or npm
package ships, and they describe grpc-gateway's error shape and streams rather than Envoy's.

    python -m services.launcher.openapi DESCRIPTOR_SET_WITH_SOURCE_INFO > gateway/openapi.json
"""

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

FieldProto = descriptor_pb2.FieldDescriptorProto

#: The document's `info.version`: the API's major version, as in the proto packages (agentplatform.*.v1).
API_VERSION = "v1"

#: The services whose REST paths are public (the ones the gateway transcodes).
PUBLIC_PACKAGE = re.compile(r"^agentplatform\.\w+\.v\d+$")

#: Scalar field types as JSON schemas, in the proto3 JSON mapping: 64-bit integers are strings (a JavaScript
#: number cannot hold them), bytes base64.
_SCALARS: dict[int, dict[str, Any]] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte"},
}

#: Well-known types, which proto3 JSON writes as their own JSON forms rather than as objects of their fields.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$", "examples": ["1.5s"]},
    "google.protobuf.FieldMask": {"type": "string", "description": "Field paths, comma-separated."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}

#: What every REST error's body is: google.rpc.Status, as Envoy's transcoder writes it.
STATUS_SCHEMA = "google.rpc.Status"
_STATUS: dict[str, Any] = {
    "type": "object",
    "description": "An error: the gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, 16 UNAUTHENTICATED ...), "
    "the server's message, and details (google.rpc error details such as RetryInfo).",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}

#: The errors an operation documents, by HTTP status (each the HTTP status of a gRPC code, as Envoy maps them).
_ERRORS = {
    "400": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the request is wrong, the message says how",
    "401": "UNAUTHENTICATED: no valid API key or token",
    "403": "PERMISSION_DENIED: the caller's role may not do this",
    "404": "NOT_FOUND: no such resource, or another user's",
    "409": "ALREADY_EXISTS or ABORTED",
    "429": "RESOURCE_EXHAUSTED: a limit was reached; retry later (RetryInfo in details says when)",
    "503": "UNAVAILABLE: retry a read; a write with the same request_id",
}


@dataclass(frozen=True)
class Binding:
    """One REST path of one method."""

    service: str
    method: descriptor_pb2.MethodDescriptorProto
    verb: str
    path: str
    body: str
    comment: str


class _Protos:
    """The descriptor set's messages, enums and comments by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = list(files.file)
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        #: Leading comments by (file name, source path).
        self._comments: dict[tuple[str, tuple[int, ...]], str] = {}
        #: Where each message, field and enum was declared: (file name, source path).
        self.where: dict[str, tuple[str, tuple[int, ...]]] = {}
        for file in self.files:
            for location in file.source_code_info.location:
                if location.leading_comments:
                    self._comments[(file.name, tuple(location.path))] = location.leading_comments
            for index, message in enumerate(file.message_type):
                self._add_message(file, f"{file.package}.{message.name}", message, (4, index))
            for index, enum in enumerate(file.enum_type):
                self.enums[f"{file.package}.{enum.name}"] = enum
                self.where[f"{file.package}.{enum.name}"] = (file.name, (5, index))

    def _add_message(
        self, file: descriptor_pb2.FileDescriptorProto, name: str, message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        self.messages[name] = message
        self.where[name] = (file.name, path)
        for index, nested in enumerate(message.nested_type):
            self._add_message(file, f"{name}.{nested.name}", nested, (*path, 3, index))
        for index, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = enum
            self.where[f"{name}.{enum.name}"] = (file.name, (*path, 4, index))

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        """A declaration's leading comment as plain text, one paragraph per blank line."""
        text = self._comments.get((file, path), "")
        return "\n".join(line.strip() for line in text.strip().splitlines())

    def field_comment(self, message: str, index: int) -> str:
        file, path = self.where[message]
        return self.comment(file, (*path, 2, index))

    def bindings(self) -> Iterator[Binding]:
        for file in self.files:
            if not PUBLIC_PACKAGE.match(file.package):
                continue
            for s, service in enumerate(file.service):
                for m, method in enumerate(service.method):
                    if not method.options.HasExtension(annotations_pb2.http):
                        continue
                    rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                    verb = rule.WhichOneof("pattern")
                    if verb is None or verb == "custom":
                        raise ValueError(f"{service.name}.{method.name}: only get/put/post/delete/patch bindings")
                    yield Binding(
                        service=f"{file.package}.{service.name}", method=method, verb=verb,
                        path=getattr(rule, verb), body=rule.body, comment=self.comment(file.name, (6, s, 2, m)),
                    )


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return field.type_name.lstrip(".")


def _is_map(protos: _Protos, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    if field.type != FieldProto.TYPE_MESSAGE or field.label != FieldProto.LABEL_REPEATED:
        return False
    entry = protos.messages.get(_type_name(field))
    return entry is not None and entry.options.map_entry


class _Schemas:
    """components/schemas: one per message and enum the operations use, found as they are referred to."""

    def __init__(self, protos: _Protos) -> None:
        self.protos = protos
        self.schemas: dict[str, dict[str, Any]] = {STATUS_SCHEMA: _STATUS}
        self._pending: list[str] = []

    def ref(self, name: str) -> dict[str, Any]:
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.schemas and name not in self._pending:
            self._pending.append(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """A field's schema, its repetition and map-ness included."""
        if _is_map(self.protos, field):
            entry = self.protos.messages[_type_name(field)]
            return {"type": "object", "additionalProperties": self._single(entry.field[1])}
        single = self._single(field)
        if field.label == FieldProto.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_ENUM):
            return self.ref(_type_name(field))
        return dict(_SCALARS[field.type])

    def object(self, name: str, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A message's object schema, without the fields named in `skip` (the ones a path binds)."""
        message = self.protos.messages[name]
        properties: dict[str, Any] = {}
        for index, field in enumerate(message.field):
            if field.name in skip:
                continue
            property_schema = self.field(field)
            comment = self.protos.field_comment(name, index)
            if comment:
                # A $ref's siblings are allowed in 3.1; the field's own comment says more than the type's.
                property_schema["description"] = comment
            properties[field.json_name] = property_schema
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        file, path = self.protos.where[name]
        comment = self.protos.comment(file, path)
        if comment:
            schema["description"] = comment
        return schema

    def resolve(self) -> None:
        """Writes every schema referred to so far, and those they refer to."""
        while self._pending:
            name = self._pending.pop(0)
            if name in self.protos.enums:
                enum = self.protos.enums[name]
                file, path = self.protos.where[name]
                schema: dict[str, Any] = {"type": "string", "enum": [value.name for value in enum.value]}
                comment = self.protos.comment(file, path)
                if comment:
                    schema["description"] = comment
                self.schemas[name] = schema
            else:
                self.schemas[name] = self.object(name)


_PATH_VARIABLE = re.compile(r"\{([\w.]+)(=[^}]*)?\}")


def _summary(comment: str) -> str:
    """The comment's first sentence."""
    first = comment.split("\n\n")[0].replace("\n", " ")
    match = re.match(r"(.+?\.)(\s|$)", first)
    return match.group(1) if match else first


def _query_parameters(schemas: _Schemas, request: str, bound: set[str]) -> list[dict[str, Any]]:
    """The request's top-level fields a GET or DELETE (or a body that is one field) leaves to the query."""
    parameters = []
    message = schemas.protos.messages[request]
    for index, field in enumerate(message.field):
        if field.name in bound or _is_map(schemas.protos, field):
            continue
        if field.type == FieldProto.TYPE_MESSAGE and _type_name(field) not in _WELL_KNOWN:
            continue  # a message's fields would be `a.b=` parameters: none of the public requests needs them
        parameter: dict[str, Any] = {"name": field.json_name, "in": "query", "schema": schemas.field(field)}
        comment = schemas.protos.field_comment(request, index)
        if comment:
            parameter["description"] = comment
        parameters.append(parameter)
    return parameters


def _operation(schemas: _Schemas, binding: Binding) -> dict[str, Any]:
    method = binding.method
    request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
    path_fields = [match.group(1) for match in _PATH_VARIABLE.finditer(binding.path)]
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_fields
    ]
    # The top-level fields the path binds (tool.id binds a field of the body's `tool`, not a top-level one).
    bound = {name for name in path_fields if "." not in name}
    operation: dict[str, Any] = {
        "operationId": f"{binding.service.rsplit('.', 1)[1]}_{method.name}",
        "tags": [binding.service.rsplit(".", 1)[1]],
        "summary": _summary(binding.comment),
        "description": binding.comment,
    }
    if binding.body == "*":
        body_schema = schemas.object(request, skip=frozenset(bound))
        body_schema.pop("description", None)
    elif binding.body:
        body_field = next(field for field in schemas.protos.messages[request].field if field.name == binding.body)
        body_schema = schemas.field(body_field)
        parameters += _query_parameters(schemas, request, bound | {binding.body})
    else:
        body_schema = None
        parameters += _query_parameters(schemas, request, bound)
    if parameters:
        operation["parameters"] = parameters
    if body_schema is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if method.server_streaming:
        success = {
            "description": f"Server-Sent Events: each event's data is one {response} in JSON, as it happens; the "
            "stream ends when the call does. An error after the stream began is an event of type `error` whose "
            "data is a google.rpc.Status.",
            "content": {"text/event-stream": {"schema": schemas.ref(response)}},
        }
    else:
        success = {"description": "OK", "content": {"application/json": {"schema": schemas.ref(response)}}}
    # Any call may be refused for its role (listing MCP servers is an admin's, for one), or be over a limit.
    errors = ["400", "401", "403", "429", "503"]
    if path_fields:
        errors.append("404")
    if binding.verb != "get":
        errors.append("409")
    status_ref = {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}
    operation["responses"] = {
        "200": success,
        **{
            code: {"description": _ERRORS[code], "content": {"application/json": {"schema": status_ref}}}
            for code in sorted(errors)
        },
    }
    return operation


def openapi_document(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every REST binding of the public services in `files`."""
    protos = _Protos(files)
    schemas = _Schemas(protos)
    paths: dict[str, dict[str, Any]] = {}
    for binding in protos.bindings():
        operations = paths.setdefault(binding.path, {})
        if binding.verb in operations:
            raise ValueError(f"two methods bind {binding.verb.upper()} {binding.path}")
        operations[binding.verb] = _operation(schemas, binding)
    if not paths:
        raise ValueError("the descriptor set has no google.api.http bindings of a public service")
    schemas.resolve()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Agent platform REST API",
            "version": API_VERSION,
            "description": "The platform's public gRPC API as REST/JSON, through the gateway (docs/gateway.md). "
            "Field names are lowerCamelCase (either form is accepted in requests), 64-bit integers are strings, "
            "enums their names; every field is printed, defaults included. Errors are a google.rpc.Status with the "
            "HTTP status of its gRPC code.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (apk_...) or a JWT of the platform's identity provider.",
                }
            },
            "schemas": dict(sorted(schemas.schemas.items())),
        },
    }


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    """The document as the checked-in file has it: indented, key order as built, a final newline."""
    return json.dumps(openapi_document(files), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.launcher.openapi DESCRIPTOR_SET_WITH_SOURCE_INFO", file=sys.stderr)
        return 2
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[0]).read_bytes())
    sys.stdout.write(render(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
