#!/usr/bin/env python
"""Train the tiny Mixtral-architecture MoE that ships with runprof.

runprof needs a Mixture-of-Experts model that loads offline in well under a
second and whose routing is *learned* (experts specialise), so that the
profiler has something real to show without downloading anything.  This
script builds one from scratch on a 2-core CPU in roughly ten minutes:

1. Corpus: the Python standard library's own ``.py`` sources (present on every
   machine that has Python).  Test suites, site-packages and data-like packages
   (codec tables, pydoc topics, ...) are excluded; the rest is ordered by a
   SHA-1 of the relative path (deterministic, but not alphabetically biased),
   each file truncated to ``--file-cap`` bytes, and files are taken until
   ``--corpus-cap`` bytes.
2. Tokenizer: a byte-level BPE (``tokenizers``; newlines isolated as their
   own tokens) with ``<pad>``, ``<s>``, ``</s>``, ``<unk>`` as ids 0..3,
   wrapped in a ``PreTrainedTokenizerFast`` that prepends ``<s>``.
3. Model: ``MixtralForCausalLM`` (8 experts, top-2) trained with AdamW on
   random 128-token windows of the tokenised corpus, with the router
   load-balancing (Switch Transformer) loss.  Note: in transformers 5.x,
   ``MixtralForCausalLM.forward`` (with ``output_router_logits=True`` and
   ``labels``) adds ``router_aux_loss_coef * aux_loss`` to ``outputs.loss``,
   but ``load_balancing_loss_func`` *pools* the token counts and router
   probabilities of all layers before taking the product, so it equals its
   balanced value (top_k = 2) even when single layers have collapsed onto a
   few experts, as long as the layers compensate one another.  Expert ``e``
   of layer 1 and expert ``e`` of layer 2 are unrelated, so that is not what
   we want.  By default (``--aux-mode per-layer``) the built-in term is
   switched off (``model.router_aux_loss_coef = 0``) and the same function
   is applied to each layer separately and averaged (balanced value: 2).
4. Export: bf16 ``model.safetensors`` + config + generation config +
   tokenizer files only, into ``--out`` (default ``./tiny_moe_out``, a new
   folder).  The model runprof ships (``runprof/models/tiny_moe``) is replaced
   only when asked by name: ``--out shipped`` or ``--replace-shipped``; an
   existing folder that already holds model files needs ``--overwrite``.
5. Report: per-layer routing statistics read from the router's own output
   (``MixtralTopKRouter`` returns ``(logits, scores, indices)``; a forward
   hook captures ``indices``), on ``examples/prompt.txt`` and on held-out
   stdlib text, plus a greedy sample generation from the reloaded model.

The run is deterministic for a given Python stdlib, torch build and thread
count (fixed seed, deterministic algorithms, seeded data sampler).  The
default is one thread: on a shared 2-core machine two OpenMP threads
oversubscribe the cores and can be >10x slower.

Usage::

    python examples/train_tiny_moe.py                       # ~10 min, 2-core CPU, into ./tiny_moe_out
    python examples/train_tiny_moe.py --out shipped         # rebuild the model runprof ships
    python examples/train_tiny_moe.py --steps 50 --out /tmp/m   # smoke test
    python examples/train_tiny_moe.py --dry-run             # check the arguments, say where it would write
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED_OUT = REPO / "runprof" / "models" / "tiny_moe"  # what `python -m runprof` loads by default
DEFAULT_OUT = Path("tiny_moe_out")
DEFAULT_PROMPT = REPO / "examples" / "prompt.txt"

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0, 1, 2, 3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# Files that save_pretrained may write which are needed to load the model.
SHIP_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# Directory names never used for the corpus: tests (huge, repetitive) and
# packages that are mostly data rather than ordinary Python code.
EXCLUDED_DIRS = {
    "site-packages",
    "dist-packages",
    "__pycache__",
    "test",
    "tests",
    "idle_test",
    "unittest",  # mostly its own test-suite
    "lib2to3",  # grammar fixtures and tests
    "encodings",  # ~100 near-identical generated codec tables
    "pydoc_data",  # one huge string literal
    "idlelib",  # GUI app, large and idiosyncratic
    "turtledemo",
    "ensurepip",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"output directory (default: ./{DEFAULT_OUT}); 'shipped' replaces runprof's shipped model "
                        f"in {SHIPPED_OUT}")
    p.add_argument("--replace-shipped", action="store_true", help="same as --out shipped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model files of an existing --out folder (never needed for a new folder)")
    p.add_argument("--dry-run", action="store_true", help="check the arguments, say where the model would go, stop")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--steps", type=int, default=750, help="optimizer steps (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--aux-coef", type=float, default=0.02, help="router_aux_loss_coef (default: %(default)s)")
    p.add_argument(
        "--aux-mode", choices=("per-layer", "pooled"), default="per-layer",
        help="per-layer: mean over layers of the balancing loss of each layer; pooled: transformers' "
             "built-in loss, which pools all layers' routing statistics (default: %(default)s)",
    )
    p.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size (default: %(default)s)")
    p.add_argument("--corpus-cap", type=int, default=4_000_000, help="max corpus bytes (default: %(default)s)")
    p.add_argument("--file-cap", type=int, default=24_000, help="max bytes per source file (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=25, help="log interval in steps (default: %(default)s)")
    p.add_argument("--prompt", type=Path, default=DEFAULT_PROMPT, help="prompt for the routing report")
    return p


def output_dir(out: str | None, replace_shipped: bool, overwrite: bool) -> Path:
    """Where the model goes; ValueError (one line) for a folder that must not be written.

    The shipped model is replaced only when asked by name (``--out shipped`` or ``--replace-shipped``), never
    by a path that happens to lead there; an existing folder holding model files needs ``overwrite``.
    """
    if replace_shipped and out not in (None, "shipped"):
        raise ValueError(f"--replace-shipped writes {SHIPPED_OUT}, but --out {out} was given; pass one of them")
    if replace_shipped or out == "shipped":
        return SHIPPED_OUT
    if out is not None and not out.strip():
        raise ValueError("--out '': give a folder, or 'shipped' to replace runprof's shipped model")
    target = Path(out) if out is not None else DEFAULT_OUT
    if target.expanduser().resolve() == SHIPPED_OUT.resolve():
        raise ValueError(f"--out {out} is runprof's shipped model; pass --out shipped (or --replace-shipped) to "
                         "replace it")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {target} is a file; give a folder")
    held = sorted(name for name in SHIP_FILES if (target / name).exists())
    if held and not overwrite:
        raise ValueError(f"--out {target} already holds model files ({', '.join(held)}); pass --overwrite to "
                         "replace them, or choose a new folder")
    return target


POSITIVE = ("steps", "threads", "batch_size", "vocab_size", "corpus_cap", "file_cap", "log_every")


def parse_args(argv=None) -> argparse.Namespace:
    """The arguments, checked (numbers in range, the output folder), without importing torch."""
    p = build_parser()
    args = p.parse_args(argv)
    bad = [f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1"
           for name in POSITIVE if getattr(args, name) < 1]
    if args.seq_len < 2 or args.warmup < 0 or not args.lr > 0 or args.aux_coef < 0:
        bad.append("--seq-len >= 2, --warmup >= 0, --lr > 0 and --aux-coef >= 0 are needed")
    if args.vocab_size <= len(SPECIAL_TOKENS):
        bad.append(f"--vocab-size {args.vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens")
    if bad:
        p.error("; ".join(bad))
    try:
        args.out = output_dir(args.out, args.replace_shipped, args.overwrite)
    except ValueError as e:
        p.error(str(e))
    return args


# --------------------------------------------------------------------------- corpus
def stdlib_sources(file_cap: int, corpus_cap: int) -> list[str]:
    """Return capped stdlib ``.py`` texts in a fixed order (deterministic per Python version)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [
        p for p in root.rglob("*.py")
        if not any(part in EXCLUDED_DIRS for part in p.relative_to(root).parts[:-1])
        and not p.name.startswith("test_")
    ]
    paths.sort(key=lambda p: hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest())
    docs, total = [], 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) > file_cap:  # cut at a line boundary
            text = text[: text.rfind("\n", 0, file_cap) + 1]
        if not text.strip():
            continue
        docs.append(text)
        total += len(text)
        if total >= corpus_cap:
            break
    return docs


