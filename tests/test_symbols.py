import io
from collections import Counter
import numpy as np
import pytest
import torch
from PIL import Image
from argen_lit.codec import jpeg_header, jpeg_scans
from argen_lit.core import InputError, make_generator
from argen_lit.data import jpeg_bytes, load_mnist5k
from argen_lit.symbols import (EOB, ZRL, ScanError, SymbolTokenizer, SymbolVocab, block_coefficients,
                               coefficients_to_pixels, huffman_table, parse_tables, sample_symbols, scan_symbols,
                               symbols_scan, symbols_to_tokens, tokens_to_symbols, zigzag_order)
from argen_lit.symbols import SymbolGrammar
from argen_lit.transformer import Transformer, TransformerConfig, length_batches, train_next_token


@pytest.fixture(scope="module")
def digits():
    return load_mnist5k("all")[0]


@pytest.mark.parametrize("quality", [25, 50])
def test_symbols_rewrite_every_scan_byte_for_byte(digits, quality):
    t = parse_tables(jpeg_header(quality))
    scans = jpeg_scans(digits, quality)
    assert len(scans) == 5000
    for s in scans:
        assert symbols_scan(scan_symbols(s, t), t) == s


@pytest.mark.parametrize("quality", [10, 25, 50, 75])
def test_tables_parsed_from_real_headers(quality):
    t = parse_tables(jpeg_header(quality))
    natural = np.zeros(64, dtype=int); natural[zigzag_order()] = t.quant
    f = jpeg_bytes(torch.zeros(1, 28, 28, dtype=torch.uint8), quality)
    assert list(natural) == list(Image.open(io.BytesIO(f)).quantization[0])   # Pillow's own reading, natural order
    assert (t.height, t.width) == (28, 28)
    assert sorted(t.dc.codes) == list(range(12)) and len(t.ac.codes) == 162   # Annex K: every symbol has a code
    assert t.dc.codes[0] == "00" and t.ac.codes[EOB] == "1010" and t.ac.codes[ZRL] == "11111111001"
    for table in (t.dc, t.ac):   # prefix-free: no code starts another
        codes = sorted(table.codes.values())
        assert all(not b.startswith(a) for a, b in zip(codes, codes[1:]))


def test_canonical_huffman_codes_and_bad_counts():
    assert huffman_table([0, 2, 3] + [0] * 13, list("abcde")).codes == {"a": "00", "b": "01", "c": "100", "d": "101", "e": "110"}
    with pytest.raises(InputError, match="counts"): huffman_table([3] + [0] * 15, list("abc"))   # 3 one-bit codes
    with pytest.raises(InputError, match="counts"): huffman_table([1] * 15, list("a"))


def test_byte_stuffing_round_trips(digits):
    t = parse_tables(jpeg_header(25))
    stuffed = [s for s in jpeg_scans(digits[:2000], 25) if b"\xff\x00" in s]
    assert stuffed, "no digit's scan holds a 0xFF byte"
    for s in stuffed: assert symbols_scan(scan_symbols(s, t), t) == s
    # a stream whose bits make 0xFF bytes: eight blocks of DC size 11 (code 111111110) with all-ones amplitude bits
    blocks = [[(11, 2047), (EOB, 0)]] * 16
    scan = symbols_scan(blocks, t)
    assert b"\xff\x00" in scan and b"\xff" not in scan.replace(b"\xff\x00", b"")
    assert scan_symbols(scan, t) == blocks


def test_eob_and_zrl_edge_cases():
    t = parse_tables(jpeg_header(25))
    flat = jpeg_scans(torch.full((1, 1, 28, 28), 128, dtype=torch.uint8), 25)[0]
    assert scan_symbols(flat, t) == [[(0, 0), (EOB, 0)]] * 16            # all-zero blocks: DC size 0, then EOB
    last = [(2, 3), (ZRL, 0), (ZRL, 0), (ZRL, 0), (0xE1, -1)]           # 48 zeros, 14 more, a coefficient at position 63
    blocks = [last] + [[(0, 0), (EOB, 0)]] * 15
    scan = symbols_scan(blocks, t)
    assert scan_symbols(scan, t) == blocks                                # no EOB after position 63
    coefs = block_coefficients(blocks)
    assert coefs[0, 7, 7] == -1 and coefs[0, 0, 0] == 3 and np.count_nonzero(coefs[0]) == 2
    pil = np.array(Image.open(io.BytesIO(jpeg_header(25) + scan + b"\xff\xd9")))
    assert np.abs(pil.astype(int) - coefficients_to_pixels(coefs, t)).max() <= 1
    with pytest.raises(InputError, match="block 0, symbol 0"): symbols_scan([[(0, 3), (EOB, 0)]], t)   # size 0 with a value
    with pytest.raises(InputError, match="symbol 1"): symbols_scan([[(0, 0), (0x02, 1)]], t)           # size 2, value of size 1
    with pytest.raises(ScanError, match="passes the block's end"):          # a run past position 63
        scan_symbols(symbols_scan([[(0, 0), (ZRL, 0), (ZRL, 0), (ZRL, 0), (0xF1, 1)]] + blocks[1:], t), t)


