"""Core types shared by every layer: Volume, errors, scribble conventions, segment names, progress events,
version. Imports nothing else of the package and nothing heavy (no torch)."""
