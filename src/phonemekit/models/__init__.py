"""Models: encoders (a registry of families), heads (a registry of kinds), the (encoder, head) model, CTC decoding and the named presets."""
