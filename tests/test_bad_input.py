"""The bad-input table: what a user gets for wrong arguments, files and command lines, module by module.

Every row of ERRORS must raise an error that argen_lit itself raised (not one from deep inside torch, numpy or
Pillow) whose message names the argument, file or folder at fault. Every row of RESULTS is a legitimate edge case
that must give the right answer. The CLI rows run `argen-lit` in-process: a user error prints one line and exits 2."""
import json, os
from pathlib import Path
import pytest
import torch
import argen_lit.accel as A
import argen_lit.codec as C
import argen_lit.core as core
import argen_lit.data as D
import argen_lit.eval as E
import argen_lit.flow_heads as FH
import argen_lit.leaderboard as LB
import argen_lit.masked as M
import argen_lit.next_scale as NS
import argen_lit.pixels as P
import argen_lit.recipes as R
import argen_lit.transformer as T
import argen_lit.vq as V
import argen_lit.watermark as W
from argen_lit.cli import find_notebooks, main, run_course

NAN, INF = float("nan"), float("inf")
LAB = torch.tensor([1, 2])
EMPTY = torch.zeros(0, dtype=torch.long)


def g(): return torch.Generator().manual_seed(0)


torch.manual_seed(0)
PRIOR = T.Transformer(T.TransformerConfig.smoke(vocab_size=16, max_seq_len=10))
MASKED = T.Transformer(T.TransformerConfig.smoke(vocab_size=17, max_seq_len=10, rope="2d", grid=(3, 3), abs_pos=True))
BYTES = T.Transformer(T.TransformerConfig.smoke(vocab_size=C.BYTE_VOCAB, max_seq_len=12))
TOK = V.Tokenizer(V.TokenizerConfig.smoke(fsq_levels=(4, 4), image_size=8))
PIX = P.GatedPixelCNN(P.PixelCNNConfig.smoke(image_size=8))
PIXT = P.PixelTransformer(P.PixelTransformerConfig.smoke(grid=(8, 8), max_seq_len=65))
MST = NS.MultiScaleTokenizer(NS.MultiScaleConfig.smoke(scales=(1, 2), n_codes=16, image_size=8))
LAT = FH.LatentTokenizer(FH.LatentConfig.smoke(image_size=8))
FLOW = FH.FlowPrior(FH.FlowPriorConfig(backbone=T.TransformerConfig.smoke(vocab_size=0, max_seq_len=5).to_dict(),
                                       head_width=16, head_depth=1))
CLF = E.DigitClassifier()
IMG8 = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=g())
IMG28 = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8, generator=g())
LISTS = W.green_lists("key", 16, 0.25, 2)


def ckpt(tmp: Path, name: str, edit=None) -> Path:
    "A saved smoke prior, its config.json passed through `edit(record)` when given."
    d = tmp / name
    core.save_checkpoint(PRIOR, d)
    if edit is not None:
        rec = json.loads((d / "config.json").read_text()); edit(rec); (d / "config.json").write_text(json.dumps(rec))
    return d


def truncate(d: Path) -> Path:
    w = d / "model.safetensors"; w.write_bytes(w.read_bytes()[:100]); return d


def del_field(name):
    return lambda rec: rec["config"].pop(name)


