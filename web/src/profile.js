// A speaker profile (`phonemekit enrol`): one enrolled child's adaptation of
// one model, applied to its outputs as phonemekit.evaluation.enrolment does:
//   probs = softmax(log_probs + embedding · weightᵀ + bias)
// A profile is untrusted input: checked whole before it is used.

const FORMAT = "phonemekit-profile/1";

/** The profile if it fits this model's metadata; otherwise an Error saying why. @param {any} p @param {any} meta */
export function checkProfile(p, meta) {
  if (!p || typeof p !== "object" || p.format !== FORMAT) throw new Error(`not a speaker profile (expected format ${FORMAT}; write one with phonemekit enrol)`);
  if (p.model !== meta.checkpoint_sha256) throw new Error("this profile was enrolled on another model; enrol again with this one");
  const labels = meta.labels;
  if (!Array.isArray(p.labels) || p.labels.length !== labels.length || p.labels.some((l, i) => l !== labels[i])) {
    throw new Error("this profile's labels differ from the model's; enrol again with it");
  }
  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  const dim = Array.isArray(p.weight?.[0]) ? p.weight[0].length : 0;
  if (!Array.isArray(p.weight) || p.weight.length !== labels.length || !dim
      || p.weight.some((row) => !Array.isArray(row) || row.length !== dim || !row.every(finite))
      || !Array.isArray(p.bias) || p.bias.length !== labels.length || !p.bias.every(finite)) {
    throw new Error(`a speaker profile's weight must be (${labels.length}, E) and its bias (${labels.length}) finite numbers`);
  }
  return { weight: p.weight.map((row) => Float64Array.from(row)), bias: Float64Array.from(p.bias), dim, shots: p.shots ?? {} };
}

/** Adapted probabilities for one clip. @param {{weight: Float64Array[], bias: Float64Array, dim: number}} profile
 *  @param {ArrayLike<number>} logProbs @param {ArrayLike<number>} embedding */
export function adapt(profile, logProbs, embedding) {
  if (embedding.length !== profile.dim) throw new Error(`the profile adapts a ${profile.dim}-wide embedding, the model gives ${embedding.length}`);
  const s = profile.weight.map((row, c) => {
    let v = logProbs[c] + profile.bias[c];
    for (let j = 0; j < row.length; j++) v += row[j] * embedding[j];
    return v;
  });
  const m = Math.max(...s);
  const e = s.map((v) => Math.exp(v - m));
  const z = e.reduce((a, b) => a + b, 0);
  return Float32Array.from(e, (v) => v / z);
}
