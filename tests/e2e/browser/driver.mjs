// Drives Debian's Chromium for test_browser.py: one browser for a whole test module, commands on stdin.
//
//   node driver.mjs        (then one JSON command per line on stdin, one JSON answer per line on stdout)
//
// Commands: {"id", "op": "open", "page", "url"} opens a tab named `page` at `url`;
// {"id", "op": "call", "page", "fn", "args"} awaits `window.platformTest[fn](args)` in that tab (page.ts);
// {"id", "op": "reload", "page"} reloads the tab, as a user pressing F5 (sessionStorage survives it).
// Answers: {"id", "ok": true, "result"} or {"id", "ok": false, "error"}. The first line is {"ready": true}.
// Launches /usr/bin/chromium through playwright-core, never a downloaded browser. Closing stdin closes the
// browser and ends the script; so does SIGTERM.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
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
// The page script defines window.platformTest when its module has run.
const PAGE_READY = () => typeof window.platformTest === "object";

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
const pages = new Map();
let closing = null;

function close(code) {
  closing ??= browser.close().finally(() => process.exit(code));
  // The last resort for a browser that will not close.
  setTimeout(() => process.exit(code || 2), 5_000).unref();
  return closing;
}

process.on("SIGTERM", () => close(0));

function send(answer) {
  process.stdout.write(JSON.stringify(answer) + "\n");
}

async function open(name, url) {
  const page = await browser.newPage();
  // The page's own errors help when a scenario fails: pytest shows the driver's stderr.
  page.on("pageerror", (error) => console.error(`[${name}] page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") console.error(`[${name}] console: ${message.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(PAGE_READY);
  pages.set(name, page);
}

function tab(name) {
  const page = pages.get(name);
  if (!page) throw new Error(`no page named ${name}: open it first`);
  return page;
}

async function handle(command) {
  switch (command.op) {
    case "open":
      return open(command.page, command.url);
    case "call":
      return tab(command.page).evaluate(
        ({ fn, args }) => window.platformTest[fn](args),
        { fn: command.fn, args: command.args ?? {} },
      );
    case "reload": {
      const page = tab(command.page);
      await page.reload();
      await page.waitForFunction(PAGE_READY);
      return null;
    }
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

// One command at a time, in order: the test waits for each answer before it sends the next.
let queue = Promise.resolve();
const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  queue = queue.then(async () => {
    const command = JSON.parse(line);
    try {
      send({ id: command.id, ok: true, result: (await handle(command)) ?? null });
    } catch (error) {
      send({ id: command.id, ok: false, error: String(error && error.stack ? error.stack : error) });
    }
  });
});
input.on("close", () => queue.finally(() => close(0)));

send({ ready: true });
