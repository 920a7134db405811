"""Search-space presets (YAML), shipped as package data; see ``autopeft.space``."""