# --------------------------------------------------------------------------- tokenizer
def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Every "\n" is its own token.  With the plain GPT-2 regex a newline is
    # merged with the next line's indentation ("\n   " + " return"), so a prompt
    # that ends in "\n" (as text files do) ends on a token boundary never seen
    # in training, and greedy decoding falls into "\n#\n#..." loops.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    # Prepend <s> like Llama/Mistral tokenizers do.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def encode_corpus(tokenizer, docs: list[str]):
    """One flat id stream: ``<s> doc </s> <s> doc </s> ...``."""
    import torch

    enc = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    ids: list[int] = []
    for e in enc:
        ids.append(BOS_ID)
        ids.extend(e.ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


# --------------------------------------------------------------------------- routing stats
class RouterTap:
    """Forward hooks on every ``MixtralTopKRouter``; keeps the ``indices`` it returns."""

    def __init__(self, model):
        from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

        self.indices: dict[int, list] = {}
        self.handles = []
        routers = [m for m in model.modules() if isinstance(m, MixtralTopKRouter)]
        for layer, router in enumerate(routers):
            self.handles.append(router.register_forward_hook(self._hook(layer)))

    def _hook(self, layer):
        def fn(module, args, output):
            _logits, _scores, indices = output  # indices sorted by weight, descending
            self.indices.setdefault(layer, []).append(indices.detach().cpu())

        return fn

    def reset(self):
        self.indices.clear()

    def remove(self):
        for h in self.handles:
            h.remove()


def routing_stats(idx_list, batch: int, seq: int, num_experts: int) -> dict:
    """Repeat rates over consecutive tokens (within a sequence) and load shares."""
    import torch

    idx = torch.cat(idx_list).view(batch, seq, -1)  # (B, T, k)
    a, b = idx[:, :-1], idx[:, 1:]
    first = (a[..., 0] == b[..., 0]).float().mean().item()
    overlap = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).any(-1).float().mean().item()
    load = torch.bincount(idx.reshape(-1), minlength=num_experts).float()
    return {"first": first, "overlap": overlap, "load": (load / load.sum()).tolist()}


