import json
import pytest
import torch
from argen_lit.core import InputError, load_checkpoint, load_model, make_generator, save_checkpoint
from argen_lit.transformer import (Transformer, TransformerConfig, apply_rope, attention_mask, cfg_logits,
                                   filter_logits, generate, next_token_bits, rope_angles, sample_logits,
                                   train_next_token)

V = 11


def model(**kw):
    torch.manual_seed(0)
    cfg = TransformerConfig.smoke(vocab_size=V, n_classes=4, max_seq_len=40, **kw)
    return Transformer(cfg).eval()


def tokens(B=2, T=24, seed=0):
    return torch.randint(0, V, (B, T), generator=make_generator(seed))


@pytest.mark.parametrize("rope", ["1d", "2d", "none"])
def test_causal_future_tokens_do_not_change_past_logits(rope):
    m = model(rope=rope, grid=(5, 5) if rope == "2d" else ())
    x, y = tokens(), torch.tensor([1, 2])
    base = m(x, y)
    for j in (0, 7, 23):
        x2 = x.clone(); x2[:, j] = (x2[:, j] + 3) % V
        out = m(x2, y)
        # input token j sits at position j + 1 (after the class token): positions <= j must not move
        torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, j + 1:], base[:, j + 1:])


def test_causal_by_gradient_on_embeddings():
    m = model()
    e = torch.randn(1, 12, m.config.d_model, requires_grad=True)
    h = m(embeds=e, return_hidden=True)  # (1, 13, d): class token + 12 inputs
    for i in range(13):
        (g,) = torch.autograd.grad(h[0, i].sum(), e, retain_graph=True)
        seen = g[0].abs().sum(-1) > 0
        assert not seen[i:].any(), f"output {i} depends on inputs >= {i}"  # input j is position j + 1


@pytest.mark.parametrize("chunks", [[24], [1] * 24, [5, 1, 1, 10, 7], [0, 24]])
def test_kv_cache_decoding_equals_full_forward(chunks):
    m = model()
    x, y = tokens(), torch.tensor([0, 3])
    full = m(x, y)
    cache, outs, at = m.new_cache(2), [], 0
    for n in chunks:
        outs.append(m(x[:, at:at + n], y if at == 0 and not outs else None, cache=cache)); at += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)
    assert cache.length == 25


def test_kv_cache_with_block_causal_mask_equals_full_forward():
    m = model()
    sizes = [1, 1, 4, 9, 10]  # class token block, then blocks as in next-scale prediction
    x, y = tokens(T=24), torch.tensor([1, 2])
    full = m(x, y, mask="block_causal", block_sizes=sizes)
    cache, outs, at = m.new_cache(2), [], 0
    outs.append(m(x[:, :0], y, mask="block_causal", block_sizes=sizes, cache=cache))
    for n in sizes[1:]:
        outs.append(m(x[:, at:at + n], mask="block_causal", block_sizes=sizes, cache=cache)); at += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)


def test_cache_crop_then_redecode_matches():
    m = model()
    x, y = tokens(), torch.tensor([0, 1])
    full = m(x, y)
    cache = m.new_cache(2)
    m(x[:, :10], y, cache=cache)
    m(torch.zeros(2, 5, dtype=torch.long), cache=cache)  # a wrong guess ...
    cache.crop(11)                                       # ... rolled back
    torch.testing.assert_close(m(x[:, 10:], cache=cache), full[:, 11:], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="length"):
        cache.crop(99)


def test_block_causal_mask_sees_only_earlier_or_same_blocks():
    sizes = [1, 2, 3, 4]
    m, _ = attention_mask("block_causal", 10, 10, sizes)
    block = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    for i in range(10):
        for j in range(10):
            assert m[i, j] == (block[j] <= block[i])
    # with a cache: the last block's 4 queries see all 10 keys
    tail, _ = attention_mask("block_causal", 4, 10, sizes)
    assert tail.all()
    with pytest.raises(ValueError, match="block_sizes"):
        attention_mask("block_causal", 10, 10, [1, 2])
    with pytest.raises(ValueError, match="block_sizes"):
        attention_mask("block_causal", 3, 3, None)


