// phonemekit in the browser.
//
//   const kit = await PhonemeKit.load({ model: "/model.onnx" });
//   kit.on("final", (ev) => console.log(ev.label, ev.verdict));
//   kit.expect("s");                 // practise mode: the calibrated verdict rides on each final event
//   await kit.start();               // microphone -> AudioWorklet -> Worker (VAD, smoothing, model)
//   await kit.classify(float32Wave); // {probs, top_k, verdict?} for one 16 kHz clip
//   await kit.setProfile(json);      // adapt to an enrolled child (`phonemekit enrol`)
//
// Everything runs on the device: no audio leaves it.

import { concat, fetchJson } from "./util.js";

const here = new URL(".", import.meta.url);

export class PhonemeKit {
  constructor(worker, meta, base) {
    this.worker = worker; this.meta = meta; this.labels = meta.labels; this.base = base;
    this.listeners = new Map(); this.pending = new Map(); this.nextId = 1; this.expected = null;
    worker.onmessage = (e) => this.#receive(e.data);
  }

  /**
   * @param {{model: string, silero?: string, preset?: string, config?: object | null, expect?: string | null, base?: string,
   *          headers?: Record<string, string>}} options  headers: sent with every file this fetches (model, preset, VAD),
   *          e.g. {authorization: "Bearer T"} for a server with a token.
   */
  static async load({ model, silero, preset = "balanced", config = null, expect = null, base = here.href, headers = {} }) {
    const worker = new Worker(new URL("worker.js", base), { type: "module" });
    const cfg = config ?? await fetchJson(new URL(`presets/${preset}.json`, base), headers);
    const meta = await new Promise((resolve, reject) => {
      worker.onmessage = (e) => (e.data.type === "ready" ? resolve(e.data.meta) : e.data.type === "error" && reject(new Error(e.data.error)));
      worker.onerror = (e) => reject(new Error(e.message));
      worker.postMessage({ type: "init", model: new URL(model, location.href).href, silero: new URL(silero ?? "silero_vad.onnx", base).href,
        wasmBase: base, config: cfg, expect, headers });
    });
    const kit = new PhonemeKit(worker, meta, base);
    kit.expected = expect;
    return kit;
  }

  // on(type, fn) returns a function that removes the listener again (as off(type, fn) does).
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const fns = this.listeners.get(type) ?? [];
    const i = fns.indexOf(fn);
    if (i >= 0) fns.splice(i, 1);
  }

  #emit(type, payload) {
    for (const fn of this.listeners.get(type) ?? []) fn(payload);
    for (const fn of this.listeners.get("*") ?? []) if (type !== "level") fn(payload);
  }

  #receive(msg) {
    if (msg.type === "event") this.#emit(msg.event.type, msg.event);
    else if (msg.type === "level") this.#emit("level", msg);
    else if (msg.id && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      msg.type === "error" ? reject(new Error(msg.error)) : resolve(msg);
    } else if (msg.type === "error") this.#emit("error", msg);
  }

  #call(msg, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  expect(label) {
    if (label !== null && !this.labels.includes(label)) throw new Error(`${label} is not a label of this model`);
    this.expected = label;
    this.worker.postMessage({ type: "expect", label });
  }

  // A speaker profile (the JSON `phonemekit enrol` writes) adapts every later answer to that child; null: unadapted.
  async setProfile(profile) {
    const res = await this.#call({ type: "profile", profile });
    return { enrolled: res.enrolled, shots: res.shots };
  }

  async classify(wave, { topK = 3 } = {}) {
    const res = await this.#call({ type: "classify", wave: Float32Array.from(wave), expect: this.expected });
    const order = Array.from(res.probs.keys()).sort((a, b) => res.probs[b] - res.probs[a]).slice(0, topK);
    return { probs: res.probs, ms: res.ms, verdict: res.verdict, top_k: order.map((i) => [this.labels[i], res.probs[i]]) };
  }

  // Feed 16 kHz audio yourself (a game's own capture, or a file).
  feed(block) { this.worker.postMessage({ type: "feed", block }); }
  flush() { return this.#call({ type: "flush" }); }

  /** @param {{deviceId?: string}} [options] */
  async start({ deviceId } = {}) {
    // Gain control, echo cancellation and noise suppression change the
    // signal the model hears (and differ from what it was trained on).
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { deviceId, channelCount: 1, echoCancellation: false,
      noiseSuppression: false, autoGainControl: false } });
    this.context = new AudioContext({ sampleRate: 16000 });
    await this.context.audioWorklet.addModule(new URL("capture-worklet.js", this.base));
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "phonemekit-capture");
    let batch = [], n = 0;
    this.node.port.onmessage = (e) => {
      if (this.recording) this.recording.push(e.data.slice());
      batch.push(e.data); n += e.data.length;
      if (n >= 512) { // one 32 ms frame per message keeps the worker's queue short
        const block = concat(batch);
        batch = []; n = 0;
        this.worker.postMessage({ type: "feed", block }, [block.buffer]);
      }
    };
    source.connect(this.node);
  }

  // The next `seconds` of microphone audio (16 kHz), for guided recording; start() first.
  async record(seconds) {
    this.recording = [];
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const parts = this.recording;
    this.recording = null;
    return concat(parts);
  }

  async stop() {
    if (this.node) this.node.port.onmessage = null; // nothing of this capture outlives it
    this.node?.disconnect();
    this.stream?.getTracks().forEach((t) => t.stop());
    await this.context?.close();
    this.node = this.stream = this.context = null;
    await this.flush();
  }
}
