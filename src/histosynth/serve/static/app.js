// histosynth serve: mask painter, generation form (built from /api/info modes) and dataset browser.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {info: null, size: 0, ids: null, current: 1, painting: false, last: null, history: 0,
               dataset: null, offset: 0};

function showError(message) { $("#error").textContent = message || ""; }

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
  return body;
}

// ---- mask painter: a Uint8Array of class ids, drawn with the server's palette ----
function render() {
  const canvas = $("#mask-canvas"), ctx = canvas.getContext("2d");
  const image = ctx.createImageData(state.size, state.size), palette = state.info.palette;
  for (let i = 0; i < state.ids.length; i++) {
    const colour = palette[state.ids[i] % palette.length];
    image.data.set([colour[0], colour[1], colour[2], 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

function brushRadius() { return Math.max(0.5, ($("#brush").value / 100) * state.size / 2); }

function dab(x, y) {
  const r = brushRadius(), size = state.size;
  for (let yy = Math.floor(y - r); yy <= Math.ceil(y + r); yy++) {
    for (let xx = Math.floor(x - r); xx <= Math.ceil(x + r); xx++) {
      if (xx < 0 || yy < 0 || xx >= size || yy >= size) continue;
      if ((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r) state.ids[yy * size + xx] = state.current;
    }
  }
}

function canvasPoint(event) {
  const rect = $("#mask-canvas").getBoundingClientRect();
  return [(event.clientX - rect.left) * state.size / rect.width, (event.clientY - rect.top) * state.size / rect.height];
}

function strokeTo(point) {
  const [x0, y0] = state.last || point, [x1, y1] = point;
  const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / Math.max(0.5, brushRadius() / 2)));
  for (let s = 1; s <= steps; s++) dab(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps);
  state.last = point;
  render();
}

function setIds(base64) {
  const bytes = atob(base64);
  for (let i = 0; i < state.ids.length; i++) state.ids[i] = bytes.charCodeAt(i);
  render();
}

function maskBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = state.size;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(state.size, state.size);
  for (let i = 0; i < state.ids.length; i++) image.data.set([state.ids[i], state.ids[i], state.ids[i], 255], 4 * i);
  ctx.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function setupPainter() {
  const info = state.info, canvas = $("#mask-canvas");
  state.size = info.tile_size;
  state.ids = new Uint8Array(state.size * state.size);
  canvas.width = canvas.height = state.size;
  info.mask_classes.forEach((name, id) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "class-button" + (id === state.current ? " active" : "");
    button.textContent = name;
    button.dataset.classId = id;
    const c = info.palette[id % info.palette.length];
    button.style.background = `rgb(${c[0]},${c[1]},${c[2]})`;
    button.addEventListener("click", () => {
      state.current = id;
      document.querySelectorAll(".class-button").forEach((b) => b.classList.toggle("active", b === button));
    });
    $("#class-buttons").append(button);
  });
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    state.painting = true;
    state.last = null;
    strokeTo(canvasPoint(event));
  });
  canvas.addEventListener("pointermove", (event) => { if (state.painting) strokeTo(canvasPoint(event)); });
  const stop = () => { state.painting = false; state.last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("#fill").addEventListener("click", () => { state.ids.fill(state.current); render(); });
  $("#clear").addEventListener("click", () => { state.ids.fill(0); render(); });
  $("#model-mask").hidden = !info.mask_model;
  $("#model-mask").addEventListener("click", async () => {
    showError("");
    try { await loadModelMask(Math.floor(Math.random() * 1e6)); }
    catch (error) { showError(error.message); }
  });
  $("#procedural").addEventListener("click", async () => {
    showError("");
    try {
      const foreground = Math.min(100, Math.max(0, Number($("#foreground").value) || 0)) / 100;
      const seed = Math.floor(Math.random() * 1e6);
      setIds((await fetchJSON(`/api/procedural-mask?foreground=${foreground}&seed=${seed}`)).ids);
    } catch (error) { showError(error.message); }
  });
  $("#mask-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    showError("");
    const form = new FormData();
    form.append("mask", file);
    try { setIds((await fetchJSON("/api/mask", {method: "POST", body: form})).ids); }
    catch (error) { showError(error.message); }
    event.target.value = "";
  });
  render();
}

