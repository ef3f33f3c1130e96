/**
 * Following a run to its end across broken streams: `followChat` (StreamChat) and `followRun` (WatchRun) yield
 * the run's events as one continuous stream, re-attaching with RunService.WatchRun from the last step seen when a
 * stream breaks before the run has ended (its engine died and another resumes the run, the gateway or the runs
 * service restarted, the network dropped). Apps use these instead of calling streamChat/watchRun in a loop.
 *
 * Why it is safe: every step is stored before it is streamed, with a sequence 1, 2, 3 … that never changes, and
 * WatchRun replays the steps after a cursor then follows the run live. So re-attaching with the last sequence seen
 * loses nothing and repeats nothing; this module only has to remember that sequence, tell a break from a refusal,
 * and wait between attempts.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { CallOptions } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";

import { DisconnectPolicy } from "./gen/agentplatform/engine/v1/engine_pb.js";
import type { StreamChatRequestSchema } from "./gen/agentplatform/engine/v1/engine_pb.js";
import { RunEventSchema, RunState } from "./gen/agentplatform/runs/v1/runs_pb.js";
import type { RunEvent, Step } from "./gen/agentplatform/runs/v1/runs_pb.js";
import type { PlatformClients } from "./index.js";
import { retryDelayMs } from "./index.js";

/** Options of {@link followChat} and {@link followRun}. */
export interface FollowOptions {
  /** Stops following: the current call is aborted and the iteration throws a `Code.Canceled` ConnectError. */
  signal?: AbortSignal;
  /**
   * A deadline for the whole follow, in milliseconds, re-attaches included; DEADLINE_EXCEEDED is then thrown
   * as it is. Without it (the default) a DEADLINE_EXCEEDED of one call (a transport's `defaultTimeoutMs`, a
   * proxy's limit) is a break like any other, and the follow re-attaches.
   */
  timeoutMs?: number;
  /** Headers sent with every call (StreamChat, WatchRun and the CancelRun of an abandoned run). */
  headers?: HeadersInit;
  /**
   * Attempts in a row to re-attach after a break before the last error is thrown (default 8). The count starts
   * again once an attempt delivers an event, so a long run survives any number of separate breaks.
   */
  maxAttempts?: number;
  /** The wait before the first re-attach, in ms (default 250); doubled per failed attempt, with jitter. */
  initialDelayMs?: number;
  /** The longest wait between two attempts, in ms (default 5000). */
  maxDelayMs?: number;
  /**
   * A stream that delivers no event for this long, in ms, is taken as broken and re-attached (default 45000:
   * three of the platform's 15 s heartbeats); 0 waits for ever. It catches connections that die without a
   * word (a laptop's sleep, a NAT that forgot the connection). Time the loop body spends on an event is not
   * counted.
   */
  stallTimeoutMs?: number;
  /** Called before each re-attach: what broke, which attempt comes next, and how long it waits first. */
  onReattach?: (reattach: Reattach) => void;
}

/** What {@link FollowOptions.onReattach} is told. */
export interface Reattach {
  /** The run being followed; empty when StreamChat broke before its first event (the start is then retried). */
  runId: string;
  /** The sequence of the last step yielded: WatchRun resumes after it. */
  afterSequence: bigint;
  /** 1 for the first attempt after a break, 2 for the next … up to `maxAttempts`. */
  attempt: number;
  /** The wait before this attempt, in ms. */
  delayMs: number;
  /** Why the stream ended: the ConnectError of the break, or undefined when it ended cleanly before the run. */
  error?: ConnectError;
}

const DEFAULT_MAX_ATTEMPTS = 8;
const DEFAULT_INITIAL_DELAY_MS = 250;
const DEFAULT_MAX_DELAY_MS = 5_000;
const DEFAULT_STALL_TIMEOUT_MS = 45_000;
/** How long the CancelRun of an abandoned run (on_disconnect CANCEL) may take; it is sent without waiting. */
const CANCEL_TIMEOUT_MS = 5_000;

const FINAL_STATES: ReadonlySet<RunState> = new Set([RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED]);

/**
 * StreamChat that survives its engine: starts the run with `agents.streamChat` and yields its events; when the
 * stream breaks before the run's final event, re-attaches with `runs.watchRun` from the last step yielded, and
 * so on until the run ends (COMPLETED, FAILED or CANCELLED: the last event is that run). Each step is yielded
 * exactly once, in sequence order; deltas of a step already yielded are dropped, and the first delta after a
 * re-attach carries `replace` (all of the forming step so far).
 *
 * A request without `requestId` gets one (a random UUID), so that a stream broken before its first event is
 * retried as the same start: the engine that did start the run streams that run instead of starting another.
 * Aborting `options.signal`, or leaving the loop early, cancels the run unless `onDisconnect` is CONTINUE, as a
 * plain StreamChat does (once re-attached, the follow sends CancelRun itself).
 *
 * Throws what is not a break as it is: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, NOT_FOUND,
 * FAILED_PRECONDITION, RESOURCE_EXHAUSTED on the start (the engine's queue is full: the app decides) …, and the
 * last error once `maxAttempts` re-attaches in a row have failed.
 */
