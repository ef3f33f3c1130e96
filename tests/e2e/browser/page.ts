// The browser tests' page script: what a React app does with @agentplatform/client, one function per scenario.
//
// test_browser.py bundles it with esbuild (resolving the client package to its TypeScript sources) and serves it
// on an origin the gateway allows; driver.mjs calls `window.platformTest.<scenario>(args)` in Chromium. Results
// go back as JSON: messages in protobuf's JSON mapping (toJson: int64 as strings), errors as code and message.
import {
  Code,
  ConnectError,
  DisconnectPolicy,
  FieldMaskSchema,
  ListRunsResponseSchema,
  ListToolsResponseSchema,
  RunEventSchema,
  RunSchema,
  ToolSchema,
  bigintReplacer,
  create,
  createPlatformClients,
  createPlatformTransport,
  followChat,
  retryDelayMs,
  toJson,
} from "@agentplatform/client";
import type { JsonValue, PlatformClients, Protocol, Reattach, RunEvent } from "@agentplatform/client";

/** How the page reaches the gateway: every scenario gets it from the test. */
interface Connection {
  baseUrl: string;
  protocol: Protocol;
  token?: string;
  /** Protobuf (the default) or JSON on the wire. */
  useBinaryFormat?: boolean;
  /** A bound on every call, so a protocol the gateway mishandles fails the test instead of hanging it. */
  defaultTimeoutMs?: number;
}

/** A failed call as page code sees it. */
interface CallError {
  /** The status code's name, e.g. "NotFound" (Connect-ES's `Code` enum). */
  code: string;
  /** The message without the "[not_found]" prefix ConnectError.message carries. */
  rawMessage: string;
  message: string;
  retryDelayMs: number | null;
  isConnectError: boolean;
}

/** One stream event and when the page received it (ms since the call began). */
interface TimedEvent {
  at: number;
  event: JsonValue;
}

/** Where a page keeps its place in a run, so that it can re-attach after a reload (as an app would). */
const REATTACH_KEY = "agentplatform.reattach";

interface ReattachState {
  runId: string;
  /** The sequence of the last stored step received; the WatchRun cursor. */
  lastSequence: string;
  /** Every event received before the reload, with the page's clock. */
  events: TimedEvent[];
  /** Set when the stream ended by itself (the run finished before the reload). */
  ended: boolean;
}

/** A chat followed with followChat: what it yielded, and each re-attach with the error that caused it. */
interface FollowState {
  events: TimedEvent[];
  reattaches: Array<{ attempt: number; afterSequence: string; error: CallError | null }>;
  ended: boolean;
  error?: CallError;
}

let following: FollowState | null = null;

function clients(connection: Connection): PlatformClients {
  return createPlatformClients(createPlatformTransport(connection));
}

function describeError(error: unknown): CallError {
  const connectError = ConnectError.from(error);
  return {
    code: Code[connectError.code],
    rawMessage: connectError.rawMessage,
    message: connectError.message,
    retryDelayMs: retryDelayMs(connectError) ?? null,
    isConnectError: error instanceof ConnectError,
  };
}

/** Runs `body`; a thrown error becomes `{error}` so the test can assert on it. */
async function attempt<T>(body: () => Promise<T>): Promise<{ result?: T; error?: CallError }> {
  try {
    return { result: await body() };
  } catch (error) {
    return { error: describeError(error) };
  }
}

function timed(started: number, event: RunEvent): TimedEvent {
  return { at: performance.now() - started, event: toJson(RunEventSchema, event) };
}

