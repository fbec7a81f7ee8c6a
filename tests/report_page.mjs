// Opens a kerascnn run report (RUN/report.html) in headless Chromium from file://, as a person would,
// and prints what it found as one JSON object on stdout: the console and page errors, every request
// that left the page (a self-contained page makes none), each <img> (loaded, natural size), the
// sections and the page's size; a 1280x800 screenshot is written to SCREENSHOT (FULL_PAGE=1: the whole
// page at 1280 px wide).
//
//   node tests/report_page.mjs REPORT.html SCREENSHOT.png
//
// Uses playwright-core from mobile_demo/web/node_modules (cd mobile_demo/web && npm ci) and the Chromium
// at $CHROMIUM_PATH or /usr/bin/chromium (.ci/setup-mobile installs both). Exit status 2: a missing
// argument or tool, named on stderr; 0 otherwise (tests/test_report.py asserts on the JSON).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PLAYWRIGHT = join(REPO, "mobile_demo", "web", "node_modules", "playwright-core", "index.mjs");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];

function stop(message) {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

const [report, screenshot] = process.argv.slice(2);
if (!report || !screenshot) stop("usage: node tests/report_page.mjs REPORT.html SCREENSHOT.png");
if (!existsSync(report)) stop(`${report} does not exist`);
if (!existsSync(PLAYWRIGHT)) stop(`${PLAYWRIGHT} is missing: cd mobile_demo/web && npm ci`);
if (!existsSync(CHROMIUM)) stop(`${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_PATH)`);

const { chromium } = await import(pathToFileURL(PLAYWRIGHT).href);
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
const result = { console_errors: [], page_errors: [], requests: [], failed_requests: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const url = pathToFileURL(resolve(report)).href;
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.page_errors.push(e.message));
  page.on("request", (r) => { if (r.url() !== url && !r.url().startsWith("data:")) result.requests.push(r.url()); });
  page.on("requestfailed", (r) => result.failed_requests.push(r.url()));
  await page.goto(url, { waitUntil: "load" });
  await page.evaluate(() => Promise.all([...document.images].map((img) => img.decode().catch(() => null))));
  Object.assign(result, await page.evaluate(() => ({
    title: document.title,
    h1: document.querySelector("h1")?.textContent ?? null,
    sections: [...document.querySelectorAll("section")].map((s) => s.id),
    images: [...document.images].map((img) => ({
      complete: img.complete,
      width: img.naturalWidth,
      height: img.naturalHeight,
      shown: Math.round(img.getBoundingClientRect().width),
      data: img.src.startsWith("data:image/png;base64,"),
    })),
    class_rows: document.querySelectorAll("#per-class tr.class-row").length,
    mistakes: document.querySelectorAll("#mistakes figure.mistake").length,
    page_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight,
  })));
  await page.screenshot({ path: screenshot, fullPage: process.env.FULL_PAGE === "1" });  // FULL_PAGE=1: the whole page
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
