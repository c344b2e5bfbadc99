"""phonemekit: recognise single speech sounds spoken by young children."""

__version__ = "0.1.0"
