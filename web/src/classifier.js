// An exported end-to-end model in onnxruntime-web: probabilities for a
// 16 kHz waveform and the calibrated verdict the file carries, the same
// as phonemekit.deploy.runtime.Classifier in Python.

import { readVerifiedMetadata } from "./onnxmeta.js";
import { adapt, checkProfile } from "./profile.js";
import { argmax, fetchBytes } from "./util.js";

export class Classifier {
  constructor(ort, session, meta) {
    this.ort = ort; this.session = session; this.meta = meta;
    this.labels = meta.labels; this.sampleRate = meta.sample_rate; this.name = meta.model_name;
    this.calibration = meta.calibration ?? null;
    this.profile = null;
  }

  // A speaker profile (`phonemekit enrol`) adapts every later answer to that child; null: unadapted.
  setProfile(profile) {
    if (profile !== null && !this.session.outputNames.includes("embedding")) throw new Error("this model has no embedding output to adapt");
    this.profile = profile === null ? null : checkProfile(profile, this.meta);
    return this.profile;
  }

  // options.headers: sent with the model's request (a server's token, say).
  static async load(ort, source, options = {}) {
    const bytes = source instanceof Uint8Array ? source : new Uint8Array(await fetchBytes(source, options.headers));
    const meta = await readVerifiedMetadata(bytes);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: options.executionProviders ?? ["wasm"] });
    return new Classifier(ort, session, meta);
  }

  async probs(wave) {
    const frames = wave.length * this.meta.frame_rate / this.sampleRate;
    if (frames > this.meta.max_frames) throw new Error(`input of ${frames.toFixed(0)} frames is longer than this model handles (${this.meta.max_frames})`);
    const T = this.ort.Tensor;
    const out = await this.session.run({ waveform: new T("float32", Float32Array.from(wave), [1, wave.length]),
      lengths: new T("int64", BigInt64Array.from([BigInt(wave.length)]), [1]) });
    if (this.profile) return adapt(this.profile, /** @type {Float32Array} */ (out.log_probs.data), /** @type {Float32Array} */ (out.embedding.data));
    return Float32Array.from(out.probs.data);
  }

  verdictOf(p, expect) {
    const k = this.labels.indexOf(expect);
    if (k < 0) throw new Error(`expected sound ${JSON.stringify(expect)} is not a label of this model`);
    const c = this.calibration;
    if (!c) {
      return { expected: expect, accepted: argmax(p) === k, probability: round4(p[k]), threshold: null, calibrated: false };
    }
    const z = Array.from(p, (v) => Math.log(Math.max(v, 1e-30)) / c.temperature);
    const m = Math.max(...z);
    const sum = z.reduce((s, v) => s + Math.exp(v - m), 0);
    const q = Math.exp(z[k] - m) / sum;
    const thr = c.thresholds[expect] ?? c.threshold;
    return { expected: expect, accepted: q >= thr, probability: round4(q), threshold: round4(thr), calibrated: true };
  }
}

const round4 = (x) => Math.round(x * 1e4) / 1e4;