@pytest.mark.parametrize("quality", [25, 50])
def test_our_pixels_match_pillow(digits, quality):
    t, head = parse_tables(jpeg_header(quality)), jpeg_header(quality)
    worst, equal = 0, 0.0
    for im in digits[::5]:
        f = jpeg_bytes(im, quality)
        ours = coefficients_to_pixels(block_coefficients(scan_symbols(f[len(head):-2], t)), t).astype(int)
        d = np.abs(ours - np.array(Image.open(io.BytesIO(f))))
        worst, equal = max(worst, d.max()), equal + (d == 0).mean()
    assert worst <= 1 and equal / 1000 > 0.98   # libjpeg's integer IDCT rounds a few pixels the other way


def test_coefficients_match_an_independent_reader(digits, tmp_path):
    jpeglib = pytest.importorskip("jpeglib")
    t, head = parse_tables(jpeg_header(25)), jpeg_header(25)
    for i, im in enumerate(digits[::10]):
        f = jpeg_bytes(im, 25); (p := tmp_path / f"{i}.jpg").write_bytes(f)
        assert np.array_equal(jpeglib.read_dct(str(p)).Y.reshape(-1, 8, 8), block_coefficients(scan_symbols(f[len(head):-2], t)))


def test_vocab_is_a_bijection():
    v = SymbolVocab()
    ids = [v.value(x) for x in range(-255, 256)] + [v.coef(r, x) for r in range(16) for x in range(-15, 16) if x] + \
          [v.esc(r, s) for r in range(16) for s in range(5, 9)] + [v.eob, v.zrl, v.stop, v.pad]
    assert sorted(ids) == list(range(v.size))
    assert v.kind(v.coef(3, -7)) == ("coef", 3, -7) and v.kind(v.esc(15, 8)) == ("esc", 15, 8) and v.kind(v.value(-255)) == ("value", -255)
    with pytest.raises(InputError, match="joint_size"): SymbolVocab(max_size=4, joint_size=5)


def test_tokenizer_round_trip_goes_through_real_files(digits):
    tk = SymbolTokenizer(25)
    ids = tk.encode(digits[:100])
    assert ids.dtype == torch.long and (ids < tk.vocab.size).all()
    for i in range(100):
        d = tk.decode(ids[i])
        assert d.status == "clean" and d.jpeg == jpeg_bytes(digits[i], 25)
        assert torch.equal(d.image[0], torch.from_numpy(np.array(Image.open(io.BytesIO(d.jpeg)))))


def test_fuzz_ten_thousand_streams_never_raise(digits):
    tk = SymbolTokenizer(25)
    real, g, seen = tk.encode(digits[:300]), make_generator(0), Counter()
    for i in range(10_000):
        n = int(torch.randint(0, real.shape[1] + 20, (1,), generator=g))
        if i % 3 == 0: row = torch.randint(0, tk.vocab.size, (n,), generator=g)
        elif i % 3 == 1:
            row = real[i % 300].clone(); at = torch.randint(0, len(row), (3,), generator=g)
            row[at] = torch.randint(0, tk.vocab.size, (3,), generator=g)
        else: row = real[i % 300, :n]
        d = tk.decode(row)
        seen[d.status] += 1
        assert (d.image is None) == (d.status == "undecodable") == (d.jpeg is None)
        if d.image is not None:
            assert d.image.shape == (1, 28, 28) and d.image.dtype == torch.uint8
            Image.open(io.BytesIO(d.jpeg)).load()
    assert sum(seen.values()) == 10_000 and min(seen[s] for s in ("clean", "repaired", "undecodable")) > 0


