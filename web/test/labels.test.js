import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { labelProblem } from "../src/labels.js";

// The same cases tests/test_web_units.py gives Python's label_problem: the two rules agree.
const cases = JSON.parse(readFileSync(new URL("./label-cases.json", import.meta.url), "utf8"));

test("sound names, IPA included, are labels", () => {
  for (const label of cases.ok) assert.equal(labelProblem(label), null, label);
});

test("markup, paths, blanks, flags and long names are refused with the rule", () => {
  for (const label of cases.refused) assert.match(labelProblem(label) ?? "accepted", /is refused: a label is 1-32/, JSON.stringify(label));
  assert.match(labelProblem(3), /not text/);
});
