"""What a hypernetwork file promises the app, in one place for both sides.

ONNX metadata holds strings only. hypernet_onnx.export writes them with
``to_onnx_metadata`` and app.hypernet reads them with ``from_onnx_metadata``,
so a key renamed or a number written another way on one side breaks a test,
not the loading of a shipped hypernetwork. No torch here: the app imports it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from .lora_gguf import MODULE_TO_GGUF

FORMAT = "tailor-hypernet/1"


class HypernetMetaError(ValueError):
    """A key is missing or its value is not what the contract says; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class HypernetMeta:
    format: str = FORMAT
    hypernet_id: str
    base_fingerprint: str              # app.base_model.BaseSpec.fingerprint() of the model it was trained for
    embedder_id: str                   # the profile vectors it expects come from this embedder
    pooling: str
    input_dim: int
    rank: int                          # of the adapter it emits (a residual design: shared + residual)
    alpha: float                       # so that llama.cpp's alpha / rank is the scale it was trained with
    target_modules: tuple[str, ...]
    n_layers: int
    training_data_sha256: str
    training_steps: int
    dev_nll: float                     # nan when the run logged no dev loss
    io: dict                           # {"inputs": {name: shape}, "outputs": {name: shape}}
    config: dict                       # hypernet_onnx.model.HyperConfig.to_dict()

    def to_onnx_metadata(self) -> dict[str, str]:
        """The strings written into the ONNX file, in the order and formats the shipped file has."""
        return {
            "format": self.format,
            "hypernet_id": self.hypernet_id,
            "base_fingerprint": self.base_fingerprint,
            "embedder_id": self.embedder_id,
            "pooling": self.pooling,
            "input_dim": str(self.input_dim),
            "rank": str(self.rank),
            "alpha": str(float(self.alpha)),
            "target_modules": ",".join(self.target_modules),
            "n_layers": str(self.n_layers),
            "training_data_sha256": self.training_data_sha256,
            "training_steps": str(self.training_steps),
            "dev_nll": f"{self.dev_nll:.4f}",
            "io": json.dumps(self.io),
            "config": json.dumps(self.config),
        }

    @classmethod
    def from_onnx_metadata(cls, meta: Mapping[str, str]) -> HypernetMeta:
        """Parse the file's strings; HypernetMetaError naming the key when one is missing or malformed.
        Other keys (the integrity stamp) are left to their readers."""
        def get(key: str) -> str:
            if key not in meta:
                raise HypernetMetaError(f"missing key {key!r}")
            return meta[key]

        def number(key: str, kind: type):
            text = get(key)
            try:
                return kind(text)
            except ValueError:
                raise HypernetMetaError(f"{key!r} is not {'an integer' if kind is int else 'a number'}: "
                                        f"{text!r}") from None

        def json_object(key: str) -> dict:
            text = get(key)
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise HypernetMetaError(f"{key!r} is not a JSON object: {text[:80]!r}")
            return value

        if (fmt := get("format")) != FORMAT:
            raise HypernetMetaError(f"'format' is {fmt!r}, not {FORMAT!r}")
        modules = tuple(get("target_modules").split(","))
        unknown = sorted(set(modules) - set(MODULE_TO_GGUF))
        if unknown:
            raise HypernetMetaError(f"'target_modules' has unknown modules {unknown}")
        return cls(
            hypernet_id=get("hypernet_id"), base_fingerprint=get("base_fingerprint"), embedder_id=get("embedder_id"),
            pooling=get("pooling"), input_dim=number("input_dim", int), rank=number("rank", int),
            alpha=number("alpha", float), target_modules=modules, n_layers=number("n_layers", int),
            training_data_sha256=get("training_data_sha256"), training_steps=number("training_steps", int),
            dev_nll=number("dev_nll", float), io=json_object("io"), config=json_object("config"))
