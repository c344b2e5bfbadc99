import { test } from "node:test";
import assert from "node:assert/strict";
import { adapt, checkProfile } from "../src/profile.js";

const meta = { checkpoint_sha256: "ab".repeat(32), labels: ["aa", "ee"] };
const good = () => ({ format: "phonemekit-profile/1", model: meta.checkpoint_sha256, labels: ["aa", "ee"], shots: { aa: 1, ee: 1 },
  reg: 0.3, weight: [[1], [0]], bias: [0, 0] });

test("a profile adds embedding · weightᵀ + bias to the log-probabilities, as Python's SpeakerProfile.adapt", () => {
  const p = adapt(checkProfile(good(), meta), [Math.log(0.5), Math.log(0.5)], [1]);
  assert.ok(Math.abs(p[0] - Math.E / (Math.E + 1)) < 1e-6 && Math.abs(p[0] + p[1] - 1) < 1e-6);
  assert.throws(() => adapt(checkProfile(good(), meta), [0, 0], [1, 2]), /1-wide embedding/);
});

test("a profile of another model, other labels or malformed numbers is refused with the reason", () => {
  /** @type {Array<[(p: any) => void, RegExp]>} */
  const cases = [
    [(p) => { p.format = "x"; }, /not a speaker profile/],
    [(p) => { p.model = "cd".repeat(32); }, /another model/],
    [(p) => { p.labels = ["ee", "aa"]; }, /labels differ/],
    [(p) => { p.weight = [[1]]; }, /weight must be/],
    [(p) => { p.weight = [[1], ["x"]]; }, /weight must be/],
    [(p) => { p.bias = [0, Infinity]; }, /finite numbers/],
    [(p) => { p.weight = [[1, 2], [3]]; }, /weight must be/],
  ];
  for (const [edit, why] of cases) {
    const p = good();
    edit(p);
    assert.throws(() => checkProfile(p, meta), why);
  }
  assert.throws(() => checkProfile(null, meta), /not a speaker profile/);
});
