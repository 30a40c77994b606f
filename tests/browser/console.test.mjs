// The web console in a real browser: Debian's headless Chromium driven by
// playwright-core. tests/tests/web_console.rs starts the nodes and runs one
// phase of this script at a time:
//
//   node console.test.mjs desk      a clerk at senamhi files two PDFs to oefa,
//                                   an oefa clerk receives and forwards them to
//                                   minam, a citizen tracks at minam's portal
//   node console.test.mjs operator  an operator at oefa finds the dead letter
//                                   of an injected bad record and replays it
//
// Settings come from the environment (ECO_*); the phase prints one JSON line
// with what the Rust test checks next. A screenshot of every page goes to
// ECO_ARTIFACTS. Any failed check throws, and the exit code is non-zero.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const artifacts = env("ECO_ARTIFACTS");
fs.mkdirSync(artifacts, { recursive: true });
const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--no-first-run", "--disable-extensions"],
});
const problems = [];

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  // A script error or a refused resource on any page fails the test.
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (4\d\d)/.test(m.text())) {
      problems.push(`console error on ${page.url()}: ${m.text()}`);
    }
  });
  return page;
}

/// What every page must meet: one h1, a language, a label for every field,
/// and text contrast of at least 4.5:1 (WCAG AA) against its background.
async function checkAccessibility(page) {
  const issues = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
      if (!el.labels || el.labels.length === 0) out.push(`no label for ${el.name}`);
    }
    if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
    if (!document.documentElement.lang) out.push("no lang attribute");
    const parse = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const p = m[1].split(",").map(Number);
      return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const luminance = ({ r, g, b }) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0.5) return c;
      }
      return { r: 255, g: 255, b: 255, a: 1 };
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    while (walker.nextNode()) {
      const el = walker.currentNode.parentElement;
      const text = walker.currentNode.textContent.trim();
      if (!text || seen.has(el) || el.closest("svg, .skip, .sr-only")) continue;
      seen.add(el);
      const style = getComputedStyle(el);
      if (style.visibility === "hidden" || el.getClientRects().length === 0) continue;
      const [a, b] = [luminance(parse(style.color)), luminance(background(el))].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      if (ratio < 4.5) out.push(`contrast ${ratio.toFixed(2)}:1 for "${text.slice(0, 40)}"`);
    }
    return out;
  });
  assert.deepEqual(issues, [], `accessibility of ${page.url()}`);
}

