// The metadata an exported phonemekit model carries (labels, sample rate,
// calibration, ...), read from the ONNX file itself. onnxruntime-web does
// not expose a model's metadata_props, so this walks the top level of the
// ModelProto protobuf (field 14: repeated StringStringEntryProto {1: key,
// 2: value}) and skips everything else: a few lines instead of a protobuf
// dependency.

// Entries phonemekit stores as JSON; every other one is a plain string
// (ours, or one a tool added, e.g. the quantizer's "onnx.infer").
import { labelProblem } from "./labels.js";

const JSON_KEYS = new Set(["labels", "blank", "sample_rate", "frame_rate", "max_frames", "encoder_spec", "calibration", "ensemble"]);

function varint(buf, pos) {
  let result = 0, shift = 0, b;
  do {
    if (pos >= buf.length) throw new Error("truncated ONNX file");
    b = buf[pos++];
    result += (b & 0x7f) * 2 ** shift; // no bitwise ops: lengths may pass 2^31
    shift += 7;
  } while (b & 0x80);
  return [result, pos];
}

function fields(buf, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(buf, pos);
    const field = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) { [, pos] = varint(buf, pos); }
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let len;
      [len, pos] = varint(buf, pos);
      if (pos + len > end) throw new Error("truncated ONNX file");
      visit(field, pos, pos + len);
      pos += len;
    } else throw new Error(`not an ONNX file (wire type ${wire})`);
  }
}

// Python's json.dumps(sort_keys=True, separators=(",", ":")) of a string map, byte for byte.
function pythonJson(obj) {
  const body = Object.keys(obj).sort().map((k) => `${JSON.stringify(k)}:${JSON.stringify(obj[k])}`).join(",");
  return `{${body}}`.replace(/[\u0080-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

async function sha256hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The same check as the Python runtime: the graph's sha256 and the
// integrity digest over every metadata entry; an edited file is refused.
export async function readVerifiedMetadata(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const { meta, raw, graph } = parse(buf);
  if (!graph || raw.graph_sha256 !== await sha256hex(buf.subarray(graph[0], graph[1]))) {
    throw new Error("the model's graph does not match its recorded sha256 (tampered or corrupt); refusing to load");
  }
  const rest = { ...raw };
  delete rest.integrity_sha256;
  if (raw.integrity_sha256 !== await sha256hex(new TextEncoder().encode(pythonJson(rest)))) {
    throw new Error("the model's metadata does not match its integrity digest (tampered or corrupt); refusing to load");
  }
  return meta;
}

export function readMetadata(bytes) {
  return parse(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).meta;
}

function parse(buf) {
  const dec = new TextDecoder("utf-8", { fatal: true });
  /** @type {Record<string, string>} */
  const raw = {};
  let graph = null;
  fields(buf, 0, buf.length, (field, s, e) => {
    if (field === 7) graph = [s, e];
    if (field !== 14) return;
    /** @type {string | null} */
    let k = null;
    /** @type {string | null} */
    let v = null;
    fields(buf, s, e, (f, a, b) => {
      if (f === 1) k = dec.decode(buf.subarray(a, b));
      else if (f === 2) v = dec.decode(buf.subarray(a, b));
    });
    if (k !== null) raw[k] = v ?? "";
  });
  if (!("labels" in raw) || !("integrity_sha256" in raw)) {
    throw new Error("this ONNX file carries no phonemekit metadata; export it with `phonemekit export`");
  }
  /** @type {Record<string, any>} */
  const meta = {};
  for (const [k, v] of Object.entries(raw)) meta[k] = JSON_KEYS.has(k) ? JSON.parse(v) : v;
  if (!Array.isArray(meta.labels) || !meta.labels.length) throw new Error("malformed metadata: labels");
  const bad = meta.labels.map(labelProblem).find((why) => why !== null);
  if (bad) throw new Error(`the model has a label that is not a sound's name (${bad}); refusing to load`);
  if (meta.form !== "e2e") throw new Error("the browser runs end-to-end models (NAME.e2e.onnx), not head-only ones");
  return { meta, raw, graph };
}
