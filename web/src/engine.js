// The live engine of `phonemekit live`, in the browser: the same 32 ms
// frames, VADs, smoothing and events as src/phonemekit/live/engine.py and
// live/vad.py, line for line, so a replayed file gives the same final
// labels here as there. Settings come from the same preset files, resolved
// by the Python package (presets/NAME.json).

import { argmax, concat, fetchBytes } from "./util.js";

export const SR = 16000;
export const FRAME = 512;

export function dbfs(x) {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return 20 * Math.log10(Math.sqrt(s / x.length) + 1e-10);
}

const r4 = (x) => Math.round(x * 1e4) / 1e4;

export class EnergyVAD {
  constructor(thresholdDb) { this.thresholdDb = thresholdDb; }
  reset() {}
  async prob(frame) { return dbfs(frame) > this.thresholdDb ? 1 : 0; }
}

export class NoiseFloorVAD {
  constructor(marginDb = 14, minDb = -60, riseDbS = 3) {
    this.marginDb = marginDb; this.minDb = minDb; this.rise = riseDbS * FRAME / SR; this.floor = null;
  }
  reset() { this.floor = null; }
  async prob(frame) {
    const level = dbfs(frame);
    this.floor = this.floor === null ? level : Math.min(level, this.floor + this.rise);
    return level > Math.max(this.floor + this.marginDb, this.minDb) ? 1 : 0;
  }
}

// silero-vad's own ONNX model (the file the Python package ships), run by onnxruntime-web.
export class SileroVAD {
  static CONTEXT = 64;
  constructor(ort, session) { this.ort = ort; this.session = session; this.reset(); }
  static async create(ort, url, headers = {}) {
    const bytes = new Uint8Array(await fetchBytes(url, headers));
    return new SileroVAD(ort, await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] }));
  }
  reset() { this.state = new Float32Array(2 * 128); this.context = new Float32Array(SileroVAD.CONTEXT); }
  async prob(frame) {
    const x = new Float32Array(SileroVAD.CONTEXT + FRAME);
    x.set(this.context, 0);
    x.set(frame, SileroVAD.CONTEXT);
    const T = this.ort.Tensor;
    const out = await this.session.run({ input: new T("float32", x, [1, x.length]), state: new T("float32", this.state, [2, 1, 128]),
      sr: new T("int64", BigInt64Array.from([BigInt(SR)]), []) });
    this.state = out.stateN.data.slice();
    this.context = x.slice(x.length - SileroVAD.CONTEXT);
    return out.output.data[0];
  }
}

export class HybridVAD {
  constructor(silero, marginDb, minDb, sileroThreshold) {
    this.silero = silero; this.gate = new NoiseFloorVAD(marginDb, minDb); this.sileroThreshold = sileroThreshold;
  }
  reset() { this.silero.reset(); this.gate.reset(); }
  async prob(frame) {
    const s = (await this.silero.prob(frame)) >= this.sileroThreshold ? 1 : 0;
    return Math.max(s, await this.gate.prob(frame));
  }
}

export async function makeVAD(cfg, ort, sileroUrl, headers = {}) {
  if (cfg.vad === "energy") return new EnergyVAD(cfg.energy_threshold_db);
  const silero = await SileroVAD.create(ort, sileroUrl, headers);
  if (cfg.vad === "silero") return silero;
  return new HybridVAD(silero, cfg.floor_margin_db, cfg.floor_min_db, cfg.hybrid_silero_threshold);
}

export class Smoother {
  constructor(cfg) { this.cfg = cfg; this.reset(); }
  reset() { this.probs = null; this.shown = null; this.candidate = null; this.streak = 0; }
  update(p) {
    const a = this.cfg.ema;
    this.probs = this.probs === null ? Float64Array.from(p) : this.probs.map((v, i) => (1 - a) * v + a * p[i]);
    const best = argmax(this.probs);
    this.streak = best === this.candidate ? this.streak + 1 : 1;
    this.candidate = best;
    if (this.probs[best] < this.cfg.min_confidence) { this.shown = null; return null; }
    if (this.shown === null || best === this.shown) {
      if (this.shown === null && this.streak < this.cfg.hysteresis) return null;
      this.shown = best;
    } else if (this.streak >= this.cfg.hysteresis || this.probs[best] - this.probs[this.shown] >= this.cfg.margin) {
      this.shown = best;
    }
    return this.shown;
  }
}

