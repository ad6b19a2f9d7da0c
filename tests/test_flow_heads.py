import math
import pytest
import torch
from argen_lit.core import make_generator, save_checkpoint
from argen_lit.flow_heads import (FlowHead, FlowPrior, FlowPriorConfig, LatentConfig, LatentTokenizer, annealed_steps,
                                  euler_sample, flow_loss, load_flow_prior, load_latent_tokenizer, sample_flow,
                                  sample_flow_images, train_flow_prior)
from argen_lit.transformer import TransformerConfig

C = 3


def prior_config(head="flow", **kw):
    bc = TransformerConfig.smoke(vocab_size=0, d_model=32, n_layers=1, max_seq_len=50, rope="2d", grid=(7, 7))
    return FlowPriorConfig(backbone=bc.to_dict(), token_dim=C, head=head, head_width=32, head_depth=1, **kw)


@pytest.fixture(scope="module", params=["flow", "mse"])
def prior(request):
    torch.manual_seed(0)
    m = FlowPrior(prior_config(request.param)).eval()
    for p in m.head.parameters(): torch.nn.init.normal_(p, std=0.1)  # undo the zero init, so outputs depend on inputs
    return m


def test_flow_loss_is_zero_for_the_exact_velocity_and_positive_otherwise():
    # data: one point per condition (z is that point); the exact velocity at x_t is (x - x_t) / (1 - t)
    x = torch.randn(64, C, dtype=torch.float64)
    exact = lambda xt, t, z: (z - xt) / (1 - t)
    assert flow_loss(exact, x, x, draws=4, generator=make_generator(0)).item() < 1e-12
    wrong = lambda xt, t, z: (z - xt) / (1 - t) + 0.1
    assert flow_loss(wrong, x, x, draws=4, generator=make_generator(0)).item() == pytest.approx(0.01, rel=1e-6)


def test_more_euler_steps_converge_to_the_exact_flow():
    # data N(m, s^2): the exact velocity of x_t = t x + (1 - t) eps is known, and its flow maps eps to m + s eps
    m, s = 2.0, 0.5
    def velocity(x, t):
        var = t ** 2 * s ** 2 + (1 - t) ** 2
        return m + (t * s ** 2 - (1 - t)) * (x - t * m) / var
    eps = torch.randn(1000, 1, generator=make_generator(0), dtype=torch.float64)
    errors = [(euler_sample(velocity, eps, n) - (m + s * eps)).abs().mean().item() for n in (1, 4, 16, 64)]
    assert all(a > 3 * b for a, b in zip(errors, errors[1:])) and errors[-1] < 0.01  # first order: error ~ 1 / steps


def test_conditions_are_causal(prior):
    x = torch.randn(2, 49, C)
    y = x.clone(); y[:, 20:] = torch.randn(2, 29, C)
    a, b = prior.conditions(x, torch.tensor([1, 2])), prior.conditions(y, torch.tensor([1, 2]))
    assert torch.allclose(a[:, :21], b[:, :21], atol=1e-5) and not torch.allclose(a[:, 21:], b[:, 21:])


def test_cached_sampling_matches_teacher_forcing():
    # the MSE head is deterministic: each sampled token must equal the head's prediction from the teacher-forced pass
    torch.manual_seed(0)
    m = FlowPrior(prior_config("mse")).eval()
    for p in m.head.parameters(): torch.nn.init.normal_(p, std=0.1)
    labels = torch.tensor([0, 3, 7])
    for cfg in (1.0, 2.5):
        tokens = sample_flow(m, labels, cfg_scale=cfg)
        z = m.conditions(tokens, labels)
        pred = m.regress(z.reshape(-1, z.shape[-1])).reshape(tokens.shape)
        if cfg != 1.0:
            zu = m.conditions(tokens, torch.full_like(labels, 10))
            pu = m.regress(zu.reshape(-1, zu.shape[-1])).reshape(tokens.shape)
            pred = pu + cfg * (pred - pu)
        assert torch.allclose(tokens, pred, atol=1e-5)


def test_same_seed_same_samples(prior):
    a = sample_flow(prior, torch.arange(3), steps=3, cfg_scale=2.0, generator=make_generator(0))
    b = sample_flow(prior, torch.arange(3), steps=3, cfg_scale=2.0, generator=make_generator(0))
    c = sample_flow(prior, torch.arange(3), steps=3, cfg_scale=2.0, generator=make_generator(1))
    assert a.shape == (3, 49, C) and torch.equal(a, b)
    assert torch.equal(a, c) == (prior.config.head == "mse")  # only the flow head draws noise


def test_head_evaluations_follow_the_step_schedule():
    torch.manual_seed(0)
    m = FlowPrior(prior_config("flow")).eval()
    calls = []
    h = m.head.register_forward_hook(lambda *_: calls.append(1))
    sample_flow(m, torch.arange(2), steps=annealed_steps(49, 8, 2, "geometric"), cfg_scale=3.0)
    h.remove()
    assert len(calls) == sum(annealed_steps(49, 8, 2, "geometric"))  # guidance shares each evaluation


