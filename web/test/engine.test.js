import { test } from "node:test";
import assert from "node:assert/strict";
import { EnergyVAD, NoiseFloorVAD, Smoother, dbfs, FRAME } from "../src/engine.js";
import { Classifier } from "../src/classifier.js";
import { argmax, concat } from "../src/util.js";

const tone = (amp) => Float32Array.from({ length: FRAME }, (_, i) => amp * Math.sin(i / 5));

test("the energy gate opens above its threshold only", async () => {
  const vad = new EnergyVAD(-40);
  assert.equal(await vad.prob(tone(0.5)), 1);
  assert.equal(await vad.prob(tone(0.001)), 0);
  assert.ok(Math.abs(dbfs(tone(1)) - 20 * Math.log10(Math.SQRT1_2)) < 0.1);
});

test("the noise-floor gate follows the floor and opens on what rises above it", async () => {
  const vad = new NoiseFloorVAD(14, -60, 3);
  for (let i = 0; i < 20; i++) assert.equal(await vad.prob(tone(0.01)), 0); // steady noise: the floor
  assert.equal(await vad.prob(tone(0.5)), 1); // 34 dB above it
});

test("smoothing waits for the hysteresis before it shows a label, then holds it through one stray frame", () => {
  const s = new Smoother({ ema: 1, min_confidence: 0.3, hysteresis: 2, margin: 0.9 });
  assert.equal(s.update([0.9, 0.1]), null); // one frame: not yet
  assert.equal(s.update([0.9, 0.1]), 0);
  assert.equal(s.update([0.2, 0.8]), 0); // one frame of the other: held
  assert.equal(s.update([0.2, 0.8]), 1); // two: switched
  assert.equal(s.update([0.25, 0.25]), null); // below the confidence floor: nothing shown
});

test("verdicts: uncalibrated is the top-1, calibrated compares the tempered probability with the sound's threshold", () => {
  const plain = new Classifier(null, null, { labels: ["aa", "sh"], sample_rate: 16000, model_name: "m" });
  assert.deepEqual(plain.verdictOf([0.3, 0.7], "sh"), { expected: "sh", accepted: true, probability: 0.7, threshold: null, calibrated: false });
  assert.equal(plain.verdictOf([0.3, 0.7], "aa").accepted, false);
  assert.throws(() => plain.verdictOf([0.3, 0.7], "zz"), /not a label/);
  const cal = new Classifier(null, null, { labels: ["aa", "sh"], sample_rate: 16000, calibration: { temperature: 1, threshold: 0.5, thresholds: { sh: 0.8 } } });
  assert.equal(cal.verdictOf([0.3, 0.7], "sh").accepted, false); // 0.7 < the sound's own 0.8
  assert.equal(cal.verdictOf([0.3, 0.7], "aa").accepted, false); // 0.3 < the default 0.5
  assert.equal(cal.verdictOf([0.1, 0.9], "sh").accepted, true);
});

test("shared helpers", () => {
  assert.equal(argmax([0.1, 0.5, 0.2]), 1);
  assert.deepEqual(Array.from(concat([Float32Array.of(1, 2), Float32Array.of(3)])), [1, 2, 3]);
});
