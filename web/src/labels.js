// What a sound's label may be: the rule of phonemekit.data.inventory.label_problem.
// Labels come from model files (untrusted) and are shown on the page and
// used in folder names: a short identifier (letters, digits and combining
// marks of any script, so IPA; "_" and "-") carries no markup and no path.

export const MAX_LABEL_CHARS = 32;
const LABEL = /^(?!-)[\p{L}\p{N}\p{M}_-]{1,32}$/u;

// Why `label` cannot be a sound's name, or null when it can.
export function labelProblem(label) {
  if (typeof label !== "string") return `${String(label).slice(0, 40)} is not text`;
  if (!LABEL.test(label)) {
    return `${JSON.stringify(label.slice(0, 60))} is refused: a label is 1-${MAX_LABEL_CHARS} letters, digits, '_', '-' or IPA symbols`;
  }
  return null;
}
