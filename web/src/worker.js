// Inference off the main thread: the model, the VAD and the live engine
// live here, so a game's frame rate does not drop while a sound is scored.

import * as ort from "onnxruntime-web/wasm"; // the WASM backend alone (WebGPU optional, not bundled)
import { Classifier } from "./classifier.js";
import { LiveEngine, makeVAD } from "./engine.js";

let classifier = null, engine = null, queue = Promise.resolve();

function post(msg) { self.postMessage(msg); }

async function handle(msg) {
  switch (msg.type) {
    case "init": {
      ort.env.wasm.wasmPaths = msg.wasmBase;
      ort.env.wasm.numThreads = 1; // no cross-origin isolation assumed: one WASM thread
      classifier = await Classifier.load(ort, msg.model, { headers: msg.headers });
      engine = new LiveEngine(classifier, msg.config, await makeVAD(msg.config, ort, msg.silero, msg.headers), msg.expect ?? null);
      const m = classifier.meta;
      post({ type: "ready", meta: { name: classifier.name, labels: classifier.labels, sample_rate: classifier.sampleRate,
        calibration: classifier.calibration, weights: m.weights, precision: m.precision, integrity_sha256: m.integrity_sha256 } });
      return;
    }
    case "feed":
      for (const event of await engine.feed(msg.block)) post({ type: "event", event });
      post({ type: "level", db: engine.levelDb, speech: engine.speechProb, t_audio: engine.now });
      return;
    case "flush":
      for (const event of await engine.flush()) post({ type: "event", event });
      post({ type: "flushed", id: msg.id });
      return;
    case "expect":
      engine.setExpect(msg.label);
      return;
    case "profile": {
      const profile = classifier.setProfile(msg.profile);
      post({ type: "profile", id: msg.id, enrolled: profile !== null, shots: profile?.shots ?? {} });
      return;
    }
    case "classify": {
      const t0 = performance.now();
      const probs = await classifier.probs(msg.wave);
      post({ type: "probs", id: msg.id, probs, ms: performance.now() - t0,
        verdict: msg.expect ? classifier.verdictOf(probs, msg.expect) : null });
      return;
    }
    default:
      throw new Error(`unknown message ${msg.type}`);
  }
}

self.onmessage = (e) => {
  // One message at a time, in order: audio blocks must reach the engine as they were captured.
  queue = queue.then(() => handle(e.data)).catch((err) => post({ type: "error", id: e.data.id, error: String(err.message ?? err) }));
};
