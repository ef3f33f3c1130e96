/**
 * @agentplatform/client: the agent platform's typed client, for browsers and Node (20+, its built-in fetch).
 *
 * The messages, enums and service descriptors are generated from protos/ (src/gen/, by protoc-gen-es v2); this
 * file adds what every browser app needs around them: a transport to the Envoy gateway (grpc-web or the Connect
 * protocol) with an optional bearer token, one client per public service, and the two things that differ from
 * plain JSON in a browser: int64 fields (bigint) and error details (a retry hint). src/follow.ts follows a run
 * across broken streams (followChat, followRun).
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toJson } from "@bufbuild/protobuf";
import type { JsonWriteOptions } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { AgentRegistryService } from "./gen/agentplatform/agents/v1/agents_pb.js";
import { WorkflowRegistryService } from "./gen/agentplatform/agents/v1/workflows_pb.js";
import { AgentService } from "./gen/agentplatform/engine/v1/engine_pb.js";
import { RunService } from "./gen/agentplatform/runs/v1/runs_pb.js";
import { ToolService } from "./gen/agentplatform/tools/v1/tools_pb.js";

export * from "./gen/agentplatform/agents/v1/agents_pb.js";
export * from "./gen/agentplatform/agents/v1/workflows_pb.js";
export * from "./gen/agentplatform/engine/v1/engine_pb.js";
export * from "./gen/agentplatform/runs/v1/runs_pb.js";
export * from "./gen/agentplatform/tools/v1/tools_pb.js";
export { followChat, followRun } from "./follow.js";
export type { FollowOptions, Reattach } from "./follow.js";

// What an app needs from the runtimes without importing them itself (and so without a second copy of them).
export { Code, ConnectError, createClient } from "@connectrpc/connect";
export type { CallOptions, Client, Interceptor, Transport } from "@connectrpc/connect";
export { create, fromJson, fromJsonString, toBinary, fromBinary, toJson, toJsonString } from "@bufbuild/protobuf";
export type { JsonObject, JsonValue, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
export { FieldMaskSchema, timestampDate, timestampMs, durationMs, ValueSchema } from "@bufbuild/protobuf/wkt";
export type { Duration, FieldMask, Timestamp, Value } from "@bufbuild/protobuf/wkt";

/** The two protocols a browser can speak to the gateway. */
export type Protocol = "grpc-web" | "connect";

/** A bearer token, or a function that returns the current one (for tokens that are refreshed). */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** Options of {@link createPlatformTransport}. */
export interface PlatformTransportOptions {
  /** The gateway's address, e.g. "http://127.0.0.1:8080" or "/" behind a reverse proxy on the page's origin. */
  baseUrl: string;
  /** The wire protocol; "grpc-web" (the default) or "connect". */
  protocol?: Protocol;
  /** Sent as `authorization: Bearer <token>` on every call; omit it when the platform runs without API keys. */
  token?: TokenSource;
  /**
   * Protobuf on the wire (true, the default) or JSON. The platform's services speak protobuf, so keep the
   * default unless the gateway transcodes JSON.
   */
  useBinaryFormat?: boolean;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
  /** A timeout for calls that do not set their own `timeoutMs`; none by default (chats and watches are long). */
  defaultTimeoutMs?: number;
  /** A fetch to use instead of globalThis.fetch, e.g. to set `credentials`. */
  fetch?: typeof globalThis.fetch;
}

/**
 * An interceptor that adds `authorization: Bearer <token>` to every request. A function token is called per
 * request, so a refreshed token is picked up without a new transport; an empty token sends no header.
 */
export function bearerToken(token: TokenSource): Interceptor {
  return (next) => async (request) => {
    const value = typeof token === "function" ? await token() : token;
    if (value) request.header.set("authorization", `Bearer ${value}`);
    return next(request);
  };
}

/** A grpc-web transport to the gateway (what Envoy's grpc_web filter serves). */
export function createPlatformGrpcWebTransport(options: Omit<PlatformTransportOptions, "protocol">): Transport {
  return createGrpcWebTransport(transportOptions(options));
}