def test_full_mask_is_bidirectional():
    m = model()
    x, y = tokens(), torch.tensor([1, 2])
    base = m(x, y, mask="full")
    x2 = x.clone(); x2[:, -1] = (x2[:, -1] + 1) % V
    assert not torch.allclose(m(x2, y, mask="full")[:, 0], base[:, 0])  # the first position sees the last token


def test_custom_bool_mask_matches_named_mask():
    m = model()
    x, y = tokens(), torch.tensor([1, 2])
    tril = torch.ones(25, 25, dtype=torch.bool).tril()
    torch.testing.assert_close(m(x, y, mask=tril), m(x, y), atol=1e-6, rtol=0)


@pytest.mark.parametrize("axes", [1, 2])
def test_rope_scores_depend_only_on_relative_position(axes):
    g = make_generator(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    def score(m, n):
        pos = torch.tensor([[m] * axes, [n] * axes])
        a = rope_angles(pos, 16)
        return (apply_rope(q[None], a[:1]) * apply_rope(k[None], a[1:])).sum().item()
    assert score(2, 0) == pytest.approx(score(30, 28), abs=1e-4)
    assert score(5, 9) == pytest.approx(score(105, 109), abs=1e-4)
    assert score(2, 0) != pytest.approx(score(3, 0), abs=1e-4)  # but the offset itself matters


def test_same_seed_same_samples_and_cfg_changes_them():
    m = model()
    y = torch.tensor([0, 1, 2, 3])
    a = generate(m, 20, y, generator=make_generator(5), top_k=5)
    b = generate(m, 20, y, generator=make_generator(5), top_k=5)
    c = generate(m, 20, y, generator=make_generator(6), top_k=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 20) and a.min() >= 0 and a.max() < V
    d = generate(m, 20, y, generator=make_generator(5), top_k=5, cfg_scale=3.0)
    assert not torch.equal(a, d)
    u = generate(m, 5, batch_size=3, generator=make_generator(0))
    assert u.shape == (3, 5)


def test_generate_matches_uncached_greedy_decoding():
    m = model()
    y = torch.tensor([2, 3])
    out = generate(m, 10, y, temperature=0)
    seq = torch.empty(2, 0, dtype=torch.long)
    for _ in range(10):
        nxt = m(seq, y)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_label_dropout_uses_null_class_only_in_training():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=V, n_classes=4, label_dropout=1.0))
    x, y = tokens(), torch.tensor([1, 2])
    m.train()
    dropped = m(x, y)
    m.eval()
    torch.testing.assert_close(dropped, m(x, torch.tensor([4, 4])))  # id 4 = the null class
    assert not torch.allclose(m(x, y), dropped)


def test_sampling_filters_and_cfg_convention():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    draws = sample_logits(logits.expand(500, 4), top_k=1, generator=make_generator(0))
    assert (draws == 0).all()
    cond, unc = torch.tensor([2.0]), torch.tensor([1.0])
    assert cfg_logits(cond, unc, 1.0) == cond and cfg_logits(cond, unc, 0.0) == unc and cfg_logits(cond, unc, 3.0) == 4.0


