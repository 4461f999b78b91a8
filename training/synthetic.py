"""Deterministic synthetic training data, driven by the `synthetic` blocks of verticals.yaml.

Generative process, per vertical and seed (one numpy Generator, features drawn in config
order, so the same seed always gives the same table):

1. Each feature's true value is drawn from its distribution:
   numeric  normal(mean, sd) | lognormal(mean, sd of the log) | gamma(shape, scale) |
            poisson(lam) | choice(values) | derived(from another feature + offset + normal(0, sd)),
            rounded to `round` decimals and clipped to the feature's [min, max];
   categorical  one of the categories with the given weights;
   text     `tokens` = [lo, hi] words drawn uniformly from the `words` vocabulary.
2. The row's logit is intercept + effect_scale x (sum of feature effects + interaction effects)
   + normal(0, noise_sd):
   numeric effects by `bands` [[lo, hi, effect], ...] or `linear` (coef x (x - center), clipped);
   categorical effects per category; text effects are the sum of the drawn words' effects;
   an interaction adds its effect when all its conditions hold.
3. The label (the vertical's `target`) is Bernoulli(sigmoid(logit)).
4. Finally each feature is hidden (set missing) with probability `missing`, independently:
   the label still depends on the hidden true value, as with real incomplete leads.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from predictors.spec import CATEGORICAL, NUMERIC, Vertical


def _numeric(rng: np.random.Generator, syn: dict, n: int, frame: dict) -> np.ndarray:
    dist = syn["dist"]
    if dist == "normal":
        x = rng.normal(syn["mean"], syn["sd"], n)
    elif dist == "lognormal":
        x = rng.lognormal(syn["mean"], syn["sd"], n)
    elif dist == "gamma":
        x = rng.gamma(syn["shape"], syn["scale"], n)
    elif dist == "poisson":
        x = rng.poisson(syn["lam"], n).astype(np.float64)
    elif dist == "choice":
        x = rng.choice(np.asarray(syn["values"], dtype=np.float64), n)
    elif dist == "derived":
        x = frame[syn["from"]] + syn.get("offset", 0.0) + rng.normal(0.0, syn.get("sd", 0.0), n)
    else:
        raise ValueError(f"unknown synthetic distribution {dist!r}")
    if "round" in syn:
        x = np.round(x, syn["round"])
    return x


def _effect_numeric(x: np.ndarray, effect: dict) -> np.ndarray:
    out = np.zeros(len(x))
    if "bands" in effect:
        for lo, hi, e in effect["bands"]:
            mask = np.ones(len(x), bool)
            if lo is not None:
                mask &= x >= lo
            if hi is not None:
                mask &= x < hi
            out[mask] += e
    if "linear" in effect:
        lin = effect["linear"] * (x - effect.get("center", 0.0))
        lo, hi = effect.get("clip", (-np.inf, np.inf))
        out += np.clip(lin, lo, hi)
    return out


def _condition(frame: dict, cond: dict) -> np.ndarray:
    x = frame[cond["feature"]]
    if "below" in cond:
        return x < cond["below"]
    if "above" in cond:
        return x > cond["above"]
    return np.isin(x, cond["in"])


def generate(vertical: Vertical, seed: int = 42, rows: int | None = None) -> pd.DataFrame:
    """The synthetic table of a vertical: one column per feature plus the target column."""
    syn_v = vertical.synthetic
    n = int(rows or syn_v.get("rows", 20000))
    rng = np.random.default_rng([seed, zlib.crc32(vertical.name.encode())])
    frame: dict[str, np.ndarray] = {}
    logit = np.zeros(n)
    for f, raw in zip(vertical.features, vertical.raw_features):
        syn = raw["synthetic"]
        effect = syn.get("effect", {})
        if f.kind == NUMERIC:
            x = _numeric(rng, syn, n, frame)
            lo = -np.inf if f.min is None else f.min
            hi = np.inf if f.max is None else f.max
            x = np.clip(x, lo, hi)
            logit += _effect_numeric(x, effect)
        elif f.kind == CATEGORICAL:
            w = np.asarray(syn["weights"], dtype=np.float64)
            x = rng.choice(np.asarray(f.categories, dtype=object), n, p=w / w.sum())
            logit += np.fromiter((effect.get(v, 0.0) for v in x), dtype=np.float64, count=n)
        else:
            words = list(syn["words"])
            lo, hi = syn.get("tokens", (1, 2))
            counts = rng.integers(lo, hi + 1, n)
            picks = rng.integers(0, len(words), int(counts.sum()))
            texts, effects, k = [], np.zeros(n), 0
            for i, c in enumerate(counts):
                chosen = [words[j] for j in picks[k:k + c]]
                k += c
                texts.append(" ".join(chosen))
                effects[i] = sum(syn["words"][w] for w in chosen)
            x = np.asarray(texts, dtype=object)
            logit += effects
        frame[f.name] = x
    for inter in syn_v.get("interactions", ()):
        mask = np.ones(n, bool)
        for cond in inter["when"]:
            mask &= _condition(frame, cond)
        logit[mask] += inter["effect"]
    logit = float(syn_v.get("intercept", 0.0)) + float(syn_v.get("effect_scale", 1.0)) * logit
    logit += rng.normal(0.0, float(syn_v.get("noise_sd", 0.0)), n)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    for f, raw in zip(vertical.features, vertical.raw_features):
        p = float(raw["synthetic"].get("missing", 0.0))
        if p > 0:
            hide = rng.random(n) < p
            col = frame[f.name]
            if f.kind == NUMERIC:
                col = col.astype(np.float64)
                col[hide] = np.nan
            else:
                col = col.copy()
                col[hide] = None
            frame[f.name] = col
    df = pd.DataFrame(frame)
    df[vertical.target] = label
    return df
