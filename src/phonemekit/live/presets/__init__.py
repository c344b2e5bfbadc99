"""Live smoothing presets as JSON (read with importlib.resources; the browser runtime reads the same files)."""