def test_top_p_per_position():
    "A sequence of nuclei gives each position its own: a tiny one makes its position greedy, the others still vary."
    m, y = model(), torch.zeros(64, dtype=torch.long)   # one label: every row draws from the same distributions
    assert torch.equal(generate(m, 6, y, top_p=0.7, generator=make_generator(0)),
                       generate(m, 6, y, top_p=[0.7] * 6, generator=make_generator(0)))
    out = generate(m, 6, y, top_p=[1e-6, 1.0, 1.0, 1e-6, 1.0, 1.0], generator=make_generator(0))
    first = out[:, 0]
    assert (first == first[0]).all() and len(out[:, 1].unique()) > 1   # greedy at 0; at 1 the whole distribution
    assert torch.equal(generate(m, 6, y, generator=make_generator(1)),   # None: no nucleus at that position
                       generate(m, 6, y, top_p=[None] * 6, generator=make_generator(1)))
    assert torch.equal(generate(m, 6, y, top_p=0.7, generator=make_generator(0)),
                       generate(m, 6, y, top_p=torch.full((6,), 0.7), generator=make_generator(0)))
    for bad, match in (([0.5] * 5, "one value per position"), ([0.5] * 5 + [1.5], r"top_p\[5\]: .*<= 1"),
                       ("0.5", "a sequence of 6"), (iter([0.5] * 6), "a sequence of 6"), ([0.5] * 5 + [True], r"top_p\[5\]"),
                       (1.5, "top_p: .*<= 1")):
        with pytest.raises(InputError, match=match): generate(m, 6, y, top_p=bad)


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    m = model()
    save_checkpoint(m, tmp_path)
    m2 = load_checkpoint(Transformer(m.config).eval(), tmp_path)
    y = torch.tensor([0, 1])
    assert torch.equal(generate(m, 12, y, generator=make_generator(3)), generate(m2, 12, y, generator=make_generator(3)))
    with pytest.raises(ValueError, match="d_model"):
        load_checkpoint(Transformer(TransformerConfig.smoke(vocab_size=V, n_classes=4, max_seq_len=40, d_model=32)), tmp_path)


def test_continuous_inputs_without_vocab():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=0, n_classes=2))
    h = m(embeds=torch.randn(3, 7, 64), labels=torch.tensor([0, 1, 2]), mask="full")
    assert h.shape == (3, 8, 64)
    with pytest.raises(ValueError, match="embeds"):
        m(tokens=torch.zeros(3, 7, dtype=torch.long))