/** A Connect-protocol transport to the gateway (served through Envoy's connect_grpc_bridge filter). */
export function createPlatformConnectTransport(options: Omit<PlatformTransportOptions, "protocol">): Transport {
  return createConnectTransport(transportOptions(options));
}

/** A transport to the gateway in the protocol `options.protocol` names (grpc-web by default). */
export function createPlatformTransport(options: PlatformTransportOptions): Transport {
  return options.protocol === "connect"
    ? createPlatformConnectTransport(options)
    : createPlatformGrpcWebTransport(options);
}

function transportOptions(options: PlatformTransportOptions) {
  const interceptors = [...(options.token ? [bearerToken(options.token)] : []), ...(options.interceptors ?? [])];
  return {
    baseUrl: options.baseUrl,
    useBinaryFormat: options.useBinaryFormat ?? true,
    interceptors,
    defaultTimeoutMs: options.defaultTimeoutMs,
    fetch: options.fetch,
  };
}

/** One client per public service of the platform. */
export interface PlatformClients {
  /** AgentService: start a run (StartRun), chat with a streamed answer (StreamChat) or a single one (Chat). */
  agents: Client<typeof AgentService>;
  /** RunService: list, get, watch (re-attach), cancel and delete runs. */
  runs: Client<typeof RunService>;
  /** ToolService: list tools, show one with its JSON schema, switch one on or off. */
  tools: Client<typeof ToolService>;
  /** AgentRegistryService: the Build Agents page's saved, versioned agents (run one with `agentId`). */
  agentRegistry: Client<typeof AgentRegistryService>;
  /** WorkflowRegistryService: the Build Agents page's saved, versioned workflows (graphs of agents, tools,
   * conditions, loops and approvals). */
  workflowRegistry: Client<typeof WorkflowRegistryService>;
}

/** The clients of AgentService, RunService, ToolService, AgentRegistryService and WorkflowRegistryService over one
 * transport. */
export function createPlatformClients(transport: Transport): PlatformClients {
  return {
    agents: createClient(AgentService, transport),
    runs: createClient(RunService, transport),
    tools: createClient(ToolService, transport),
    agentRegistry: createClient(AgentRegistryService, transport),
    workflowRegistry: createClient(WorkflowRegistryService, transport),
  };
}

/**
 * A JSON.stringify replacer for messages that hold int64 fields, which protobuf-es represents as bigint
 * (JSON.stringify throws on a bigint): `JSON.stringify(run, bigintReplacer)`. The bigint becomes a decimal
 * string, as in protobuf's own JSON mapping. For the canonical JSON of a message (field names in lowerCamelCase,
 * enums by name, timestamps as RFC 3339) use {@link messageToJson} or `toJsonString(Schema, message)` instead.
 */
export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * A message as plain JSON (protobuf's JSON mapping: int64 as strings, enums by name, timestamps as RFC 3339),
 * safe to store, log or put into React state that must be serialisable. Read it back with `fromJson(Schema, json)`.
 */
export function messageToJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
  options?: Partial<JsonWriteOptions>,
): ReturnType<typeof toJson> {
  return toJson(schema, message, options);
}

/**
 * How long to wait before retrying a call that failed with RESOURCE_EXHAUSTED (or UNAVAILABLE), in
 * milliseconds: the server's google.rpc.RetryInfo hint when it sent one, else undefined.
 */
export function retryDelayMs(error: unknown): number | undefined {
  const connectError = ConnectError.from(error);
  for (const detail of connectError.details) {
    if ("desc" in detail || detail.type !== "google.rpc.RetryInfo") continue;
    // RetryInfo is { google.protobuf.Duration retry_delay = 1; }: read field 1 rather than ship
    // google/rpc/error_details.proto for one field.
    const reader = new BinaryReader(detail.value);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.LengthDelimited) {
        const delay = fromBinary(DurationSchema, reader.bytes());
        return Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1_000_000);
      }
      reader.skip(wireType);
    }
  }
  return undefined;
}

/** Whether a failed call is worth retrying later as is: the platform was busy or briefly unreachable. */
export function isRetryable(error: unknown): boolean {
  const code = ConnectError.from(error).code;
  return code === Code.ResourceExhausted || code === Code.Unavailable;
}
