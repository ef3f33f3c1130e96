// A Node program that follows a run with @agentplatform/client's followChat / followRun, the way an app does,
// for tests/e2e/test_client_follow.py: the test bundles it with esbuild (the client from its TypeScript sources),
// runs it with node against the stack's gateway, and kills services under it while it reads.
//
// Usage: node follow.mjs '<json>' where the JSON is
//   {"baseUrl": "...", "protocol": "grpc-web" | "connect", "mode": "chat", "message": "..."}  (followChat)
//   {"baseUrl": "...", "protocol": "...", "mode": "run", "runId": "...", "afterSequence": "0"}  (followRun)
// and "abortAfterReattach": true aborts the follow (its AbortSignal) at the first event after a re-attach, as a
// user who leaves the page does.
// It prints one JSON object a line, as things happen, so the test can act on them:
//   {"event": <RunEvent in protobuf's JSON mapping>}    every event the iterable yields
//   {"reattach": {runId, afterSequence, attempt, delayMs, code, message}}    before every re-attach
//   {"end": true}  or  {"error": {code, message}}    last: the iteration ended, or threw
import { Code, ConnectError, RunEventSchema, createPlatformClients, createPlatformTransport, followChat, followRun, toJson } from "@agentplatform/client";
import type { Protocol, Reattach, RunEvent } from "@agentplatform/client";

interface Arguments {
  baseUrl: string;
  protocol: Protocol;
  mode: "chat" | "run";
  message?: string;
  runId?: string;
  afterSequence?: string;
  abortAfterReattach?: boolean;
}

function print(line: object): void {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const abort = new AbortController();
let reattached = false;

function onReattach(reattach: Reattach): void {
  reattached = true;
  print({
    reattach: {
      runId: reattach.runId,
      afterSequence: reattach.afterSequence.toString(),
      attempt: reattach.attempt,
      delayMs: reattach.delayMs,
      code: reattach.error ? Code[reattach.error.code] : null,
      message: reattach.error?.rawMessage ?? null,
    },
  });
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as Arguments;
  const clients = createPlatformClients(createPlatformTransport({ baseUrl: args.baseUrl, protocol: args.protocol }));
  // Waits short enough for the test's time bounds, attempts enough to outlast a service's restart (about 2 s).
  const options = { onReattach, initialDelayMs: 100, maxDelayMs: 1_000, maxAttempts: 20, signal: abort.signal };
  const events: AsyncIterable<RunEvent> =
    args.mode === "chat"
      ? followChat(clients, { message: args.message ?? "" }, options)
      : followRun(clients, args.runId ?? "", { ...options, afterSequence: BigInt(args.afterSequence ?? "0") });
  try {
    for await (const event of events) {
      print({ event: toJson(RunEventSchema, event) });
      if (reattached && args.abortAfterReattach) abort.abort();
    }
    print({ end: true });
  } catch (error) {
    const connectError = ConnectError.from(error);
    print({ error: { code: Code[connectError.code], message: connectError.rawMessage } });
  }
}

await main();