def random_baselines(num_experts: int, k: int) -> tuple[float, float]:
    c = math.comb
    return 1.0 / num_experts, 1.0 - c(num_experts - k, k) / c(num_experts, k)


def report_routing(model, batches: dict, num_experts: int, k: int) -> dict:
    """Print a per-layer table for each named batch; return stats."""
    import torch

    tap = RouterTap(model)
    base_first, base_any = random_baselines(num_experts, k)
    results = {}
    try:
        for name, ids in batches.items():
            tap.reset()
            with torch.no_grad():
                model(input_ids=ids)
            rows = {L: routing_stats(v, ids.shape[0], ids.shape[1], num_experts) for L, v in sorted(tap.indices.items())}
            results[name] = rows
            print(f"\nrouting on {name}: {ids.shape[0]}x{ids.shape[1]} tokens "
                  f"(random: first-choice {base_first:.3f}, any-overlap {base_any:.3f})")
            print("layer  first  any-ovl  load share per expert (%)")
            for L, r in rows.items():
                load = " ".join(f"{100 * x:4.1f}" for x in r["load"])
                print(f"{L:5d}  {r['first']:.3f}  {r['overlap']:.3f}    {load}")
    finally:
        tap.remove()
    return results


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    shipped = args.out.resolve() == SHIPPED_OUT.resolve()
    log(f"[out] {args.out}" + (" (replaces runprof's shipped model)" if shipped else ""))
    if args.dry_run:
        log(f"[dry-run] would train {args.steps} steps x {args.batch_size} x {args.seq_len} tokens; nothing written")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        MixtralConfig,
        MixtralForCausalLM,
    )
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    # 1. corpus -------------------------------------------------------------
    docs = stdlib_sources(args.file_cap, args.corpus_cap)
    log(f"[corpus] {len(docs)} stdlib files, {sum(map(len, docs)) / 1e6:.2f} MB "
        f"(python {sys.version.split()[0]})")

    # 2. tokenizer ----------------------------------------------------------
    tokenizer = train_tokenizer(docs, args.vocab_size)
    data = encode_corpus(tokenizer, docs)
    n_val = max(len(data) // 50, 8 * (args.seq_len + 1))  # last 2% held out
    train_ids, val_ids = data[:-n_val], data[-n_val:]
    log(f"[tokenizer] vocab {len(tokenizer)}, {len(data):,} tokens "
        f"({sum(map(len, docs)) / len(data):.2f} chars/token), train {len(train_ids):,} / val {len(val_ids):,} "
        f"[{time.time() - t0:.0f}s]")

    # 3. model --------------------------------------------------------------
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        num_local_experts=8,
        num_experts_per_tok=2,
        router_aux_loss_coef=args.aux_coef,
        output_router_logits=True,
        router_jitter_noise=0.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    model = MixtralForCausalLM._from_config(config, attn_implementation="sdpa", experts_implementation="eager")
    if args.aux_mode == "per-layer":
        # forward() read router_aux_loss_coef from the config into this attribute;
        # zero it so outputs.loss is plain cross-entropy and add our own term.
        model.router_aux_loss_coef = 0.0
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[model] {n_params / 1e6:.2f} M parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(args.seed)
    span = args.seq_len + 1  # +1 for the shifted label; labels are shifted inside the model

    def batch_from(ids: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return torch.stack([ids[s: s + args.seq_len] for s in starts.tolist()])

    val_batch = batch_from(val_ids, torch.arange(0, len(val_ids) - span, (len(val_ids) - span) // 8)[:8])

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = model(input_ids=val_batch, labels=val_batch, output_router_logits=False)
        model.train()
        return out.loss.item()

    log(f"[train] {args.steps} steps x {args.batch_size} x {args.seq_len} tokens, lr {args.lr}, "
        f"aux coef {args.aux_coef} ({args.aux_mode}), threads {args.threads}")
    model.train()
    t_train = time.time()
    ce_avg = aux_avg = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = torch.randint(0, len(train_ids) - span, (args.batch_size,), generator=gen)
        x = batch_from(train_ids, starts)
        out = model(input_ids=x, labels=x)  # loss = CE + model.router_aux_loss_coef * aux_loss
        pooled = out.aux_loss.item()  # transformers' value, all layers pooled
        per_layer = torch.stack([
            load_balancing_loss_func((g,), config.num_local_experts, config.num_experts_per_tok)
            for g in out.router_logits
        ])
        if args.aux_mode == "per-layer":
            loss = out.loss + args.aux_coef * per_layer.mean()
            ce = out.loss.item()
        else:
            loss = out.loss
            ce = out.loss.item() - args.aux_coef * pooled
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

        aux = per_layer.mean().item()
        ce_avg = ce if ce_avg is None else 0.9 * ce_avg + 0.1 * ce
        aux_avg = aux if aux_avg is None else 0.9 * aux_avg + 0.1 * aux
        if (step + 1) % args.log_every == 0 or step == 0 or step + 1 == args.steps:
            el = time.time() - t_train
            msg = (f"step {step + 1:5d}/{args.steps}  ce {ce:.3f} (ema {ce_avg:.3f})  "
                   f"aux/layer {aux:.3f} (ema {aux_avg:.3f}; max {per_layer.max().item():.3f}) "
                   f"pooled {pooled:.3f} (balanced: {config.num_experts_per_tok})  "
                   f"lr {lr_at(step):.2e}  {el / (step + 1):.2f}s/step  {el:.0f}s")
            if (step + 1) % (4 * args.log_every) == 0 or step + 1 == args.steps:
                msg += f"  val {val_loss():.3f}"
            log(msg)
    log(f"[train] done in {time.time() - t_train:.0f}s")

    # 4. export -------------------------------------------------------------
    model.eval()
    model.config.output_router_logits = False
    model.generation_config = GenerationConfig(
        # max_new_tokens rather than max_length: a saved max_length makes every
        # generate(max_new_tokens=...) call log a "both were set" warning.
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        max_new_tokens=64, do_sample=False,
    )
    model.to(torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # always safetensors in transformers 5
        tokenizer.save_pretrained(tmp)
        produced = sorted(os.listdir(tmp))
        for name in SHIP_FILES:
            if name in produced:
                shutil.copyfile(Path(tmp) / name, args.out / name)
        dropped = [n for n in produced if n not in SHIP_FILES]
    for name in SHIP_FILES:  # stale file from an earlier run that this one did not produce
        if name not in produced and (args.out / name).exists():
            (args.out / name).unlink()
    total = 0
    for name in SHIP_FILES:
        if (args.out / name).exists():
            size = (args.out / name).stat().st_size
            total += size
            log(f"[export] {name:24s} {size / 1e3:9.1f} kB")
    log(f"[export] total {total / 1e6:.2f} MB in {args.out}" + (f" (not shipped: {dropped})" if dropped else ""))

    # 5./6. reload offline, routing report, sample ---------------------------
    model = AutoModelForCausalLM.from_pretrained(args.out)
    tok = AutoTokenizer.from_pretrained(args.out)
    model.eval()
    log(f"[reload] {type(model).__name__} dtype {model.dtype}, {type(tok).__name__}")

    prompt = args.prompt.read_text(encoding="utf-8") if args.prompt.exists() else "def fibonacci(n):\n"
    enc = tok(prompt, return_tensors="pt")
    held_out = batch_from(val_ids, torch.arange(0, len(val_ids) - span, (len(val_ids) - span) // 32)[:32])
    stats = report_routing(
        model,
        {f"prompt ({args.prompt.name})": enc["input_ids"], "held-out stdlib text": held_out},
        config.num_local_experts, config.num_experts_per_tok,
    )
    base_first, _ = random_baselines(config.num_local_experts, config.num_experts_per_tok)
    best = max(r["first"] for r in stats[f"prompt ({args.prompt.name})"].values())
    min_load = min(min(r["load"]) for r in stats["held-out stdlib text"].values())
    ok_spec = best >= base_first + 0.05
    ok_load = min_load >= 0.25 / config.num_local_experts
    print(f"\nbest first-choice repeat on prompt {best:.3f} vs random {base_first:.3f} "
          f"(+{100 * (best - base_first):.1f} pp) -> {'OK' if ok_spec else 'NOT specialised'}")
    print(f"min expert load share (held-out) {100 * min_load:.1f}% (uniform {100 / config.num_local_experts:.1f}%) "
          f"-> {'OK' if ok_load else 'COLLAPSED'}")

    t = time.time()
    with torch.no_grad():
        gen_ids = model.generate(**enc, max_new_tokens=32, do_sample=False)
    sample = tok.decode(gen_ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"\nprompt: {enc['input_ids'].shape[1]} tokens; greedy 32 new tokens in {time.time() - t:.2f}s:")
    print(repr(sample))
    log(f"[done] total wall {time.time() - t0:.0f}s")
    return 0 if (ok_spec and ok_load) else 1


if __name__ == "__main__":
    sys.exit(main())
