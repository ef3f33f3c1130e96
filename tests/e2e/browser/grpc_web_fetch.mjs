// One grpc-web call made by a real browser, as the React frontend's transport makes it.
//
//   node grpc_web_fetch.mjs <page-url> <method-url> <framed-request-base64>
//
// Launches Debian's Chromium (never a downloaded one) headless through playwright-core, opens <page-url>, and
// from that page fetch()es <method-url> with grpc-web headers, so the browser itself does the CORS preflight
// and enforces the answer. The response body is read with a stream reader and split into grpc-web frames
// (flag byte, 4-byte big-endian length, payload). Prints JSON to stdout:
//   {status, grpcStatus, grpcMessage, frames: [{flag, payload (base64), at (ms since the fetch began)}], error}
// error is the fetch exception's message (what a CORS refusal looks like to page scripts), else null.
// Protobuf stays with the caller: the browser only moves bytes, exactly as grpc-web does.
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
// Hard limit on the whole run: a hung stream or browser must not hang the test suite.
const HARD_TIMEOUT_MS = 60_000;
// Running as root needs --no-sandbox; the background-networking flags stop Chromium from opening connections
// to Google services that, on a closed network, only pile up and slow everything down.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Runs inside the page: the grpc-web call over fetch, frames split as they arrive. */
async function callInPage({ url, bodyBase64 }) {
  const body = Uint8Array.from(atob(bodyBase64), (c) => c.charCodeAt(0));
  const toBase64 = (bytes) => {
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary);
  };
  const started = performance.now();
  const result = { status: null, grpcStatus: null, grpcMessage: null, frames: [], error: null };
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-javascript/0.1",
      },
      body,
    });
  } catch (error) {
    result.error = String(error && error.message ? error.message : error);
    return result;
  }
  result.status = response.status;
  // Readable only because the gateway lists them in Access-Control-Expose-Headers (trailers-only answers).
  result.grpcStatus = response.headers.get("grpc-status");
  result.grpcMessage = response.headers.get("grpc-message");
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const at = performance.now() - started;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset + 1, 4).getUint32(0);
      if (buffer.length < 5 + length) break;
      result.frames.push({ flag: buffer[0], payload: toBase64(buffer.subarray(5, 5 + length)), at });
      buffer = buffer.slice(5 + length);
    }
  }
  if (buffer.length) result.error = `response ended inside a frame (${buffer.length} bytes left over)`;
  return result;
}

async function main() {
  const [pageUrl, url, bodyBase64] = process.argv.slice(2);
  if (!pageUrl || !url || bodyBase64 === undefined) {
    throw new Error("usage: node grpc_web_fetch.mjs <page-url> <method-url> <framed-request-base64>");
  }
  let browser = null;
  const watchdog = setTimeout(() => {
    console.error(`no answer within ${HARD_TIMEOUT_MS} ms: closing the browser`);
    process.exitCode = 2;
    // close() ends a pending launch or evaluate; the last-resort exit covers a browser that will not close.
    setTimeout(() => process.exit(2), 5_000).unref();
    if (browser) browser.close().finally(() => process.exit(2));
    else process.exit(2);
  }, HARD_TIMEOUT_MS);
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = await browser.newPage();
    await page.goto(pageUrl);
    const result = await page.evaluate(callInPage, { url, bodyBase64 });
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exitCode = 1;
});