let shot = 0;
async function screenshot(page, name) {
  if (name !== "timeout") await checkAccessibility(page);
  shot += 1;
  const file = path.join(artifacts, `${process.argv[2]}-${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

async function signIn(page, base, token) {
  await page.goto(`${base}/entrar`);
  await page.getByLabel(/Clave de acceso|Access token/).fill(token);
  await page.locator("main form button[type=submit]").click();
  await page.waitForLoadState("load");
}

/// Reloads `url` until `check(page)` is true, or fails after `seconds`.
async function until(page, url, what, check, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    await page.goto(url);
    if (await check(page)) return;
    if (Date.now() > deadline) {
      await screenshot(page, "timeout");
      throw new Error(`timed out waiting for ${what} at ${url}`);
    }
    await page.waitForTimeout(300);
  }
}

async function desk() {
  const senamhi = env("ECO_WEB_SENAMHI");
  const oefa = env("ECO_WEB_OEFA");
  const minam = env("ECO_WEB_MINAM");
  const clerk = env("ECO_CLERK_TOKEN");
  const pdfs = [env("ECO_PDF_1"), env("ECO_PDF_2")];
  const digests = pdfs.map((p) => sha256(fs.readFileSync(p)));
  const tooBig = env("ECO_PDF_TOO_BIG");
  const answerPdf = env("ECO_PDF_ANSWER");
  const answerDigest = sha256(fs.readFileSync(answerPdf));

  // --- A clerk at senamhi files two PDFs addressed to oefa. ---
  const desk = await newPage();
  await desk.goto(`${senamhi}/mesa`);
  assert.match(desk.url(), /\/entrar\?volver=/, "the desk asks a clerk to sign in first");
  await screenshot(desk, "ingreso");
  await desk.getByLabel("Clave de acceso").fill("not-a-token");
  await desk.locator("main form button[type=submit]").click();
  await assert.doesNotReject(desk.getByText("La clave no es válida").waitFor());
  await signIn(desk, senamhi, clerk);
  await desk.goto(`${senamhi}/mesa/nuevo`);
  assert.equal(await desk.locator("html").getAttribute("lang"), "es");
  await screenshot(desk, "nuevo-tramite");

  // Broken rules come back next to their fields; nothing is stored.
  await desk.getByLabel("Tipo de documento").selectOption("DNI");
  await desk.getByLabel("Número de documento").fill("1234");
  await desk.getByLabel("Nombre o razón social").fill("María Quispe Mamani");
  await desk.getByLabel("Entidad de destino").selectOption("oefa");
  await desk.getByLabel("Folios").fill("3");
  await desk.getByLabel("Archivos PDF").setInputFiles(pdfs);
  await desk.getByRole("button", { name: "Registrar y enviar" }).click();
  const numberError = desk.locator("#f-header-sender-party-document-number-error");
  await numberError.waitFor();
  assert.match(await numberError.innerText(), /8 dígitos/);
  assert.match(await desk.locator("#f-header-subject-error").innerText(), /vacío/);
  assert.equal(await desk.getByLabel("Número de documento").getAttribute("aria-invalid"), "true");
  assert.equal(await desk.getByLabel("Nombre o razón social").inputValue(), "María Quispe Mamani",
    "what was typed is kept");
  await screenshot(desk, "nuevo-tramite-errores");

  // A document over the maximum size: the error names it, nothing is kept.
  await desk.getByLabel("Número de documento").fill("45781236");
  await desk.getByLabel("Asunto").fill("Solicitud de información ambiental");
  await desk.getByLabel("Entidad de destino").selectOption("oefa");
  await desk.getByLabel("Archivos PDF").setInputFiles([pdfs[0], tooBig]);
  await desk.getByRole("button", { name: "Registrar y enviar" }).click();
  await desk.locator("#f-documents-error").waitFor();
  assert.match(await desk.locator("#f-documents-error").innerText(), /tamaño máximo/);
  await screenshot(desk, "nuevo-tramite-documento-grande");

  // Now right: two PDFs, with the progress bar while they upload.
  await desk.getByLabel("Número de documento").fill("45781236");
  await desk.getByLabel("Correo electrónico (opcional)").fill("maria.quispe@example.pe");
  await desk.getByLabel("Entidad de destino").selectOption("oefa");
  await desk.getByLabel("Asunto").fill("Solicitud de información ambiental");
  await desk.getByLabel("Folios").fill("3");
  await desk.getByLabel("Archivos PDF").setInputFiles(pdfs);
  await desk.getByRole("button", { name: "Registrar y enviar" }).click();
  await desk.waitForURL(/\/mesa\/tramite\/[^/]+\/cargo$/);
  await screenshot(desk, "cargo-de-presentacion");
  // Printed, the cargo is the page alone: no header, menus or buttons.
  await desk.emulateMedia({ media: "print" });
  assert.equal(await desk.locator("header.top").isVisible(), false);
  assert.equal(await desk.getByRole("button", { name: "Imprimir" }).isVisible(), false);
  assert.equal(await desk.locator("section.receipt").isVisible(), true);
  await screenshot(desk, "cargo-de-presentacion-impreso");
  await desk.emulateMedia({ media: "screen" });
  const codes = await desk.locator("dd.code.big").allInnerTexts();
  assert.equal(codes.length, 2, "the cargo shows the tracking and verification codes");
  const [trackingCode, verificationCode] = codes.map((c) => c.trim());
  assert.match(trackingCode, /^SENAMHI-\d{4}-[0-9A-Z]{8}$/);
  const shown = await desk.locator("table code.digest").allInnerTexts();
  assert.deepEqual(shown, digests, "the cargo lists each PDF's SHA-256");

  // --- An oefa clerk finds it in the inbox, receives it and forwards it. ---
  const oefaDesk = await newPage();
  await signIn(oefaDesk, oefa, clerk);
  await until(oefaDesk, `${oefa}/mesa`, "the filing in oefa's inbox",
    async (p) => (await p.getByRole("link", { name: trackingCode }).count()) === 1);
  await screenshot(oefaDesk, "bandeja-oefa");
  // Filters: delivered ones from senamhi list it; archived ones do not.
  await oefaDesk.getByLabel("Estado").selectOption("delivered");
  await oefaDesk.getByLabel("Remitido por").selectOption("senamhi");
  await oefaDesk.getByRole("button", { name: "Filtrar" }).click();
  await oefaDesk.getByRole("link", { name: trackingCode }).waitFor();
  await oefaDesk.getByLabel("Estado").selectOption("archived");
  await oefaDesk.getByRole("button", { name: "Filtrar" }).click();
  await oefaDesk.getByText("No hay trámites con esos filtros.").waitFor();
  // Due in 15 business days: not among those due soon.
  await oefaDesk.goto(`${oefa}/mesa?vence=1`);
  await oefaDesk.getByText("No hay trámites con esos filtros.").waitFor();
  await oefaDesk.goto(`${oefa}/mesa`);
  await oefaDesk.getByRole("link", { name: trackingCode }).click();
  await oefaDesk.waitForURL(/\/mesa\/tramite\//);
  assert.deepEqual(await oefaDesk.locator("table code.digest").allInnerTexts(), digests);
  // Download and preview: the same bytes.
  for (const [i, digest] of digests.entries()) {
    const link = `${oefa}/mesa/tramite/${trackingCode}/documento/${i}`;
    const download = await oefaDesk.request.get(link);
    assert.equal(download.status(), 200);
    assert.match(download.headers()["content-disposition"], /^attachment/);
    assert.equal(sha256(await download.body()), digest, `document ${i} downloads intact`);
    const preview = await oefaDesk.request.get(`${link}?ver=1`);
    assert.equal(preview.headers()["content-type"], "application/pdf");
    assert.match(preview.headers()["content-disposition"], /^inline/);
    assert.equal(sha256(await preview.body()), digest);
  }
  await screenshot(oefaDesk, "tramite-en-oefa");
  // Forward is not offered before Receive; Receive needs its fields.
  assert.equal(await oefaDesk.getByRole("button", { name: "Derivar" }).count(), 0);
  await oefaDesk.getByRole("button", { name: "Recibir" }).click();
  await oefaDesk.locator("#f-recibir-registry-number-error").waitFor();
  await screenshot(oefaDesk, "recibir-errores");
  await oefaDesk.getByLabel("N.° de registro interno").fill("OEFA-INT-2026-0042");
  await oefaDesk.getByLabel("Oficina o unidad").fill("Mesa de partes");
  await oefaDesk.getByRole("button", { name: "Recibir" }).click();
  await oefaDesk.getByText("Acción registrada").waitFor();
  assert.equal(await oefaDesk.locator("dl .badge").first().innerText(), "Recibido");
  const forward = oefaDesk.locator("form.action", { has: oefaDesk.getByRole("heading", { name: "Derivar" }) });
  await forward.getByLabel("Entidad de destino").selectOption("minam");
  await forward.getByLabel("Nota").fill("Corresponde a la Dirección General de Calidad Ambiental.");
  await forward.getByRole("button", { name: "Derivar" }).click();
  await oefaDesk.getByText("Acción registrada").waitFor();
  assert.equal(await oefaDesk.locator("dl .badge").first().innerText(), "Derivado");
  await screenshot(oefaDesk, "tramite-derivado");

  // --- A citizen tracks it at minam's portal and sees every step. ---
  const citizen = await newPage();
  const trackUrl = `${minam}/seguimiento?codigo=${trackingCode}&verificacion=${verificationCode}`;
  await until(citizen, trackUrl, "the delivery at minam in the timeline", async (p) =>
    (await p.locator("ol.timeline li", { hasText: "MINAM" }).filter({ hasText: "Entregado" }).count()) > 0);
  await citizen.goto(`${minam}/`);
  await citizen.getByLabel("Código de seguimiento").fill(trackingCode);
  await citizen.getByLabel("Clave de verificación").fill(verificationCode);
  await citizen.getByRole("button", { name: "Consultar" }).click();
  await citizen.waitForURL(/\/seguimiento\?/);
  const steps = await citizen.locator("ol.timeline li").allInnerTexts();
  for (const [who, what] of [["SENAMHI", "Registrado"], ["SENAMHI", "Enviado"], ["OEFA", "Entregado"],
    ["OEFA", "Recibido"], ["OEFA", "Derivado"], ["MINAM", "Entregado"]]) {
    assert.ok(steps.some((s) => s.includes(who) && s.includes(what)), `timeline has ${who} ${what}: ${steps.join(" | ")}`);
  }
  assert.match(await citizen.locator("dl.summary").innerText(), /MINAM/, "the current holder is minam");
  await screenshot(citizen, "seguimiento-minam");

  // The cargo: each receipt verifies, and its printed link verifies it again.
  await citizen.getByRole("link", { name: "Ver cargo de recepción" }).click();
  await citizen.waitForURL(/\/cargo\?/);
  const receipts = citizen.locator("section.receipt");
  assert.equal(await receipts.count(), 2, "oefa's and minam's signed receipts");
  assert.equal(await citizen.locator("section.receipt .ok").count(), 2, "both signatures verify");
  for (const digest of digests) {
    assert.ok((await receipts.first().innerText()).includes(digest), "the receipt names each document's SHA-256");
  }
  await screenshot(citizen, "cargo-de-recepcion");
  const verifyLink = await receipts.last().locator("p.verify a").getAttribute("href");
  await citizen.goto(verifyLink);
  await citizen.getByText("Cargo auténtico").waitFor();
  await screenshot(citizen, "verificacion-de-cargo");
  const forged = verifyLink.replace(/recibo=([0-9a-f])/, (_, c) => `recibo=${c === "0" ? "1" : "0"}`);
  const refused = await citizen.request.get(forged);
  assert.equal(refused.status(), 404, "an altered digest does not verify");

  // --- A minam clerk receives it, answers with a PDF, and archives it. ---
  const minamDesk = await newPage();
  await signIn(minamDesk, minam, clerk);
  const atMinam = `${minam}/mesa/tramite/${trackingCode}`;
  await minamDesk.goto(atMinam);
  const action = (name) => minamDesk.locator("form.action", { has: minamDesk.getByRole("heading", { name }) });
  await action("Recibir").getByLabel("N.° de registro interno").fill("MINAM-INT-2026-0007");
  await action("Recibir").getByLabel("Oficina o unidad").fill("Dirección General de Calidad Ambiental");
  await action("Recibir").getByRole("button", { name: "Recibir" }).click();
  await minamDesk.getByText("Acción registrada").waitFor();
  // An answer without its document is refused next to the field.
  await action("Atender").getByLabel("Nota").fill("Se adjunta el informe solicitado.");
  await action("Atender").getByRole("button", { name: "Atender" }).click();
  await minamDesk.locator("#f-atender-documents-error").waitFor();
  assert.match(await minamDesk.locator("#f-atender-documents-error").innerText(), /al menos un documento/);
  await action("Atender").getByLabel("Documentos de respuesta").setInputFiles([answerPdf]);
  await action("Atender").getByRole("button", { name: "Atender" }).click();
  await minamDesk.getByText("Acción registrada").waitFor();
  assert.equal(await minamDesk.locator("dl .badge").first().innerText(), "Atendido");
  await screenshot(minamDesk, "tramite-atendido");
  await action("Archivar").getByLabel("Nota").fill("Atendido con informe.");
  await action("Archivar").getByRole("button", { name: "Archivar" }).click();
  await minamDesk.getByText("Acción registrada").waitFor();
  assert.equal(await minamDesk.locator("dl .badge").first().innerText(), "Archivado");
  assert.equal(await minamDesk.locator("form.action").count(), 0, "nothing more to do on an archived filing");
  await screenshot(minamDesk, "tramite-archivado");

  await until(citizen, trackUrl, "the answer and the archiving in the timeline", async (p) =>
    (await p.locator("ol.timeline li", { hasText: "Archivado" }).count()) > 0);
  const later = await citizen.locator("ol.timeline li").allInnerTexts();
  for (const what of ["Recibido", "Atendido", "Archivado"]) {
    assert.ok(later.some((s) => s.includes("MINAM") && s.includes(what)), `timeline has MINAM ${what}: ${later.join(" | ")}`);
  }
  await screenshot(citizen, "seguimiento-archivado");
  // The answer went back to senamhi, where it was filed: its portal lists it.
  await until(citizen, trackUrl.replace(minam, senamhi), "the answer at senamhi", async (p) =>
    (await p.locator("main").innerText()).includes(answerDigest));
  await screenshot(citizen, "seguimiento-con-respuesta");

  // The same answer for an unknown code and for a wrong verification code.
  const wrong = await citizen.request.get(`${minam}/seguimiento?codigo=${trackingCode}&verificacion=ZZZZZZZZ`);
  const unknown = await citizen.request.get(`${minam}/seguimiento?codigo=SENAMHI-2026-ZZZZZZZZ&verificacion=ZZZZZZZZ`);
  assert.equal(wrong.status(), 404);
  assert.equal(unknown.status(), 404);
  const same = (body, code) => body.replaceAll(code, "CODE");
  assert.equal(same(await wrong.text(), trackingCode), same(await unknown.text(), "SENAMHI-2026-ZZZZZZZZ"));

  // English is one click away; the page keeps its place.
  await citizen.goto(trackUrl);
  await citizen.getByRole("link", { name: "English" }).click();
  await citizen.getByRole("heading", { name: "Filing status" }).waitFor();
  assert.equal(await citizen.locator("html").getAttribute("lang"), "en");
  await screenshot(citizen, "tracking-in-english");

  // On a phone: nothing wider than the screen, the timeline readable.
  const phone = await newPage({ width: 390, height: 844 });
  await phone.goto(trackUrl);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (overflow ${overflow}px)`);
  await screenshot(phone, "seguimiento-telefono");
  await phone.goto(`${minam}/`);
  await phone.keyboard.press("Tab");
  assert.equal(await phone.evaluate(() => document.activeElement.className), "skip", "the first Tab reaches 'skip to content'");
  return { tracking_code: trackingCode, verification_code: verificationCode };
}

