"""Tiny random Hugging Face models and a tokenizer, built offline in seconds.

Every model shares one byte-level BPE tokenizer trained on a few files of the
Python standard library (the same text on every machine with CPython 3.11).
``initializer_range=0.1`` keeps greedy logit margins well above float32 noise.
"""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

VOCAB = 512
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# name -> (family, hidden, layers, heads, kv_heads, intermediate, seed)
SPECS = {
    "target": ("llama", 128, 4, 4, 2, 256, 0),
    "draft": ("llama", 64, 2, 2, 1, 128, 1),
    "draft_qwen2": ("qwen2", 64, 2, 2, 1, 128, 2),
    "draft_qwen3": ("qwen3", 64, 2, 2, 1, 128, 3),
    # head_dim 64, for FlashAttention on GPUs
    "target_hd64": ("llama", 256, 4, 4, 2, 512, 4),
    "draft_hd64": ("qwen2", 128, 2, 2, 1, 256, 6),
}


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["json/encoder.py", "json/decoder.py", "argparse.py", "textwrap.py", "string.py"]
    return [str(stdlib / name) for name in names]


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", model_max_length=2048)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_model(out: Path, tokenizer, family: str, hidden: int, layers: int, heads: int,
                kv_heads: int, inter: int, seed: int, vocab: int = VOCAB) -> Path:
    import torch
    import transformers

    torch.manual_seed(seed)
    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[family]
    config = config_cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=3,
        tie_word_embeddings=False, initializer_range=0.1, torch_dtype="float32")
    model = model_cls(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_vocab_pair(root: Path, vocab: int = 8) -> tuple[Path, Path]:
    """Target and draft with an 8-token vocabulary and no tokenizer, for exact
    distribution tests (every joint probability is computable)."""
    import torch
    import transformers

    paths = []
    for name, seed in (("v8_target", 11), ("v8_draft", 12)):
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=1, num_key_value_heads=1, head_dim=64,
            max_position_embeddings=256, bos_token_id=0, eos_token_id=vocab - 1,
            tie_word_embeddings=False, initializer_range=0.5, torch_dtype="float32")
        model = transformers.LlamaForCausalLM(config).eval()
        model.save_pretrained(root / name, safe_serialization=True)
        paths.append(root / name)
    return paths[0], paths[1]


def build_cyclic_copy(src: Path, out: Path, seed: int) -> Path:
    """A model whose greedy next token is a fixed permutation of the current one, by a
    wide logit margin: greedy equality then survives GPU kernels that differ between
    one-token decoding and multi-token verification (TF32 in Triton attention)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out, dirs_exist_ok=True)
    weights = load_file(str(src / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    embed = weights["model.embed_tokens.weight"] * 10
    weights["model.embed_tokens.weight"] = embed
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = weights[name] * 0.02
    weights["lm_head.weight"] = embed[torch.randperm(embed.shape[0], generator=generator)]
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def build_noisy_copy(src: Path, out: Path, noise: float, seed: int) -> Path:
    """The same weights plus Gaussian noise: a draft with partial acceptance."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out, dirs_exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(str(src / "model.safetensors"))
    noisy = {name: t + noise * torch.randn(t.shape, generator=generator) for name, t in weights.items()}
    save_file(noisy, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def build_bf16_copy(src: Path, out: Path) -> Path:
    """The same model saved as a bfloat16 checkpoint (like the real Qwen drafts)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out, dirs_exist_ok=True)
    weights = {name: t.to(torch.bfloat16) for name, t in
               load_file(str(src / "model.safetensors")).items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config.pop("dtype", None)
    config["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def build_all(root: Path) -> dict[str, Path]:
    """Builds every tiny model under ``root`` once; returns name -> directory."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / name for name in
             [*SPECS, "draft_noisy", "draft_noisy_bf16", "draft_badvocab", "v8_target", "v8_draft", "cyclic_hd64"]}
    if (root / "DONE").exists():
        return paths
    tokenizer = build_tokenizer(root / "tokenizer")
    for name, spec in SPECS.items():
        build_model(paths[name], tokenizer, *spec)
    build_noisy_copy(paths["target"], paths["draft_noisy"], noise=0.004, seed=7)
    build_bf16_copy(paths["draft_noisy"], paths["draft_noisy_bf16"])
    build_model(paths["draft_badvocab"], tokenizer, "llama", 64, 2, 2, 1, 128, 5, vocab=VOCAB + 64)
    build_tiny_vocab_pair(root)
    build_cyclic_copy(paths["target_hd64"], paths["cyclic_hd64"], seed=9)
    (root / "DONE").write_text(json.dumps({name: str(p) for name, p in paths.items()}))
    return paths