# (module, call, words the message must contain); `tmp` is a fresh folder for file cases
ERRORS = [
    # core
    ("core", lambda tmp: core.check_number(NAN, "temperature", low=0), "temperature"),
    ("core", lambda tmp: core.check_number(True, "steps", low=1, integer=True), "steps"),
    ("core", lambda tmp: core.default_device("tpu"), "device"),
    ("core", lambda tmp: core.make_generator(1.5), "seed"),
    ("core", lambda tmp: core.make_generator(0, device="nope"), "device"),
    ("core", lambda tmp: core.seed_everything(None), "seed"),
    ("core", lambda tmp: core.autocast("nope"), "device"),
    ("core", lambda tmp: core.one_cycle(torch.optim.SGD(PRIOR.parameters(), 0.1), 0.1, 100, warmup=2.0), "warmup"),
    ("core", lambda tmp: core.one_cycle(torch.optim.SGD(PRIOR.parameters(), 0.1), NAN, 100), "lr"),
    ("core", lambda tmp: core.train_loop(PRIOR, iter([]), lambda m, b: 0, 1, 1e-3), "batches"),
    ("core", lambda tmp: core.train_loop(PRIOR, iter([]), lambda m, b: 0, 1, 1e-3, clip=-1.0), "clip"),
    ("core", lambda tmp: core.n_params("not a model"), "model"),
    ("core", lambda tmp: core.eval_mode("not a model").__enter__(), "models"),
    ("core", lambda tmp: core.write_atomic(tmp / "x.txt", 123), "data"),
    ("core", lambda tmp: core.save_checkpoint(PRIOR, tmp / "f.txt" if (tmp / "f.txt").write_text("x") else None), "directory"),
    ("core", lambda tmp: core.load_config(tmp / "nothing", T.TransformerConfig), "directory"),
    ("core", lambda tmp: T.load_transformer(ckpt(tmp, "no_rope", del_field("rope"))), "rope"),
    ("core", lambda tmp: T.load_transformer(ckpt(tmp, "bool_int", lambda r: r["config"].update(d_model=True))), "d_model"),
    ("core", lambda tmp: T.load_transformer(ckpt(tmp, "no_meta", lambda r: r.pop("meta"))), "config.json"),
    ("core", lambda tmp: T.load_transformer(truncate(ckpt(tmp, "cut"))), "model.safetensors"),
    ("core", lambda tmp: T.load_transformer(ckpt(tmp, "other", lambda r: r.update(config_class="PixelCNNConfig"))), "config_cls"),
    ("core", lambda tmp: core.load_checkpoint(T.Transformer(T.TransformerConfig.smoke(vocab_size=16, max_seq_len=10, n_layers=3)),
                                               ckpt(tmp, "deeper")), "n_layers"),
    ("core", lambda tmp: (ckpt(tmp, "notjson"), (tmp / "notjson/config.json").write_text("{half"),
                          T.load_transformer(tmp / "notjson")), "config.json"),
    ("core", lambda tmp: core.check_ids(torch.tensor([0.5]), "labels", 10), "labels"),
    # data
    ("data", lambda tmp: D.load_dataset("cifar-ish"), "name"),
    ("data", lambda tmp: D.load_mnist5k("val"), "split"),
    ("data", lambda tmp: D.image_grid(torch.full((2, 1, 4, 4), 200.0)), "images"),
    ("data", lambda tmp: D.image_grid(IMG8, nrow=0), "nrow"),
    ("data", lambda tmp: D.image_grid(IMG8[:0]), "images"),
    ("data", lambda tmp: D.show_grid(IMG8, nrow=1, row_labels=["only one"]), "row_labels"),
    ("data", lambda tmp: D.augment_digits(IMG8.float(), LAB, 2), "images"),
    ("data", lambda tmp: D.augment_digits(IMG8, LAB, 0), "copies"),
    ("data", lambda tmp: D.augment_digits(IMG8, LAB, 2, warp="no"), "warp"),
    ("data", lambda tmp: D.shift_pixels(IMG8, g(), max_shift=1.5), "max_shift"),
    ("data", lambda tmp: D.random_affine(IMG8, g()), "x"),
    ("data", lambda tmp: D.make_loader(IMG8, LAB, batch_size=3, drop_last=True), "batch_size"),
    ("data", lambda tmp: D.jpeg_bytes(IMG8[0], quality=50.7), "quality"),
    ("data", lambda tmp: D.load_image_folder(tmp / "none"), "path"),
    ("data", lambda tmp: D.load_torchvision("CIFAR10", tmp), "root"),
    # transformer
    ("transformer", lambda tmp: T.TransformerConfig(n_heads=0), "n_heads"),
    ("transformer", lambda tmp: T.TransformerConfig(dropout=NAN), "dropout"),
    ("transformer", lambda tmp: T.TransformerConfig(label_dropout=1.5), "label_dropout"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, temperature=NAN), "temperature"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, cfg_scale=INF), "cfg_scale"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, top_p=NAN), "top_p"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, top_k=0), "top_k"),
    ("transformer", lambda tmp: T.generate(PRIOR, 20, LAB), "n_tokens"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, [1, 2]), "labels"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, EMPTY), "labels"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, batch_size=-1), "batch_size"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, stop_token=99), "stop_token"),
    ("transformer", lambda tmp: T.generate(PRIOR, 4, LAB, logit_bias=torch.zeros(3, 16)), "logit_bias"),
    ("transformer", lambda tmp: T.sample_logits(torch.full((2, 16), -INF)), "logits"),
    ("transformer", lambda tmp: T.next_token_bits(PRIOR, torch.randint(0, 16, (4, 5)), batch_size=0), "batch_size"),
    ("transformer", lambda tmp: T.next_token_bits(PRIOR, torch.full((2, 5), 3), pad_token=3), "tokens"),
    ("transformer", lambda tmp: T.grid_positions(3, 0), "w"),
    # eval
    ("eval", lambda tmp: E.evaluate(IMG28, reference=IMG28, inception_weights=tmp / "none.pt"), "inception_weights"),
    ("eval", lambda tmp: E.classifier_accuracy(CLF, IMG28, torch.tensor([3])), "labels"),
    ("eval", lambda tmp: E.blur(IMG28, NAN), "sigma"),
    ("eval", lambda tmp: E.independent_pixel_samples(IMG8.float() / 255, 3), "images"),
    ("eval", lambda tmp: E.two_proportion_p(7, 5, 1, 5), "k1"),
    ("eval", lambda tmp: E.wilson_interval(11, 10), "k"),
    ("eval", lambda tmp: E.wilson_interval(0, 0), "n"),
    ("eval", lambda tmp: E.wilson_interval(3, 10, confidence=1.0), "confidence"),
    ("eval", lambda tmp: E.tpr_at_fpr(torch.rand(10), torch.rand(100), fpr=0), "fpr"),
    ("eval", lambda tmp: E.tpr_at_fpr(torch.rand(0), torch.rand(100), fpr=0.1), "marked"),
    ("eval", lambda tmp: E.leaderboard_record("vq", {"fid": torch.tensor(1.0)}, path=tmp / "r.jsonl"), "fid"),
    ("eval", lambda tmp: ((tmp / "r.jsonl").write_text('{"paradigm": "vq", "metrics": {}}\n{broken\n'),
                          E.read_records(tmp / "r.jsonl")), "r.jsonl:2"),
    ("eval", lambda tmp: E.records_table([{"paradigm": "vq", "metrics": {"fid": 1.0}}], sort_by="kid"), "sort_by"),
    ("eval", lambda tmp: E.chi2_two_sample(torch.tensor([7, 1]), torch.tensor([1, 2]), 4), "a"),
    ("eval", lambda tmp: E.ClassifierConfig(widths=()), "widths"),
    # recipes
    ("recipes", lambda tmp: R.get_budget("huge"), "budget"),
    ("recipes", lambda tmp: R.Budget("b", tok_steps=1, steps=0, batch=1, width=8, depth=1, aug_copies=1), "steps"),
    ("recipes", lambda tmp: R.Budget("b", n_samples=15, tok_steps=1, steps=1, batch=1, width=8, depth=1, aug_copies=1), "n_samples"),
    ("recipes", lambda tmp: R.Budget("b", tok_steps=1, steps=1, batch=1, width=8, depth=1, aug_copies=1, slow_steps=0), "slow_steps"),
    ("recipes", lambda tmp: R.Budget("b", tok_steps=1, steps=1, batch=1, width=8, depth=1, aug_copies=1, cpu_bf16="yes"), "cpu_bf16"),
    ("recipes", lambda tmp: R.BUDGETS["smoke"].recipe("nope"), "fields"),
    ("recipes", lambda tmp: R.train_or_load(tmp / "m", lambda: PRIOR, lambda m: None, T.load_transformer, "cpu",
                                            recipe={"x": torch.tensor(1)}), "recipe"),
    # pixels
    ("pixels", lambda tmp: P.sample(PIX, LAB, temperature=NAN), "temperature"),
    ("pixels", lambda tmp: P.sample(PIX, EMPTY), "labels"),
    ("pixels", lambda tmp: P.MaskedConv2d(1, 1, 2, "A"), "k"),
    ("pixels", lambda tmp: P.PixelCNNConfig(kernel=4), "kernel"),
    ("pixels", lambda tmp: P.dataset_bits_per_dim(PIX, IMG8, LAB, batch_size=0), "batch_size"),
    ("pixels", lambda tmp: P.train_pixelcnn(PIX, IMG8, LAB, steps=1, batch_size=2, label_dropout=1.5), "label_dropout"),
    ("pixels", lambda tmp: P.PixelTransformerConfig(grid=(8, 8)), "grid"),
    ("pixels", lambda tmp: P.PixelTransformerConfig(vocab_size=16), "vocab_size"),
    ("pixels", lambda tmp: P.PixelTransformer(P.PixelCNNConfig()), "config"),
    ("pixels", lambda tmp: PIXT.nll(IMG8.float(), LAB), "images"),
    ("pixels", lambda tmp: PIXT.nll(IMG8, LAB + 20), "labels"),
    ("pixels", lambda tmp: P.sample_raster(PIX, LAB), "model"),
    ("pixels", lambda tmp: P.sample_raster(PIXT, LAB, temperature=NAN), "temperature"),
    ("pixels", lambda tmp: P.logistic_mixture_log_prob(torch.zeros(2, 4), LAB), "params"),
    ("pixels", lambda tmp: P.logistic_mixture_log_prob(torch.zeros(2, 3), torch.tensor([0, 256])), "values"),
    ("pixels", lambda tmp: P.train_long_recipe(tmp / "long", steps=0), "steps"),
    # vq
    ("vq", lambda tmp: V.sample_images(TOK, PRIOR, EMPTY), "labels"),
    ("vq", lambda tmp: V.sample_images(TOK, PRIOR, LAB, batch_size=0), "batch_size"),
    ("vq", lambda tmp: V.codebook_stats(torch.tensor([9, 1]), 4), "indices"),
    ("vq", lambda tmp: V.make_quantizer("vq", n_codes=0), "n_codes"),
    ("vq", lambda tmp: V.FSQ((2.5, 3)), "levels"),
    ("vq", lambda tmp: V.TokenizerConfig(channels=12), "channels"),
    ("vq", lambda tmp: V.evaluate_tokenizer(TOK, IMG8[:0]), "images"),
    # codec
    ("codec", lambda tmp: C.marker_segments(b"hello world"), "data"),
    ("codec", lambda tmp: C.strip_header("junk"), "data"),
    ("codec", lambda tmp: C.decode_scan(b"\x00", quality=0), "quality"),
    ("codec", lambda tmp: C.tokens_to_scan(torch.tensor([1.5, 2.0])), "ids"),
    ("codec", lambda tmp: C.sample_jpeg(BYTES, LAB, 20), "max_len"),
    ("codec", lambda tmp: C.sample_jpeg(BYTES, EMPTY, 8), "labels"),
    # next_scale
    ("next_scale", lambda tmp: NS.check_scales((1, 2.7), 2), "scales"),
    ("next_scale", lambda tmp: MST.quantizer.decode_ids(torch.zeros(1, 5, dtype=torch.long), n_scales=0), "n_scales"),
    ("next_scale", lambda tmp: NS.scale_positions([2], 0), "size"),
    # masked
    ("masked", lambda tmp: M.sample_masked(MASKED, LAB, steps=2, noise=NAN), "noise"),
    ("masked", lambda tmp: M.sample_masked(MASKED, LAB, n_tokens=0), "n_tokens"),
    ("masked", lambda tmp: M.masked_counts(0, 1), "n_tokens"),
    ("masked", lambda tmp: M.cosine_schedule(NAN), "r"),
    ("masked", lambda tmp: M.random_masks(torch.tensor([NAN, 0.5]), 4), "ratios"),
    ("masked", lambda tmp: M.masked_loss(MASKED, torch.rand(2, 9)), "ids"),
    # flow_heads
    ("flow_heads", lambda tmp: FH.sample_flow(FLOW, LAB, steps=True), "steps"),
    ("flow_heads", lambda tmp: FH.sample_flow(FLOW, LAB, steps=2, temperature=NAN), "temperature"),
    ("flow_heads", lambda tmp: FLOW.sample_token(torch.zeros(2, 64), 2, temperature=NAN), "temperature"),
    ("flow_heads", lambda tmp: LAT.decode(torch.full((2, 4, 4), NAN)), "tokens"),
    ("flow_heads", lambda tmp: FH.LatentConfig(noise=-1.0), "noise"),
    ("flow_heads", lambda tmp: FH.timestep_embedding(torch.rand(3), 5), "dim"),
    ("flow_heads", lambda tmp: FH.latent_psnr(LAT, IMG8, batch_size=0), "batch_size"),
    # accel
    ("accel", lambda tmp: A.speculative_jacobi(PRIOR, 4, LAB, window=0), "window"),
    ("accel", lambda tmp: A.speculative_jacobi(PRIOR, 4, LAB, groups=torch.full((16, 2), 99)), "groups"),
    ("accel", lambda tmp: A.StaticDecoder(PRIOR, 2, 4, temperature=NAN), "temperature"),
    ("accel", lambda tmp: A.code_neighbours(torch.randn(8), 2), "codebook"),
    ("accel", lambda tmp: A.ms_per_step(lambda: None, 0), "n_steps"),
    # watermark
    ("watermark", lambda tmp: W.sample_marked(PRIOR, LAB, LISTS, NAN), "delta"),
    ("watermark", lambda tmp: W.green_lists(None, 16), "key"),
    ("watermark", lambda tmp: W.green_lists("k", 0), "vocab_size"),
    ("watermark", lambda tmp: W.green_z(torch.full((2, 4), 99), LISTS), "ids"),
    ("watermark", lambda tmp: W.green_z(torch.zeros(2, 4, dtype=torch.long), torch.ones(1, 16, dtype=torch.bool)), "lists"),
    ("watermark", lambda tmp: W.pair_green_list(torch.tensor([1, 0, 99]), "k"), "partner"),
    ("watermark", lambda tmp: W.attack(IMG28, "rotate"), "kind"),
    ("watermark", lambda tmp: W.index_mark(PRIOR, torch.zeros(2, 4, dtype=torch.long), LAB, torch.arange(8), LISTS[:1]), "partner"),
    # leaderboard
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", ["gan"], tmp), "paradigms"),
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", [], tmp), "paradigms"),
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", ["vq", "vq"], tmp), "paradigms"),
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", ["vq"], (tmp / "file").write_text("x") and tmp / "file"), "out_dir"),
    ("leaderboard", lambda tmp: ((tmp / "smoke").mkdir(), (tmp / "smoke/budget.json").write_text("{not json"),
                                 LB.run_leaderboard("smoke", ["vq"], tmp)), "budget.json"),
    ("leaderboard", lambda tmp: LB.save_figure([], tmp), "records"),
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", ["vq"], tmp, seeds=0), "seeds"),
    ("leaderboard", lambda tmp: LB.run_leaderboard("smoke", ["vq"], tmp, seeds=[1, 0, 1]), "seeds"),
    ("eval", lambda tmp: E.evaluate_seeds(lambda labels, g: IMG28, LAB, seeds=[]), "seeds"),
    ("eval", lambda tmp: E.samples_needed(0.9, 0.9), "p1"),
    ("eval", lambda tmp: E.welch_p([1.0], [2.0, 3.0]), "a:"),
    ("eval", lambda tmp: E.welch_p([1.0, 2.0], (v for v in [1.0])), "b:"),
    ("eval", lambda tmp: E.compare_records({"paradigm": "vq", "metrics": {}}, {"paradigm": "vq", "metrics": {}}), "a:"),
    ("eval", lambda tmp: E.compare_records({"per_seed": [{"seed": 0, "class_accuracy": 0.9}]},
                                           {"per_seed": [{"seed": 0, "class_accuracy": 0.9, "n_samples": 10}]}), "a:"),
    ("eval", lambda tmp: E.leaderboard_record("vq", {"fid": float("nan")}, path=tmp / "r.jsonl"), "metrics['fid']"),
    ("eval", lambda tmp: E.leaderboard_record("vq", {}, per_seed=[{"fid": 1.0}]), "per_seed"),
    ("eval", lambda tmp: E.seed_spread([{"fid": float("inf")}]), "per_seed"),
    ("eval", lambda tmp: E.check_seeds(10 ** 9), "seeds"),
    ("eval", lambda tmp: E.check_seeds([2 ** 70]), "seeds"),
    # cli (the library functions behind it)
    ("cli", lambda tmp: find_notebooks(["77_missing"]), "notebook"),
    ("cli", lambda tmp: find_notebooks(["00", "00_core"]), "notebook"),
    ("cli", lambda tmp: find_notebooks(nbs=tmp / "none"), "nbs"),
    ("cli", lambda tmp: run_course(["00"], timeout=0), "timeout"),
]


