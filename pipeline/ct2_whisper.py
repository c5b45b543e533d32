"""A CTranslate2 Whisper model as a transformers one: the same weights on torch (GPUs).

The GPU path where CTranslate2 cannot run (CUDA 13 images) uses transformers' Whisper; the
offline models vidbrief ships are CTranslate2 conversions. This module reads a CTranslate2
``model.bin`` (the format CTranslate2's own ``ModelSpec._serialize`` writes: a header, then
each variable as name, shape, dtype and raw bytes, then aliases) and inverts
CTranslate2's Whisper converter (``converters/transformers.py``, ``WhisperLoader``): the fused
query/key/value projections are split again (Whisper's key projections have no bias: the fused
bias holds zeros there), layer norms' gamma/beta become weight/bias. The result is saved as a
transformers model folder with its processor and generation config, once, next to the
CTranslate2 model in the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["convert", "read_ct2_variables"]

_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
TIME_PRECISION_S = 0.02
MULTILINGUAL_VOCAB = 51_865
FORMAT_VERSION = "2"  # bump when the conversion changes: a new cache folder is built


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def value(self, fmt: str) -> Any:
        out = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return out

    def string(self) -> str:
        length = self.value("H")  # includes the trailing NUL
        text = self.data[self.pos : self.pos + length - 1].decode("utf-8")
        self.pos += length
        return text

    def array(self, shape: list[int], dtype: str, nbytes: int) -> np.ndarray:
        np_dtype = np.dtype("uint16" if dtype == "bfloat16" else dtype)
        out = np.frombuffer(self.data, np_dtype, nbytes // np_dtype.itemsize, self.pos)
        self.pos += nbytes
        return out.reshape(shape)


def read_ct2_variables(path: Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` (aliases resolved), by name."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.value("I")
    if version < 5:
        raise ValueError(f"CTranslate2 model format {version} is too old to read")
    reader.string(), reader.value("I")  # spec name, revision
    variables = {}
    for _ in range(reader.value("I")):
        name = reader.string()
        shape = [reader.value("I") for _ in range(reader.value("B"))]
        dtype = _CT2_DTYPES[reader.value("B")]
        variables[name] = reader.array(shape, dtype, reader.value("I"))
    for _ in range(reader.value("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return variables


# --------------------------------------------------------------------------- weights


def _norm(out: dict, hf: str, v: dict, ct2: str) -> None:
    out[f"{hf}.weight"], out[f"{hf}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]


def _linear(out: dict, hf: str, v: dict, ct2: str, bias: bool = True) -> None:
    out[f"{hf}.weight"] = v[f"{ct2}/weight"]
    if bias:
        out[f"{hf}.bias"] = v[f"{ct2}/bias"]


def _split(out: dict, hf: str, names: tuple[str, ...], v: dict, ct2: str) -> None:
    """A fused projection split into its parts (``k_proj`` has no bias in Whisper)."""
    weights = np.split(v[f"{ct2}/weight"], len(names))
    biases = np.split(v[f"{ct2}/bias"], len(names))
    for name, weight, bias in zip(names, weights, biases, strict=True):
        out[f"{hf}.{name}.weight"] = weight
        if name != "k_proj":
            out[f"{hf}.{name}.bias"] = bias


def _ffn(out: dict, hf: str, v: dict, ct2: str) -> None:
    _norm(out, f"{hf}.final_layer_norm", v, f"{ct2}/ffn/layer_norm")
    _linear(out, f"{hf}.fc1", v, f"{ct2}/ffn/linear_0")
    _linear(out, f"{hf}.fc2", v, f"{ct2}/ffn/linear_1")


def _self_attention(out: dict, hf: str, v: dict, ct2: str) -> None:
    _norm(out, f"{hf}.self_attn_layer_norm", v, f"{ct2}/self_attention/layer_norm")
    _split(
        out, f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), v, f"{ct2}/self_attention/linear_0"
    )
    _linear(out, f"{hf}.self_attn.out_proj", v, f"{ct2}/self_attention/linear_1")


def _encoder(out: dict, v: dict, layers: int) -> None:
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", v, f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        _self_attention(out, hf, v, ct2)
        _ffn(out, hf, v, ct2)
    _norm(out, "model.encoder.layer_norm", v, "encoder/layer_norm")


def _decoder(out: dict, v: dict, layers: int) -> None:
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _self_attention(out, hf, v, ct2)
        _norm(out, f"{hf}.encoder_attn_layer_norm", v, f"{ct2}/attention/layer_norm")
        _linear(out, f"{hf}.encoder_attn.q_proj", v, f"{ct2}/attention/linear_0")
        _split(out, f"{hf}.encoder_attn", ("k_proj", "v_proj"), v, f"{ct2}/attention/linear_1")
        _linear(out, f"{hf}.encoder_attn.out_proj", v, f"{ct2}/attention/linear_2")
        _ffn(out, hf, v, ct2)
    _norm(out, "model.decoder.layer_norm", v, "decoder/layer_norm")


def _layers(v: dict, side: str) -> int:
    return sum(1 for k in v if k.startswith(f"{side}/layer_") and k.endswith("ffn/linear_0/weight"))


def state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' Whisper parameter names → arrays, from CTranslate2's variables."""
    out: dict[str, np.ndarray] = {}
    _encoder(out, v, _layers(v, "encoder"))
    _decoder(out, v, _layers(v, "decoder"))
    return out