def test_bad_streams_and_bad_input(digits):
    tk = SymbolTokenizer(25)
    row = tk.encode(digits[:1])[0]
    stop = int((row == tk.vocab.stop).nonzero()[0])
    assert tk.decode(row[:stop]).status == "repaired"                      # no STOP
    assert tk.decode(row[:stop // 2]).status == "repaired"                 # cut short: the rest is flat
    assert tk.decode(torch.tensor([tk.vocab.eob] * 5)).status == "undecodable"
    assert tk.decode(row[:0]).status == "undecodable"
    with pytest.raises(InputError, match="ids"): tk.decode(torch.tensor([tk.vocab.size]))   # outside the vocabulary
    with pytest.raises(InputError, match="ids"): tk.decode(torch.tensor([-1, 3]))
    with pytest.raises(InputError, match="ids"): tk.decode(row[None])                        # not one row
    for q in (0, 96, 2.5, "25"):
        with pytest.raises((InputError, TypeError), match="quality"): SymbolTokenizer(q)
    with pytest.raises(InputError, match="images"): tk.encode(digits[:2, :, :20])
    with pytest.raises(InputError, match="max_size"): SymbolTokenizer(95).encode(digits[:20])  # values beyond 8 bits
    with pytest.raises(InputError, match="length"): tk.encode(digits[:2], length=10)
    with pytest.raises(ScanError): scan_symbols(b"\x00" * 3, tk.tables)                     # runs out mid-stream
    with pytest.raises(ScanError, match="marker"): scan_symbols(b"\x12\xff\xd9", tk.tables)
    with pytest.raises(InputError, match="symbols|blocks"): symbols_to_tokens([[(0, 300), (EOB, 0)]], tk.vocab)


def test_unsupported_jpegs_are_refused():
    buf = io.BytesIO(); Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "JPEG", progressive=True)
    with pytest.raises(InputError, match="baseline"): parse_tables(buf.getvalue())
    buf = io.BytesIO(); Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG")
    with pytest.raises(InputError, match="grey"): parse_tables(buf.getvalue())


def test_sample_symbols_is_seeded_and_checks_the_model():
    tk = SymbolTokenizer(25)
    lm = Transformer(TransformerConfig(vocab_size=tk.vocab.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=40)).eval()
    a = sample_symbols(lm, torch.arange(4), tk, 39, cfg_scale=2.0, generator=make_generator(3))
    b = sample_symbols(lm, torch.arange(4), tk, 39, cfg_scale=2.0, generator=make_generator(3))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[0].shape == (4, 1, 28, 28)
    assert all(s in ("clean", "repaired", "undecodable") for s in a[1])
    wrong = Transformer(TransformerConfig(vocab_size=258, d_model=32, n_layers=1, n_heads=2, max_seq_len=40))
    with pytest.raises(InputError, match="vocab_size"): sample_symbols(wrong, torch.arange(2), tk, 10)
    with pytest.raises(InputError, match="max_len"): sample_symbols(lm, torch.arange(2), tk, 40)


def test_sketch_nucleus_covers_the_dc_tokens_only(monkeypatch):
    "sketch_top_p is the nucleus of the first n_blocks tokens (the DC sketch), top_p the rest's, cut to max_len."
    import argen_lit.symbols as S
    tk = SymbolTokenizer(25)
    lm = Transformer(TransformerConfig(vocab_size=tk.vocab.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=40)).eval()
    seen, real = [], S.generate
    monkeypatch.setattr(S, "generate", lambda *a, **kw: seen.append(kw["top_p"]) or real(*a, **kw))
    sample_symbols(lm, torch.arange(2), tk, 39, top_p=0.2, sketch_top_p=0.5, generator=make_generator(0))
    sample_symbols(lm, torch.arange(2), tk, 10, sketch_top_p=0.5, generator=make_generator(0))
    sample_symbols(lm, torch.arange(2), tk, 39, top_p=0.2, generator=make_generator(0))
    sample_symbols(lm, torch.arange(2), tk, 39, sketch_top_p=0.5, generator=make_generator(0))
    assert seen[0] == [0.5] * tk.n_blocks + [0.2] * (39 - tk.n_blocks) and seen[1] == [0.5] * 10 and seen[2] == 0.2
    assert seen[3] == [0.5] * tk.n_blocks + [None] * (39 - tk.n_blocks)   # details without a nucleus
    with pytest.raises(InputError, match="sketch_top_p"): sample_symbols(lm, torch.arange(2), tk, 39, sketch_top_p=0.0)
    with pytest.raises(InputError, match="top_p"): sample_symbols(lm, torch.arange(2), tk, 39, top_p=[0.2], sketch_top_p=0.5)


def test_length_batches_cut_padding_and_keep_the_loss():
    g = make_generator(0)
    lens = torch.randint(1, 30, (64,), generator=g)
    toks = torch.where(torch.arange(30)[None] < lens[:, None], torch.randint(0, 9, (64, 30), generator=g), 9)
    it = length_batches(toks, torch.zeros(64, dtype=torch.long), lens, batch_size=8, pool=4)
    seen = []
    for _ in range(8):   # one pass
        xb, yb = next(it)
        assert len(xb) == len(yb) == 8 and (xb[:, -1] != 9).any()   # cut to its longest row: the last column is real
        seen += (xb != 9).sum(1).tolist()
    assert sorted(seen) == sorted(lens.tolist())                     # every sequence once, none cut short
    lm = Transformer(TransformerConfig(vocab_size=10, d_model=32, n_layers=1, n_heads=2, max_seq_len=31, label_dropout=0.0)).eval()
    x = toks[:8]; L = int(lens[:8].max())
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(lm(x[:, :-1]).transpose(1, 2), x, ignore_index=9)
        cut = torch.nn.functional.cross_entropy(lm(x[:, :L - 1]).transpose(1, 2), x[:, :L], ignore_index=9)
    assert torch.allclose(full, cut, atol=1e-6)   # padding never counted: cutting it keeps the loss
    with pytest.raises(InputError, match="bucket_by_length"): train_next_token(lm, toks, steps=1, bucket_by_length=True)
    with pytest.raises(InputError, match="lengths"): length_batches(toks, None, lens[:5], 8)   # refused at the call
    with pytest.raises(InputError, match="batch_size"): length_batches(toks, None, lens, 65)
    odd = length_batches(toks[:60], None, lens[:60], 8, pool=2)      # 60 = 7 batches of 8 + 4 left out at random
    assert all(len(next(odd)) == 8 for _ in range(30))
    with pytest.raises(InputError, match="only pad_token"):
        train_next_token(lm, torch.full((4, 5), 9), steps=1, pad_token=9, bucket_by_length=True)


def test_constrained_sampling_is_always_well_formed():
    tk = SymbolTokenizer(25)
    lm = Transformer(TransformerConfig(vocab_size=tk.vocab.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=400)).eval()
    imgs, st, files = sample_symbols(lm, torch.arange(6), tk, 399, generator=make_generator(0), constrained=True)
    assert st == ["clean"] * 6 and all(f is not None for f in files)   # an untrained model, kept inside the grammar
    free = sample_symbols(lm, torch.arange(6), tk, 399, generator=make_generator(0))[1]
    assert "clean" not in free                                           # without the grammar it never stops cleanly


def test_fit_symbols_trains_loads_and_samples(tmp_path):
    from dataclasses import replace
    from argen_lit.recipes import BUDGETS, load_data
    from argen_lit.symbols import fit_symbols
    b = replace(BUDGETS["smoke"], slow_steps=2)
    data = load_data(b)
    c = fit_symbols(b, data, tmp_path, torch.device("cpu"))
    assert c.train_seconds > 0 and c.note.startswith("JPEG symbols until STOP")
    imgs = c.sample(torch.tensor([3, 7]), make_generator(0))
    assert imgs.dtype == torch.uint8 and imgs.shape == (2, 1, 28, 28)
    again = fit_symbols(b, data, tmp_path, torch.device("cpu"))           # loaded, not retrained
    assert again.train_seconds == pytest.approx(c.train_seconds)


def test_grammar_and_parser_agree():
    tk = SymbolTokenizer(25); v = tk.vocab
    g = SymbolGrammar(v, tk.n_blocks)
    # a ZRL over positions 48..63 ends its block with no EOB: the parser, the decoder and the grammar all accept it
    row = [v.value(0)] * 16 + [v.coef(14, 1), v.coef(15, 1), v.coef(15, 1), v.zrl] + [v.eob] * 15 + [v.stop]
    assert tokens_to_symbols(row, v, 16)[1] and tk.decode(torch.tensor(row)).status == "clean"
    walk, ids = g.follower()[0], torch.tensor([row])
    for i in range(ids.shape[1]): assert walk(ids[:, :i])[0, ids[0, i]], i
    walk, rows, gen = g.follower()[0], torch.empty(200, 0, dtype=torch.long), make_generator(0)
    for _ in range(800):   # random walks inside the grammar: every one is well formed and stops after 16 blocks
        rows = torch.cat([rows, torch.multinomial(walk(rows).float(), 1, generator=gen)], 1)
    for r in rows:
        assert tokens_to_symbols(r.tolist(), v, 16)[1] and tk.decode(r).status == "clean"


def test_dc_tokens_are_each_blocks_own_dc(digits):
    tk = SymbolTokenizer(25); v = tk.vocab
    ids = tk.encode(digits[:200])
    places = tk.grammar.walk(ids)[:, :-1]                                  # the place of every token
    for row, place, s in zip(ids, places, jpeg_scans(digits[:200], 25)):
        dc_tokens = row[place[:, 0] == 0]                                  # the tokens that go at a block's DC
        dc = block_coefficients(scan_symbols(s, tk.tables))[:, 0, 0]
        assert [v.kind(int(t)) for t in dc_tokens] == [("value", int(d)) for d in dc]
    flat = torch.tensor([v.value(5), v.eob, v.stop])                       # one DC written, the rest missing:
    img = tk.decode(flat).image                                            # they repeat it, so all 16 blocks are flat
    assert tk.decode(flat).status == "repaired" and int(img.max()) - int(img.min()) <= 1
    dcs = ids[:, :tk.n_blocks]                                             # every DC first, then the AC tokens
    assert all(v.kind(int(t))[0] == "value" for t in dcs.flatten()) and (places[:, tk.n_blocks:, 0] != 0).all()
    sketch = [v.value(40 * (b % 2) - 20) for b in range(tk.n_blocks)]     # DCs alone, cut before any AC token:
    img = tk.decode(torch.tensor(sketch)).image.float()                    # a 4x4 sketch of flat blocks, kept
    assert img[0, :8, :8].mean() < 100 < img[0, :8, 8:16].mean()


def test_walk_and_follower_agree_and_refuse_skips():
    tk = SymbolTokenizer(25); g = tk.grammar
    assert g is tk.grammar and g.state_sizes == (g.end_state + 1, tk.n_blocks + 1)
    constrain, states = g.follower()
    rows, seen, gen = torch.empty(50, 0, dtype=torch.long), [], make_generator(1)
    for _ in range(300):   # random rows, half inside the grammar and half anything: both followed alike
        seen.append(states(rows))
        free = torch.randint(0, tk.vocab.size, (50, 1), generator=gen)
        inside = torch.multinomial(constrain(rows).float(), 1, generator=gen)
        rows = torch.cat([rows, torch.where(torch.arange(50)[:, None] < 25, inside, free)], 1)
    seen.append(states(rows))
    assert torch.equal(torch.stack(seen, 1), g.walk(rows))
    assert (g.walk(rows)[:, :, 1] <= tk.n_blocks).all()
    with pytest.raises(InputError, match="one new token per call"): states(rows[:, :5])
    with pytest.raises(InputError, match="tokens"): g.walk(torch.full((2, 3), tk.vocab.size))


def test_a_model_that_reads_places_trains_and_samples(digits):
    tk = SymbolTokenizer(25)
    ids = tk.encode(digits[:64]); T = ids.shape[1]
    lm = Transformer(TransformerConfig(vocab_size=tk.vocab.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=T + 1,
                                       state_sizes=tk.grammar.state_sizes))
    places = tk.grammar.walk(ids)[:, :-1]
    bits = train_next_token(lm, ids, torch.zeros(64, dtype=torch.long), steps=30, batch_size=16, lr=3e-3,
                            pad_token=tk.vocab.pad, bucket_by_length=True, states=places)
    assert bits[-1] < bits[0]
    a = sample_symbols(lm.eval(), torch.arange(3), tk, T, cfg_scale=2.0, generator=make_generator(0))
    b = sample_symbols(lm, torch.arange(3), tk, T, cfg_scale=2.0, generator=make_generator(0))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    with pytest.raises(InputError, match="states"): lm(ids[:2, :-1])   # a model that reads places needs them