export function followChat(
  clients: Pick<PlatformClients, "agents" | "runs">,
  request: MessageInitShape<typeof StreamChatRequestSchema>,
  options: FollowOptions = {},
): AsyncIterable<RunEvent> {
  const start = { ...request, requestId: request.requestId || randomUuid() };
  const cancelsOnLeave = request.onDisconnect !== DisconnectPolicy.CONTINUE;
  return follow(clients, "", 0n, options, cancelsOnLeave, (callOptions) =>
    clients.agents.streamChat(start, callOptions),
  );
}

/**
 * WatchRun that survives restarts: yields the run's events after `afterSequence` (0, the default, replays the
 * whole run), re-attaching from the last step yielded whenever the stream breaks before the run has ended, as
 * {@link followChat} does. Leaving early never cancels the run.
 */
export function followRun(
  clients: Pick<PlatformClients, "runs">,
  runId: string,
  options: FollowOptions & { afterSequence?: bigint } = {},
): AsyncIterable<RunEvent> {
  return follow(clients, runId, options.afterSequence ?? 0n, options, false, undefined);
}

type StartStream = (callOptions: CallOptions) => AsyncIterable<RunEvent>;

async function* follow(
  clients: Pick<PlatformClients, "runs">,
  knownRunId: string,
  afterSequence: bigint,
  options: FollowOptions,
  cancelsOnLeave: boolean,
  startStream: StartStream | undefined,
): AsyncGenerator<RunEvent, void, undefined> {
  const maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const stallMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  let runId = knownRunId;
  let lastSequence = afterSequence;
  let attempt = 0;
  let ended = false;
  // While StreamChat is live, leaving cancels the run by itself (the engine sees its caller go); after a break
  // the follow must do that.
  let chatLive = false;
  try {
    for (;;) {
      // Each attempt has its own signal: the caller's, or the watchdog's when the stream goes silent.
      const watchdog = new Watchdog(stallMs, options.signal);
      const callOptions: CallOptions = { signal: watchdog.signal, headers: options.headers };
      if (deadline !== undefined) callOptions.timeoutMs = Math.max(1, deadline - Date.now());
      let stream: AsyncIterable<RunEvent>;
      if (runId === "" && startStream !== undefined) {
        stream = startStream(callOptions);
        chatLive = true;
      } else {
        stream = clients.runs.watchRun({ runId, afterSequence: lastSequence }, callOptions);
      }
      let failure: ConnectError | undefined;
      try {
        watchdog.arm();
        for await (const event of stream) {
          watchdog.disarm();
          attempt = 0; // the platform answered: breaks from here on count afresh
          switch (event.event.case) {
            case "run":
              runId = event.event.value.id;
              ended = FINAL_STATES.has(event.event.value.state);
              yield event;
              break;
            case "step": {
              const sequence = event.event.value.sequence;
              if (sequence <= lastSequence) break; // replayed: yielded already
              if (sequence !== lastSequence + 1n) {
                // Never skip a step. The platform sends every one, but should one go missing, read it from the
                // store, beside the stream (a chat's stream stays open: closing it would cancel the run).
                for (const missing of await missingSteps(clients, runId, lastSequence, sequence, callOptions)) {
                  lastSequence = missing.sequence;
                  yield create(RunEventSchema, { event: { case: "step", value: missing } });
                }
              }
              lastSequence = sequence;
              yield event;
              break;
            }
            case "delta":
              if (event.event.value.sequence > lastSequence) yield event;
              break;
            default:
              yield event;
          }
          if (ended) return;
          watchdog.arm();
        }
      } catch (error) {
        chatLive = false;
        const silent = `the stream of run ${runId || "(starting)"} sent nothing for ${stallMs} ms`;
        failure = watchdog.fired ? new ConnectError(silent, Code.Unavailable) : ConnectError.from(error);
        if (!isBreak(failure, options, runId !== "")) throw failure;
      } finally {
        watchdog.release();
      }
      // The stream ended (broken, or cleanly) before the run's final event: re-attach.
      chatLive = false;
      attempt += 1;
      if (attempt > maxAttempts) {
        throw failure ?? new ConnectError(`the stream of run ${runId} ended before the run did`, Code.Unavailable);
      }
      const delayMs = backoff(attempt, options, failure);
      options.onReattach?.({ runId, afterSequence: lastSequence, attempt, delayMs, error: failure });
      await sleep(delayMs, options.signal);
    }
  } finally {
    if (!ended && !chatLive && cancelsOnLeave && runId !== "") {
      // A StreamChat caller who leaves cancels the run (on_disconnect CANCEL); on a WatchRun that is ours to do.
      // Not awaited: the caller is leaving, and the run ends CANCELLED whether or not we see the answer.
      clients.runs
        .cancelRun({ runId }, { headers: options.headers, timeoutMs: CANCEL_TIMEOUT_MS })
        .catch(() => undefined);
    }
  }
}

