// The status page: polls /api/page every 2 s and redraws. Every value goes in as text, never markup.
"use strict";

const GIB = 1024 ** 3;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function gib(bytes) {
  return bytes === null || bytes === undefined ? "-" : (bytes / GIB).toFixed(2) + " GiB";
}

function vramTotal(vram) {
  const values = Object.values(vram || {});
  return values.length ? values.reduce((a, b) => a + b, 0) : null;
}

function when(stamp) {
  return stamp ? new Date(stamp * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function fillRows(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }));
}

function stateCell(state) {
  const td = el("td");
  td.append(el("span", state, `state state-${String(state).toLowerCase()}`));
  return td;
}

function drawRevision(status) {
  const list = document.getElementById("revision");
  const entries = [
    ["applied", status.revision ? `${status.revision.slice(0, 12)} at ${when(status.appliedAt)}` : "none applied yet"],
    ["attempted", status.attempted ? status.attempted.slice(0, 12) : "-"],
    ["source", status.source ? status.source.url : "-"],
    ["last pass", status.lastPass ? `${status.lastPass.outcome || "-"} at ${when(status.lastPass.at)}` : "-"],
  ];
  list.replaceChildren(...entries.flatMap(([k, v]) => [el("dt", k), el("dd", v, `revision-${k.replace(" ", "-")}`)]));
  const box = document.getElementById("error");
  box.replaceChildren();
  const error = status.error;
  if (!error) return;
  box.append(el("h3", `${error.reason} at ${(error.revision || "").slice(0, 12)}`, "error"));
  const lines = (error.diagnostics || []).length
    ? error.diagnostics.map((d) => `${d.file}:${d.line}:${d.column}: ${d.resource}: ${d.field}: ${d.message}`)
    : [error.message];
  const pre = el("pre", lines.join("\n"), "error");
  pre.id = "error-lines";
  box.append(pre);
}

function drawModels(status) {
  fillRows("models", status.models.map((m) => [
    m.name,
    `${m.ready}/${m.desired}`,
    m.rollout ? `${m.rollout.state}: ${m.rollout.message}` : "-",
    m.pending.map((p) => `replica ${p.replica}: ${p.reason}`).join("; ") || "-",
  ]));
}

function drawInstances(status) {
  fillRows("instances", status.instances.map((i) => [
    i.id,
    i.worker,
    i.gpus.join(",") || "CPU",
    stateCell(i.state),
    `${gib(i.claim.ram)} / ${gib(vramTotal(i.claim.vram))}`,
    i.measured ? `${gib(i.measured.ram)} / ${gib(vramTotal(i.measured.vram))}` : "-",
    i.restarts,
    i.port,
    i.reason || "",
  ]));
}

function bar(label, used, total) {
  const row = el("div", null, "bar-row");
  row.append(el("span", label, "bar-label"));
  const outer = el("div", null, "bar");
  const inner = el("div", null, "bar-used");
  const share = total ? Math.min(100, (100 * used) / total) : 0;
  inner.style.width = `${share.toFixed(1)}%`;
  outer.append(inner);
  row.append(outer, el("span", `${gib(used)} of ${gib(total)}`, "bar-figure"));
  return row;
}

function drawWorkers(status) {
  const box = document.getElementById("workers");
  box.replaceChildren(...status.workers.map((w) => {
    const card = el("div", null, "worker");
    const title = el("h3", `${w.name} `);
    title.append(el("span", w.state, `state state-${w.state.toLowerCase()}`));
    card.append(title, el("p", `${w.instances} instances · ${w.url}`, "muted"));
    if (w.memoryTotal !== null) card.append(bar("RAM", w.memoryTotal - w.memoryFree, w.memoryTotal));
    for (const g of w.gpus) card.append(bar(`GPU ${g.index} ${g.name}`, g.memoryTotal - g.memoryFree, g.memoryTotal));
    if (!w.gpus.length) card.append(el("p", "no GPU", "muted"));
    return card;
  }));
}

function drawTraffic(traffic) {
  document.getElementById("traffic-note").textContent = traffic.error
    ? traffic.error
    : `from ${traffic.routerUrl}/metrics; rates over the last poll`;
  fillRows("traffic", traffic.models.map((m) => [
    m.model,
    m.requestsPerSecond.toFixed(2),
    m.requests,
    m.errors,
    m.p50Seconds === null ? "-" : `≤ ${(m.p50Seconds * 1000).toFixed(0)} ms`,
  ]));
}

function drawEvents(events) {
  fillRows("events", events.slice().reverse().map((e) => [when(e.at), e.type, e.reason, e.object, e.message]));
}

async function refresh() {
  let response;
  try {
    response = await fetch("/api/page", { credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    document.getElementById("updated").textContent = `the server does not answer (${err})`;
    return;
  }
  if (response.status === 401) {
    window.location.replace("/");
    return;
  }
  if (!response.ok) {
    document.getElementById("updated").textContent = `HTTP ${response.status}`;
    return;
  }
  const body = await response.json();
  drawRevision(body.status);
  drawModels(body.status);
  drawInstances(body.status);
  drawWorkers(body.status);
  drawTraffic(body.traffic);
  drawEvents(body.events);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

refresh();
setInterval(refresh, 2000);
