"""The shipped settings (defaults.toml), installed as the package bridge.defaults."""