// Feed audio blocks, get events. `classifier` has `.labels`, async `.probs(wave)` and `.verdictOf(p, expect)`.
export class LiveEngine {
  constructor(classifier, cfg, vad, expect = null) {
    this.classifier = classifier; this.cfg = cfg; this.vad = vad;
    this.smoother = new Smoother(cfg);
    this.setExpect(expect);
    this.pending = new Float32Array(0);
    this.consumed = 0;
    this.preMax = Math.max(1, Math.floor(Math.floor(cfg.pre_roll_ms * SR / 1000) / FRAME));
    this.pre = [];
    this.segment = null;
    this.speechRun = 0; this.silenceRun = 0;
    this.levelDb = -120; this.speechProb = 0;
  }
  setExpect(expect) {
    if (expect !== null && expect !== undefined && !this.classifier.labels.includes(expect)) {
      throw new Error(`expected sound ${JSON.stringify(expect)} is not a label of this model`);
    }
    this.expect = expect ?? null;
  }
  get now() { return this.consumed / SR; }
  event(type, kw) { return { type, t_audio: r4(this.now), t_wall: Date.now() / 1000, ...kw }; }
  top(p) {
    const idx = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b).slice(0, this.cfg.top_k);
    return idx.map((i) => [this.classifier.labels[i], r4(p[i])]);
  }
  async feed(block) {
    const merged = new Float32Array(this.pending.length + block.length);
    merged.set(this.pending, 0); merged.set(block, this.pending.length);
    this.pending = merged;
    const events = [];
    while (this.pending.length >= FRAME) {
      const frame = this.pending.slice(0, FRAME);
      this.pending = this.pending.slice(FRAME);
      events.push(...await this.frame(frame));
    }
    return events;
  }
  async flush() { return this.segment !== null ? this.close() : []; }
  async frame(frame) {
    const cfg = this.cfg, events = [];
    this.levelDb = dbfs(frame);
    this.speechProb = await this.vad.prob(frame);
    const speech = this.speechProb >= (cfg.vad === "silero" ? cfg.vad_threshold : 0.5);
    this.consumed += FRAME;
    if (this.segment === null) {
      this.pre.push(frame);
      if (this.pre.length > this.preMax) this.pre.shift();
      this.speechRun = speech ? this.speechRun + 1 : 0;
      if (this.speechRun * FRAME * 1000 >= cfg.min_speech_ms * SR) {
        const start = this.now - this.speechRun * FRAME / SR;
        this.segment = { start, samples: [...this.pre], shown: [], nextWindow: this.now };
        this.smoother.reset();
        this.silenceRun = 0;
        events.push(this.event("onset", { segment_start: r4(start) }));
      }
      return events;
    }
    const seg = this.segment;
    seg.samples.push(frame);
    this.silenceRun = speech ? 0 : this.silenceRun + 1;
    if (cfg.window_s > 0 && this.now >= seg.nextWindow) {
      seg.nextWindow = this.now + cfg.hop_s;
      const all = concat(seg.samples);
      const win = all.slice(Math.max(0, all.length - Math.floor(cfg.window_s * SR)));
      const t0 = performance.now();
      const p = await this.classifier.probs(win);
      const shown = this.smoother.update(p);
      if (shown !== null && (!seg.shown.length || seg.shown[seg.shown.length - 1] !== shown)) {
        seg.shown.push(shown);
        events.push(this.event("provisional", { label: this.classifier.labels[shown], top_k: this.top(this.smoother.probs),
          compute_ms: Math.round((performance.now() - t0) * 100) / 100 }));
      }
    }
    const long = seg.samples.length * FRAME / SR >= cfg.max_segment_s;
    if (this.silenceRun * FRAME * 1000 >= cfg.hangover_ms * SR || long) events.push(...await this.close());
    return events;
  }
  async close() {
    const cfg = this.cfg, seg = this.segment;
    this.segment = null;
    this.speechRun = 0;
    const end = this.now - this.silenceRun * FRAME / SR;
    const audio = concat(seg.samples);
    const durationMs = (end - seg.start) * 1000;
    const t0 = performance.now();
    const p = await this.classifier.probs(audio);
    const computeMs = performance.now() - t0;
    const best = argmax(p);
    const ok = p[best] >= cfg.min_confidence && durationMs >= cfg.min_duration_ms;
    const label = ok ? this.classifier.labels[best] : null;
    const reason = label ? null : (durationMs < cfg.min_duration_ms ? "too_short" : "low_confidence");
    const ev = this.event("final", { label, top_k: this.top(p), segment_start: r4(seg.start), segment_end: r4(end),
      compute_ms: Math.round(computeMs * 100) / 100, provisional_changes: Math.max(0, seg.shown.length - 1), reason });
    if (this.expect !== null) {
      const k = this.classifier.labels.indexOf(this.expect);
      let rank = 1;
      for (const v of p) if (v > p[k]) rank++;
      Object.assign(ev, { expected: this.expect, recognised: label === this.expect, expected_rank: rank, verdict: this.classifier.verdictOf(p, this.expect) });
    }
    this.silenceRun = 0;
    return [ev, this.event("offset", { segment_end: r4(end) })];
  }
}
