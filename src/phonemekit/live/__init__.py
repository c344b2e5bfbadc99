"""Live classification: VAD, audio sources, the engine that turns audio into events, replay files and their metrics."""
