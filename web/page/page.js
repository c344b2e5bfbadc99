// The practise and recording page. For tests, every event is appended as
// a JSON line to window.phonemekitEvents and to the element #events.
//
// Everything a model or a server says (labels, words, errors) is shown as
// text, never as HTML. A server started with --token gets it from the
// page's address fragment (/#token=T: a fragment is never sent to a server
// nor logged), kept in this tab's sessionStorage and sent as a header.

import { PhonemeKit } from "./phonemekit.js";

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id */
const input = (id) => /** @type {HTMLInputElement} */ ($(id));
/** @param {string} id */
const select = (id) => /** @type {HTMLSelectElement} */ ($(id));
/** @param {string} id */
const button = (id) => /** @type {HTMLButtonElement} */ ($(id));
const params = new URLSearchParams(location.search);
window.phonemekitEvents = [];

const TOKEN_KEY = "phonemekit-token";

function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const token = takeToken();
const auth = token ? { authorization: `Bearer ${token}` } : {};

// The model the page runs: its own server's, or a file beside a static copy; never one from another origin,
// whose labels and metadata would then be trusted in this page's origin.
function modelUrl() {
  const url = new URL(params.get("model") ?? "model.onnx", location.href);
  if (url.origin !== location.origin) throw new Error(`refusing a model from another origin (${url.origin}): this page runs models of its own server only`);
  return url.href;
}

async function pageInfo() {
  const r = await fetch("api/page", { headers: auth }).catch(() => null);
  if (r?.status === 401) {
    $("token-form").hidden = false;
    $("token-form").onsubmit = (e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input("token").value.trim()); location.reload(); };
    throw new Error(token ? "the server refused this token; enter it again" : "this server needs its token: open the page as /#token=YOUR_TOKEN or enter it");
  }
  return r?.ok ? r.json() : null; // null: a static copy, no server
}

function log(ev) {
  window.phonemekitEvents.push(ev);
  $("events").textContent += JSON.stringify(ev) + "\n";
}

