// Microphone capture on the audio thread: each 128-sample render quantum,
// downmixed to mono, goes to the main thread (which forwards it to the
// inference worker). The AudioContext runs at 16 kHz, so the browser has
// already resampled the device's rate.
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const chans = inputs[0];
    if (chans && chans.length) {
      const n = chans[0].length, mono = new Float32Array(n);
      for (const c of chans) for (let i = 0; i < n; i++) mono[i] += c[i] / chans.length;
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}
registerProcessor("phonemekit-capture", CaptureProcessor);
