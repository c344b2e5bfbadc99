// Build the browser package into dist/: the library, its worker and audio
// worklet, the page, and onnxruntime-web's WASM files, all served locally
// (no CDN at run time). Presets and silero-vad's model are written into
// dist/ by the Python package (`phonemekit web-build`), so they are the
// very files `phonemekit live` uses.
import * as esbuild from "esbuild";
import { cpSync, mkdirSync, readdirSync } from "node:fs";

const out = "dist";
mkdirSync(out, { recursive: true });
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };
await esbuild.build({ ...common, entryPoints: { phonemekit: "src/index.js", worker: "src/worker.js", "capture-worklet": "src/capture-worklet.js" },
  outdir: out });
await esbuild.build({ ...common, entryPoints: { page: "page/page.js" }, outdir: out, external: ["./phonemekit.js"] });
for (const f of ["index.html", "page.css"]) cpSync(`page/${f}`, `${out}/${f}`);
const ortDist = "node_modules/onnxruntime-web/dist";
for (const f of readdirSync(ortDist)) {
  if (/^ort-wasm-simd-threaded\.(wasm|mjs)$/.test(f)) cpSync(`${ortDist}/${f}`, `${out}/${f}`);
}
console.log(`built ${out}/`);