/** Aborts an attempt's call when the caller's signal aborts, or when the stream has been silent too long. */
class Watchdog {
  private readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly forward = () => this.controller.abort();
  /** Whether the stream went silent (not the caller's abort). */
  fired = false;

  constructor(
    private readonly stallMs: number,
    private readonly caller: AbortSignal | undefined,
  ) {
    if (caller?.aborted) this.controller.abort();
    else caller?.addEventListener("abort", this.forward, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Start counting the silence (while the call waits for the next event). */
  arm(): void {
    this.disarm();
    if (this.stallMs <= 0) return;
    this.timer = setTimeout(() => {
      this.fired = true;
      this.controller.abort();
    }, this.stallMs);
  }

  /** Stop counting (an event arrived; the caller's loop body runs). */
  disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The attempt is over. */
  release(): void {
    this.disarm();
    this.caller?.removeEventListener("abort", this.forward);
  }
}

/** The stored steps strictly between `after` and `before`; DATA_LOSS (a break: the follow re-attaches with
 * WatchRun from `after`) if the store does not have every one of them yet. */
async function missingSteps(
  clients: Pick<PlatformClients, "runs">,
  runId: string,
  after: bigint,
  before: bigint,
  callOptions: CallOptions,
): Promise<Step[]> {
  const run = await clients.runs.getRun({ runId }, callOptions);
  const missing = run.steps.filter((step) => step.sequence > after && step.sequence < before);
  const whole = missing.every((step, i) => step.sequence === after + BigInt(i + 1));
  if (!whole || missing.length !== Number(before - after - 1n)) {
    throw new ConnectError(`steps ${after + 1n} to ${before - 1n} of run ${runId} are missing`, Code.DataLoss);
  }
  return missing;
}

/**
 * Whether a failed stream is a break worth re-attaching after, rather than an answer to throw:
 * - UNAVAILABLE: the service or its connection is gone (a killed engine, a restarting runs service, no healthy
 *   upstream at the gateway, the network);
 * - UNKNOWN and INTERNAL: what a stream cut off mid-response looks like to fetch ("missing trailer", "terminated",
 *   "network error"); both are also a server's bug, which a bounded number of re-attaches does not make worse;
 * - DATA_LOSS: steps missing between two that the store did not have either (see missingSteps): re-attaching
 *   reads them again after the last step yielded;
 * - DEADLINE_EXCEEDED: only of one call, when the follow itself has no `timeoutMs`;
 * - RESOURCE_EXHAUSTED: only once the run exists (a busy gateway refusing the re-attach); on the start it is the
 *   engine refusing a new run, which the app decides about.
 * Never a call the caller aborted.
 */
function isBreak(error: ConnectError, options: FollowOptions, runKnown: boolean): boolean {
  if (options.signal?.aborted) return false;
  switch (error.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.DataLoss:
      return true;
    case Code.DeadlineExceeded:
      return options.timeoutMs === undefined;
    case Code.ResourceExhausted:
      return runKnown;
    default:
      return false;
  }
}

/** Exponential backoff with full jitter over its upper half, at least the server's RetryInfo hint. */
function backoff(attempt: number, options: FollowOptions, error: ConnectError | undefined): number {
  const initial = options.initialDelayMs ?? DEFAULT_INITIAL_DELAY_MS;
  const cap = options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  const ceiling = Math.min(cap, initial * 2 ** (attempt - 1));
  const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
  const hint = error === undefined ? undefined : retryDelayMs(error);
  return Math.round(Math.max(jittered, hint ?? 0));
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const aborted = () => {
      clearTimeout(timer);
      reject(new ConnectError("the follow was aborted", Code.Canceled));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }, ms);
    if (signal?.aborted) aborted();
    else signal?.addEventListener("abort", aborted, { once: true });
  });
}

/** A version-4 UUID; crypto.randomUUID exists only in secure contexts, getRandomValues everywhere. */
function randomUuid(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