def test_bad_input_gets_clear_errors():
    m = model()
    x, y = tokens(), torch.tensor([1, 2])
    with pytest.raises(TypeError, match="tokens"):
        m(x.float(), y)
    with pytest.raises(ValueError, match="tokens"):
        m(x + V, y)
    with pytest.raises(ValueError, match="tokens"):
        m(x - 100, y)
    with pytest.raises(ValueError, match="tokens"):
        m(x[0], y)  # missing batch dimension
    with pytest.raises(ValueError, match="labels"):
        m(x, torch.tensor([1, 9]))
    with pytest.raises(ValueError, match="labels"):
        m(x, torch.tensor([1]))
    with pytest.raises(ValueError, match="mask"):
        m(x, y, mask="diagonal")
    with pytest.raises(TypeError, match="mask"):
        m(x, y, mask=torch.ones(25, 25))
    with pytest.raises(ValueError, match="mask"):
        m(x, y, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens/embeds"):
        m(labels=y)
    with pytest.raises(ValueError, match="positions"):
        m(torch.zeros(2, 45, dtype=torch.long), y)  # longer than max_seq_len
    cache = m.new_cache(2, max_len=5)
    with pytest.raises(ValueError, match="cache"):
        m(x, y, cache=cache)
    assert cache.length == 0  # refused before anything was written
    with pytest.raises(ValueError, match="cache"):
        m(x[:1, :2], y[:1], cache=cache)
    cache = m.new_cache(2)
    m(x[:, :3], y, cache=cache)
    with pytest.raises(ValueError, match="labels"):
        m(x[:, 3:4], y, cache=cache)  # the class token is already in the cache
    with pytest.raises(ValueError, match="n_heads"):
        TransformerConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="rope"):
        TransformerConfig(rope="3d")
    with pytest.raises(ValueError, match="grid"):
        TransformerConfig(rope="2d")
    with pytest.raises(ValueError, match="cfg_scale"):
        generate(m, 4, y, cfg_scale=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(torch.zeros(1, 3), top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(torch.zeros(1, 3), top_p=1.5)
    with pytest.raises(ValueError, match="n_tokens"):
        generate(m, 0, y)


def test_train_next_token_learns_a_class_dependent_sequence_and_is_deterministic():
    labels = torch.arange(64) % 4
    seqs = (labels[:, None] + torch.arange(12)[None]) % V          # each class: its own fixed sequence
    runs = []
    for _ in range(2):
        m = model(); m.train()
        losses = train_next_token(m, seqs, labels, steps=60, batch_size=16, lr=3e-3)
        runs.append(losses)
    assert runs[0] == runs[1]                                        # same seed, same data order, same losses
    bits = next_token_bits(m, seqs, labels)
    assert bits < 0.5 < losses[0] and not m.training
    assert abs(next_token_bits(model(), seqs, labels) - 3.46) < 0.5  # untrained: about log2(11) bits
    with pytest.raises(ValueError, match="steps"):
        train_next_token(m, seqs, labels, steps=0)
    with pytest.raises(ValueError, match="tokens"):
        train_next_token(m, seqs[0], labels, steps=1)


def test_generate_stops_early_on_stop_token_and_pads_finished_rows():
    m = model()
    with torch.no_grad(): m.head.weight.zero_()                 # uniform logits: the stop token comes soon
    full = generate(m, 30, torch.tensor([0, 1, 2, 3]), generator=make_generator(0))
    stopped = generate(m, 30, torch.tensor([0, 1, 2, 3]), generator=make_generator(0), stop_token=3)
    T = stopped.shape[1]
    assert T <= 30 and torch.equal(stopped[:, :1], full[:, :1])
    for row in stopped:
        hits = (row == 3).nonzero()
        if len(hits): assert (row[hits[0, 0]:] == 3).all()       # once drawn, the stop token repeats
    if T < 30: assert (stopped[:, -1] == 3).all()                 # stopped early only when every row finished


def test_pad_token_is_left_out_of_the_loss():
    m = model()
    seqs = tokens(4, 10)
    padded = torch.cat([seqs, torch.full((4, 6), V - 1)], 1)
    seqs = seqs.clamp(max=V - 2)
    padded[:, :10] = seqs
    a = next_token_bits(m, seqs, torch.zeros(4, dtype=torch.long))
    b = next_token_bits(m, padded, torch.zeros(4, dtype=torch.long), pad_token=V - 1)
    assert abs(a - b) < 1e-5                                     # the padded tail changes nothing


def prefix_states(seqs: torch.Tensor) -> torch.Tensor:
    "Toy per-token states (B, T + 1, 2) of every prefix: (zeros seen so far, capped at 4; the last token mod 3)."
    zeros = torch.cat([torch.zeros(len(seqs), 1, dtype=torch.long), (seqs == 0).long().cumsum(1)], 1).clamp(max=4)
    last = torch.cat([torch.zeros(len(seqs), 1, dtype=torch.long), seqs % 3], 1)
    return torch.stack([zeros, last], -1)


def test_per_token_states_are_read_causally_and_cached_decoding_equals_full_forward():
    m, x, y = model(state_sizes=(5, 3)), tokens(), torch.tensor([1, 2])
    st = prefix_states(x)[:, :-1]                                # the positions that read the class token and x[:, :-1]
    base = m(x[:, :-1], y, states=st)
    other = st.clone(); other[:, 10:, 0] = (other[:, 10:, 0] + 1) % 5
    moved = m(x[:, :-1], y, states=other)
    torch.testing.assert_close(moved[:, :10], base[:, :10], atol=1e-6, rtol=0)   # later states leave earlier logits alone
    assert (moved[:, 10:] - base[:, 10:]).abs().amax() > 1e-3                   # and do change their own positions
    follow = lambda seq: prefix_states(seq)[:, -1]              # generate's hook: the state after the tokens so far
    outs = [generate(m, 12, y, cfg_scale=2.0, generator=make_generator(3), cache=c, states=follow) for c in ("static", "growing", "none")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    greedy = generate(m, 10, y, temperature=0, states=follow)   # the cache path equals teacher forcing on its own output
    assert torch.equal(m(greedy[:, :-1], y, states=prefix_states(greedy)[:, :-1]).argmax(-1), greedy)


def test_states_carry_information_the_tokens_do_not():
    g = make_generator(0)
    keys = torch.randint(0, 5, (96,), generator=g)               # a per-row key that only the states hold
    seqs = torch.randint(5, V, (96, 12), generator=g)
    seqs[:, 1::2] = keys[:, None]                               # every other token is the key
    st = torch.stack([keys[:, None].expand(-1, 12), torch.zeros(96, 12, dtype=torch.long)], -1)
    labels = torch.zeros(96, dtype=torch.long)
    with_states = model(state_sizes=(5, 1)).train()
    train_next_token(with_states, seqs, labels, steps=80, batch_size=32, lr=3e-3, states=st)
    without = model().train()
    train_next_token(without, seqs, labels, steps=80, batch_size=32, lr=3e-3)
    # the key costs log2(5) = 2.3 bits at its first appearance without states, and nothing with them
    assert next_token_bits(with_states, seqs, labels, states=st) + 0.1 < next_token_bits(without, seqs, labels)


def test_states_bad_input_gets_clear_errors():
    m, x, y = model(state_sizes=(5, 3)), tokens(), torch.tensor([1, 2])
    st = prefix_states(x)[:, :-1]
    with pytest.raises(ValueError, match="states"): m(x[:, :-1], y)                          # forgotten
    with pytest.raises(ValueError, match="states"): m(x[:, :-1], y, states=st[:, :-1])       # one position short
    with pytest.raises(ValueError, match=r"states\[\.\.\., 1\]"): m(x[:, :-1], y, states=st + torch.tensor([0, 3]))  # past axis 1's size
    with pytest.raises(ValueError, match="state_sizes"): model()(x, y, states=st)            # a model without states
    with pytest.raises(ValueError, match="states"): generate(m, 5, y)
    with pytest.raises(ValueError, match="states"): generate(model(), 5, y, states=lambda s: prefix_states(s)[:, -1])
    with pytest.raises(ValueError, match="states"): train_next_token(m.train(), x, y, steps=1, states=st[:, :5])
    with pytest.raises(ValueError, match="state_sizes"): TransformerConfig(state_sizes=(4, 0))


def test_checkpoints_saved_before_state_sizes_load_without_states_and_other_gaps_are_refused(tmp_path):
    m = model()
    save_checkpoint(m, tmp_path / "m")
    cfg_file = tmp_path / "m" / "config.json"
    rec = json.loads(cfg_file.read_text())
    del rec["config"]["state_sizes"]                             # as written before the field existed
    cfg_file.write_text(json.dumps(rec))
    old = load_model(Transformer, TransformerConfig, tmp_path / "m")
    assert old.config.state_sizes == () and old.config == m.config
    x, y = tokens(), torch.tensor([1, 2])
    torch.testing.assert_close(old.eval()(x, y), m(x, y))
    assert TransformerConfig.from_dict({**m.config.to_dict(), "state_sizes": [5, 3]}).state_sizes == (5, 3)
    rec["config"].pop("d_model"); cfg_file.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="missing field.*d_model"):   # any other gap is still refused by name
        load_model(Transformer, TransformerConfig, tmp_path / "m")


def test_class_at_every_position_reaches_each_input_and_decodes_the_same_with_any_cache():
    x, a, b = tokens(), torch.tensor([0, 3]), torch.tensor([1, 2])
    for every in (False, True):
        m = model(class_every_position=every)
        for blk in m.blocks: blk.attn.proj.weight.data.zero_()   # no attention: a position sees only its own input
        moved = (m(x, a) - m(x, b)).abs().amax(-1)[0]             # per position: does the label reach it?
        assert moved[0] > 1e-3                                   # the class token itself, always
        assert (moved[1:] > 1e-3).all() if every else (moved[1:] == 0).all()
    m = model(class_every_position=True)
    full, cache, outs, at = m(x, a), m.new_cache(2), [], 0
    for n in (5, 1, 1, 10, 7):                                   # chunked decoding: the cache keeps the class vectors
        outs.append(m(x[:, at:at + n], a if at == 0 else None, cache=cache)); at += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)
    samples = [generate(m, 12, a, cfg_scale=2.0, generator=make_generator(3), cache=c) for c in ("static", "growing", "none")]
    assert torch.equal(samples[0], samples[1]) and torch.equal(samples[0], samples[2])
    stale = m.new_cache(2); stale.length = 3                     # a cache that never saw the class token
    with pytest.raises(ValueError, match="class vectors"): m(x[:, :1], cache=stale)
