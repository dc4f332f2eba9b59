"""The frozen blocks below the adapters run once per row (ieta.grpo_forward): replayed forwards give the model's own
values and gradients, and GRPO training with the replay logs what it logs without."""

import copy

import pytest
import torch
from peft import get_peft_model

import ieta.grpo_forward as grpo_forward
from ieta.config import LoraConfig as LoraSettings
from ieta.data import load_problems
from ieta.io import read_jsonl
from ieta.methods.rlaif import train_rlaif
from ieta.models import load_model, load_tokenizer
from ieta.train import lora_config
from tests.conftest import TINY, compose_config
from tests.test_rlaif import FAST
from tests.test_sample import RANDOM_INIT


def _policy(top_layers):
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT | {"num_hidden_layers": 3}, seed=0)
    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                        top_layers=top_layers)
    policy = get_peft_model(model, lora_config(lora, model))
    for name, p in policy.named_parameters():  # trained adapters: B away from 0, so the adapted blocks matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return policy


def _batch():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [0, 9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19]])
    return ids, (ids != 0).long()


def _loss_and_grads(policy, ids, mask):
    policy.zero_grad()
    logits = policy(input_ids=ids, attention_mask=mask, use_cache=False).logits
    loss = (logits.log_softmax(-1)[..., 3] * mask).sum()
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}


def test_replayed_rows_give_the_models_values_and_gradients():
    ids, mask = _batch()
    plain, replayed = _policy(top_layers=1), _policy(top_layers=1)
    expected = _loss_and_grads(plain, ids, mask)
    replay = grpo_forward.install(replayed)
    assert replay is not None and grpo_forward.frozen_blocks(replay.backbone) == 2
    assert not grpo_forward.right_padded(mask)  # left padding: the mask stays
    with torch.no_grad(), replayed.disable_adapter():  # TRL's reference pass: keeps the rows' frozen output
        reference = replayed(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert replay.computed == 3 and replay.replayed == 0
    with torch.no_grad():
        assert not torch.allclose(reference, plain(input_ids=ids, attention_mask=mask).logits)  # the adapters act
    got = _loss_and_grads(replayed, ids, mask)  # the loss's forward: replayed
    assert replay.replayed == 3 and replay.computed == 3
    assert torch.allclose(got[0], expected[0], atol=1e-5)
    assert got[1].keys() == expected[1].keys() and all(torch.allclose(got[1][n], g, atol=1e-5)
                                                       for n, g in expected[1].items())
    # another batch of kept rows replays too; a new row (or a new padding of a kept one) runs the blocks
    with torch.no_grad():
        sub = replayed(input_ids=ids[[2, 0]], attention_mask=mask[[2, 0]]).logits
        assert replay.replayed == 5 and torch.allclose(sub, expected[0][[2, 0]], atol=1e-5)
        replayed(input_ids=ids[:, 1:], attention_mask=mask[:, 1:])
        assert replay.replayed == 5 and replay.computed == 6
    replay.clear()
    with torch.no_grad():
        replayed(input_ids=ids, attention_mask=mask)
    assert replay.replayed == 5 and replay.computed == 9 and replay.unmasked == 0


def test_restore_gives_the_model_its_own_forwards_back():
    policy = _policy(top_layers=1)
    inner = policy.get_base_model()
    own = inner.forward
    forward = grpo_forward.install(policy)
    assert inner.base_model.forward is forward and inner.forward is not own
    forward.restore()
    assert "forward" not in inner.base_model.__dict__ and "forward" not in inner.__dict__ and inner.forward == own


def test_right_padded_rows_run_without_a_mask_with_the_same_values_and_gradients():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0], [15, 16, 17, 0, 0, 0]])
    mask = (ids != 0).long()
    plain, unmasked = _policy(top_layers=None), _policy(top_layers=None)  # every block adapted: nothing to replay
    expected = _loss_and_grads(plain, ids, mask)
    forward = grpo_forward.install(unmasked)
    got = _loss_and_grads(unmasked, ids, mask)
    assert forward.unmasked == 1 and forward.replayed == forward.computed == 0
    real = mask.bool()
    assert torch.allclose(got[0][real], expected[0][real], atol=1e-5)
    assert all(torch.allclose(got[1][n], g, atol=1e-5) for n, g in expected[1].items())
    assert not grpo_forward.right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert not grpo_forward.right_padded(torch.tensor([[1, 0, 1]]))
    assert grpo_forward.right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))