# --------------------------------------------------------------------------- config, processor


def _whisper_config(v: dict[str, np.ndarray], ids: dict[str, int]) -> Any:
    from transformers import WhisperConfig

    vocab, d_model = v["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_layers(v, "encoder"),
        decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )


def _generation_config(
    ct2_config: dict[str, Any], ids: dict[str, int], names: dict[int, str], vocab_size: int
) -> Any:
    from transformers import GenerationConfig

    multilingual = vocab_size >= MULTILINGUAL_VOCAB  # as Whisper and CTranslate2 decide
    extra: dict[str, Any] = {}
    if multilingual:
        extra = {
            "lang_to_id": {names[i]: i for i in ct2_config["lang_ids"]},
            "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        }
    return GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids.get("<|startofprev|>"),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        max_length=448,
        **extra,
    )


def _processor(ct2_dir: Path, vocab_size: int, ids: dict[str, int]) -> Any:
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    # Registered as special, in id order: the tokenizer finds the first timestamp token (and so
    # the segment times) as the one after its last special token.
    specials = sorted(ids, key=ids.__getitem__)
    eos = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(ct2_dir / "tokenizer.json"),
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        additional_special_tokens=specials,
    )
    first_timestamp = ids["<|notimestamps|>"] + 1
    stamps = [
        AddedToken(f"<|{i * TIME_PRECISION_S:.2f}|>", lstrip=False, rstrip=False, normalized=False)
        for i in range(vocab_size - first_timestamp)
    ]
    tokenizer.add_tokens(stamps)
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)


def _special_ids(ct2_dir: Path) -> tuple[dict[str, int], dict[int, str]]:
    added = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    ids = {t["content"]: int(t["id"]) for t in added}
    return ids, {i: name for name, i in ids.items()}


# --------------------------------------------------------------------------- the conversion


def convert(ct2_dir: Path, out_dir: Path) -> Path:
    """``out_dir`` holding the transformers Whisper of ``ct2_dir`` (built once, atomically)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=out_dir.parent))
    try:
        _write(Path(ct2_dir), tmp)
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process finished first: keep its folder
            if not (out_dir / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write(ct2_dir: Path, tmp: Path) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration

    variables = read_ct2_variables(ct2_dir / "model.bin")
    ids, names = _special_ids(ct2_dir)
    config = _whisper_config(variables, ids)
    model = WhisperForConditionalGeneration(config)
    weights = {
        k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in state_dict(variables).items()
    }
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "proj_out.weight"]:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = _generation_config(
        json.loads((ct2_dir / "config.json").read_text(encoding="utf-8")),
        ids,
        names,
        config.vocab_size,
    )
    model.to(torch.float16).save_pretrained(tmp)
    _processor(ct2_dir, config.vocab_size, ids).save_pretrained(tmp)
