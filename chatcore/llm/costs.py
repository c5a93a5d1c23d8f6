"""What a bot turn cost.

``CHAT_PRICES``: a JSON object ``{"MODEL": {"input": USD, "output": USD}}``, prices per
million tokens as the model's vendor lists them (``"cached_input"`` optional: the price of
prompt tokens the server reports as cached; without it they cost ``input``). A model with
no price has no cost: nothing is guessed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from chatcore.config import Settings
from chatcore.llm.openai_chat import Usage

@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None


def _price(model: str, value) -> Price:
    def usd(key: str, required: bool = True) -> float | None:
        raw = value.get(key)
        if raw is None and not required:
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
            raise ValueError(f"CHAT_PRICES[{model!r}][{key!r}] must be a number of USD per million tokens")
        return float(raw)

    if not isinstance(value, dict):
        raise ValueError(f'CHAT_PRICES[{model!r}] must be an object like {{"input": 0.15, "output": 0.6}}')
    return Price(usd("input"), usd("output"), usd("cached_input", required=False))


def parse_prices(raw: str | None) -> dict[str, Price]:
    """``CHAT_PRICES`` as {model: Price}; ValueError says what to fix."""
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError('CHAT_PRICES must be JSON like {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}') from None
    if not isinstance(data, dict):
        raise ValueError('CHAT_PRICES must be a JSON object: {"MODEL": {"input": ..., "output": ...}}')
    return {str(model): _price(str(model), value) for model, value in data.items()}


def prices_from_env() -> dict[str, Price]:
    try:
        return parse_prices(Settings.from_env().prices)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def cost_usd(prices: dict[str, Price], model: str | None, usage: Usage | None) -> float | None:
    """The cost of one request in USD, or None without usage or without a price for ``model``."""
    if usage is None or model is None:
        return None
    price = prices.get(model)
    if price is None:
        return None
    cached = min(usage.cached_tokens or 0, usage.input_tokens) if price.cached_input is not None else 0
    total = ((usage.input_tokens - cached) * price.input + cached * (price.cached_input or 0.0)
             + usage.output_tokens * price.output) / 1e6
    return round(total, 9)
