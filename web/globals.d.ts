// What the type check needs to know beyond the DOM library: the AudioWorklet
// scope (capture-worklet.js) and what the page leaves on `window` for tests.

declare class AudioWorkletProcessor {
  readonly port: MessagePort;
}
declare function registerProcessor(name: string, processor: typeof AudioWorkletProcessor): void;

interface Window {
  phonemekitEvents: object[];
  phonemekit: import("./src/index.js").PhonemeKit;
  phonemekitLoadMs: number;
}
