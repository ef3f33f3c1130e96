// followChat and followRun against a scripted server (Connect-ES's in-memory router transport): the cases a real
// stack cannot stage on demand, each in milliseconds. tests/e2e/test_client_follow.py bundles this file with
// esbuild and runs it with node; node:test reports each case and exits non-zero when one fails. The real stack,
// with real kills, is the other tests of that module.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createRouterTransport } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";

import {
  AgentService,
  Code,
  ConnectError,
  DisconnectPolicy,
  RunEventSchema,
  RunSchema,
  RunService,
  RunState,
  StepDeltaSchema,
  StepSchema,
  create,
  createPlatformClients,
  followChat,
  followRun,
} from "@agentplatform/client";
import type { FollowOptions, Reattach, RunEvent, StreamChatRequest, WatchRunRequest } from "@agentplatform/client";

const RUN_ID = "0b5c2c7e-4f7e-4c8a-9d1e-2f3a4b5c6d7e";

function run(state: RunState = RunState.RUNNING) {
  return create(RunEventSchema, { event: { case: "run", value: create(RunSchema, { id: RUN_ID, state }) } });
}

function step(sequence: number) {
  return create(RunEventSchema, { event: { case: "step", value: create(StepSchema, { runId: RUN_ID, sequence: BigInt(sequence) }) } });
}

function delta(sequence: number, text: string, replace = false) {
  return create(RunEventSchema, {
    event: { case: "delta", value: create(StepDeltaSchema, { runId: RUN_ID, sequence: BigInt(sequence), part: { case: "text", value: text }, replace }) },
  });
}

const broken = () => new ConnectError("terminated", Code.Unknown);

/** A stream that stops sending, without an error, until the client gives up on it. */
const HANG = "hang";

type Script = Array<RunEvent | ConnectError | typeof HANG>;

/** A scripted platform: each StreamChat and WatchRun call plays the next script of its list (its events, then the
 * error that ends it, if any), and records its request; GetRun finds the steps `stored`. */
class Platform {
  chats: StreamChatRequest[] = [];
  watches: WatchRunRequest[] = [];
  cancels: string[] = [];
  gets = 0;

  constructor(
    private chatScripts: Script[],
    private watchScripts: Script[],
    /** The sequences of the steps GetRun finds stored. */
    private stored: number[] = [],
  ) {}

  clients() {
    return createPlatformClients(
      createRouterTransport((router: ConnectRouter) => {
        router.service(AgentService, {
          streamChat: (request, context) => {
            this.chats.push(request);
            return play(this.chatScripts.shift() ?? [new ConnectError("no more chats", Code.Unavailable)], context.signal);
          },
        });
        router.service(RunService, {
          watchRun: (request, context) => {
            this.watches.push(request);
            return play(this.watchScripts.shift() ?? [new ConnectError("no more watches", Code.Unavailable)], context.signal);
          },
          getRun: (request) => {
            this.gets += 1;
            const steps = this.stored.map((sequence) => create(StepSchema, { runId: request.runId, sequence: BigInt(sequence) }));
            return create(RunSchema, { id: request.runId, state: RunState.RUNNING, steps });
          },
          cancelRun: (request) => {
            this.cancels.push(request.runId);
            return create(RunSchema, { id: request.runId, state: RunState.CANCELLED });
          },
        });
      }),
    );
  }
}

async function* play(script: Script, signal: AbortSignal): AsyncGenerator<RunEvent> {
  for (const item of script) {
    if (item === HANG) {
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      return;
    }
    if (item instanceof ConnectError) throw item;
    yield item;
  }
}

/** Quick backoff, every re-attach recorded. */
function options(reattaches: Reattach[], more: Partial<FollowOptions> = {}): FollowOptions {
  return { initialDelayMs: 1, maxDelayMs: 2, onReattach: (reattach) => reattaches.push(reattach), ...more };
}

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const seen: RunEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

function sequences(events: RunEvent[]): number[] {
  return events.flatMap((event) => (event.event.case === "step" ? [Number(event.event.value.sequence)] : []));
}

