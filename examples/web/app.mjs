// The demo page: load a bundle, classify a drawn digit stage by stage, or a batch of test digits.
// Query parameters: ?bundle=URL of a MODEL.hapi directory, ?samples=URL of a float32 N x 1 x 28 x 28 .npy.
import { EarlyExitModel, parseNpy } from 'hapi-onnx-runtime/browser';

const params = new URLSearchParams(location.search);
const BUNDLE = params.get('bundle') ?? '../../work/demo/model.hapi/';
const SAMPLES = params.get('samples') ?? '../../work/demo/samples.npy';
const SIDE = 28;

const $ = (id) => document.getElementById(id);
/** What the page did, for scripts and tests: status, error, last single answer, last batch. */
const demo = (window.hapiDemo = { status: 'loading', error: null, last: null, batch: null, model: null });

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
  demo.status = state;
}

// -- drawing pad -> 28 x 28 input, MNIST style (white on black, 20 px box centred on the mass) --
const pad = $('pad');
const ink = pad.getContext('2d', { willReadFrequently: true });
function clearPad() {
  ink.fillStyle = '#000';
  ink.fillRect(0, 0, pad.width, pad.height);
}

function padToInput() {
  const { data, width, height } = ink.getImageData(0, 0, pad.width, pad.height);
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * 4] > 0) [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
    }
  }
  if (x1 < 0) return null;
  const scale = 20 / Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const [w, h] = [Math.max(1, Math.round((x1 - x0 + 1) * scale)), Math.max(1, Math.round((y1 - y0 + 1) * scale))];
  const small = new OffscreenCanvas(w, h).getContext('2d', { willReadFrequently: true });
  small.imageSmoothingQuality = 'high';
  small.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 0, 0, w, h);
  const pixels = small.getImageData(0, 0, w, h).data;
  let [mass, mx, my] = [0, 0, 0];
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = pixels[(y * w + x) * 4] / 255;
    [mass, mx, my] = [mass + v, mx + v * x, my + v * y];
  }
  const [dx, dy] = [Math.round(SIDE / 2 - mx / mass), Math.round(SIDE / 2 - my / mass)];
  const out = new Float32Array(SIDE * SIDE);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const [tx, ty] = [x + dx, y + dy];
    if (tx >= 0 && ty >= 0 && tx < SIDE && ty < SIDE) out[ty * SIDE + tx] = pixels[(y * w + x) * 4] / 255;
  }
  return out;
}

