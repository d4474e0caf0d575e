"""Run identity: a readable prefix plus a short hash of what changes a run's result.

``<model>-<data>-<samples>-<hash8>``, e.g. ``vit_b32-laion400m-13B-3f2a9c1e``. The hash covers the
identity fields of the model, data, samples and train sections (see ``core.schema``): paths,
worker counts, logging cadence and the cluster are left out, so relaunching a sweep from another
login node, disk or cluster finds the same folders. No timestamps: the same point always gets
the same id.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.schema import IDENTITY_SECTIONS, identity_defaults, non_identity_fields


def identity(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The result-relevant values of ``cfg``, section by section, resolved."""
    out: dict[str, dict[str, Any]] = {}
    for section in IDENTITY_SECTIONS:
        node = cfg[section]
        skip = non_identity_fields(section)
        defaults = identity_defaults(section)
        values = {}
        for k in node:  # only the identity fields are resolved (data.shards, say, is not)
            if k in skip:
                continue
            v = node[k]
            if k in defaults and v == defaults[k]:
                continue  # a newer field at its default: the ids of older runs stay
            values[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        # An unset optional field (None) is left out, so adding one to the schema later does
        # not change the id of every existing run.
        out[section] = {k: v for k, v in sorted(values.items()) if v is not None}
    return out


def config_hash(cfg: DictConfig) -> str:
    """Eight hex digits of the SHA-1 of :func:`identity` as canonical JSON."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_id(cfg: DictConfig) -> str:
    """``<model>-<data>-<samples>-<hash8>``."""
    return f"{cfg.model.name}-{cfg.data.name}-{cfg.samples.name}-{config_hash(cfg)}"


TRUNK_LEFT_OUT = ("cooldown_fraction", "cooldown_shape")
"""What a const_cooldown trunk's identity leaves out of its points': samples seen and the
cooldown settings (every other value, model, data, recipe, batch and seed, must match)."""


def trunk_identity(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The identity shared by the const_cooldown points that fork from one trunk."""
    out = identity(cfg)
    del out["samples"]
    out["train"] = {k: v for k, v in out["train"].items() if k not in TRUNK_LEFT_OUT}
    return out


def trunk_id(cfg: DictConfig) -> str:
    """``<model>-<data>-trunk-<hash8>``: the run folder of the point's trunk."""
    blob = json.dumps(trunk_identity(cfg), sort_keys=True, separators=(",", ":"))
    return f"{cfg.model.name}-{cfg.data.name}-trunk-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"