/** Lets the CancelRun a follow sends without waiting reach the scripted server. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the follow to throw");
}

test("a chat cut off mid-run re-attaches with WatchRun from the last step, each step once", async () => {
  const platform = new Platform(
    [[run(), step(1), step(2), delta(3, "par"), broken()]],
    // The watch replays step 2 (a cursor off by one somewhere) and a delta of a stored step: both dropped.
    [[run(), step(2), delta(2, "old"), delta(3, "partial", true), step(3), step(4), run(RunState.COMPLETED)]],
  );
  const reattaches: Reattach[] = [];
  const events = await collect(followChat(platform.clients(), { message: "hi" }, options(reattaches)));

  assert.deepEqual(sequences(events), [1, 2, 3, 4]);
  assert.equal(platform.watches.length, 1);
  assert.equal(platform.watches[0].runId, RUN_ID);
  assert.equal(platform.watches[0].afterSequence, 2n);
  const deltas = events.flatMap((event) => (event.event.case === "delta" ? [event.event.value] : []));
  assert.deepEqual(deltas.map((d) => [Number(d.sequence), d.replace]), [[3, false], [3, true]]);
  assert.equal(events.at(-1)?.event.case, "run");
  assert.deepEqual(reattaches.map((r) => [r.runId, r.afterSequence, r.attempt, r.error?.code]), [[RUN_ID, 2n, 1, Code.Unknown]]);
  assert.deepEqual(platform.cancels, []);
});

test("a step missing from the stream is read from the store beside it, never skipped", async () => {
  const platform = new Platform([[run(), step(1), step(3), step(4), run(RunState.COMPLETED)]], [], [1, 2, 3, 4]);
  const reattaches: Reattach[] = [];
  const events = await collect(followChat(platform.clients(), { message: "hi" }, options(reattaches)));

  assert.deepEqual(sequences(events), [1, 2, 3, 4]);
  assert.equal(platform.gets, 1);
  assert.deepEqual(reattaches, []); // the chat's stream stayed open: closing it would have cancelled the run

  // Not in the store either (yet): re-attached with WatchRun from the last step yielded.
  const behind = new Platform([], [
    [run(), step(1), step(3), step(4)],
    [run(), step(2), step(3), step(4), run(RunState.COMPLETED)],
  ], [1, 3]);
  const again: Reattach[] = [];
  assert.deepEqual(sequences(await collect(followRun(behind.clients(), RUN_ID, options(again)))), [1, 2, 3, 4]);
  assert.deepEqual(behind.watches.map((w) => w.afterSequence), [0n, 1n]);
  assert.equal(again[0].error?.code, Code.DataLoss);
});

test("a stream that ends cleanly before the run's final event is re-attached", async () => {
  const platform = new Platform([], [[run(), step(1)], [run(), step(2), run(RunState.FAILED)]]);
  const reattaches: Reattach[] = [];
  const events = await collect(followRun(platform.clients(), RUN_ID, options(reattaches)));

  assert.deepEqual(sequences(events), [1, 2]);
  assert.equal(reattaches.length, 1);
  assert.equal(reattaches[0].error, undefined);
});

test("what is not a break is thrown at once: NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, OUT_OF_RANGE", async () => {
  for (const code of [Code.NotFound, Code.InvalidArgument, Code.PermissionDenied, Code.OutOfRange, Code.Unauthenticated]) {
    const platform = new Platform([], [[new ConnectError("no", code)]]);
    const reattaches: Reattach[] = [];
    const error = await rejection(collect(followRun(platform.clients(), RUN_ID, options(reattaches))));
    assert.equal(error.code, code);
    assert.equal(platform.watches.length, 1);
    assert.deepEqual(reattaches, []);
  }
});

test("after maxAttempts failed re-attaches in a row the last error is thrown; an event starts the count again", async () => {
  const unavailable = () => [new ConnectError("gone", Code.Unavailable)];
  const platform = new Platform([], [
    [run(), step(1), broken()],
    unavailable(), unavailable(), // two failures, then progress: the count starts again
    [run(), step(2), broken()],
    unavailable(), unavailable(), unavailable(),
  ]);
  const reattaches: Reattach[] = [];
  const error = await rejection(collect(followRun(platform.clients(), RUN_ID, options(reattaches, { maxAttempts: 3 }))));

  assert.equal(error.code, Code.Unavailable);
  assert.equal(platform.watches.length, 7);
  assert.deepEqual(reattaches.map((r) => r.attempt), [1, 2, 3, 1, 2, 3]);
  assert.deepEqual(platform.watches.map((w) => w.afterSequence), [0n, 1n, 1n, 1n, 2n, 2n, 2n]);
});

test("DEADLINE_EXCEEDED is a break only when the follow has no deadline of its own", async () => {
  const expired = () => [new ConnectError("deadline", Code.DeadlineExceeded)];
  const mine = new Platform([], [expired()]);
  const error = await rejection(collect(followRun(mine.clients(), RUN_ID, options([], { timeoutMs: 60_000 }))));
  assert.equal(error.code, Code.DeadlineExceeded);
  assert.equal(mine.watches.length, 1);

  const theirs = new Platform([], [expired(), [run(), step(1), run(RunState.COMPLETED)]]);
  assert.deepEqual(sequences(await collect(followRun(theirs.clients(), RUN_ID, options([])))), [1]);
});

test("RESOURCE_EXHAUSTED refuses the start as it is, and is waited out once the run exists", async () => {
  const full = () => new ConnectError("queue full", Code.ResourceExhausted);
  const start = new Platform([[full()]], []);
  const error = await rejection(collect(followChat(start.clients(), { message: "hi" }, options([]))));
  assert.equal(error.code, Code.ResourceExhausted);
  assert.equal(start.chats.length, 1);

  const later = new Platform([[run(), step(1), broken()]], [[full()], [run(), step(2), run(RunState.COMPLETED)]]);
  assert.deepEqual(sequences(await collect(followChat(later.clients(), { message: "hi" }, options([])))), [1, 2]);
});

test("a chat cut off before its first event is started again with the same generated request id", async () => {
  const platform = new Platform(
    [[broken()], [run(), step(1), run(RunState.COMPLETED)]],
    [],
  );
  const reattaches: Reattach[] = [];
  const events = await collect(followChat(platform.clients(), { message: "hi" }, options(reattaches)));

  assert.deepEqual(sequences(events), [1]);
  assert.equal(platform.chats.length, 2);
  assert.match(platform.chats[0].requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(platform.chats[1].requestId, platform.chats[0].requestId);
  assert.deepEqual(reattaches.map((r) => [r.runId, r.afterSequence]), [["", 0n]]);

  const own = new Platform([[run(), step(1), run(RunState.COMPLETED)]], []);
  await collect(followChat(own.clients(), { message: "hi", requestId: "mine" }, options([])));
  assert.equal(own.chats[0].requestId, "mine");
});

test("leaving after a re-attach cancels the run unless the chat said CONTINUE; leaving followRun never does", async () => {
  const policies: Array<[DisconnectPolicy, string[]]> = [
    [DisconnectPolicy.UNSPECIFIED, [RUN_ID]],
    [DisconnectPolicy.CANCEL, [RUN_ID]],
    [DisconnectPolicy.CONTINUE, []],
  ];
  for (const [onDisconnect, cancels] of policies) {
    const platform = new Platform([[run(), step(1), broken()]], [[run(), step(2), step(3)]]);
    for await (const event of followChat(platform.clients(), { message: "hi", onDisconnect }, options([]))) {
      if (event.event.case === "step" && event.event.value.sequence === 2n) break;
    }
    await settle();
    assert.deepEqual(platform.cancels, cancels);
  }

  const watched = new Platform([], [[run(), step(1), step(2)]]);
  for await (const event of followRun(watched.clients(), RUN_ID, options([]))) {
    if (event.event.case === "step") break;
  }
  await settle();
  assert.deepEqual(watched.cancels, []);
});

test("aborting while it waits to re-attach throws CANCELED and cancels the chat's run", async () => {
  const platform = new Platform([[run(), step(1), broken()]], []);
  const abort = new AbortController();
  const follow = collect(
    followChat(platform.clients(), { message: "hi" }, {
      signal: abort.signal,
      initialDelayMs: 60_000,
      onReattach: () => abort.abort(),
    }),
  );
  const error = await rejection(follow);
  assert.equal(error.code, Code.Canceled);
  assert.equal(platform.watches.length, 0);
  await settle();
  assert.deepEqual(platform.cancels, [RUN_ID]);
});

test("followRun starts after the sequence it is given and re-attaches from the last step since", async () => {
  const platform = new Platform([], [[run(), step(5), step(6), broken()], [run(), step(7), run(RunState.COMPLETED)]]);
  const events = await collect(followRun(platform.clients(), RUN_ID, { ...options([]), afterSequence: 5n }));

  assert.deepEqual(sequences(events), [6, 7]);
  assert.deepEqual(platform.watches.map((w) => w.afterSequence), [5n, 6n]);
});

test("a stream silent for stallTimeoutMs is re-attached; time spent on an event does not count", async () => {
  const platform = new Platform([], [[run(), step(1), HANG], [run(), step(2), run(RunState.COMPLETED)]]);
  const reattaches: Reattach[] = [];
  const events = await collect(followRun(platform.clients(), RUN_ID, options(reattaches, { stallTimeoutMs: 50 })));

  assert.deepEqual(sequences(events), [1, 2]);
  assert.deepEqual(platform.watches.map((w) => w.afterSequence), [0n, 1n]);
  assert.equal(reattaches[0].error?.code, Code.Unavailable);
  assert.match(reattaches[0].error?.rawMessage ?? "", /sent nothing for 50 ms/);

  // A slow loop body (120 ms per event) over a stream that is never silent: no re-attach.
  const busy = new Platform([], [[run(), step(1), step(2), run(RunState.COMPLETED)]]);
  const none: Reattach[] = [];
  for await (const event of followRun(busy.clients(), RUN_ID, options(none, { stallTimeoutMs: 50 }))) {
    if (event.event.case === "step") await new Promise((resolve) => setTimeout(resolve, 120));
  }
  assert.deepEqual(none, []);
  assert.equal(busy.watches.length, 1);
});