function drawDigit(canvas, pixels) {
  const image = new ImageData(SIDE, SIDE);
  pixels.forEach((v, k) => {
    const g = Math.round(Math.min(1, Math.max(0, v)) * 255);
    image.data.set([g, g, g, 255], k * 4);
  });
  const tmp = new OffscreenCanvas(SIDE, SIDE);
  tmp.getContext('2d').putImageData(image, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

// -- one digit, stage by stage: the early-exit path, timed per stage ---------------------------
async function classifyOne(pixels) {
  const model = demo.model;
  drawDigit($('seen'), pixels);
  const stages = [];
  let start = performance.now();
  for await (const step of model.progressive({ data: pixels, dims: [1, 1, SIDE, SIDE] })) {
    const ms = performance.now() - start;
    stages.push({ name: model.exitNames[step.stage], cls: step.classes[0], confidence: step.confidences[0], ms });
    if (step.leaves[0]) break; // the sample leaves here: later stages never run
    start = performance.now();
  }
  const taken = stages.length - 1;
  demo.last = { class: stages[taken].cls, exit: taken, confidence: stages[taken].confidence, stages };
  showResult(demo.last);
  return demo.last;
}

function showResult({ class: cls, exit, stages }) {
  const model = demo.model;
  const name = (c) => model.labels?.[c] ?? String(c);
  $('answer').textContent = name(cls);
  const total = stages.reduce((a, s) => a + s.ms, 0);
  $('exit-taken').textContent =
    `Left at ${model.exitNames[exit]} (stage ${exit + 1} of ${model.numStages}) after ${total.toFixed(2)} ms.`;
  const rows = model.exitNames.map((stageName, j) => {
    const s = stages[j];
    const t = j < model.thresholds.length ? model.thresholds[j].toFixed(4) : '-';
    const cells = s ? [name(s.cls), s.confidence.toFixed(4), s.ms.toFixed(2), j === exit ? 'exit here' : 'continue']
                    : ['', '', '', 'not run'];
    const tr = document.createElement('tr');
    tr.className = j === exit ? 'exit' : s ? '' : 'skipped';
    for (const text of [stageName, t, ...cells]) tr.insertCell().textContent = text;
    return tr;
  });
  $('stages').replaceChildren(...rows);
  $('result').hidden = false;
}

// -- test digits: click one, or classify them all as one batch (predict, with compaction) ------
async function loadSamples() {
  const response = await fetch(SAMPLES);
  if (!response.ok) return null; // no samples served: the page is drawing only
  const x = parseNpy(new Uint8Array(await response.arrayBuffer()), SAMPLES);
  const size = SIDE * SIDE;
  const cells = [];
  for (let i = 0; i < x.dims[0]; i++) {
    const pixels = x.data.slice(i * size, (i + 1) * size);
    const cell = document.createElement('div');
    cell.className = 'sample';
    cell.id = `sample-${i}`;
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [SIDE * 2, SIDE * 2];
    drawDigit(canvas, pixels);
    const label = document.createElement('span');
    cell.append(canvas, label);
    cell.addEventListener('click', () => classifyOne(pixels).catch(showError));
    cells.push(cell);
  }
  $('samples').replaceChildren(...cells);
  $('samples-panel').hidden = false;
  return x;
}

async function classifyAll(x) {
  const model = demo.model;
  const pred = await model.predict(x);
  demo.batch = { classes: [...pred.classes], exits: [...pred.exitIndex], confidences: [...pred.confidences] };
  const counts = new Array(model.numStages).fill(0);
  pred.exitIndex.forEach((e, i) => {
    counts[e] += 1;
    $(`sample-${i}`).lastChild.textContent = `${model.labels?.[pred.classes[i]] ?? pred.classes[i]} @ ${model.exitNames[e]}`;
  });
  $('batch-summary').textContent = `${x.dims[0]} digits: ` + model.exitNames.map((n, j) => `${n} ${counts[j]}`).join(', ');
  return demo.batch;
}

function showError(err) {
  demo.error = err.message;
  setStatus('error', `${err.name}: ${err.message}`);
}

async function start() {
  try {
    const model = (demo.model = await EarlyExitModel.load(BUNDLE));
    const exits = model.exitNames.map((n, j) => (j < model.thresholds.length ? `${n} (t=${model.thresholds[j].toFixed(3)})` : n));
    setStatus('loading', 'Loading test digits...');
    const samples = await loadSamples();
    demo.classifyAll = samples ? () => classifyAll(samples) : null;
    $('classify-all').addEventListener('click', () => demo.classifyAll().catch(showError));
    setStatus('ready', `Bundle ${BUNDLE}: ${model.numStages} stages, ${exits.join(' -> ')}. Draw a digit.`);
  } catch (err) {
    showError(err);
  }
}

// Pointer drawing; classify when a stroke ends.
let drawing = false;
function point(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * (pad.width / r.width), (event.clientY - r.top) * (pad.height / r.height)];
}
pad.addEventListener('pointerdown', (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  ink.beginPath();
  ink.moveTo(...point(event));
});
pad.addEventListener('pointermove', (event) => {
  if (!drawing) return;
  Object.assign(ink, { strokeStyle: '#fff', lineWidth: 20, lineCap: 'round', lineJoin: 'round' });
  ink.lineTo(...point(event));
  ink.stroke();
});
pad.addEventListener('pointerup', () => {
  drawing = false;
  const pixels = padToInput();
  if (pixels && demo.model) classifyOne(pixels).catch(showError);
});
$('clear').addEventListener('click', () => {
  clearPad();
  $('result').hidden = true;
});
clearPad();
demo.ready = start();