def _raised_by_argen_lit(excinfo) -> bool:
    "The innermost frame that raised is argen_lit's own code (a check), not torch's, numpy's or Pillow's."
    return "argen_lit" in Path(str(excinfo.traceback[-1].path)).parts


@pytest.mark.parametrize("module,call,names", ERRORS, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(ERRORS)])
def test_bad_input_gets_a_clear_error(module, call, names, tmp_path):
    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as e:
        call(tmp_path)
    assert names in str(e.value), f"the message does not name {names!r}: {e.value}"
    assert _raised_by_argen_lit(e), f"raised from {e.traceback[-1].path}, not by a check of argen_lit: {e.value}"
    assert isinstance(e.value, core.InputError), f"{type(e.value).__name__} is not an InputError: {e.value}"


# legitimate edge cases and their right answers
RESULTS = [
    ("temperature 0 is greedy", lambda: T.sample_logits(torch.tensor([[0.1, 3.0, 0.2]]), temperature=0).tolist(), [1]),
    ("inf max_cost replaces every red token", lambda: bool(W.index_mark(
        PRIOR, torch.zeros(2, 4, dtype=torch.long), LAB, W.code_pairs(torch.randn(16, 2), "k"),
        W.pair_green_list(W.code_pairs(torch.randn(16, 2), "k"), "k"), max_cost=INF)[1].any() or True), True),
    ("a missing records file is no records yet", lambda: E.read_records("does/not/exist.jsonl"), []),
    ("an empty id tensor passes the id check", lambda: core.check_ids(EMPTY, "ids", 10), None),
    ("cfg_scale 0 is the unconditional model", lambda: T.Guidance(LAB, 10, 0.0).on, True),
    ("one-step one-cycle is a constant rate", lambda: core.one_cycle(torch.optim.SGD(PRIOR.parameters(), 0.1), 0.1, 1).get_last_lr(), [0.1]),
    ("fpr just under 1", lambda: E.tpr_at_fpr(torch.ones(4), torch.zeros(4), fpr=0.5)[0], 1.0),
]


