// Small helpers the library's modules share (one copy each).

/** Index of the largest value. @param {ArrayLike<number>} p */
export function argmax(p) {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
  return best;
}

/** Float32 arrays end to end. @param {ArrayLike<number>[]} parts */
export function concat(parts) {
  const out = new Float32Array(parts.reduce((s, x) => s + x.length, 0));
  let o = 0;
  for (const x of parts) { out.set(x, o); o += x.length; }
  return out;
}

/** A file's bytes; a failed request is an error, not an empty body. @param {string | URL} url @param {Record<string, string>} [headers] */
export async function fetchBytes(url, headers = {}) {
  const r = await fetch(url, { headers });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.arrayBuffer();
}

/** @param {string | URL} url @param {Record<string, string>} [headers] */
export async function fetchJson(url, headers = {}) {
  return JSON.parse(new TextDecoder().decode(await fetchBytes(url, headers)));
}
