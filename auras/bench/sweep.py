"""The bench's sweep grammar: command-line values -> config overrides and sweeps (one value sets a key,
a comma-separated list sweeps it)."""

from __future__ import annotations

from auras.errors import ConfigError

__all__ = ["SWEEP_FLAGS", "settings_and_sweep", "split_values"]


SWEEP_FLAGS = {  # CLI flag -> config key; a comma-separated value list makes the flag a sweep
    "pp_perception": "pipeline.pp_perception",
    "pp_generation": "pipeline.pp_generation",
    "fetch_offset": "pipeline.fetch_offset",
    "alpha": "pipeline.alpha",
    "scale_perception": "policy.scale_perception",
    "scale_generation": "policy.scale_generation",
}


def split_values(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; ConfigError for an empty list."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"expected a value or a comma-separated list, got {text!r}")
    return values


def settings_and_sweep(
    flags: dict[str, str | None], delay_ms: list[str], sweep_items: list[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """CLI values -> (overrides, sweep): one value sets a key, several values sweep it."""
    pairs: list[tuple[str, str]] = [(SWEEP_FLAGS[name], text) for name, text in flags.items() if text is not None]
    for item in delay_ms:
        stage, sep, text = item.partition("=")
        if not sep or stage not in ("perception", "generation"):
            raise ConfigError(f"--delay-ms: expected perception=MS[,MS...] or generation=MS[,MS...], got {item!r}")
        pairs.append((f"policy.delay_{stage}_ms", text))
    for item in sweep_items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--sweep: expected KEY=V1,V2,... (e.g. pipeline.pp_generation=2,4,8), got {item!r}")
        pairs.append((key.strip(), text))
    overrides: list[str] = []
    sweep: dict[str, list[str]] = {}
    for key, text in pairs:
        values = split_values(text)
        if len(values) == 1:
            overrides.append(f"{key}={values[0]}")
        else:
            sweep[key] = values
    return overrides, sweep