async function main() {
  const model = modelUrl();
  const info = await pageInfo();
  const t0 = performance.now();
  const kit = await PhonemeKit.load({ model, preset: params.get("preset") ?? "balanced", headers: auth });
  window.phonemekit = kit;
  window.phonemekitLoadMs = performance.now() - t0;
  const words = Object.fromEntries((info?.labels ?? kit.labels.map((label) => ({ label }))).map((l) => [l.label, l]));
  $("status").textContent = `${kit.meta.name} (${kit.labels.length} sounds${kit.meta.calibration ? ", calibrated verdicts" : ""}) on this device`;
  for (const sel of [select("target"), select("rec-label")]) {
    for (const lab of kit.labels) sel.add(new Option(words[lab]?.ipa ? `${lab}  /${words[lab].ipa}/` : lab, lab));
  }
  const showWord = (sel, el) => { el.textContent = words[sel.value]?.example ? `as in "${words[sel.value].example}"` : ""; };
  select("target").onchange = () => { kit.expect(select("target").value); showWord(select("target"), $("word")); };
  select("rec-label").onchange = () => showWord(select("rec-label"), $("rec-word"));
  showWord(select("target"), $("word")); showWord(select("rec-label"), $("rec-word"));
  kit.expect(select("target").value);

  // A profile stays on this device: read here and given to the model, which adapts to that child.
  input("profile").onchange = async () => {
    const file = input("profile").files?.[0];
    try {
      const res = await kit.setProfile(file ? JSON.parse(await file.text()) : null);
      $("profile-status").textContent = res.enrolled ? `adapted to this child (${Object.keys(res.shots).length} sounds enrolled)` : "";
      log({ type: "profile", ok: true, ...res });
    } catch (e) {
      $("profile-status").textContent = `profile not used: ${e.message}`;
      log({ type: "profile", ok: false, error: e.message });
    }
  };

  kit.on("*", log);
  kit.on("provisional", (ev) => { $("label").textContent = ev.label; bars(ev.top_k); });
  kit.on("final", (ev) => {
    $("label").textContent = ev.label ?? "?";
    bars(ev.top_k);
    const v = ev.verdict;
    $("verdict").textContent = v ? (v.accepted ? `Yes! That was ${v.expected}` : `Try again: listen for ${v.expected}`) : "";
    $("verdict").className = v ? (v.accepted ? "yes" : "no") : "";
  });
  kit.on("level", (m) => { $("level").style.width = `${Math.max(0, Math.min(100, (m.db + 70) * 1.6))}%`; });

  let listening = false;
  const start = async () => { if (!listening) { await kit.start(); listening = true; } };
  button("start").onclick = async () => { await start(); button("start").disabled = true; button("stop").disabled = false; };
  button("stop").onclick = async () => { await kit.stop(); listening = false; button("start").disabled = false; button("stop").disabled = true; };
  const modes = { practise: "practise", word: "word-practice", collect: "collect" };
  for (const [mode, section] of Object.entries(modes)) {
    $(`mode-${mode}`).onclick = () => {
      for (const [m, sec] of Object.entries(modes)) { $(sec).hidden = m !== mode; $(`mode-${m}`).classList.toggle("on", m === mode); }
      $(section).hidden = false;
    };
  }
  button("read").onclick = async () => {
    if (!info) { $("read-result").textContent = "Reading a word is judged by the server: open this page from `phonemekit serve --web`."; return; }
    await start();
    button("read").disabled = true;
    $("read-result").textContent = "listening...";
    const seconds = Math.min(10, Math.max(1, Number(input("read-seconds").value) || 3));
    const clip = await kit.record(seconds);
    button("read").disabled = false;
    const what = input("read-word").value.trim();
    const query = new URLSearchParams({ [input("read-as-sounds").checked ? "phones" : "word"]: what, mode: "segment" });
    const r = await fetch(`assess?${query}`, { method: "POST", body: toWav(clip), headers: { ...auth, "content-type": "audio/wav" } });
    const body = await r.json();
    log({ type: "assess", ok: r.ok, status: r.status, ...body });
    if (!r.ok) { $("read-result").textContent = `not judged (${body.error}: ${body.detail})`; $("read-sounds").replaceChildren(); return; }
    $("read-result").textContent = `${body.correct} of ${body.expected.length} sounds right` + (body.guessed?.length ? " (sounded out by phonics rules)" : "");
    $("read-sounds").replaceChildren(...body.sounds.map((snd) => {
      const li = el("li", snd.verdict === "correct" ? `${snd.expected}: right` : snd.verdict === "missing" ? `${snd.expected}: not heard`
        : `${snd.expected}: heard ${snd.heard}`);
      li.className = snd.verdict;
      return li;
    }));
  };
  input("consent").onchange = () => { button("record").disabled = !input("consent").checked; };
  button("record").onclick = async () => {
    if (!input("speaker").value.trim()) { saved(`name the child first`, false); return; }
    await start();
    button("record").disabled = true;
    const clip = await kit.record(1.5);
    button("record").disabled = false;
    const wav = toWav(clip);
    const label = select("rec-label").value;
    if (!info) { download(wav, `${label}.wav`); saved(`${label}: downloaded (no server to save to)`, true); return; }
    // The name travels in the body only (never in a URL, which logs and proxies keep); the server keeps a pseudonym.
    const request = { speaker: input("speaker").value.trim(), label, consent: true, audio: base64(new Uint8Array(await wav.arrayBuffer())) };
    const r = await fetch("api/recordings", { method: "POST", body: JSON.stringify(request), headers: { ...auth, "content-type": "application/json" } });
    const body = await r.json();
    saved(r.ok ? `${label}: saved as ${body.path}` : `${label}: not kept (${body.error}: ${body.detail})`, r.ok);
    log({ type: "recording", ok: r.ok, status: r.status, ...body });
  };
  $("status").dataset.ready = "true";
}

function el(tag, text = "") {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

function bars(top) {
  $("bars").replaceChildren(...top.map(([label, p]) => {
    const row = el("div"), bar = el("div");
    row.className = "bar";
    bar.style.width = `${Math.round(p * 100) * 3}px`;
    row.append(el("span", label), bar, el("small", `${(p * 100).toFixed(0)}%`));
    return row;
  }));
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function saved(text, ok) {
  const li = document.createElement("li");
  li.textContent = (ok ? "✓ " : "✗ ") + text;
  $("saved").append(li);
}

function toWav(x, rate = 16000) {
  const buf = new ArrayBuffer(44 + x.length * 2), v = new DataView(buf);
  const str = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  str(0, "RIFF"); v.setUint32(4, 36 + x.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, x.length * 2, true);
  for (let i = 0; i < x.length; i++) v.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x[i])) * 32767, true);
  return new Blob([buf], { type: "audio/wav" });
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name; a.click();
}

main().catch((e) => { $("status").textContent = `error: ${e.message}`; $("status").dataset.error = e.message; });