@pytest.mark.parametrize("what,call,want", RESULTS, ids=[w for w, _, _ in RESULTS])
def test_edge_case_gets_the_right_answer(what, call, want):
    assert call() == want


CLI_ERRORS = [
    (["leaderboard", "--paradigms"], "paradigms"),
    (["leaderboard", "--paradigms", "vq", "vq"], "paradigms"),
    (["leaderboard", "--paradigms", "gan"], "paradigms"),
    (["leaderboard", "--device", "tpu"], "device"),
    (["leaderboard", "--seeds", "0"], "seeds"),
    (["course", "77"], "notebook"),
    (["course", "00", "00"], "notebook"),
    (["course", "--timeout", "0"], "timeout"),
    (["course", "00", "--in-place", "--out-dir", "elsewhere"], "out_dir"),
]


@pytest.mark.parametrize("argv,names", CLI_ERRORS, ids=[" ".join(a) for a, _ in CLI_ERRORS])
def test_cli_user_error_is_one_line_and_exit_2(argv, names, capsys, tmp_path):
    if argv[0] == "leaderboard": argv = [*argv, "--out-dir", str(tmp_path), "--budget", "smoke"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"argen-lit {argv[0]}: error: {names}"), err


def test_cli_out_dir_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    assert main(["leaderboard", "--budget", "smoke", "--paradigms", "vq", "--out-dir", str(tmp_path / "f")]) == 2
    assert "out_dir" in capsys.readouterr().err


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch, tmp_path):
    def broken(*a, **k): raise RuntimeError("a bug, not bad input")
    monkeypatch.setitem(LB.PARADIGMS, "vq", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["leaderboard", "--budget", "smoke", "--paradigms", "vq", "--out-dir", str(tmp_path)])