async function operator() {
  const oefa = env("ECO_WEB_OEFA");
  const key = env("ECO_DEAD_LETTER_KEY");
  const page = await newPage();

  // Roles: a clerk may not see operations, nor an operator the desk.
  await signIn(page, oefa, env("ECO_CLERK_TOKEN"));
  assert.equal((await page.request.get(`${oefa}/operacion`)).status(), 403);
  await page.context().clearCookies();
  await signIn(page, oefa, env("ECO_OPERATOR_TOKEN"));
  assert.match(page.url(), /\/operacion$/);
  assert.equal((await page.request.get(`${oefa}/mesa`)).status(), 403);

  // The queues refresh by themselves.
  const queues = page.locator("[data-refresh='/operacion/colas']");
  await queues.locator("table.queues").waitFor();
  await page.waitForFunction(() =>
    document.querySelector("[data-refresh='/operacion/colas']").hasAttribute("data-refreshed"), null, { timeout: 10000 });
  assert.match(await queues.innerText(), /Organismo|OEFA/);
  await page.locator("figure svg").first().waitFor();
  await screenshot(page, "operacion");

  // The injected record's dead letter: inspect, then replay.
  const row = page.locator("tr", { hasText: key }).first();
  await row.waitFor();
  const id = (await row.locator("a").first().innerText()).trim();
  await row.locator("a").first().click();
  await page.waitForURL(new RegExp(`/operacion/dlq/${id}$`));
  assert.match(await page.locator("dl.summary").innerText(), /Abierto/);
  await screenshot(page, "mensaje-fallido");
  // Discarding needs a reason; the form says so and changes nothing.
  await page.getByRole("button", { name: "Descartar" }).click();
  await page.locator("#f-descartar-reason-error").waitFor();
  assert.match(await page.locator("dl.summary").innerText(), /Abierto/);
  await page.getByRole("button", { name: "Reenviar" }).click();
  await page.waitForURL(new RegExp(`/operacion/dlq/${id}$`));
  assert.match(await page.locator("dl.summary").innerText(), /Reenviado/);
  assert.equal(await page.getByRole("button", { name: "Reenviar" }).count(), 0, "a replayed letter is not offered again");
  await screenshot(page, "mensaje-reenviado");

  // Still not an envelope, the replayed record is dead-lettered again; this
  // time the operator discards it, saying why.
  await until(page, `${oefa}/operacion`, "the replayed record's new dead letter",
    async (p) => (await p.locator("tr", { hasText: key }).filter({ hasText: "Abierto" }).count()) === 1);
  await page.locator("tr", { hasText: key }).filter({ hasText: "Abierto" }).locator("a").first().click();
  await page.waitForURL(/\/operacion\/dlq\/\d+$/);
  const again = Number(page.url().split("/").pop());
  await page.getByLabel("Motivo del descarte").fill("Registro de prueba inyectado; no es un sobre.");
  await page.getByRole("button", { name: "Descartar" }).click();
  await page.waitForURL(new RegExp(`/operacion/dlq/${again}$`));
  assert.match(await page.locator("dl.summary").innerText(), /Descartado[\s\S]*Registro de prueba inyectado/);
  await screenshot(page, "mensaje-descartado");
  return { dead_letter_id: Number(id), discarded_id: again };
}

const phases = { desk, operator };
const phase = phases[process.argv[2]];
if (!phase) throw new Error(`usage: node console.test.mjs ${Object.keys(phases).join("|")}`);
try {
  const result = await phase();
  assert.deepEqual(problems, [], "no script errors on any page");
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