def test_grpo_with_the_replay_trains_what_it_trains_without(tmp_path, monkeypatch):
    """train_rlaif (beta > 0: a reference pass) with the frozen block replayed, against the same training with it
    off: the same losses, KL, rewards and trained adapter, and the replay ran."""
    from safetensors.torch import load_file

    from ieta import rewards
    from tests.test_rlaif import text_hash_reward

    monkeypatch.setitem(rewards.REWARDS, "text_hash", text_hash_reward)
    tok = load_tokenizer("tiny")
    problems = load_problems("humaneval", limit=2)
    cfg = compose_config(TINY + FAST + ["+method.rlaif.reward_weights.text_hash=1.0", "method.lora.top_layers=1",
                                        "method.beta=0.1", "method.lora.dropout=0.0"])
    installed, logs, adapters = [], {}, {}
    original = grpo_forward.install
    for name in ("replay", "plain"):
        with monkeypatch.context() as m:
            m.setattr(grpo_forward, "install", (lambda model: None) if name == "plain" else
                      (lambda model: installed.append(original(model)) or installed[-1]))
            model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
            policy = train_rlaif(model, tok, problems, cfg, steps=2, out_dir=tmp_path / name, seed=0,
                                 progress=False)
            inner = policy.get_base_model()  # after training: the model's own backbone forward, TRL's head
            assert "forward" not in inner.base_model.__dict__ and inner.forward.__name__ != "scored"
        logs[name] = [r for r in read_jsonl(tmp_path / name / "train_log.jsonl") if "loss" in r]
        adapters[name] = load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")
    (replay,) = installed
    assert replay is not None and replay.replayed > 0 and replay.computed > 0
    assert replay.unmasked > 0  # a batch is one group of completions: one prompt, no left padding
    assert len(logs["replay"]) == len(logs["plain"]) == 2
    for got, want in zip(logs["replay"], logs["plain"]):
        for key in ("loss", "kl", "reward", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    assert logs["plain"][-1]["grad_norm"] > 0
    lora_b = [k for k in adapters["plain"] if "lora_B" in k]
    assert lora_b and any(adapters["plain"][k].abs().sum() > 0 for k in lora_b)  # B starts at 0: it trained
    assert adapters["replay"].keys() == adapters["plain"].keys()
    assert all(torch.allclose(adapters["replay"][k], v, atol=1e-6) for k, v in adapters["plain"].items())


def test_interactive_without_scoring_environment_tokens_trains_what_it_trains_with(tmp_path, monkeypatch):
    """Multi-turn episodes: the environment's tokens, masked out of the loss, are left out of the LM head (labels
    -100); the same losses, KL and adapter as scoring them, and positions were skipped."""
    from safetensors.torch import load_file

    import zlib

    import ieta.methods.interactive as interactive
    from ieta.methods.interactive import train_interactive
    from tests.test_interactive import PROBLEM, SHORT

    # distinct episodes, distinct rewards: a random model's attempts all fail alike, which would train nothing
    monkeypatch.setattr(interactive, "episode_reward", lambda prompts, completions, **kwargs: [
        zlib.crc32(str(c).encode()) % 1000 / 1000 for c in completions])
    tok = load_tokenizer("tiny")
    cfg = compose_config(TINY + SHORT + ["method.interactive.max_steps=2", "method.lora.dropout=0.0",
                                         "method.interactive.max_completion_length=24"])
    installed, logs, adapters, episodes = [], {}, {}, []
    original, rollout = grpo_forward.install, interactive.Episodes.rollout

    def recorded(self, prompts, generate):  # the first run's episodes, replayed in the second
        episodes.append(rollout(self, prompts, generate))
        return copy.deepcopy(episodes[-1])

    replayed = iter(episodes)
    for name in ("skip", "score"):
        with monkeypatch.context() as m:
            m.setattr(grpo_forward, "install", lambda model: installed.append(original(model)) or installed[-1])
            # the same episodes in both runs: after a step the two adapters differ by rounding (other GEMM shapes),
            # which can flip a token sampled from a random model's near-uniform logits (seen on an AMX Xeon)
            m.setattr(interactive.Episodes, "rollout", recorded if name == "skip" else
                      lambda self, prompts, generate: copy.deepcopy(next(replayed)))
            if name == "score":
                m.setattr(grpo_forward.GrpoForward, "skip_unscored", lambda self, *args: None)
            model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
            train_interactive(model, tok, [PROBLEM], cfg, steps=2, out_dir=tmp_path / name, seed=0, progress=False)
        logs[name] = [r for r in read_jsonl(tmp_path / name / "train_log.jsonl") if "loss" in r]
        adapters[name] = load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")
    skip, score = installed
    assert skip.skipped > 0 and score.skipped == 0
    assert len(episodes) == 2 and next(replayed, None) is None  # a rollout per step, each replayed once
    for got, want in zip(logs["skip"], logs["score"]):
        for key in ("loss", "kl", "reward", "grad_norm", "entropy"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    assert any(adapters["score"][k].abs().sum() > 0 for k in adapters["score"] if "lora_B" in k)
    # Adam turns rounding-level gradient differences into steps of up to lr (1e-2) on a few elements whose gradient is
    # near 0; on an AMX Xeon 1.6e-5 at most (values ~0.15). Training on other tokens moves most elements by ~lr.
    assert all(torch.allclose(adapters["skip"][k], v, atol=1e-4) for k, v in adapters["score"].items())


def test_noted_positions_are_unlabelled_only_in_their_own_completion():
    forward = grpo_forward.GrpoForward(torch.nn.Module())
    forward.skip_unscored([[7, 8, 9, 10], [11, 12]], [[1, 0, 0, 1], [1, 1]])
    ids = torch.tensor([[3, 7, 8, 9, 10, 0], [3, 11, 12, 0, 0, 0], [3, 7, 8, 9, 0, 0]])
    labels = ids.masked_fill(ids == 0, -100)
    labels[:, 0] = -100  # the prompt
    out = forward.labels_without_unscored(ids, labels)
    assert out[0].tolist() == [-100, 7, -100, -100, 10, -100]
    assert torch.equal(out[1:], labels[1:])  # no noted mask / another completion: unchanged
    assert forward.skipped == 2 and torch.equal(labels[0], ids[0].masked_fill(ids[0] == 0, -100).index_fill(0, torch.tensor([0]), -100))