const platformTest = {
  /** A streamed chat, every event with its arrival time. */
  async streamChat(args: { connection: Connection; message: string }) {
    const { agents } = clients(args.connection);
    return attempt(async () => {
      const started = performance.now();
      const events: TimedEvent[] = [];
      for await (const event of agents.streamChat({ message: args.message })) {
        events.push(timed(started, event));
      }
      return events;
    });
  },

  /** A whole run through Chat (unary): the answer and the run id. */
  async chat(args: { connection: Connection; message: string }) {
    const { agents } = clients(args.connection);
    return attempt(async () => {
      const response = await agents.chat({ message: args.message });
      return { response: response.response, runId: response.runId };
    });
  },

  /** Inspect Runs: one page of the list (newest first). */
  async listRuns(args: { connection: Connection; pageSize: number }) {
    const { runs } = clients(args.connection);
    return attempt(async () => toJson(ListRunsResponseSchema, await runs.listRuns({ pageSize: args.pageSize })));
  },

  /** Inspect Runs: one run with all its steps. */
  async getRun(args: { connection: Connection; runId: string }) {
    const { runs } = clients(args.connection);
    return attempt(async () => {
      const run = await runs.getRun({ runId: args.runId });
      // What an app would do to keep the run in serialisable state: int64 fields are bigint.
      const plain = JSON.parse(JSON.stringify(run, bigintReplacer));
      return { run: toJson(RunSchema, run), stepCount: plain.stepCount as string, bigintStepCount: typeof run.stepCount };
    });
  },

  /**
   * Starts a chat whose run goes on without the page (on_disconnect CONTINUE) and follows it in the background,
   * keeping its place in sessionStorage after every event. Returns at once; the test reloads the page mid-run.
   */
  async beginChatForReattach(args: { connection: Connection; message: string }) {
    const { agents } = clients(args.connection);
    sessionStorage.removeItem(REATTACH_KEY);
    const started = performance.now();
    const state: ReattachState = { runId: "", lastSequence: "0", events: [], ended: false };
    void (async () => {
      for await (const event of agents.streamChat({
        message: args.message,
        onDisconnect: DisconnectPolicy.CONTINUE,
      })) {
        if (event.event.case === "run") state.runId = event.event.value.id;
        if (event.event.case === "step") state.lastSequence = event.event.value.sequence.toString();
        state.events.push(timed(started, event));
        sessionStorage.setItem(REATTACH_KEY, JSON.stringify(state));
      }
      state.ended = true;
      sessionStorage.setItem(REATTACH_KEY, JSON.stringify(state));
    })().catch((error) => {
      sessionStorage.setItem(REATTACH_KEY, JSON.stringify({ ...state, error: describeError(error) }));
    });
    return { result: { started: true } };
  },

  /** What the page has kept of the run so far (null before the first event). */
  reattachState(): ReattachState | null {
    const saved = sessionStorage.getItem(REATTACH_KEY);
    return saved === null ? null : (JSON.parse(saved) as ReattachState);
  },

  /** After a reload: WatchRun from the kept cursor until the run's final event. */
  async reattach(args: { connection: Connection }) {
    const { runs } = clients(args.connection);
    const saved = platformTest.reattachState();
    if (saved === null) throw new Error("nothing kept in sessionStorage: the page did not see the run start");
    return attempt(async () => {
      const started = performance.now();
      const events: TimedEvent[] = [];
      for await (const event of runs.watchRun({ runId: saved.runId, afterSequence: BigInt(saved.lastSequence) })) {
        events.push(timed(started, event));
      }
      return { before: saved, after: events };
    });
  },

  /**
   * A chat followed with followChat (it survives its engine), in the background: its events and re-attaches are
   * kept for followState(). Returns at once, so the test can kill the engine mid-run.
   */
  beginFollowChat(args: { connection: Connection; message: string }) {
    const started = performance.now();
    const state: FollowState = { events: [], reattaches: [], ended: false };
    following = state;
    const onReattach = (reattach: Reattach) =>
      state.reattaches.push({
        attempt: reattach.attempt,
        afterSequence: reattach.afterSequence.toString(),
        error: reattach.error ? describeError(reattach.error) : null,
      });
    void (async () => {
      const options = { onReattach, initialDelayMs: 100, maxDelayMs: 1_000, maxAttempts: 20 };
      for await (const event of followChat(clients(args.connection), { message: args.message }, options)) {
        state.events.push(timed(started, event));
      }
      state.ended = true;
    })().catch((error) => {
      state.error = describeError(error);
    });
    return { result: { started: true } };
  },

  /** What the followed chat has yielded so far. */
  followState(): FollowState | null {
    return following;
  },

  /** WatchRun from a cursor until the run's final event (or the error that refused it). */
  async watchRun(args: { connection: Connection; runId: string; afterSequence: number }) {
    const { runs } = clients(args.connection);
    return attempt(async () => {
      const started = performance.now();
      const events: TimedEvent[] = [];
      for await (const event of runs.watchRun({ runId: args.runId, afterSequence: BigInt(args.afterSequence) })) {
        events.push(timed(started, event));
      }
      return events;
    });
  },

  /** Manage Tools: the list, as the page shows it. */
  async listTools(args: { connection: Connection }) {
    const { tools } = clients(args.connection);
    return attempt(async () => toJson(ListToolsResponseSchema, await tools.listTools({})));
  },

  /** Manage Tools: one tool with the exact schema the model sees. */
  async getTool(args: { connection: Connection; toolId: string }) {
    const { tools } = clients(args.connection);
    return attempt(async () => toJson(ToolSchema, await tools.getTool({ toolId: args.toolId })));
  },

  /** Manage Tools: switch a tool on or off (update_mask "enabled"). */
  async setToolEnabled(args: { connection: Connection; toolId: string; enabled: boolean }) {
    const { tools } = clients(args.connection);
    return attempt(async () => {
      const tool = await tools.updateTool({
        tool: { id: args.toolId, enabled: args.enabled },
        updateMask: create(FieldMaskSchema, { paths: ["enabled"] }),
      });
      return toJson(ToolSchema, tool);
    });
  },

  /** What page code can read of a call the gateway refuses itself (an unknown or internal method, a GET): a
   * plain fetch, as a hand-written client or a misconfigured one would make. */
  async gatewayRefusal(args: { connection: Connection; path: string; method: string; contentType: string }) {
    return attempt(async () => {
      const response = await fetch(args.connection.baseUrl + args.path, {
        method: args.method,
        headers: args.method === "POST" ? { "content-type": args.contentType } : {},
        body: args.method === "POST" ? new Uint8Array([0, 0, 0, 0, 0]) : undefined,
      });
      return {
        status: response.status,
        grpcStatus: response.headers.get("grpc-status"),
        grpcMessage: response.headers.get("grpc-message"),
        text: await response.text(),
      };
    });
  },
};

declare global {
  interface Window {
    platformTest: typeof platformTest;
  }
}

window.platformTest = platformTest;