@pytest.mark.parametrize("kind", ["linear", "cosine", "geometric"])
def test_annealed_steps_run_from_start_to_end_without_rising(kind):
    s = annealed_steps(49, 50, 5, kind)
    assert len(s) == 49 and s[0] == 50 and s[-1] == 5 and all(a >= b for a, b in zip(s, s[1:]))
    assert annealed_steps(49, 8, 8, kind) == [8] * 49


def test_training_learns_a_class_dependent_token():
    torch.manual_seed(0)
    m = FlowPrior(prior_config("flow"))
    labels = torch.arange(256) % 4
    centres = torch.randn(4, 1, C) * 2
    tokens = centres[labels].expand(-1, 49, -1) + 0.05 * torch.randn(256, 49, C)
    losses = train_flow_prior(m, tokens, labels, steps=150, batch_size=32, lr=3e-3)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    out = sample_flow(m, torch.arange(4), steps=16, cfg_scale=1.0, generator=make_generator(0))
    assert (out - centres[:4]).abs().mean() < 0.6 * (centres[:4] - centres[[1, 2, 3, 0]]).abs().mean()


def test_latent_tokenizer_round_trip_and_standardized_tokens():
    torch.manual_seed(0)
    tok = LatentTokenizer(LatentConfig.smoke(latent_dim=C)).eval()
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    tok.fit_scale(images)
    t = tok.encode(images)
    assert t.shape == (40, 49, C)
    assert t.mean((0, 1)).abs().max() < 1e-4 and (t.std((0, 1)) - 1).abs().max() < 1e-3
    out = tok.decode(t)
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_checkpoints_load_back(tmp_path, prior):
    torch.manual_seed(0)
    tok = LatentTokenizer(LatentConfig.smoke(latent_dim=C)).eval()
    tok.fit_scale(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8))
    save_checkpoint(tok, tmp_path / "tok"); save_checkpoint(prior, tmp_path / "prior")
    tok2, prior2 = load_latent_tokenizer(tmp_path / "tok"), load_flow_prior(tmp_path / "prior")
    assert torch.equal(tok2.scale, tok.scale) and torch.equal(tok2.shift, tok.shift)
    a = sample_flow_images(tok, prior, torch.arange(2), generator=make_generator(0), steps=2)
    b = sample_flow_images(tok2, prior2, torch.arange(2), generator=make_generator(0), steps=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [0, -2, 2.5, [4] * 48, [4] * 48 + [0]])
def test_bad_steps_are_refused(prior, steps):
    with pytest.raises(ValueError, match="steps"): sample_flow(prior, torch.arange(2), steps=steps)


def test_bad_input_gets_a_clear_error(prior):
    tok = LatentTokenizer(LatentConfig.smoke(latent_dim=C + 1))
    with pytest.raises(ValueError, match="tokens"): prior.loss(torch.randn(2, 49, C + 1))          # latent shape mismatch
    with pytest.raises(ValueError, match="tokens"): prior.loss(torch.randint(0, 5, (2, 49)))
    with pytest.raises(ValueError, match="tokens"): train_flow_prior(prior, torch.randn(4, 30, C), steps=1)
    with pytest.raises(ValueError, match="tokens"): tok.decode(torch.randn(2, 49, C))
    with pytest.raises(ValueError, match="prior"): sample_flow_images(tok, prior, torch.arange(2))
    with pytest.raises(ValueError, match="images"): tok.encode(torch.zeros(2, 1, 14, 14, dtype=torch.uint8))
    with pytest.raises(ValueError, match="steps"): euler_sample(lambda x, t: x, torch.zeros(2, 1), 0)
    with pytest.raises(ValueError, match="draws"): flow_loss(lambda *a: a[0], torch.zeros(2, 1), torch.zeros(2, 1), draws=0)
    with pytest.raises(ValueError, match="cfg_scale"): sample_flow(prior, torch.arange(2), cfg_scale=-1.0)
    with pytest.raises(ValueError, match="temperature"): sample_flow(prior, torch.arange(2), temperature=-0.5)
    with pytest.raises(ValueError, match="kind"): annealed_steps(49, 8, 2, "exponential")
    with pytest.raises(ValueError, match="end"): annealed_steps(49, 8, 0)
    with pytest.raises(ValueError, match="backbone"): FlowPriorConfig(backbone=TransformerConfig(vocab_size=16).to_dict())
    with pytest.raises(ValueError, match="head"): prior_config("diffusion")
    with pytest.raises(ValueError, match="latent_dim"): LatentTokenizer(LatentConfig(latent_dim=0))


def test_flow_head_starts_as_zero_velocity():
    head = FlowHead(C, 16, width=32, depth=2)
    assert head(torch.randn(5, C), torch.rand(5), torch.randn(5, 16)).abs().max() == 0  # zero-initialised output
    assert math.isfinite(head(torch.randn(5, C), torch.rand(5, 1), torch.randn(5, 16)).sum().item())