// A gland layout from the model folder's mask model, for the class chosen in the form (none: unconditional).
async function loadModelMask(seed) {
  const label = $("#label").value;
  const body = await fetchJSON(`/api/model-mask?label=${encodeURIComponent(label)}&seed=${seed}`);
  setIds(body.ids);
}

// ---- the form: common fields plus the selected mode's own fields ----
function currentMode() { return state.info.modes.find((m) => m.name === $("#mode").value); }

function showMode() {
  const mode = currentMode();
  document.querySelectorAll("[data-common]").forEach((el) => { el.hidden = !mode.common.includes(el.dataset.common); });
  document.querySelectorAll("#mode-fields [data-mode]").forEach((el) => { el.hidden = el.dataset.mode !== mode.name; });
}

function setupForm() {
  const info = state.info;
  $("#model").textContent = `model ${info.model} · ${info.tile_size} px tiles`;
  $("#steps").max = info.limits.max_steps;
  $("#guidance").max = info.limits.max_guidance;
  const label = $("#label");
  label.append(new Option("(none: unconditional)", ""));
  info.labels.forEach((name, id) => label.append(new Option(name, String(id))));
  if (info.labels.length) label.value = "0";
  for (const mode of info.modes) {
    $("#mode").append(new Option(mode.title, mode.name));
    const box = document.createElement("div");
    box.dataset.mode = mode.name;
    for (const field of mode.fields) {
      const wrap = document.createElement("label"), input = document.createElement("input");
      input.name = field.name;
      input.dataset.field = field.name;
      if (field.kind === "number") {
        Object.assign(input, {type: "number", step: "0.1", value: field.default ?? ""});
        if (field.minimum !== null) input.min = field.minimum;
        if (field.maximum !== null) input.max = field.maximum;
      } else {
        Object.assign(input, {type: "file", accept: "image/*,.tif,.tiff"});
      }
      wrap.append(field.title + " ", input);
      box.append(wrap);
    }
    $("#mode-fields").append(box);
  }
  $("#mode").addEventListener("change", showMode);
  $("#reseed").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * 1e6); });
  $("#form").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
  showMode();
}

async function generate() {
  const mode = currentMode(), form = new FormData();
  form.append("mode", mode.name);
  form.append("mask", await maskBlob(), "mask.png");
  form.append("mask_encoding", "ids");
  for (const name of mode.common) form.append(name, $("#" + name).value);
  for (const field of mode.fields) {
    const input = document.querySelector(`[data-mode="${mode.name}"] [data-field="${field.name}"]`);
    if (field.kind === "number") form.append(field.name, input.value);
    else if (input.files[0]) form.append(field.name, input.files[0]);
  }
  const button = $("#generate"), started = performance.now();
  button.disabled = true;
  showError("");
  const tick = () => { $("#status").textContent = `generating… ${((performance.now() - started) / 1000).toFixed(0)} s`; };
  tick();
  const timer = setInterval(tick, 500);
  try {
    addResult(await fetchJSON("/api/generate", {method: "POST", body: form}));
    $("#status").textContent = "";
  } catch (error) {
    $("#status").textContent = "";
    showError(error.message);
  } finally {
    clearInterval(timer);
    button.disabled = false;
  }
}

