// The viewer in a real browser (Debian's Chromium, driven by playwright-core), against Revel as
// it runs: checkouts go in over HTTP, and what a person would look at is asserted on the pages.
// Run by tests/e2e/viewer.sh, which starts Revel and passes BASE_URL, SCREENSHOTS, PLAYWRIGHT.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const require = createRequire(process.env.PLAYWRIGHT + "/");
const { chromium } = require("playwright-core");

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const PLANTED = "planted.buyer@example.org";
const CARD = "4111 1111 1111 1111";

function log(...a) {
  console.log("viewer e2e:", ...a);
}

async function checkout(tier, user, requestId) {
  const body = { user_id: user, email: PLANTED, card_number: CARD, cvv: "123" };
  const r = await fetch(`${base}/events/1/tiers/${tier}/checkout`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-user-id": String(user), "x-request-id": requestId },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.text(), at: Date.now() };
}

/// No page shows the planted address or card number, in its text or its markup.
async function clean(page, what) {
  const html = await page.content();
  for (const secret of [PLANTED, CARD, "4111111111111111"]) {
    assert.ok(!html.includes(secret), `${secret} on ${what}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(15000);

  const total = async () =>
    Number(await page.locator("#metric-revel_tickets_sold_total .total").getAttribute("data-value"));

  // --- Checkouts: a free ticket (sold at once), then online ones, until the Stripe simulator
  // (failing half its calls) has both confirmed one and failed one.
  const free = await checkout(2, 2, "e2e-free-1");
  assert.equal(free.status, 200, free.body);
  let paid = null;
  let declined = null;
  let user = 3;
  for (; user < 21 && !(paid && declined); user++) {
    const id = `e2e-online-${user}`;
    const r = await checkout(1, user, id);
    if (r.status === 200 && !paid) paid = { ...r, id };
    if (r.status === 502 && !declined) declined = { ...r, id };
  }
  assert.ok(paid, "an online checkout went through");
  assert.ok(declined, "an online checkout failed at Stripe");
  log("paid:", paid.id, "declined:", declined.id);

  // --- The trace list shows ticket.checkout within 2 s of the checkout's answer.
  await page.goto(`${base}/debug/obs?request_id=${paid.id}`);
  const row = page.locator("#trace-list tr.trace", { hasText: "ticket.checkout" });
  try {
    await row.first().waitFor({ timeout: Math.max(1, 2000 - (Date.now() - paid.at)) });
  } catch (e) {
    // What the page and the JSON held then, for the log.
    log("the list:", (await page.locator("#trace-list").innerText()).slice(0, 2000));
    log("its JSON:", await (await fetch(`${base}/debug/obs/api/traces?request_id=${paid.id}`)).text());
    throw e;
  }
  log("listed", Date.now() - paid.at, "ms after the answer");
  await page.goto(`${base}/debug/obs`);
  await page.locator("#trace-list tr.trace", { hasText: "ticket.checkout" }).first().waitFor();
  await clean(page, "the trace list");
  await page.screenshot({ path: `${shots}/traces.png` });

  // --- Click the paid checkout's trace: the waterfall has the seed's child spans in order.
  await page.fill("input[name=request_id]", paid.id);
  await Promise.all([page.waitForURL(/request_id=/), page.click("form.filters button")]);
  await Promise.all([page.waitForURL(/\/debug\/obs\/traces\//), page.locator("#trace-list a.root").first().click()]);
  await page.locator("#waterfall details.span").first().waitFor();
  const spans = await page.$$eval("#waterfall details.span", (rows) =>
    rows.map((r) => ({ name: r.dataset.name, depth: Number(r.dataset.depth), failed: r.dataset.failed === "true" })),
  );
  const at = spans.findIndex((s) => s.name === "ticket.checkout");
  assert.ok(at >= 0, JSON.stringify(spans));
  const under = [];
  for (let i = at + 1; i < spans.length && spans[i].depth > spans[at].depth; i++) {
    if (spans[i].depth === spans[at].depth + 1) under.push(spans[i].name);
  }
  assert.deepEqual(under, [
    "ticket.check_eligibility",
    "ticket.lock_tier",
    "stripe.create_checkout_session",
    "ticket.create",
    "payment.create",
  ]);
  assert.ok(!spans.some((s) => s.failed), "nothing failed in the paid checkout");
  // A span opens on a click, with its attributes.
  await page.locator("#waterfall details.span[data-name='ticket.lock_tier'] summary").click();
  await page.locator("#waterfall details.span[data-name='ticket.lock_tier'] table.kv").first().waitFor();
  assert.ok((await page.locator("aside.trace-logs").innerText()).includes("checkout"), "the trace's log lines beside it");
  await clean(page, "the paid checkout's waterfall");
  await page.screenshot({ path: `${shots}/waterfall.png`, fullPage: true });

  // --- The declined payment is marked failed, in the list and in its waterfall.
  await page.goto(`${base}/debug/obs?status=failed&request_id=${declined.id}`);
  const failedRow = page.locator("#trace-list tr.trace.failed", { hasText: "ticket.checkout" });
  await failedRow.first().waitFor();
  assert.equal(await failedRow.first().locator(".badge").innerText(), "failed");
  await Promise.all([page.waitForURL(/\/debug\/obs\/traces\//), failedRow.first().locator("a.root").click()]);
  await page.locator("#waterfall details.span").first().waitFor();
  const failedSpans = await page.$$eval("#waterfall details.span[data-failed=true]", (rows) => rows.map((r) => r.dataset.name));
  assert.ok(failedSpans.includes("stripe.create_checkout_session"), JSON.stringify(failedSpans));
  assert.ok(failedSpans.includes("ticket.checkout"), JSON.stringify(failedSpans));
  await page.locator("#waterfall details.span[data-name='stripe.create_checkout_session'] summary").click();
  await clean(page, "the declined checkout's waterfall");
  await page.screenshot({ path: `${shots}/failed.png`, fullPage: true });

  // --- The metric panel for revel_tickets_sold_total increases while it is looked at (the page
  // refreshes itself; no reload).
  await page.goto(`${base}/debug/obs/metrics`);
  const soldBefore = await total();
  assert.ok(soldBefore >= 1, `the free ticket is counted (${soldBefore})`);
  const another = await checkout(2, user, "e2e-free-2");
  assert.equal(another.status, 200, another.body);
  await page.waitForFunction(
    (before) => Number(document.querySelector("#metric-revel_tickets_sold_total .total").dataset.value) > before,
    soldBefore,
  );
  log("tickets sold:", soldBefore, "then", await total(), "on the same page");
  await clean(page, "the metrics");

  // --- The log tail, filtered to the paid checkout's request.
  await page.goto(`${base}/debug/obs/logs?request_id=${paid.id}`);
  await page.locator("#log-tail tr.line").first().waitFor();
  await clean(page, "the log tail");
  await page.goto(`${base}/debug/obs/logs`);
  await page.locator("#log-tail tr.line").first().waitFor();
  await clean(page, "the log tail");
  await page.screenshot({ path: `${shots}/logs.png` });

  // --- A CPU profile from the button, shown inline, taken while requests keep Revel busy.
  await page.goto(`${base}/debug/obs/profile`);
  await page.selectOption("#seconds", "5");
  await page.click("#take-profile");
  const busyUntil = Date.now() + 5500;
  let n = 0;
  while (Date.now() < busyUntil) {
    await Promise.all(
      Array.from({ length: 4 }, (_, i) => fetch(`${base}/events/1/eligibility?user_id=${2 + ((n + i) % 19)}`).then((r) => r.text())),
    );
    n += 4;
  }
  log("requests during the profile:", n);
  await page.locator("#flamegraph:not([hidden])").waitFor({ timeout: 30000 });
  const frame = page.frameLocator("#flamegraph");
  await frame.locator("svg").first().waitFor();
  const frames = await frame.locator("svg g title").count();
  assert.ok(frames > 10, `the flamegraph has frames (${frames})`);
  await page.screenshot({ path: `${shots}/profile.png` });

  // --- The metrics again, with that traffic charted.
  await page.goto(`${base}/debug/obs/metrics`);
  await page.locator("#http").waitFor();
  await page.waitForTimeout(2100);
  await page.screenshot({ path: `${shots}/metrics.png` });

  // --- The JSON the pages are made from: no secret there either.
  const ids = JSON.parse(await (await fetch(`${base}/debug/obs/api/traces`)).text()).map((t) => t.trace_id);
  assert.ok(ids.length >= 3, `traces listed: ${ids.length}`);
  const paths = ["/debug/obs/api/traces", "/debug/obs/api/logs", "/debug/obs/api/metrics"];
  for (const path of paths.concat(ids.map((id) => `/debug/obs/api/traces/${id}`))) {
    const text = await (await fetch(base + path)).text();
    for (const secret of [PLANTED, CARD]) assert.ok(!text.includes(secret), `${secret} in ${path}`);
  }
  log("ok; screenshots in", shots);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