class Payload:
    "Unpickling this runs os.mkdir(path): the stand-in for any code a crafted file could run."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (os.mkdir, (self.path,))


def test_crafted_pickle_never_runs(tmp_path):
    "A weights file whose unpickling would run code is refused before any of it runs, by every loader that reads one."
    import pickle, numpy as np
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(1), "evil": Payload(marker)}, tmp_path / "inception.pt")
    with pytest.raises(core.InputError, match="inception_weights"):
        E.evaluate(IMG28, reference=IMG28, inception_weights=tmp_path / "inception.pt")
    # a CIFAR batch file is unpickled by argen_lit's restricted reader, never by pickle.load
    batch = tmp_path / "cifar-10-batches-py"; batch.mkdir()
    (batch / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}, protocol=2))

    class FakeCIFAR:
        base_folder, train_list, test_list = "cifar-10-batches-py", [["data_batch_1", None]], []
    import torchvision.datasets.utils as tvu
    orig = tvu.check_integrity
    tvu.check_integrity = lambda *a, **k: True
    try:
        with pytest.raises(core.InputError, match="refused"):
            D._load_cifar(FakeCIFAR, tmp_path, "train", False)
        good = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [3, 4]}
        (batch / "data_batch_1").write_bytes(pickle.dumps(good, protocol=2))
        x, y = D._load_cifar(FakeCIFAR, tmp_path, "train", False)
        assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 4]
    finally: tvu.check_integrity = orig
    assert not marker.exists(), "the crafted pickle ran"


def test_table_size():
    "The issue asks for at least 60 cases across every module and the CLI."
    modules = {m for m, _, _ in ERRORS}
    assert len(ERRORS) + len(RESULTS) + len(CLI_ERRORS) >= 60
    assert modules >= {"core", "data", "transformer", "eval", "recipes", "pixels", "vq", "codec", "next_scale", "masked",
                       "flow_heads", "accel", "watermark", "leaderboard", "cli"}
