"""Discord-facing extensions: they parse, check, render and call one core method each."""
