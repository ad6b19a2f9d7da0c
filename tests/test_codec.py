import io
import random
import numpy as np
import pytest
import torch
from PIL import Image
from argen_lit.codec import (BYTE_VOCAB, EOS, PAD, decode_scan, jpeg_header, jpeg_scans, repair_scan,
                             sample_jpeg, scans_to_tokens, splice_header, strip_header, tokens_to_scan)
from argen_lit.core import make_generator
from argen_lit.data import jpeg_bytes, load_mnist5k
from argen_lit.transformer import Transformer, TransformerConfig


@pytest.fixture(scope="module")
def digits():
    return load_mnist5k("all")[0]


@pytest.mark.parametrize("quality", [25, 50])
def test_header_strip_splice_is_byte_exact_on_the_whole_dataset(digits, quality):
    head = jpeg_header(quality)
    for im in digits:
        f = jpeg_bytes(im, quality)
        assert f.startswith(head)
        assert splice_header(strip_header(f, quality), quality) == f


def test_scans_decode_to_what_pillow_decodes(digits):
    for im in digits[:50]:
        f = jpeg_bytes(im, 25)
        d = decode_scan(strip_header(f, 25), 25)
        assert d.status == "clean"
        assert torch.equal(d.image[0], torch.from_numpy(np.array(Image.open(io.BytesIO(f)))))


def test_repair_handles_truncated_garbled_and_empty(digits):
    scan = jpeg_scans(digits[:1], 25)[0]
    assert repair_scan(scan) == scan                                   # valid scans are left alone
    assert repair_scan(scan[:30] + b"\xff\xd9" + scan[30:]) == scan[:30]  # first valid span only
    assert repair_scan(scan[:30] + b"\xff") == scan[:30]                # dangling 0xFF dropped
    assert repair_scan(b"\x12\xff\x00\x34") == b"\x12\xff\x00\x34"      # stuffed 0xFF 0x00 is legal
    truncated = decode_scan(scan[:len(scan) // 2], 25)
    assert truncated.status in ("clean", "repaired") and truncated.image.shape == (1, 28, 28)
    garbled = decode_scan(scan[:30] + b"\xff\xc4\x00\x10" + scan[30:], 25)
    assert garbled.status == "repaired" and garbled.image.shape == (1, 28, 28)
    for nothing in (b"", b"\xff", b"\xff\xd9", bytearray()):
        assert decode_scan(nothing, 25) == (None, "undecodable")


def test_fuzz_ten_thousand_streams_never_raise(digits):
    rng = random.Random(0)
    scans = jpeg_scans(digits[::50], 25)
    seen = {"clean": 0, "repaired": 0, "undecodable": 0}
    for i in range(10_000):
        kind = i % 4
        if kind == 0:                                                  # random bytes of random length
            s = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        else:
            s = bytearray(rng.choice(scans))
            if kind == 1:                                              # flipped bytes
                for _ in range(rng.randrange(1, 6)): s[rng.randrange(len(s))] = rng.randrange(256)
            elif kind == 2:                                            # inserted markers
                for _ in range(rng.randrange(1, 4)):
                    k = rng.randrange(len(s) + 1); s[k:k] = bytes([0xFF, rng.randrange(256)])
            s = bytes(s[:rng.randrange(len(s) + 1)]) if kind == 3 else bytes(s)  # truncated
        d = decode_scan(s, 25)
        seen[d.status] += 1
        assert (d.image is None) == (d.status == "undecodable")
        if d.image is not None: assert d.image.dtype == torch.uint8 and d.image.shape == (1, 28, 28)
    assert sum(seen.values()) == 10_000 and seen["repaired"] > 0 and seen["undecodable"] > 0


def test_tokens_round_trip_and_limits():
    scans = [b"\x01\x02", b"", b"\xff\x00\x10"]
    t = scans_to_tokens(scans, 4)
    assert t.shape == (3, 5) and t[0].tolist() == [1, 2, EOS, PAD, PAD] and t[1, 0] == EOS
    assert [tokens_to_scan(r) for r in t] == scans
    assert tokens_to_scan(torch.tensor([5, 6])) == b"\x05\x06"          # no EOS: the whole row
    with pytest.raises(ValueError, match="max_len"):
        scans_to_tokens([b"\x00" * 5], 4)


def test_sampler_is_seeded_and_always_returns_images():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=BYTE_VOCAB, max_seq_len=40)).eval()
    labels = torch.tensor([0, 4, 9])
    a = sample_jpeg(m, labels, max_len=30, generator=make_generator(2))
    b = sample_jpeg(m, labels, max_len=30, generator=make_generator(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert a[0].shape == (3, 1, 28, 28) and set(a[1]) <= {"clean", "repaired", "undecodable"}
    assert all(len(s) <= 30 for s in a[2])
    with pytest.raises(ValueError, match="vocab_size"):
        sample_jpeg(Transformer(TransformerConfig.smoke(vocab_size=17)), labels, max_len=10)


def test_bad_input_gets_clear_errors(digits):
    with pytest.raises(ValueError, match="quality"):
        jpeg_bytes(digits[0], 0)
    with pytest.raises(TypeError, match="image"):
        jpeg_bytes(digits[0].float(), 25)
    with pytest.raises(ValueError, match="image"):
        jpeg_bytes(digits[:2], 25)
    with pytest.raises(ValueError, match="data"):
        strip_header(jpeg_bytes(digits[0], 50), 25)                    # another quality's header
    with pytest.raises(ValueError, match="data"):
        strip_header(b"not a jpeg", 25)
