"""GRPO's completions through IETA's decoder (ieta.grpo_sampling, ieta.sample.continue_ids), and TRL's generation
where the decoder would sample differently."""

import torch

from ieta.data import load_problems
from ieta.io import read_json
from ieta.methods.rlaif import train_rlaif
from ieta.models import load_model, load_tokenizer
from ieta.sample import _eos_ids, continue_ids, generate
from tests.conftest import TINY, compose_config
from tests.test_rlaif import FAST
from tests.test_sample import RANDOM_INIT


def _tiny():
    return load_tokenizer("tiny"), load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)


def test_continue_ids_samples_what_generate_samples_and_keeps_the_eos():
    """A group of repeated contexts (GRPO's layout) gives generate()'s samples of that prompt, token for token, with
    an EOS kept where a completion ended on it; the model's mode is left as it was."""
    tok, model = _tiny()
    prompts = ["def add(a, b):\n    return", "import os\nprint("]
    ids = tok(prompts)["input_ids"]
    eos = _eos_ids(model, tok).tolist()
    model.train()
    got = continue_ids(model, [ids[0]] * 3 + [ids[1]] * 3, temperature=1.0, top_p=0.95, max_new_tokens=12,
                       seed=5, eos=eos)
    assert model.training  # not switched to eval
    texts = generate(model, tok, prompts, n=3, temperature=1.0, top_p=0.95, max_new_tokens=12, batch_size=6,
                     stops=[], seed=5)
    assert [tok.decode([t for t in g if t not in eos]) for g in got] == [t for group in texts for t in group]
    assert all(len(g) <= 12 and all(t not in eos for t in g[:-1]) for g in got)
    # a completion shorter than the limit ended on an EOS, which is kept (TRL's completion ids)
    assert all(g[-1] in eos for g in got if len(g) < 12)
    again = continue_ids(model, [ids[0]] * 3 + [ids[1]] * 3, temperature=1.0, top_p=0.95, max_new_tokens=12,
                         seed=5, eos=eos)
    assert again == got


def test_continue_ids_distinct_contexts_and_an_eos_that_ends_every_row():
    tok, model = _tiny()
    ids = tok(["a = 1", "b = [2, 3]", "c = 'x'"])["input_ids"]
    out = continue_ids(model, ids, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0, eos=[])
    assert [len(o) for o in out] == [5, 5, 5]
    vocab = list(range(model.config.vocab_size))  # every token ends a row: one token each, and it is kept
    assert [len(o) for o in continue_ids(model, ids, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0,
                                         eos=vocab)] == [1, 1, 1]
    assert continue_ids(model, [], temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0, eos=[]) == []


def test_grpo_completions_come_from_the_decoder_unless_the_settings_need_trls_generation(tmp_path):
    """train_rlaif samples through the decoder (recorded in grpo_sampling.json); with top-k set, which the decoder
    does not implement, TRL's own generation samples instead, and says why."""
    tok = load_tokenizer("tiny")
    problems = load_problems("humaneval", limit=2)
    for name, extra in (("decoder", []), ("top_k", ["+method.trainer.top_k=5"])):
        cfg = compose_config(TINY + FAST + extra)
        model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
        train_rlaif(model, tok, problems, cfg, steps=1, out_dir=tmp_path / name, seed=0, progress=False)
        by = read_json(tmp_path / name / "grpo_sampling.json")
        if name == "decoder":
            assert by == {"ieta decoder": 2}  # one generation batch of 2: a prompt x 2 completions
        else:
            assert by == {"TRL generate (top-k, min-p or a repetition penalty)": 2}