function addResult(result) {
  $("#no-results").hidden = true;
  state.history += 1;
  const figure = document.createElement("figure"), pair = document.createElement("div");
  figure.className = "result";
  pair.className = "pair";
  const image = new Image(), mask = new Image();
  image.className = "result-image";
  image.alt = "generated tile";
  mask.alt = "its mask";
  image.src = result.image;
  mask.src = result.mask;
  pair.append(image, mask);
  const caption = document.createElement("figcaption"), link = document.createElement("a");
  const settings = result.mode === "generate" ? `guidance ${result.guidance} · ${result.sampler}` : result.mode;
  caption.textContent = `#${state.history} ${result.label || "unconditional"} · ${result.steps} steps · ${settings}` +
    ` · seed ${result.seed} · ${result.seconds.toFixed(2)} s `;
  link.href = result.image;
  link.download = `histosynth_${result.mode}_${result.seed}.png`;
  link.textContent = "download";
  caption.append(link);
  figure.append(pair, caption);
  $("#result-list").prepend(figure);
}

// ---- dataset browser ----
async function loadDatasets() {
  const select = $("#dataset");
  if (!state.info.datasets) {
    $("#dataset-note").textContent = "Start the server with --datasets DIR to browse synthetic dataset folders.";
    return;
  }
  try {
    const datasets = await fetchJSON("/api/datasets");
    select.replaceChildren(...datasets.map((d) => new Option(`${d.name} (${d.tiles} tiles)`, d.name)));
    if (!datasets.length) $("#dataset-note").textContent = "No dataset folders (with manifest.csv) found.";
    else if (!state.dataset || !datasets.some((d) => d.name === state.dataset)) showDataset(datasets[0].name);
    else select.value = state.dataset;
  } catch (error) { $("#dataset-note").textContent = error.message; }
}

async function showDataset(name, offset = 0) {
  state.dataset = name;
  state.offset = offset;
  $("#dataset").value = name;
  const path = `/api/datasets/${encodeURIComponent(name)}`;
  try {
    const page = await fetchJSON(`${path}?offset=${offset}&limit=48`);
    if (offset === 0) $("#tiles").replaceChildren();
    const link = $("#report-link");
    link.hidden = !page.has_report;
    link.href = `${path}/report`;
    $("#dataset-note").textContent = page.has_report ? "" :
      `No audit report yet: histosynth report ${name} --real MANIFEST`;
    for (const tile of page.tiles) {
      const box = document.createElement("figure"), image = new Image();
      box.className = "tile";
      image.src = `${path}/tiles/${tile.index}/image.png`;
      image.alt = tile.id;
      box.append(image);
      if (tile.has_mask) {
        const mask = new Image();
        mask.src = `${path}/tiles/${tile.index}/mask.png`;
        mask.alt = `${tile.id} mask`;
        box.append(mask);
      }
      const caption = document.createElement("figcaption");
      caption.textContent = `${tile.id} · ${tile.label || "unlabelled"}` + (tile.seed ? ` · seed ${tile.seed}` : "");
      box.append(caption);
      $("#tiles").append(box);
    }
    state.offset = offset + page.tiles.length;
    $("#more").hidden = state.offset >= page.total;
  } catch (error) { $("#dataset-note").textContent = error.message; }
}

function setupTabs() {
  document.querySelectorAll("nav button").forEach((button) => button.addEventListener("click", () => {
    document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b === button));
    $("#tab-generate").hidden = button.dataset.tab !== "generate";
    $("#tab-browse").hidden = button.dataset.tab !== "browse";
    if (button.dataset.tab === "browse") loadDatasets();
  }));
  $("#dataset").addEventListener("change", (event) => showDataset(event.target.value));
  $("#more").addEventListener("click", () => showDataset(state.dataset, state.offset));
}

async function start() {
  try { state.info = await fetchJSON("/api/info"); }
  catch (error) { showError(`cannot reach the server: ${error.message}`); return; }
  setupPainter();
  setupForm();
  setupTabs();
  if (state.info.mask_model) {  // start from a realistic layout for the default class (seed 0)
    try { await loadModelMask(0); } catch (error) { showError(error.message); }
  }
  document.body.dataset.ready = "1";
}

start();
